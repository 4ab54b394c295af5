//! `zerodown switch` and `zerodown rollback`: make the standby group active (and the active group
//! standby) through whatever the proxy watches — the upstreams file, the Consul KV selector, or the
//! Nomad job's service tags — after checking the standby group can serve, then wait until the proxy
//! serves the new version on `/hello`. A switch is recorded (see [`super::record`]) so that
//! `rollback` can undo exactly it.

use std::time::Duration;

use super::record::{self, LastSwitch};
use super::{change, probe, wait_for_proxy, Ctx, Mode, OpsError};
use crate::admin::status::{HoldDoc, PoolDoc, StatusDoc};

const STANDBY_EMPTY: &str = "the standby pool is empty: there is nothing to switch to (put a version on standby first: zerodown deploy VERSION --image IMAGE under Nomad, or tag its instances standby in the source)";

/// What a successful switch did.
#[derive(Debug)]
pub struct Switched {
    pub from: String,
    pub to: String,
    pub elapsed: Duration,
    pub how: String,
    /// What the HSMS sessions did, when the proxy has an HSMS listener.
    pub hsms: Option<String>,
    /// Anything else the operator should know (e.g. the switch could not be recorded).
    pub notes: Vec<String>,
}

fn version_of(pool: &PoolDoc) -> Option<String> {
    pool.version.clone()
}

/// Refuses unless every standby instance passes in Consul and answers its probe.
async fn check_standby(ctx: &Ctx, status: &StatusDoc) -> Result<(), OpsError> {
    let standby = &status.pools.standby.instances;
    if standby.is_empty() {
        return Err(OpsError::refused(STANDBY_EMPTY));
    }
    let consul = ctx.consul_entries().await?;
    let mut problems = Vec::new();
    // Instances Consul tags standby but fails are already out of the proxy's pool: still refuse.
    if matches!(ctx.mode, Mode::Nomad { .. }) {
        for e in consul.iter().filter(|e| !e.passing) {
            if e.tags
                .iter()
                .any(|t| t.eq_ignore_ascii_case(ctx.standby_tag()))
            {
                problems.push(format!(
                    "{} ({}) is tagged {} but not passing in Consul: {}",
                    e.id,
                    e.address,
                    ctx.standby_tag(),
                    e.health
                ));
            }
        }
    }
    for i in standby {
        let (id, addr) = (i.id.as_str(), i.address.as_str());
        if ctx.mode.consul().is_some() {
            match consul.iter().find(|e| e.id == id) {
                None => problems.push(format!("{id} ({addr}) is no longer registered in Consul")),
                Some(e) if !e.passing => problems.push(format!(
                    "{id} ({addr}) is not passing in Consul: {}",
                    e.health
                )),
                Some(_) => {}
            }
        }
        match probe(addr).await {
            Ok(a) if a.status == 200 => {}
            Ok(a) => problems.push(format!(
                "{id} ({addr}) answered {} to GET /hello: {}",
                a.status,
                a.excerpt(60)
            )),
            Err(e) => problems.push(format!("{id} ({addr}) does not answer: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(OpsError::refused(format!(
            "the standby group is not ready, so nothing was changed:\n  - {}\n(fix it, or pass --force to switch anyway)",
            problems.join("\n  - ")
        )))
    }
}

/// Refuses while a gate holds either pool: the source and the proxy disagree already (a flip in
/// progress, or a pool the source reports empty), so a switch now would not end where it says.
fn check_holds(status: &StatusDoc) -> Result<(), OpsError> {
    let held: Vec<String> = status
        .pools
        .named()
        .into_iter()
        .filter_map(|(name, pool)| {
            pool.hold.as_ref().map(|h| match h {
                HoldDoc::Empty { since } => format!(
                    "the {name} pool: the source lists no instance for it (held {})",
                    super::ago(*since)
                ),
                HoldDoc::Version {
                    serving,
                    waiting,
                    since,
                } => format!(
                    "the {name} pool: the source lists {} beside {serving}; the gate keeps {serving} (held {})",
                    waiting.join(", "),
                    super::ago(*since)
                ),
            })
        })
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    Err(OpsError::refused(format!(
        "the proxy's gates hold, so the source and the proxy already disagree; nothing was changed:\n  - {}\n(fix the source — zerodown status shows it — or pass --force)",
        held.join("\n  - ")
    )))
}

