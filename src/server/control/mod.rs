//! The control channel: `hearth user …`, `hearth token …`, `hearth media …` and
//! `hearth backup` against a running server.
//!
//! While `hearth serve` runs it holds the data directory's lock, so a second process cannot
//! open the database. The server therefore listens on a Unix socket in the data directory
//! ([`SOCKET_NAME`], mode 0600, and only connections from the server's own user are
//! served); the CLI sends its command there as one JSON line and prints the answer. When no
//! server answers, the CLI opens the database itself. Either way the work is done by
//! [`commands::execute`]: one code path, two transports, the same output.
//!
//! The channel is bounded: a request line of at most [`MAX_REQUEST_BYTES`], at most
//! [`MAX_CONNECTIONS`] served at a time, each within [`Request::timeout`].

pub(crate) mod client;
pub(crate) mod commands;
pub(crate) mod listener;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The socket's file name in the data directory.
pub(crate) const SOCKET_NAME: &str = "control.sock";
/// A request is one command with at most a password in it: a few hundred bytes.
pub(crate) const MAX_REQUEST_BYTES: u64 = 16 * 1024;
/// Commands served at once (a password hash takes ~19 MiB while it runs).
pub(crate) const MAX_CONNECTIONS: usize = 4;
/// How long one command may take, from the connection to the answer, on either side.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a backup or a media purge may take: they copy or remove files, and an SD card
/// writes a few MB a second.
pub(crate) const LONG_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// The services account commands go through, so that a deactivation or a password reset
/// does what the client and admin APIs do: key backups deleted, the ended devices announced
/// to those who track them (their `/sync`, other servers).
pub(crate) enum Accounts {
    /// The running server's own: its waiting `/sync`s and its federation sender hear of the
    /// change at once.
    Server(actix_web::web::Data<crate::api::app::Services>),
    /// Made over the database the CLI opened: the announcement waits in the database for
    /// the server's next start.
    Local {
        users: crate::users::Users,
        stream: crate::storage::stream::Stream,
    },
}

impl Accounts {
    /// Services of our own over a database the CLI opened.
    pub(crate) fn local(
        storage: std::sync::Arc<crate::storage::Storage>,
        config: &crate::config::Config,
    ) -> Result<Accounts, crate::storage::StorageError> {
        let stream = crate::storage::stream::Stream::new(storage.current_stream_position()?);
        let users = crate::users::Users::new(storage, config.server.server_name.clone());
        Ok(Accounts::Local { users, stream })
    }

    pub(crate) fn users(&self) -> &crate::users::Users {
        match self {
            Accounts::Server(app) => &app.users,
            Accounts::Local { users, .. } => users,
        }
    }

    pub(crate) fn stream(&self) -> &crate::storage::stream::Stream {
        match self {
            Accounts::Server(app) => &app.rooms.stream,
            Accounts::Local { stream, .. } => stream,
        }
    }
}

/// Where the control socket of the data directory `data_dir` lives.
pub(crate) fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// One `hearth user …` or `hearth token …` command, as sent over the socket. User names are
/// as typed (`alice` or `@alice:example.org`): the side that does the work resolves them.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub(crate) enum Request {
    UserAdd {
        name: String,
        password: String,
        admin: bool,
    },
    UserPasswd {
        name: String,
        password: String,
    },
    UserDeactivate {
        name: String,
    },
    UserRestrict {
        name: String,
        restriction: RestrictionName,
        on: bool,
    },
    UserList,
    TokenAdd {
        token: Option<String>,
        uses: Option<u64>,
        expires_in_days: Option<u64>,
    },
    TokenList,
    TokenDelete {
        token: String,
    },
    MediaUsage,
    MediaPurgeRemote {
        older_than_secs: u64,
    },
    MediaDeleteUser {
        name: String,
    },
    /// A backup into `dir`, an absolute path (the server's working directory is not the
    /// CLI's).
    Backup {
        dir: std::path::PathBuf,
    },
}

/// `lock` or `suspend`, on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RestrictionName {
    Lock,
    Suspension,
}

/// What a command printed: its standard output and its notes for standard error, or why
/// it failed (the whole message, causes included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Reply {
    Done { stdout: String, stderr: String },
    Failed { error: String },
}

/// A request as it may be logged: its command's name only, never a password.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Request {
    /// The command's name, for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Request::UserAdd { .. } => "user add",
            Request::UserPasswd { .. } => "user passwd",
            Request::UserDeactivate { .. } => "user deactivate",
            Request::UserRestrict { .. } => "user lock/suspend",
            Request::UserList => "user list",
            Request::TokenAdd { .. } => "token add",
            Request::TokenList => "token list",
            Request::TokenDelete { .. } => "token delete",
            Request::MediaUsage => "media usage",
            Request::MediaPurgeRemote { .. } => "media purge-remote",
            Request::MediaDeleteUser { .. } => "media delete-user",
            Request::Backup { .. } => "backup",
        }
    }

    /// How long the command may take, from the connection to the answer.
    pub(crate) fn timeout(&self) -> Duration {
        match self {
            Request::Backup { .. }
            | Request::MediaPurgeRemote { .. }
            | Request::MediaDeleteUser { .. } => LONG_TIMEOUT,
            _ => TIMEOUT,
        }
    }
}
