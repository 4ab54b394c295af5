//! The last switch `zerodown switch` made, kept beside what it switched — a file next to the
//! upstreams file, or a Consul key next to the selector — so `rollback` knows what to undo even
//! after the proxy restarted, and a second rollback sees the first one and changes nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};

use super::{Ctx, Mode, OpsError};
use crate::config::SourceConfig;
use crate::core::discovery::consul::ConsulError;

/// One switch, and whether it has been rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSwitch {
    /// The version that served before the switch: what a rollback brings back.
    pub from: String,
    pub to: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// When a rollback brought `from` back (Unix milliseconds), if one did.
    #[serde(default)]
    pub rolled_back_at_ms: Option<u64>,
}

/// The file beside the upstreams file: `upstreams.toml` keeps its record in
/// `upstreams.last-switch.json`.
pub fn file_beside(upstreams: &Path) -> PathBuf {
    upstreams.with_extension("last-switch.json")
}

/// The Consul key beside the selector key: `zerodown/<service>/active` keeps its record in
/// `zerodown/<service>/last-switch`.
pub fn key_beside(kv_key: &str) -> String {
    match kv_key.rsplit_once('/') {
        Some((dir, name)) if name != "last-switch" => format!("{dir}/last-switch"),
        _ => format!("{kv_key}.last-switch"),
    }
}

/// Where this context keeps its record, in words (for messages).
pub fn location(ctx: &Ctx) -> String {
    match (&ctx.mode, &ctx.cfg.source) {
        (Mode::File(path), _) => file_beside(path).display().to_string(),
        (_, SourceConfig::Consul(c)) => format!("Consul key {}", key_beside(&c.kv_key)),
        (_, SourceConfig::File(f)) => file_beside(&f.path).display().to_string(),
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the record; `None` when no switch was recorded.
pub async fn read(ctx: &Ctx) -> Result<Option<LastSwitch>, OpsError> {
    let text = match (&ctx.mode, &ctx.cfg.source) {
        (Mode::File(path), _) => {
            let path = file_beside(path);
            match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(error) => {
                    return Err(OpsError::File {
                        op: "read",
                        path,
                        error,
                    })
                }
            }
        }
        (mode, SourceConfig::Consul(c)) => {
            let consul = mode.consul().expect("consul modes have a client");
            let key = key_beside(&c.kv_key);
            let r = consul.get(&format!("/v1/kv/{key}?raw"), TIMEOUT).await?;
            match r.status.as_u16() {
                200 => String::from_utf8_lossy(&r.body).into_owned(),
                404 => return Ok(None),
                _ => {
                    return Err(
                        ConsulError::from_status(r.status, &r.body, &format!("key {key}")).into(),
                    )
                }
            }
        }
        (Mode::Kv { .. } | Mode::Nomad { .. }, SourceConfig::File(_)) => return Ok(None),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| OpsError::Record {
            at: location(ctx),
            error: e.to_string(),
        })
}

/// Writes the record, replacing the previous one.
pub async fn write(ctx: &Ctx, record: &LastSwitch) -> Result<(), OpsError> {
    let text = serde_json::to_string_pretty(record).unwrap_or_default() + "\n";
    match (&ctx.mode, &ctx.cfg.source) {
        (Mode::File(path), _) => super::change::write_atomically(&file_beside(path), &text),
        (mode, SourceConfig::Consul(c)) => {
            let consul = mode.consul().expect("consul modes have a client");
            let key = key_beside(&c.kv_key);
            let w = consul
                .call(
                    Method::PUT,
                    &format!("/v1/kv/{key}"),
                    Bytes::from(text),
                    TIMEOUT,
                )
                .await?;
            if w.status != 200 {
                return Err(
                    ConsulError::from_status(w.status, &w.body, &format!("key {key}")).into(),
                );
            }
            Ok(())
        }
        (Mode::Kv { .. } | Mode::Nomad { .. }, SourceConfig::File(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_sits_beside_what_it_describes() {
        assert_eq!(
            file_beside(Path::new("/etc/zerodown/upstreams.toml")),
            Path::new("/etc/zerodown/upstreams.last-switch.json")
        );
        assert_eq!(
            key_beside("zerodown/hello-service/active"),
            "zerodown/hello-service/last-switch"
        );
        assert_eq!(key_beside("selector"), "selector.last-switch");
        assert_eq!(key_beside("a/last-switch"), "a/last-switch.last-switch");
    }

    #[test]
    fn an_older_record_without_a_rollback_reads() {
        let r: LastSwitch = serde_json::from_str(r#"{"from":"v1","to":"v2","at_ms":5}"#).unwrap();
        assert_eq!(r.rolled_back_at_ms, None);
    }
}