/// Makes the standby group active and records the switch, so `rollback` can undo it.
/// `expect_to`, when given, must be the standby version.
pub async fn switch(ctx: &Ctx, force: bool, expect_to: Option<&str>) -> Result<Switched, OpsError> {
    let (mut done, hsms) = switch_to(ctx, force, expect_to).await?;
    let record = LastSwitch {
        from: done.from.clone(),
        to: done.to.clone(),
        at_ms: super::now_ms(),
        rolled_back_at_ms: None,
    };
    if let Err(e) = record::write(ctx, &record).await {
        done.notes.push(format!(
            "the switch was not recorded in {} ({e}): a rollback will rely on the proxy's swap history",
            record::location(ctx)
        ));
    }
    hsms.map(|()| done)
}

/// The switch itself; the HSMS outcome apart, since the HTTP switch stands (and is recorded) even
/// when an HSMS session did not follow.
pub(super) async fn switch_to(
    ctx: &Ctx,
    force: bool,
    expect_to: Option<&str>,
) -> Result<(Switched, Result<(), OpsError>), OpsError> {
    let status = ctx.proxy_status().await?;
    let (from, to) = versions(&status, force, expect_to)?;
    if !force {
        check_holds(&status)?;
        check_standby(ctx, &status).await?;
    }
    let change = change::apply(ctx, &status, &to, force).await?;
    let how = change.describe(ctx);
    let elapsed = match wait_for_proxy(ctx, &format!("{to} serving /hello"), |s| {
        s.pools.active.version.as_deref() == Some(to.as_str())
    })
    .await
    {
        Ok(e) => e,
        Err(cause) => {
            return Err(OpsError::NotApplied {
                cause: Box::new(cause),
                outcome: change.undo(ctx).await,
            })
        }
    };
    let (hsms, hsms_result) = match super::hsms::wait_for_sessions(ctx, &to).await {
        Ok(h) => (h, Ok(())),
        Err(cause) => (
            None,
            Err(OpsError::NotApplied {
                cause: Box::new(cause),
                outcome: format!(
                    "the switch itself stands ({how}; /hello serves {to}); to go back: zerodown rollback"
                ),
            }),
        ),
    };
    let done = Switched {
        from,
        to,
        elapsed,
        how,
        hsms,
        notes: Vec::new(),
    };
    Ok((done, hsms_result))
}

/// The versions a switch goes from and to, refusing when there is nothing (or, with `expect_to`,
/// not the expected version) to switch to. `force` switches to an empty or mixed standby anyway.
fn versions(
    status: &StatusDoc,
    force: bool,
    expect_to: Option<&str>,
) -> Result<(String, String), OpsError> {
    let standby = &status.pools.standby;
    if standby.instances.is_empty() && !force {
        return Err(OpsError::refused(STANDBY_EMPTY));
    }
    let from = version_of(&status.pools.active).unwrap_or_else(|| "none".into());
    let to = match (version_of(standby), force) {
        (Some(v), _) => v,
        (None, false) => return Err(OpsError::refused(
            "the standby pool has no single version to switch to (is it empty or mixed? see zerodown status)",
        )),
        (None, true) => "unknown".into(),
    };
    if let Some(want) = expect_to {
        if want != to {
            return Err(OpsError::refused(format!(
                "the version that served before is {want}, but the standby group runs {to}: a rollback would not bring {want} back (deploy it to standby first)"
            )));
        }
    }
    Ok((from, to))
}
