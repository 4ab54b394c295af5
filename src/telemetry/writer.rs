//! Log output that keeps the access log's `write` off the request path.
//!
//! Access-log lines (target `zerodown::access`) are appended to a buffer in memory, and a writer
//! thread writes what gathered in one `write` within [`BATCH`] (nginx's `access_log ... buffer=`,
//! without its loss on a crash: see below). Every other event writes the buffer and itself through
//! at once, so warnings and errors are never delayed and the lines stay in order. Lines are not
//! dropped: past [`MAX_BUFFERED`] (stdout blocked, e.g. a full pipe) the appending thread writes
//! the buffer itself and waits, as a plain stdout would have.
//!
//! What can be lost is what a crash (a signal, an abort) finds in the buffer: at most [`BATCH`]
//! of access lines. A panic flushes (see [`flush`]), and a clean exit logs "stopped" last, which
//! writes everything before it.

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long access lines may wait in memory.
pub const BATCH: Duration = Duration::from_millis(20);
/// A buffer this large is written at once by the thread that filled it.
pub const MAX_BUFFERED: usize = 256 * 1024;

const ACCESS: &str = "zerodown::access";

struct Shared {
    buf: Mutex<Vec<u8>>,
    /// Signalled when the buffer stops being empty.
    filled: Condvar,
    /// Held while writing, so two writers' batches cannot cross.
    out: Mutex<std::io::Stdout>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        let s = Shared {
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            filled: Condvar::new(),
            out: Mutex::new(std::io::stdout()),
        };
        // Without the thread, access lines are written through like any other line.
        let _ = std::thread::Builder::new()
            .name("zerodown-log".into())
            .spawn(batcher);
        s
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both hold plain bytes or a handle; a poisoned lock still holds something usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The writer thread: waits for a first line, lets a batch gather, writes it.
fn batcher() {
    let s = shared();
    loop {
        {
            let mut buf = lock(&s.buf);
            while buf.is_empty() {
                buf = s.filled.wait(buf).unwrap_or_else(|p| p.into_inner());
            }
        }
        std::thread::sleep(BATCH);
        write_out(s);
    }
}

/// Writes everything buffered to stdout.
fn write_out(s: &Shared) {
    let mut out = lock(&s.out);
    let batch = std::mem::take(&mut *lock(&s.buf));
    // stdout gone (closed pipe): the lines have nowhere to go, as with a plain stdout.
    let _ = out.write_all(&batch).and_then(|()| out.flush());
    // Keep the allocation for the next batch.
    let mut buf = lock(&s.buf);
    if buf.is_empty() && buf.capacity() < batch.capacity() {
        let mut batch = batch;
        batch.clear();
        *buf = batch;
    }
}

/// Writes out whatever access lines wait in memory (at exit, on a panic).
pub fn flush() {
    if let Some(s) = SHARED.get() {
        write_out(s);
    }
}

/// The [`MakeWriter`] for the log subscriber.
pub struct Batched;

/// One event's output. The formatter hands over a whole line in one `write` (it formats into
/// its own buffer first), so lines from different threads never interleave.
pub struct Line {
    access: bool,
    /// Set by the write: the buffer goes out when this line is done (see [`Line::drop`]).
    write_through: bool,
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            access: false,
            write_through: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line {
            access: meta.target() == ACCESS,
            write_through: false,
        }
    }
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let s = shared();
        let mut buf = lock(&s.buf);
        if buf.is_empty() {
            s.filled.notify_one();
        }
        buf.extend_from_slice(b);
        self.write_through = !self.access || buf.len() >= MAX_BUFFERED;
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    /// Any line but an access line, or a full buffer: written now, everything before it first.
    fn drop(&mut self) {
        if self.write_through {
            write_out(shared());
        }
    }
}
