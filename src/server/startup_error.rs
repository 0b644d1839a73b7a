//! [`StartupError`]: everything that can stop Hearth from starting or a command from
//! completing (config, files, TLS, the database, the signing key, listeners, federation
//! set-up). Printed by `main` as a "caused by" chain for the person at the terminal; kept apart
//! from the request error, which a client sees.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// Everything that can stop Hearth from starting or a command from completing. Printed by
/// `main` with its causes, one per line.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("could not read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS")]
    Tls(#[from] super::tls::TlsError),
    #[error("database")]
    Storage(#[from] crate::storage::StorageError),
    #[error("signing key {path}: {reason}")]
    SigningKey { path: PathBuf, reason: String },
    #[error("could not listen on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed")]
    Server(#[source] std::io::Error),
    #[error("federation")]
    Federation(#[from] crate::federation::FederationError),
    #[error("{0}")]
    Usage(String),
    #[error("{0} check(s) failed: see the ✗ lines")]
    CheckFailed(usize),
}

impl StartupError {
    /// The error and its causes, one per line, as printed to the terminal.
    pub fn chain(&self) -> String {
        let mut text = format!("error: {self}");
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            // Some causes repeat their wrapper's words (`transparent` errors): say them once.
            let line = cause.to_string();
            if !text.contains(&line) {
                text.push_str(&format!("\n  caused by: {line}"));
            }
            source = cause.source();
        }
        text
    }
}

/// Reads and validates the config file at `path`.
pub(crate) fn load_config(path: &Path) -> Result<Config, StartupError> {
    let text = std::fs::read_to_string(path).map_err(|source| StartupError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    Config::parse(&text, base).map_err(|mut err| {
        err.file = Some(path.to_owned());
        err.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_error_prints_its_causes() {
        let err = StartupError::ReadFile {
            path: "/etc/hearth/config.toml".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file"),
        };
        let chain = err.chain();
        assert!(chain.contains("could not read /etc/hearth/config.toml"));
        assert!(chain.contains("caused by: No such file"));
    }
}
