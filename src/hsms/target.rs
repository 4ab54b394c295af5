//! Which backends HSMS sessions should use: the instances of the version the HTTP active pool
//! serves that have an HSMS address. When that version has none, sessions hold on the version they
//! are on (found in either pool), and the hold says why.

use std::sync::Arc;

use crate::core::{Instance, Snapshot};

/// The version HSMS sessions should be on and the instances that can serve it.
#[derive(Debug, Clone)]
pub struct Target {
    pub version: String,
    pub instances: Vec<Arc<Instance>>,
    /// Set when the sessions stay on `version` although the active pool serves another.
    pub hold: Option<String>,
}

/// The target for a session on `serving` (its current version, if any).
pub fn choose(snap: &Snapshot, serving: Option<&str>) -> Option<Target> {
    let with_hsms = |version: &str| -> Vec<Arc<Instance>> {
        snap.active
            .members
            .iter()
            .chain(&snap.standby.members)
            .filter(|m| m.instance.version == version && m.instance.hsms.is_some())
            .map(|m| Arc::clone(&m.instance))
            .collect()
    };
    if let Some(active) = snap.active.version.as_deref() {
        let instances: Vec<Arc<Instance>> = snap
            .active
            .members
            .iter()
            .filter(|m| m.instance.hsms.is_some())
            .map(|m| Arc::clone(&m.instance))
            .collect();
        if !instances.is_empty() {
            return Some(Target {
                version: active.to_string(),
                instances,
                hold: None,
            });
        }
        let serving = serving?;
        let instances = with_hsms(serving);
        return (!instances.is_empty()).then(|| Target {
            version: serving.to_string(),
            instances,
            hold: Some(format!(
                "version {active} has no HSMS instance (no `hsms` address / Meta.hsms_port): HSMS stays on {serving}"
            )),
        });
    }
    // No single active version (empty pool or mixed versions allowed): only a current version
    // may continue.
    let serving = serving?;
    let instances = with_hsms(serving);
    (!instances.is_empty()).then(|| Target {
        version: serving.to_string(),
        instances,
        hold: Some(format!(
            "the active pool has no single version: HSMS stays on {serving}"
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Endpoint, Member, Pool};

    fn pool(list: &[(&str, &str, bool)]) -> Pool {
        let members = list
            .iter()
            .map(|(id, v, hsms)| Member {
                instance: Arc::new(Instance {
                    id: id.to_string(),
                    address: format!("{id}:80"),
                    version: v.to_string(),
                    tags: vec![],
                    hsms: hsms.then(|| format!("{id}:5000")),
                }),
                endpoint: Arc::new(Endpoint::new(format!("{id}:80"))),
            })
            .collect();
        Pool::new(members, None)
    }

    fn snap(active: Pool, standby: Pool) -> Snapshot {
        let mut s = Snapshot::empty();
        s.active = active;
        s.standby = standby;
        s
    }

    #[test]
    fn follows_the_active_version_when_it_has_hsms() {
        let s = snap(
            pool(&[("a", "v2", true), ("b", "v2", false)]),
            pool(&[("c", "v1", true)]),
        );
        let t = choose(&s, Some("v1")).unwrap();
        assert_eq!(t.version, "v2");
        assert_eq!(t.instances.len(), 1);
        assert_eq!(t.instances[0].id, "a");
        assert!(t.hold.is_none());
    }

    #[test]
    fn holds_on_the_serving_version_when_the_active_one_has_no_hsms() {
        let s = snap(pool(&[("a", "v2", false)]), pool(&[("c", "v1", true)]));
        let t = choose(&s, Some("v1")).unwrap();
        assert_eq!(t.version, "v1");
        assert_eq!(t.instances[0].id, "c");
        assert!(t.hold.unwrap().contains("v2 has no HSMS instance"));
        // A new session (serving nothing) has nowhere to go.
        assert!(choose(&s, None).is_none());
    }

    #[test]
    fn nothing_without_any_hsms_instance() {
        let s = snap(pool(&[]), pool(&[]));
        assert!(choose(&s, Some("v1")).is_none());
    }
}
