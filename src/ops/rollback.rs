//! `zerodown rollback`: undo the last switch — make the version that served before it active
//! again — and nothing else. The target comes from the switch record (see [`super::record`]),
//! else from the proxy's swap history; a rollback that finds its target already serving changes
//! nothing and says so, so running it twice never puts the bad version back.

use super::record::{self, LastSwitch};
use super::switch::{switch_to, Switched};
use super::{Ctx, OpsError};
use crate::admin::status::StatusDoc;

/// Switches back to the version that served before the last switch, with the switch's checks.
pub async fn rollback(ctx: &Ctx, force: bool) -> Result<Switched, OpsError> {
    let status = ctx.proxy_status().await?;
    let serving = status.pools.active.version.clone();
    let last = match record::read(ctx).await? {
        Some(r) => r,
        None => from_history(ctx, &status, serving.as_deref())?,
    };
    decide(ctx, &last, serving.as_deref())?;
    let (mut done, hsms) = switch_to(ctx, force, Some(&last.from)).await?;
    let rolled_back = LastSwitch {
        rolled_back_at_ms: Some(super::now_ms()),
        ..last
    };
    if let Err(e) = record::write(ctx, &rolled_back).await {
        done.notes.push(format!(
            "the rollback was not recorded in {} ({e}): a second rollback could not tell it happened; do not repeat it",
            record::location(ctx)
        ));
    }
    hsms.map(|()| done)
}

/// Without a record (no `zerodown switch` since the record was kept): the proxy's last version
/// change of the active pool, if it saw one since it started.
fn from_history(
    ctx: &Ctx,
    status: &StatusDoc,
    serving: Option<&str>,
) -> Result<LastSwitch, OpsError> {
    status
        .swaps
        .iter()
        .rev()
        .find(|s| {
            let (old, new) = (&s.active.old_version, &s.active.new_version);
            new.as_deref() == serving && old.is_some() && old != new
        })
        .map(|s| LastSwitch {
            from: s.active.old_version.clone().unwrap_or_default(),
            to: s.active.new_version.clone().unwrap_or_default(),
            at_ms: s.at,
            rolled_back_at_ms: None,
        })
        .ok_or_else(|| {
            OpsError::refused(format!(
                "no switch is recorded ({}) and the proxy has not changed its active version since it started: there is nothing to roll back, and nothing was changed (zerodown switch makes the standby version active)",
                record::location(ctx)
            ))
        })
}

/// Goes ahead only when the version the last switch brought is still the one serving.
fn decide(ctx: &Ctx, last: &LastSwitch, serving: Option<&str>) -> Result<(), OpsError> {
    let LastSwitch {
        from,
        to,
        at_ms,
        rolled_back_at_ms,
    } = last;
    let when = super::ago(*at_ms);
    match serving {
        Some(v) if v == to => Ok(()),
        Some(v) if v == from => {
            let undone = match rolled_back_at_ms {
                Some(t) => format!("rolled back {}", super::ago(*t)),
                None => "undone another way since".to_string(),
            };
            Err(OpsError::NothingToDo {
                reason: format!(
                    "{from} already serves /hello: the last switch ({from} -> {to}, {when}) was {undone}; nothing was changed (zerodown switch makes {to} active again)"
                ),
            })
        }
        other => Err(OpsError::refused(format!(
            "the proxy serves {}, but the last switch ({}) went {from} -> {to} ({when}): the active version changed another way since, so there is no switch to undo; nothing was changed (zerodown status shows what serves; zerodown switch makes the standby version active)",
            other.unwrap_or("nothing"),
            record::location(ctx)
        ))),
    }
}
