//! Running the server: [`serve`] puts the pieces together for `hearth serve` (storage, key,
//! TLS, listeners, metrics, signals, systemd); [`run`] takes bound listeners and a shutdown
//! future, so a test can start a real server on `127.0.0.1:0` in a few lines.
//!
//! The wiring around the services: [`cli`] and [`init`] (the command line), `check` (the
//! federation self-test, `hearth check`), [`control`] (the socket through which the command
//! line reaches a running server), [`backup`] (`hearth backup` and `restore`), [`tls`] (PEM
//! files, reloaded on `SIGHUP`), [`metrics`] (the Prometheus listener), [`logging`],
//! [`systemd`] (readiness notification), [`memory`] (allocator settings, freed heap given
//! back after bursts), and [`StartupError`]. Only this folder, `api` and
//! the CLI name the assembled services.

pub(crate) mod assemble;
pub(crate) mod backup;
mod check;
pub mod cli;
#[cfg(test)]
mod config_props;
pub(crate) mod control;
pub(crate) mod init;
pub(crate) mod logging;
mod media_cli;
pub mod memory;
pub(crate) mod metrics;
pub(crate) mod startup_error;
pub mod systemd;
pub mod tls;

pub(crate) use startup_error::StartupError;

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_web::{HttpServer, web};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::api::app::Services;
use crate::config::Config;
use crate::matrix::crypto::SigningKey;
use crate::server::systemd::notify;
use crate::server::tls::CertificateStore;
use crate::storage::Storage;

/// A socket we listen on, and whether it speaks TLS.
pub(crate) struct BoundListener {
    pub(crate) listener: TcpListener,
    pub(crate) tls: bool,
}

/// Binds every configured listener, logging the address each really got (port 0 picks one).
pub(crate) fn bind(config: &Config) -> Result<Vec<BoundListener>, StartupError> {
    config
        .listeners
        .iter()
        .map(|listener| {
            let bind_error = |source| StartupError::Bind {
                address: listener.address.to_string(),
                source,
            };
            let socket = TcpListener::bind(listener.address).map_err(bind_error)?;
            let address = socket.local_addr().map_err(bind_error)?;
            let scheme = if listener.tls { "https" } else { "http" };
            tracing::info!("listening on {scheme}://{address}");
            Ok(BoundListener {
                listener: socket,
                tls: listener.tls,
            })
        })
        .collect()
}

/// Serves HTTP on `listeners` until `shutdown` resolves, then lets in-flight requests finish
/// (up to `limits.shutdown_grace_seconds`) and flushes storage.
pub(crate) async fn run(
    app: web::Data<Services>,
    listeners: Vec<BoundListener>,
    certificates: Option<Arc<CertificateStore>>,
    shutdown: impl Future<Output = ()> + 'static,
) -> Result<(), StartupError> {
    let config = &app.config;
    let tls_config = certificates
        .as_ref()
        .map(|store| store.server_config())
        .transpose()?;
    let app_state = app.clone();
    let mut server = HttpServer::new(move || crate::api::app(app_state.clone()))
        .workers(config.server.workers)
        .max_connections(
            config
                .limits
                .max_connections
                .div_ceil(config.server.workers),
        )
        .keep_alive(Duration::from_secs(config.limits.keep_alive_seconds))
        // A request's head must arrive within 5 s of the connection (or of the previous
        // answer); its body has `limits.body_timeout_seconds`, counted by the extractor that
        // reads it. An answer to a request whose body was not read (an error, or an endpoint
        // that takes none) closes the connection, after a short linger for the client to
        // read it: a body left unread cannot keep a connection.
        .client_request_timeout(Duration::from_secs(5))
        .client_disconnect_timeout(Duration::from_secs(1))
        .disable_signals()
        .shutdown_timeout(config.limits.shutdown_grace_seconds);
    for bound in listeners {
        server = match (&tls_config, bound.tls) {
            (Some(tls), true) => server.listen_rustls_0_23(bound.listener, tls.clone()),
            (None, true) => {
                return Err(StartupError::Usage(
                    "a TLS listener needs a certificate".to_owned(),
                ));
            }
            (_, false) => server.listen(bound.listener),
        }
        .map_err(StartupError::Server)?;
    }
    let server = server.run();
    let handle = server.handle();
    let stopping_app = app.clone();
    actix_web::rt::spawn(async move {
        shutdown.await;
        tracing::info!("stopping: finishing requests in flight");
        stopping_app.stopping.send_replace(true);
        notify("STOPPING=1");
        handle.stop(true).await;
    });
    server.await.map_err(StartupError::Server)?;
    app.rooms.flush().await?;
    tracing::info!("stopped; storage flushed");
    Ok(())
}

