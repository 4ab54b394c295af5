//! Fault injection: rules that make the next N matching requests (or all, until cleared)
//! fail the way a Nomad agent does: error statuses, delays, a registration that loses its
//! `EnforceIndex` race, a plan that reports a destructive update.

use std::time::Duration;

/// One way for a request to go wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NomadFault {
    /// Answer with this status and `text/plain` body instead of serving the request.
    Status(u16, &'static str),
    /// Hold the request this long before serving it.
    Delay(Duration),
    /// Only job registrations match: just before serving one, another writer registers
    /// the job (its `JobModifyIndex` and `ModifyIndex` move on, the spec is unchanged), so
    /// an `EnforceIndex` based on an earlier read conflicts.
    EnforceConflict,
    /// Only plans match: the plan reports a destructive update of every allocation of this group,
    /// as Nomad does when a change reaches a task's config (operators' hand edits, a driver
    /// upgrade), whatever the submitted job says.
    DestructivePlan(&'static str),
}

impl NomadFault {
    pub const NO_LEADER: NomadFault = NomadFault::Status(500, "No cluster leader");
    pub const PERMISSION_DENIED: NomadFault = NomadFault::Status(403, "Permission denied");
    pub const ACL_TOKEN_NOT_FOUND: NomadFault = NomadFault::Status(403, "ACL token not found");
}

/// Active rules: the kit's rule bookkeeping over Nomad's faults.
pub(crate) type Rules = crate::kit::Rules<NomadFault>;

/// What goes wrong with one request; the first rule of each kind wins.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    pub status: Option<(u16, &'static str)>,
    pub delay: Option<Duration>,
    pub conflict: bool,
    pub destructive: Option<&'static str>,
}

/// The plan for a request to `path`, consuming one use of each matching rule.
/// `register`: the request is a job registration (the only target of conflicts).
pub(crate) fn take(rules: &mut Rules, path: &str, register: bool) -> Plan {
    let mut plan = Plan::default();
    let plan_request = path.ends_with("/plan");
    let applies = |f: &NomadFault| match f {
        NomadFault::EnforceConflict => register,
        NomadFault::DestructivePlan(_) => plan_request,
        _ => true,
    };
    for fault in rules.consume(path, applies) {
        match fault {
            NomadFault::Status(code, text) => {
                plan.status.get_or_insert((code, text));
            }
            NomadFault::Delay(d) => {
                plan.delay.get_or_insert(d);
            }
            NomadFault::EnforceConflict => plan.conflict = true,
            NomadFault::DestructivePlan(g) => {
                plan.destructive.get_or_insert(g);
            }
        }
    }
    plan
}
