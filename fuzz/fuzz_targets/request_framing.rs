//! The strict HTTP/1 framing check: any byte stream, fed whole or split anywhere, gives the same
//! verdict at the same offset, and never panics. The first two bytes choose the split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerodown::http::strict::{Feed, Framer};

fn verdict(stream: &[u8], cut: usize) -> Option<usize> {
    let mut f = Framer::new(64 * 1024);
    let mut start = 0;
    for end in [cut, stream.len()] {
        if let Feed::Refuse { at, .. } = f.feed(&stream[start..end]) {
            assert!(start + at < stream.len(), "refusal past the end");
            return Some(start + at);
        }
        start = end;
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Some((split, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let cut = usize::from(u16::from_le_bytes(*split)) % (stream.len() + 1);
    assert_eq!(verdict(stream, stream.len()), verdict(stream, cut), "split at {cut}");
});