/// `hearth serve`: everything from a validated config to a running server.
pub(crate) async fn serve(config: Config) -> Result<(), StartupError> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    // Signal handlers come first. A SIGTERM during a migration then waits for it to finish
    // and stops the server right after start-up; a SIGHUP is never fatal (its default action
    // would end the process, and systemd would not restart it).
    let stopping = stop_signal()?;
    let hangup = signal(SignalKind::hangup()).map_err(StartupError::Server)?;
    let storage = Arc::new(Storage::open(
        &config.database.path,
        config.database.cache_capacity_bytes(),
    )?);
    let signing_key = load_or_create_signing_key(&config.server.signing_key)?;
    let certificates = config
        .tls
        .as_ref()
        .map(CertificateStore::load)
        .transpose()?;
    let listeners = bind(&config)?;
    let metrics_listener = metrics::bind(config.metrics.address)?;
    actix_web::rt::spawn(reload_on_sighup(hangup, certificates.clone()));
    let transport = crate::federation::Transport::new(
        config.server.server_name.clone(),
        signing_key.clone(),
        &config.federation,
    )?;
    let old_verify_keys = crate::matrix::crypto::rotation::load_old_keys(
        &config.server.signing_key,
    )
    .map_err(|reason| StartupError::SigningKey {
        path: crate::matrix::crypto::rotation::old_keys_path(&config.server.signing_key),
        reason,
    })?;
    let previews = crate::media::preview::Previews::new(&config.url_preview)?;
    let app = web::Data::new(assemble::services(
        config,
        storage.clone(),
        signing_key,
        transport,
        old_verify_keys,
        previews,
    ));
    memory::spawn_trimmer();
    // Typing notifications time out even when nobody asks: a waiting /sync hears of it.
    let typing_app = app.clone();
    actix_web::rt::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(2));
        loop {
            ticks.tick().await;
            typing_app.ephemeral.expire();
        }
    });
    match app.federation.reduce_stored_key_answers() {
        Ok(0) => {}
        Ok(rewritten) => tracing::info!("federation: cut {rewritten} stored key answers"),
        Err(err) => tracing::warn!("federation: cannot cut the stored key answers: {err}"),
    }
    let outbound = app
        .config
        .federation
        .enabled
        .then(|| crate::federation::outbound::spawn(app.federation.clone()));
    // Open before the server tells systemd it is ready, so `hearth user …` reaches it from
    // then on, and after the services, so its commands go through them (a deactivation is
    // announced to the user's `/sync`s and to other servers at once);
    // the socket file is removed when this function returns (the server stopped). Without
    // it (a data directory path too long for a socket's name, say) the server still runs:
    // only the commands then need it stopped.
    let _control =
        match control::listener::start(&app.config.database.path, storage.clone(), app.clone()) {
            Ok(socket) => Some(socket),
            Err(err) => {
                tracing::warn!(
                    "no control socket, so `hearth user …` and `hearth token …` need the server \
                 stopped: {}",
                    err.chain()
                );
                None
            }
        };
    let push = start_push(&app)?;
    let retention = crate::rooms::retention::spawn(
        app.rooms.clone(),
        app.config.retention.clone(),
        app.stopping.subscribe(),
    );
    let metrics = metrics_listener
        .map(|listener| {
            let sources = metrics::Sources {
                app: app.clone(),
                storage: storage.clone(),
                started_at,
            };
            metrics::spawn(listener, sources)
        })
        .transpose()?;
    tracing::info!(
        server_name = %app.config.server.server_name,
        key_id = %app.signing_key.key_id(),
        "Hearth {} ready in {} ms",
        crate::VERSION,
        started.elapsed().as_millis()
    );
    notify("READY=1");
    let result = run(app.clone(), listeners, certificates, stopping).await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    // The senders stop as soon as the server is stopping; wait for them (briefly) so the
    // last flush below covers whatever they wrote.
    if let Some(outbound) = outbound
        && tokio::time::timeout(Duration::from_secs(5), outbound)
            .await
            .is_err()
    {
        tracing::warn!("federation: outbound sending did not stop in time");
    }
    if tokio::time::timeout(Duration::from_secs(5), push)
        .await
        .is_err()
    {
        tracing::warn!("push: delivery did not stop in time");
    }
    if let Some(retention) = retention
        && tokio::time::timeout(Duration::from_secs(5), retention)
            .await
            .is_err()
    {
        tracing::warn!("retention: the purge did not stop in time");
    }
    app.rooms.flush().await?;
    result
}

/// Starts delivering notifications to our users' push gateways (off the send path).
fn start_push(app: &web::Data<Services>) -> Result<tokio::task::JoinHandle<()>, StartupError> {
    let gateway = crate::federation::push::gateway::Gateway::new(
        &app.config.push,
        app.config.federation.extra_ca_file.as_deref(),
    )?;
    let push = Arc::new(crate::federation::push::Push {
        storage: app.federation.storage.clone(),
        rooms: app.rooms.clone(),
        gateway,
    });
    Ok(crate::federation::push::spawn(
        push,
        app.stopping.subscribe(),
    ))
}

/// Resolves on the first `SIGTERM` or `SIGINT`.
fn stop_signal() -> Result<impl Future<Output = ()>, StartupError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(StartupError::Server)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(StartupError::Server)?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
        }
    })
}

/// Reloads the TLS certificate on every `SIGHUP`. Open connections keep the certificate they
/// were made with; a broken new file is reported and the old certificate stays.
async fn reload_on_sighup(mut hangup: Signal, certificates: Option<Arc<CertificateStore>>) {
    while hangup.recv().await.is_some() {
        match &certificates {
            None => tracing::info!("SIGHUP: no TLS listener, nothing to reload"),
            Some(store) => match store.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(err) => tracing::error!("SIGHUP: kept the old TLS certificate: {err}"),
            },
        }
        notify("READY=1");
    }
}

/// Loads the signing key, generating one on the very first start.
pub(crate) fn load_or_create_signing_key(path: &Path) -> Result<SigningKey, StartupError> {
    if !path.exists() {
        let key = SigningKey::generate();
        key.write_new(path)
            .map_err(|source| StartupError::WriteFile {
                path: path.to_owned(),
                source,
            })?;
        tracing::info!(key_id = %key.key_id(), "generated a new signing key at {}", path.display());
        return Ok(key);
    }
    SigningKey::load(path).map_err(|reason| StartupError::SigningKey {
        path: path.to_owned(),
        reason,
    })
}
