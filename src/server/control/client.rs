//! The CLI's side of the control channel: send the command to the running server, or, when
//! no server runs, open the database and do the work here.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::{Accounts, MAX_REQUEST_BYTES, Reply, Request, TIMEOUT, commands, socket_path};
use crate::config::Config;
use crate::server::StartupError;
use crate::storage::{Storage, StorageError};

/// How a command reaches the database: through the running server, or directly.
pub(crate) enum Transport {
    Server(UnixStream),
    Local(Arc<Storage>),
}

impl Transport {
    /// Connects to the running server's control socket; when nobody listens there, opens
    /// the database. A database locked by a server whose socket does not answer (an older
    /// Hearth, or the socket file removed) is an error that says so.
    pub(crate) fn connect(config: &Config) -> Result<Transport, StartupError> {
        let path = socket_path(&config.database.path);
        let unanswered = match UnixStream::connect(&path) {
            Ok(stream) => return Ok(Transport::Server(stream)),
            Err(err) => err,
        };
        match Storage::open(
            &config.database.path,
            config.database.cache_capacity_bytes(),
        ) {
            Ok(storage) => Ok(Transport::Local(Arc::new(storage))),
            Err(StorageError::InUse { pid, .. }) => Err(StartupError::Usage(format!(
                "a Hearth server{} holds the data directory {}, but its control socket {} does \
                 not answer ({unanswered}); restart that server, or stop it and run the command \
                 again",
                pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
                config.database.path.display(),
                path.display(),
            ))),
            Err(err) => Err(err.into()),
        }
    }

    /// Runs the command and returns what to print.
    pub(crate) fn run(self, config: &Config, request: Request) -> Result<Reply, StartupError> {
        match self {
            Transport::Local(storage) => {
                let services = Accounts::local(storage.clone(), config)?;
                Ok(commands::execute(&storage, config, &services, request))
            }
            Transport::Server(stream) => ask_server(stream, &request).map_err(|err| {
                StartupError::Usage(format!(
                    "the running server did not answer the command: {err}"
                ))
            }),
        }
    }
}

/// Sends one request line and reads one reply line, within [`Request::timeout`].
fn ask_server(mut stream: UnixStream, request: &Request) -> std::io::Result<Reply> {
    stream.set_read_timeout(Some(request.timeout()))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = Vec::new();
    // A reply holds at most the account or token list: bounded all the same.
    BufReader::new(stream)
        .take(MAX_REQUEST_BYTES.saturating_mul(1024))
        .read_until(b'\n', &mut answer)?;
    serde_json::from_slice(&answer).map_err(std::io::Error::other)
}
