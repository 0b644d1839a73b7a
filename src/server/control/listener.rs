//! The server's side of the control channel: a Unix socket in the data directory, private
//! to the server's user, answering one command per connection.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use actix_web::web::Data;

use super::{
    Accounts, MAX_CONNECTIONS, MAX_REQUEST_BYTES, Reply, Request, TIMEOUT, commands, socket_path,
};
use crate::api::app::Services;
use crate::server::StartupError;
use crate::storage::Storage;

/// The listening socket; the file is removed when this is dropped (the server stops).
pub(crate) struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the control socket in `data_dir` and serves it on the current runtime. The caller
/// holds the data directory's lock, so a socket file already there is a crashed server's:
/// it is replaced. The socket is made under a temporary name, given mode 0600, and only
/// then renamed into place, so it is never reachable with wider permissions.
pub(crate) fn start(
    data_dir: &Path,
    storage: Arc<Storage>,
    app: Data<Services>,
) -> Result<ControlSocket, StartupError> {
    let path = socket_path(data_dir);
    let fresh = data_dir.join(format!("{}.new", super::SOCKET_NAME));
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| StartupError::WriteFile { path, source }
    };
    for stale in [&fresh, &path] {
        match std::fs::remove_file(stale) {
            Ok(()) => tracing::info!("control: removed a stale socket {}", stale.display()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(failed(stale)(err)),
        }
    }
    let listener = UnixListener::bind(&fresh).map_err(failed(&fresh))?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600))
        .map_err(failed(&fresh))?;
    std::fs::rename(&fresh, &path).map_err(failed(&path))?;
    let owner = std::fs::metadata(&path).map_err(failed(&path))?.uid();
    tracing::info!("control socket at {}", path.display());
    actix_web::rt::spawn(serve(listener, owner, storage, app));
    Ok(ControlSocket { path })
}

/// Accepts connections for ever, serving at most [`MAX_CONNECTIONS`] at once; a connection
/// beyond that is told to try again.
async fn serve(listener: UnixListener, owner: u32, storage: Arc<Storage>, app: Data<Services>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!("control: accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let busy = Reply::Failed {
                error: "the server is busy with other commands; try again".to_owned(),
            };
            actix_web::rt::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(TIMEOUT, write_reply(&mut stream, &busy)).await;
            });
            continue;
        };
        let (storage, app) = (storage.clone(), app.clone());
        actix_web::rt::spawn(async move {
            serve_connection(stream, owner, storage, app).await;
            drop(slot);
        });
    }
}

/// Reads one request line, runs it off the async workers (a password hash is slow, a
/// backup copies files), and writes the reply line, each step within its time. Only the
/// socket owner's user is served, whatever the file's mode.
async fn serve_connection(
    mut stream: UnixStream,
    owner: u32,
    storage: Arc<Storage>,
    app: Data<Services>,
) {
    let allowed = stream.peer_cred().map(|peer| peer.uid() == owner);
    if !matches!(allowed, Ok(true)) {
        tracing::warn!("control: refused a connection from another user");
        let refused = Reply::Failed {
            error: "only the server's own user may use its control socket".to_owned(),
        };
        let _ = tokio::time::timeout(TIMEOUT, write_reply(&mut stream, &refused)).await;
        return;
    }
    let request = match tokio::time::timeout(TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(request)) => request,
        Ok(Err(error)) => {
            let _ =
                tokio::time::timeout(TIMEOUT, write_reply(&mut stream, &Reply::Failed { error }))
                    .await;
            return;
        }
        Err(_) => {
            tracing::warn!("control: no command within {TIMEOUT:?}");
            return;
        }
    };
    let command = request.name();
    let timeout = request.timeout();
    let work = tokio::task::spawn_blocking(move || {
        let config = app.config.clone();
        commands::execute(&storage, &config, &Accounts::Server(app), request)
    });
    let worked = match tokio::time::timeout(timeout, work).await {
        Ok(done) => done.unwrap_or_else(|err| Reply::Failed {
            error: format!("the command failed: {err}"),
        }),
        Err(_) => {
            tracing::warn!("control: {command} did not finish within {timeout:?}");
            return;
        }
    };
    match &worked {
        Reply::Done { .. } => tracing::info!("control: {command}: done"),
        Reply::Failed { error } => tracing::info!("control: {command}: {error}"),
    }
    match tokio::time::timeout(TIMEOUT, write_reply(&mut stream, &worked)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!("control: could not answer {command}: {err}"),
        Err(_) => tracing::warn!("control: could not answer {command} within {TIMEOUT:?}"),
    }
}

/// One JSON line of at most [`MAX_REQUEST_BYTES`].
async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(stream).take(MAX_REQUEST_BYTES + 1);
    limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|err| format!("could not read the command: {err}"))?;
    if line.len() as u64 > MAX_REQUEST_BYTES {
        return Err(format!(
            "the command is longer than {MAX_REQUEST_BYTES} bytes"
        ));
    }
    serde_json::from_slice(&line).map_err(|err| format!("not a command this server knows: {err}"))
}

async fn write_reply(stream: &mut UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.shutdown().await
}
