//! Which member of a pool to try next: round-robin, skipping members already tried for this request
//! and ejected ones. If every untried member is ejected, they are tried anyway: a possibly-recovered
//! instance beats a certain 502 (Envoy's "panic mode"), and it never falls back to the other pool.

use crate::core::Pool;

/// Members tried for one request, as a small bit set (pools above 64 members fall back to a list).
#[derive(Debug, Default)]
pub struct Tried {
    bits: u64,
    more: Vec<usize>,
}

impl Tried {
    pub fn insert(&mut self, i: usize) {
        if i < 64 {
            self.bits |= 1 << i;
        } else {
            self.more.push(i);
        }
    }

    pub fn remove(&mut self, i: usize) {
        if i < 64 {
            self.bits &= !(1 << i);
        } else {
            self.more.retain(|&x| x != i);
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        if i < 64 {
            self.bits & (1 << i) != 0
        } else {
            self.more.contains(&i)
        }
    }
}

/// The index of the next member to try, starting at `start` (the pool's round-robin cursor).
pub fn pick(pool: &Pool, start: usize, tried: &Tried) -> Option<usize> {
    let n = pool.members.len();
    if n == 0 {
        return None;
    }
    let mut fallback = None;
    for k in 0..n {
        let i = (start + k) % n;
        if tried.contains(i) {
            continue;
        }
        if !pool.members[i].endpoint.health.is_ejected() {
            return Some(i);
        }
        fallback.get_or_insert(i);
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Endpoint;
    use crate::core::{Instance, Member};
    use std::sync::Arc;
    use std::time::Duration;

    fn pool(n: usize) -> Pool {
        let members = (0..n)
            .map(|i| Member {
                instance: Arc::new(Instance {
                    id: format!("i{i}"),
                    address: format!("127.0.0.1:{}", 1000 + i),
                    version: "v1".into(),
                    tags: vec![],
                    hsms: None,
                }),
                endpoint: Arc::new(Endpoint::new(format!("127.0.0.1:{}", 1000 + i))),
            })
            .collect();
        Pool::new(members, None)
    }

    #[test]
    fn round_robin_skips_tried_and_ejected() {
        let p = pool(3);
        let mut tried = Tried::default();
        assert_eq!(pick(&p, 4, &tried), Some(1));
        tried.insert(1);
        assert_eq!(pick(&p, 4, &tried), Some(2));
        p.members[2]
            .endpoint
            .health
            .record_failure(1, Duration::from_secs(60));
        assert_eq!(pick(&p, 4, &tried), Some(0));
        tried.insert(0);
        // Only an ejected member is left: still tried rather than failing.
        assert_eq!(pick(&p, 4, &tried), Some(2));
        tried.insert(2);
        assert_eq!(pick(&p, 4, &tried), None);
    }

    #[test]
    fn tried_handles_large_pools() {
        let mut t = Tried::default();
        t.insert(3);
        t.insert(200);
        assert!(t.contains(3) && t.contains(200) && !t.contains(4) && !t.contains(201));
        assert_eq!(pick(&Pool::empty(), 0, &t), None);
    }
}
