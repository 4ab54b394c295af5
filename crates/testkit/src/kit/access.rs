//! ACL token tables and the log of received requests, over each double's own types.

use std::collections::HashMap;
use std::sync::Mutex;

use super::lock;

/// ACL tokens: off until a required token is set; then every token has a policy `P`. What
/// an unknown or missing token may do is each API's own rule.
#[derive(Debug)]
pub(crate) struct Acl<P> {
    enabled: bool,
    tokens: HashMap<String, P>,
}

impl<P> Default for Acl<P> {
    fn default() -> Self {
        Acl {
            enabled: false,
            tokens: HashMap::new(),
        }
    }
}

impl<P: Copy> Acl<P> {
    /// Turns ACLs on with `token` holding `full`, or off with `None` (tokens are kept).
    pub fn require(&mut self, token: Option<&str>, full: P) {
        self.enabled = token.is_some();
        if let Some(t) = token {
            self.tokens.insert(t.to_string(), full);
        }
    }

    /// Adds a token (effective while ACLs are on).
    pub fn add(&mut self, token: &str, policy: P) {
        self.tokens.insert(token.to_string(), policy);
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The policy of a known token.
    pub fn get(&self, token: &str) -> Option<P> {
        self.tokens.get(token).copied()
    }
}

/// Every request a double received, oldest first, for assertions.
pub(crate) struct RequestLog<R>(Mutex<Vec<R>>);

impl<R> Default for RequestLog<R> {
    fn default() -> Self {
        RequestLog(Mutex::default())
    }
}

impl<R: Clone> RequestLog<R> {
    pub fn push(&self, request: R) {
        lock(&self.0).push(request);
    }

    pub fn all(&self) -> Vec<R> {
        lock(&self.0).clone()
    }

    pub fn clear(&self) {
        lock(&self.0).clear();
    }
}
