//! Errors of a config that parsed but cannot be put to use: a file a setting names is unreadable
//! or holds nothing usable, or a component rejects a value. Each names the setting to fix.

use std::path::PathBuf;

use super::model::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A file a setting names cannot be read or holds nothing usable.
    #[error("{message}")]
    File {
        setting: &'static str,
        path: PathBuf,
        message: String,
    },
    /// A value the component using it rejects.
    #[error("{message}")]
    Setting {
        setting: &'static str,
        message: String,
    },
    #[error("tls is configured but nothing listens on {0}")]
    TlsNotListening(String),
    #[error("hsms is configured but nothing listens on {0}")]
    HsmsNotListening(String),
    #[error("tls was added to the config: restart zerodown to open the HTTPS listener")]
    TlsAdded,
    #[error("the primary service changed from {from:?} to {to:?} while [hsms] relays to it: restart (or upgrade) zerodown to apply it")]
    HsmsPrimaryChanged { from: String, to: String },
    #[error("cannot read a listener's local address: {0}")]
    Listener(#[source] std::io::Error),
}

impl SetupError {
    pub fn file(setting: &'static str, path: impl Into<PathBuf>, message: String) -> SetupError {
        SetupError::File {
            setting,
            path: path.into(),
            message,
        }
    }

    pub fn setting(setting: &'static str, message: impl Into<String>) -> SetupError {
        SetupError::Setting {
            setting,
            message: message.into(),
        }
    }
}

impl ServerConfig {
    /// The bearer token the admin API requires (`server.admin_token_file`), trimmed.
    pub fn admin_token(&self) -> Result<Option<String>, SetupError> {
        let Some(p) = &self.admin_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(p).map_err(|e| {
            let message = format!("server.admin_token_file: cannot read {}: {e}", p.display());
            SetupError::file("server.admin_token_file", p, message)
        })?;
        Ok(Some(text.trim().to_string()))
    }
}
