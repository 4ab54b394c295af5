//! Why an operator command failed or refused. The text of each variant is what the operator reads
//! after `zerodown: <command> refused or failed:`, so it names the cause and, where there is one,
//! the fix.

use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;

use crate::config::{ConfigError, SetupError};
use crate::core::discovery::consul::ConsulError;

use super::http::FetchError;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The config cannot be put to use (a token or TLS file, the Consul client).
    #[error(transparent)]
    Config(#[from] SetupError),
    /// A flag, variable or setting the command needs is missing or invalid.
    #[error("{0}")]
    Usage(String),
    /// The proxy's admin API did not answer.
    #[error("the proxy's admin API: {error} (is zerodown running? pass --admin ADDR)")]
    AdminUnreachable { error: FetchError },
    /// The proxy's admin API answered with an error status.
    #[error("the proxy's admin API answered {status}: {excerpt}")]
    AdminStatus { status: u16, excerpt: String },
    /// The proxy's `/status` is not the document this version reads.
    #[error("the proxy's /status is not JSON: {error}")]
    StatusDocument { error: serde_json::Error },
    /// A request through the proxy (or straight to an instance) got no answer.
    #[error(transparent)]
    Http(#[from] FetchError),
    /// A request through the proxy was answered with an error status.
    #[error("the proxy answers {status} on {path}: {excerpt}")]
    Through {
        path: String,
        status: u16,
        excerpt: String,
    },
    /// A Consul call failed or was refused.
    #[error(transparent)]
    Consul(#[from] ConsulError),
    /// Consul's health answer is not the JSON it documents.
    #[error("Consul's answer is not JSON: {0}")]
    ConsulAnswer(serde_json::Error),
    #[error("Consul's KV answer has no X-Consul-Index")]
    KvNoIndex,
    /// A Nomad call failed or was refused.
    #[error(transparent)]
    Nomad(#[from] NomadError),
    /// The upstreams file cannot be read or written.
    #[error("cannot {op} {}: {error}", .path.display())]
    File {
        /// `read`, `write` or `replace`.
        op: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// The upstreams file is not a valid upstreams file.
    #[error(transparent)]
    Upstreams(#[from] ConfigError),
    /// The upstreams file is valid but not TOML this command can edit, or cannot be rewritten.
    #[error("{}: {error}", .path.display())]
    Toml {
        path: PathBuf,
        error: toml::de::Error,
    },
    /// The command refused to act; nothing was changed.
    #[error("{reason}")]
    Refused { reason: String },
    /// There is nothing to do: what the command would bring about is already so. Nothing was
    /// changed.
    #[error("{reason}")]
    NothingToDo { reason: String },
    /// The record of the last switch cannot be read.
    #[error("the record of the last switch ({at}) cannot be read: {error} (remove it, and rollback falls back on the proxy's swap history)")]
    Record { at: String, error: String },
    /// The change was made but the proxy did not follow: `outcome` says what was restored, or
    /// what was left and how to undo it.
    #[error("{cause}; {outcome}")]
    NotApplied {
        cause: Box<OpsError>,
        outcome: String,
    },
    /// The change was made, but the proxy did not report it in time.
    #[error("the proxy did not report {what} within {timeout:?} (last seen: {last})")]
    NotConverged {
        what: String,
        timeout: Duration,
        last: String,
    },
}

impl OpsError {
    pub fn refused(reason: impl Into<String>) -> OpsError {
        OpsError::Refused {
            reason: reason.into(),
        }
    }
}

/// Why a Nomad call or deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum NomadError {
    /// No answer: `call` is `Nomad`, `Nomad plan` or `Nomad register`.
    #[error("{call}: {error}")]
    Call {
        call: &'static str,
        error: ConsulError,
    },
    /// An answer that is not JSON; `what` is e.g. `job is` or `deployments are`.
    #[error("Nomad's {what} not JSON: {error}")]
    NotJson {
        what: &'static str,
        error: serde_json::Error,
    },
    #[error("Nomad has no job {job:?} (pass --job NAME; `nomad job status` lists them)")]
    NoJob { job: String },
    #[error("Nomad refused the token (403 {body}): set NOMAD_TOKEN")]
    Token { body: String },
    /// An unexpected status reading the job.
    #[error("Nomad answered {status} reading job {job}: {body}")]
    JobStatus {
        status: u16,
        job: String,
        body: String,
    },
    /// An unexpected status; `what` is `deployment` or `deployments`.
    #[error("Nomad answered {status} for the {what}: {body}")]
    Status {
        status: StatusCode,
        what: &'static str,
        body: String,
    },
    #[error("Nomad refused the plan ({status}): {body}")]
    PlanRefused { status: StatusCode, body: String },
    #[error("Nomad refused the job ({status}): {body}")]
    JobRefused { status: StatusCode, body: String },
    #[error("the Nomad job has no JobModifyIndex")]
    NoModifyIndex,
    #[error("Nomad deployment {id} failed: {description}.{}", if *.reverted { " Nomad auto-reverted the job; the standby group runs its previous version again" } else { "" })]
    DeploymentFailed {
        id: String,
        description: String,
        /// Nomad rolled the job back to its previous version.
        reverted: bool,
    },
    #[error("Nomad deployment was cancelled: {description}")]
    DeploymentCancelled { description: String },
    #[error("the Nomad deployment did not finish within {0:?}")]
    DeploymentPending(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_they_always_have() {
        let cases: Vec<(OpsError, &str)> = vec![
            (
                NomadError::DeploymentFailed {
                    id: "d1".into(),
                    description: "rolling back to job version 3".into(),
                    reverted: true,
                }
                .into(),
                "Nomad deployment d1 failed: rolling back to job version 3. Nomad auto-reverted the job; the standby group runs its previous version again",
            ),
            (
                NomadError::DeploymentFailed {
                    id: "d1".into(),
                    description: "no".into(),
                    reverted: false,
                }
                .into(),
                "Nomad deployment d1 failed: no.",
            ),
            (
                NomadError::Status {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    what: "deployments",
                    body: "boom".into(),
                }
                .into(),
                "Nomad answered 500 Internal Server Error for the deployments: boom",
            ),
            (
                NomadError::JobStatus {
                    status: 500,
                    job: "web".into(),
                    body: "boom".into(),
                }
                .into(),
                "Nomad answered 500 reading job web: boom",
            ),
            (
                OpsError::File {
                    op: "replace",
                    path: "/tmp/u.toml".into(),
                    error: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                },
                "cannot replace /tmp/u.toml: permission denied",
            ),
            (
                OpsError::NotConverged {
                    what: "v2 serving /hello".into(),
                    timeout: Duration::from_millis(800),
                    last: "active serves \"v1\", hold null".into(),
                },
                "the proxy did not report v2 serving /hello within 800ms (last seen: active serves \"v1\", hold null)",
            ),
            (
                OpsError::AdminStatus {
                    status: 401,
                    excerpt: "unauthorized".into(),
                },
                "the proxy's admin API answered 401: unauthorized",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }
}
