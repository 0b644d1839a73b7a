//! [`FederationError`]: why talking to another server failed. These never reach a client as
//! they are; callers decide what a failure means for their request (usually "try another
//! server" or `502`), and log the detail.

/// One error type for everything outbound: discovery, connection, TLS, HTTP and keys.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("`{0}` is not a valid server name")]
    InvalidServerName(String),
    #[error("no address found for {0}")]
    NoAddress(String),
    #[error("DNS lookup of {name} failed: {reason}")]
    Dns { name: String, reason: String },
    #[error("could not connect to {destination}: {reason}")]
    Connect { destination: String, reason: String },
    #[error(
        "{0} resolves only to private addresses, which federation.allow_private_addresses forbids"
    )]
    PrivateAddress(String),
    #[error("TLS set-up failed: {0}")]
    TlsConfig(String),
    #[error("{0} did not answer in time")]
    Timeout(String),
    #[error("malformed HTTP answer: {0}")]
    Http(String),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{server} answered {status}")]
    Status { server: String, status: u16 },
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot sign the request: {0}")]
    Signing(String),
    #[error("server keys of {server}: {reason}")]
    Keys { server: String, reason: String },
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl FederationError {
    pub(crate) fn keys(server: &str, reason: impl Into<String>) -> FederationError {
        FederationError::Keys {
            server: server.to_owned(),
            reason: reason.into(),
        }
    }
}
