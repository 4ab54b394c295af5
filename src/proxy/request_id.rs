//! Request ids for requests that arrive without `X-Request-Id`: a random per-process prefix and a
//! counter, unique without coordination and cheap on the request path.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

#[derive(Debug)]
pub struct Generator {
    prefix: u32,
    counter: AtomicU64,
}

impl Default for Generator {
    fn default() -> Self {
        Generator::new()
    }
}

impl Generator {
    pub fn new() -> Generator {
        Generator {
            prefix: fastrand::u32(..),
            counter: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:08x}{:012x}", self.prefix, n & 0xffff_ffff_ffff);
        HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_distinct() {
        let g = super::Generator::new();
        assert_ne!(g.next(), g.next());
        assert_eq!(g.next().len(), 20);
    }
}
