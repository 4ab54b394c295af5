//! Fault rules: which requests a double's injected faults still apply to. Each double has
//! its own fault type and its own mapping from faults to what goes wrong.

/// How many matching requests a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    Next(usize),
    Always,
}

/// One injected fault and how many more requests it applies to (`None`: until cleared).
#[derive(Debug)]
struct Rule<F> {
    fault: F,
    prefix: String,
    remaining: Option<usize>,
}

/// Active rules, consumed as requests arrive.
#[derive(Debug)]
pub(crate) struct Rules<F> {
    rules: Vec<Rule<F>>,
}

impl<F> Default for Rules<F> {
    fn default() -> Self {
        Rules { rules: Vec::new() }
    }
}

impl<F: Clone> Rules<F> {
    pub fn add(&mut self, prefix: &str, fault: F, times: Times) {
        let remaining = match times {
            Times::Next(0) => return,
            Times::Next(n) => Some(n),
            Times::Always => None,
        };
        let prefix = prefix.to_string();
        self.rules.push(Rule {
            fault,
            prefix,
            remaining,
        });
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The faults of every rule matching `path` that `applies` accepts, in the order injected,
    /// each consuming one use; spent rules are dropped.
    pub fn consume(&mut self, path: &str, applies: impl Fn(&F) -> bool) -> Vec<F> {
        let mut out = Vec::new();
        for rule in self
            .rules
            .iter_mut()
            .filter(|r| path.starts_with(&r.prefix) && applies(&r.fault))
        {
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            out.push(rule.fault.clone());
        }
        self.rules.retain(|r| r.remaining != Some(0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_used_up_per_matching_request() {
        let mut rules = Rules::default();
        rules.add("/v1/health/", 'a', Times::Next(2));
        rules.add("/", 'b', Times::Always);
        rules.add("/", 'c', Times::Next(0));
        let vowel = |f: &char| *f == 'a';
        assert_eq!(rules.consume("/v1/kv/x", |_| true), vec!['b']);
        assert_eq!(rules.consume("/v1/health/service/web", vowel), vec!['a']);
        assert_eq!(
            rules.consume("/v1/health/service/web", |_| true),
            vec!['a', 'b']
        );
        assert_eq!(rules.consume("/v1/health/service/web", |_| true), vec!['b']);
        rules.clear();
        assert!(rules.consume("/", |_| true).is_empty());
    }
}
