//! KV operations on the store, with Consul's index rules: a present key reports its own
//! `ModifyIndex`, a missing key reports the KV table index (which deletions also move), so a
//! reader blocked on a missing key wakes when any key changes.

use super::state::Store;

/// A stored KV entry, as tests see it through `ConsulDouble::kv_get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub session: Option<String>,
}

impl Store {
    /// The entry and the index a read reports (≥ 1).
    pub fn kv_get(&self, key: &str) -> (u64, Option<KvEntry>) {
        match self.kv.get(key) {
            Some(e) => (e.modify_index.max(1), Some(e.clone())),
            None => (self.kv_index.max(1), None),
        }
    }

    /// Every entry under `prefix` (`?recurse`); the index is the table index.
    pub fn kv_list(&self, prefix: &str) -> (u64, Vec<KvEntry>) {
        let entries = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect();
        (self.kv_index.max(1), entries)
    }

    /// Writes `key`; with `cas`, only if the key's `ModifyIndex` equals it (0: only if absent).
    /// A failed check-and-set is not a write: it returns `false` and moves no index.
    pub fn kv_put(&mut self, key: &str, value: Vec<u8>, flags: u64, cas: Option<u64>) -> bool {
        let current = self.kv.get(key).map(|e| e.modify_index);
        match (cas, current) {
            (Some(0), Some(_)) => return false,
            (Some(n), Some(m)) if n != m => return false,
            (Some(n), None) if n != 0 => return false,
            _ => {}
        }
        let idx = self.bump();
        let create_index = self.kv.get(key).map_or(idx, |e| e.create_index);
        let entry = KvEntry {
            key: key.to_string(),
            value,
            flags,
            create_index,
            modify_index: idx,
            lock_index: 0,
            session: None,
        };
        self.kv.insert(key.to_string(), entry);
        self.kv_index = idx;
        true
    }

    /// Deletes `key` (or the whole prefix with `recurse`). With `cas`, the key's
    /// `ModifyIndex` must match; deleting a missing key with `cas` succeeds, as in Consul.
    pub fn kv_delete(&mut self, key: &str, cas: Option<u64>, recurse: bool) -> bool {
        if let Some(n) = cas {
            match self.kv.get(key) {
                None => return true,
                Some(e) if e.modify_index != n => return false,
                Some(_) => {}
            }
        }
        let idx = self.bump();
        let doomed: Vec<String> = if recurse {
            let (_, entries) = self.kv_list(key);
            entries.into_iter().map(|e| e.key).collect()
        } else {
            self.kv
                .get(key)
                .map(|e| e.key.clone())
                .into_iter()
                .collect()
        };
        for k in &doomed {
            self.kv.remove(k);
        }
        if !doomed.is_empty() {
            self.kv_index = idx; // the tombstone keeps the table index moving forward
        }
        true
    }

    /// An idempotent write to `key` (churn): a new index, the same value.
    pub fn touch_key(&mut self, key: &str) -> u64 {
        let idx = self.bump();
        if let Some(e) = self.kv.get_mut(key) {
            e.modify_index = idx;
        }
        self.kv_index = idx;
        idx
    }
}
