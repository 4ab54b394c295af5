//! The HSMS decoder: any byte stream gives the same messages and the same error whether it is fed
//! whole, one byte at a time, or cut at fuzzer-chosen points; it never panics; every decoded
//! message re-encodes to exactly the bytes it was decoded from (zerodown forwards data messages
//! byte for byte); and what is left over without an error is reported as a partial message.
//!
//! Input: byte 0 picks the maximum length (low 2 bits) and the number of cuts (the rest, up to
//! 16); then 2 bytes per cut (little-endian, modulo the stream length + 1); the rest is the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use zerodown::hsms::codec::{self, DecodeError, Decoder, Message};

/// Length-field maximums: the smallest valid (a bare header), small, one length byte, large.
const MAX_LENS: [u32; 4] = [10, 16, 255, 1 << 20];

struct Outcome {
    messages: Vec<Message>,
    error: Option<DecodeError>,
    /// Bytes buffered and not decoded when the stream ended without an error.
    left: usize,
}

/// Feeds `stream` in the pieces `cuts` (sorted offsets) make, decoding all it can after each.
fn feed(max_len: u32, stream: &[u8], cuts: &[usize]) -> Outcome {
    let mut decoder = Decoder::new(max_len);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([stream.len()]) {
        buf.extend_from_slice(&stream[start..end]);
        start = end;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(m)) => {
                    assert!(
                        m.encoded_len() - codec::LEN_PREFIX <= max_len as usize,
                        "decoded a message longer than the maximum"
                    );
                    messages.push(m);
                }
                Ok(None) => break,
                Err(error) => {
                    return Outcome {
                        messages,
                        error: Some(error),
                        left: buf.len(),
                    }
                }
            }
        }
    }
    // Whatever is left is the start of a message that has not finished arriving.
    assert_eq!(
        decoder.partial(&buf),
        !buf.is_empty(),
        "partial() disagrees with {} buffered bytes",
        buf.len()
    );
    Outcome {
        messages,
        error: None,
        left: buf.len(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let max_len = MAX_LENS[usize::from(control & 3)];
    let n_cuts = usize::from(control >> 2).min(16);
    let Some(cut_bytes) = rest.get(..2 * n_cuts) else {
        return;
    };
    let stream = &rest[2 * n_cuts..];
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();

    let whole = feed(max_len, stream, &[]);
    // Re-encoding the decoded messages gives back the bytes they were decoded from.
    let mut encoded = BytesMut::new();
    for m in &whole.messages {
        codec::encode(m, &mut encoded).expect("a decoded message encodes");
    }
    assert_eq!(
        &encoded[..],
        &stream[..encoded.len()],
        "re-encoding changed the bytes"
    );
    if whole.error.is_none() {
        assert_eq!(
            encoded.len() + whole.left,
            stream.len(),
            "bytes lost without an error"
        );
    }

    let byte_by_byte: Vec<usize> = (1..stream.len()).collect();
    for (name, split) in [
        ("cut", feed(max_len, stream, &cuts)),
        ("byte by byte", feed(max_len, stream, &byte_by_byte)),
    ] {
        assert_eq!(split.messages, whole.messages, "{name}: messages differ");
        assert_eq!(split.error, whole.error, "{name}: error differs");
        if whole.error.is_none() {
            assert_eq!(split.left, whole.left, "{name}: leftover differs");
        }
    }
});
