//! The gates every candidate set passes before it can serve, written once for all sources:
//! - **one version per pool**: while a pool's candidates hold several versions (as during every
//!   Nomad tag flip, which lands instance by instance), only the incumbent version serves, until
//!   none of it is left; then the newcomer takes over in one swap;
//! - **never empty**: a source reporting no instance for a pool does not empty it; the last
//!   non-empty set keeps serving, and the hold records since when.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use super::instance::Instance;

/// A gate decision in effect on a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hold {
    /// The source reports no instance; the previous members keep serving.
    Empty {
        #[serde(with = "unix_ms")]
        since: SystemTime,
    },
    /// Candidates hold other versions too; only `serving` routes until none of it is left.
    Version {
        serving: String,
        waiting: Vec<String>,
        #[serde(with = "unix_ms")]
        since: SystemTime,
    },
}

impl Hold {
    /// `empty` or `version`, as in the metrics' `kind` label.
    pub fn kind(&self) -> &'static str {
        match self {
            Hold::Empty { .. } => "empty",
            Hold::Version { .. } => "version",
        }
    }

    fn same_kind(&self, other: &Hold) -> bool {
        matches!(
            (self, other),
            (Hold::Empty { .. }, Hold::Empty { .. }) | (Hold::Version { .. }, Hold::Version { .. })
        )
    }

    fn since(&self) -> SystemTime {
        match self {
            Hold::Empty { since } | Hold::Version { since, .. } => *since,
        }
    }
}

/// What a pool serves now, as far as the gates care.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Current<'a> {
    pub empty: bool,
    /// The one version all members run, if they agree.
    pub version: Option<&'a str>,
}

/// What the gates decided for one pool.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Route to these instances (sorted).
    Serve {
        instances: Vec<Instance>,
        hold: Option<Hold>,
        /// Why, when a gate acted; logged with the swap.
        reason: Option<String>,
    },
    /// Keep the current members: the source reports none.
    KeepCurrent { hold: Hold },
}

/// Applies the gates to a pool's candidates, given what it serves now.
pub(crate) fn decide(
    mut candidates: Vec<Instance>,
    current: Current<'_>,
    current_hold: Option<&Hold>,
    single_version: bool,
    now: SystemTime,
) -> Verdict {
    // A hold that continues keeps its start time, so operators see how long it has lasted.
    let carry = |hold: Hold| match current_hold {
        Some(old) if old.same_kind(&hold) => with_since(hold, old.since()),
        _ => hold,
    };
    if candidates.is_empty() {
        if current.empty {
            return Verdict::Serve {
                instances: Vec::new(),
                hold: None,
                reason: None,
            };
        }
        return Verdict::KeepCurrent {
            hold: carry(Hold::Empty { since: now }),
        };
    }
    candidates.sort();
    candidates.dedup();
    let counts = version_counts(&candidates);
    if !single_version || counts.len() == 1 {
        return Verdict::Serve {
            instances: candidates,
            hold: None,
            reason: None,
        };
    }
    let incumbent = current
        .version
        .filter(|v| counts.contains_key(v))
        .map(str::to_string);
    let (chosen, reason) = match incumbent {
        Some(v) => (v, None),
        None => {
            let chosen = pick_newcomer(&counts);
            let reason = format!(
                "no incumbent version among candidates {}: chose {chosen} (most instances, then highest)",
                describe(&counts)
            );
            (chosen, Some(reason))
        }
    };
    let waiting = counts
        .keys()
        .filter(|v| **v != chosen)
        .map(|v| v.to_string())
        .collect();
    candidates.retain(|i| i.version == chosen);
    Verdict::Serve {
        instances: candidates,
        hold: Some(carry(Hold::Version {
            serving: chosen,
            waiting,
            since: now,
        })),
        reason,
    }
}

fn with_since(hold: Hold, since: SystemTime) -> Hold {
    match hold {
        Hold::Empty { .. } => Hold::Empty { since },
        Hold::Version {
            serving, waiting, ..
        } => Hold::Version {
            serving,
            waiting,
            since,
        },
    }
}

fn version_counts(instances: &[Instance]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for i in instances {
        *counts.entry(i.version.as_str()).or_insert(0) += 1;
    }
    counts
}

fn pick_newcomer(counts: &BTreeMap<&str, usize>) -> String {
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| version_order(a.0, b.0)))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

fn describe(counts: &BTreeMap<&str, usize>) -> String {
    let parts: Vec<String> = counts.iter().map(|(v, n)| format!("{v}×{n}")).collect();
    parts.join(", ")
}

/// Orders versions with digit runs compared as numbers, so `v10` > `v9` and `1.10.0` > `1.9.3`.
pub fn version_order(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let la = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let lb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let na = trim_zeros(&a[..la]);
                let nb = trim_zeros(&b[..lb]);
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[la..];
                b = &b[lb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n..]
}

pub(crate) mod unix_ms {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        s.serialize_u64(ms as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn inst(id: &str, version: &str) -> Instance {
        Instance::for_tests(id, version)
    }

    fn cur(list: &[Instance]) -> Current<'_> {
        let version = list
            .first()
            .map(|f| f.version.as_str())
            .filter(|v| list.iter().all(|i| i.version == *v));
        Current {
            empty: list.is_empty(),
            version,
        }
    }

    fn served(v: Verdict) -> Vec<String> {
        match v {
            Verdict::Serve { instances, .. } => instances.into_iter().map(|i| i.id).collect(),
            Verdict::KeepCurrent { .. } => vec!["<kept>".into()],
        }
    }

    #[test]
    fn incumbent_keeps_serving_while_any_of_it_is_left() {
        let now = SystemTime::now();
        let current = vec![inst("a", "v1"), inst("b", "v1")];
        let mixed = vec![inst("a", "v1"), inst("c", "v2")];
        let v = decide(mixed, cur(&current), None, true, now);
        assert_eq!(served(v), vec!["a"]);
        // The last v1 instance leaves: v2 takes over in one step.
        let v = decide(
            vec![inst("c", "v2"), inst("d", "v2")],
            cur(&current),
            None,
            true,
            now,
        );
        assert_eq!(served(v), vec!["c", "d"]);
    }

    #[test]
    fn version_hold_records_waiting_versions_and_keeps_its_start() {
        let t0 = SystemTime::now();
        let current = vec![inst("a", "v1")];
        let Verdict::Serve { hold: Some(h), .. } = decide(
            vec![inst("a", "v1"), inst("b", "v2")],
            cur(&current),
            None,
            true,
            t0,
        ) else {
            panic!("expected a version hold")
        };
        assert_eq!(
            h,
            Hold::Version {
                serving: "v1".into(),
                waiting: vec!["v2".into()],
                since: t0
            }
        );
        let later = t0 + Duration::from_secs(5);
        let Verdict::Serve { hold: Some(h2), .. } = decide(
            vec![inst("a", "v1"), inst("b", "v2")],
            cur(&current),
            Some(&h),
            true,
            later,
        ) else {
            panic!("expected a version hold")
        };
        assert_eq!(h2.since(), t0);
    }

    #[test]
    fn without_incumbent_most_instances_win_then_highest() {
        let now = SystemTime::now();
        let c = vec![inst("a", "v2"), inst("b", "v3"), inst("cc", "v3")];
        let Verdict::Serve {
            instances, reason, ..
        } = decide(c, cur(&[]), None, true, now)
        else {
            panic!()
        };
        assert!(instances.iter().all(|i| i.version == "v3"));
        assert!(reason.unwrap().contains("chose v3"));
        let tie = vec![inst("a", "v9"), inst("b", "v10")];
        let Verdict::Serve { instances, .. } = decide(tie, cur(&[]), None, true, now) else {
            panic!()
        };
        assert_eq!(instances[0].version, "v10");
    }

    #[test]
    fn single_version_off_serves_all() {
        let c = vec![inst("a", "v1"), inst("b", "v2")];
        assert_eq!(
            served(decide(
                c,
                cur(&[inst("a", "v1")]),
                None,
                false,
                SystemTime::now()
            )),
            vec!["a", "b"]
        );
    }

    #[test]
    fn empty_candidates_keep_current_but_first_load_may_be_empty() {
        let now = SystemTime::now();
        assert!(matches!(
            decide(vec![], cur(&[inst("a", "v1")]), None, true, now),
            Verdict::KeepCurrent {
                hold: Hold::Empty { .. }
            }
        ));
        assert_eq!(
            served(decide(vec![], cur(&[]), None, true, now)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn versions_order_numerically() {
        assert_eq!(version_order("v10", "v9"), Ordering::Greater);
        assert_eq!(version_order("1.10.0", "1.9.3"), Ordering::Greater);
        assert_eq!(version_order("v1", "v1"), Ordering::Equal);
        assert_eq!(version_order("v01", "v1"), Ordering::Equal);
        assert_eq!(version_order("a", "b"), Ordering::Less);
    }
}
