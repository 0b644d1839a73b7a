//! The metrics listener (`[metrics] address`, off by default): Prometheus text at
//! `GET /metrics` on a socket of its own, and nothing else (`405` for another method on
//! `/metrics`, `404` for any other path, `400` for what is not an HTTP request). It is a few
//! lines of HTTP/1.1 on the main runtime rather than a second actix server: one answer per
//! connection, a head of at most 8 KiB read within 5 s, at most 4 connections at a time, so
//! it costs no thread and no memory to speak of.
//!
//! The figures come from where they live: requests and latencies from the HTTP layer
//! ([`crate::api::metrics`]), long-polls from the sync service, federation's counts and
//! queues from [`crate::federation::figures`], events from the room service, and the
//! database's size, the resident memory and the start time read here at each scrape.
//! [`text`] writes them.

pub(crate) mod text;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::web;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::StartupError;
use crate::api::app::Services;
use crate::api::metrics::{GROUPS, LATENCY_BOUNDS, STATUS_CLASSES};
use crate::storage::Storage;
use text::{Exposition, Kind};

/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// The time a scraper has to send its request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections answered at once; more wait in the socket's backlog.
const MAX_CONNECTIONS: usize = 4;

/// What a scrape reads.
pub(crate) struct Sources {
    pub(crate) app: web::Data<Services>,
    pub(crate) storage: Arc<Storage>,
    /// When the process started (as `hearth serve` began).
    pub(crate) started_at: SystemTime,
}

/// Binds the metrics listener if one is configured, logging its address.
pub(crate) fn bind(address: Option<SocketAddr>) -> Result<Option<TcpListener>, StartupError> {
    let Some(address) = address else {
        return Ok(None);
    };
    let bind_error = |source| StartupError::Bind {
        address: address.to_string(),
        source,
    };
    let socket = TcpListener::bind(address).map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    let bound = socket.local_addr().map_err(bind_error)?;
    tracing::info!("serving metrics at http://{bound}/metrics");
    Ok(Some(socket))
}

/// Answers scrapes on `listener` until the task is aborted.
pub(crate) fn spawn(
    listener: TcpListener,
    sources: Sources,
) -> Result<tokio::task::JoinHandle<()>, StartupError> {
    let listener = tokio::net::TcpListener::from_std(listener).map_err(StartupError::Server)?;
    let sources = Arc::new(sources);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Ok(actix_web::rt::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::debug!("metrics: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let sources = sources.clone();
            actix_web::rt::spawn(async move {
                if let Err(err) = answer(stream, sources).await {
                    tracing::debug!("metrics: {err}");
                }
                drop(slot);
            });
        }
    }))
}

/// Reads one request head and answers it, closing the connection.
async fn answer(mut stream: TcpStream, sources: Arc<Sources>) -> std::io::Result<()> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream))
        .await
        .unwrap_or(Ok(None))?;
    let (status, content_type, body) = match head.as_deref().map(request_line) {
        Some(Some(("GET", "/metrics"))) => {
            let text = tokio::task::spawn_blocking(move || gather(&sources))
                .await
                .map_err(std::io::Error::other)?;
            ("200 OK", text::CONTENT_TYPE, text)
        }
        Some(Some((_, "/metrics"))) => (
            "405 Method Not Allowed",
            "text/plain",
            "Only GET /metrics\n".to_owned(),
        ),
        Some(Some(_)) => (
            "404 Not Found",
            "text/plain",
            "Only GET /metrics\n".to_owned(),
        ),
        _ => (
            "400 Bad Request",
            "text/plain",
            "Not a request\n".to_owned(),
        ),
    };
    let allow = if status.starts_with("405") {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The request's head (up to the blank line), or `None` when the connection ends before it
/// or it is longer than [`MAX_HEAD`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0_u8; 1024];
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buffer[..read]);
        if head.windows(4).any(|window| window == b"\r\n\r\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// The method and path (without its query) of an HTTP/1.x request line.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&byte| byte == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let path = target.split('?').next()?;
    Some((method, path))
}

/// Everything a scrape shows, as exposition text.
pub(crate) fn gather(sources: &Sources) -> String {
    let app = &sources.app;
    let mut out = Exposition::default();
    out.family(
        "hearth_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by endpoint group and status class.",
    );
    for (group_index, group) in GROUPS.iter().enumerate() {
        for (class_index, class) in STATUS_CLASSES.iter().enumerate() {
            out.sample(
                "hearth_http_requests_total",
                &[("group", group), ("status", class)],
                app.http_metrics.requests(group_index, class_index),
            );
        }
    }
    out.family(
        "hearth_http_request_duration_seconds",
        Kind::Histogram,
        "Time from a request's arrival to its answer, by endpoint group.",
    );
    for (group_index, group) in GROUPS.iter().enumerate() {
        let latency = app.http_metrics.latency(group_index);
        out.histogram(
            "hearth_http_request_duration_seconds",
            &[("group", group)],
            &LATENCY_BOUNDS,
            &latency.cumulative,
            latency.sum_seconds,
        );
    }
    let (sync, sliding) = app.sync.long_polls.waiting();
    out.family(
        "hearth_sync_long_polls_waiting",
        Kind::Gauge,
        "Sync requests waiting for news now (/sync, simplified sliding sync).",
    )
    .sample("hearth_sync_long_polls_waiting", &[("kind", "sync")], sync)
    .sample(
        "hearth_sync_long_polls_waiting",
        &[("kind", "sliding_sync")],
        sliding,
    );
    federation_figures(&mut out, app);
    out.family(
        "hearth_events_persisted_total",
        Kind::Counter,
        "Events added to rooms' timelines (local, remote, backfilled) and flushed.",
    )
    .sample(
        "hearth_events_persisted_total",
        &[],
        app.rooms.events_persisted(),
    );
    match sources.storage.size_on_disk() {
        Ok(bytes) => {
            out.family(
                "hearth_database_size_bytes",
                Kind::Gauge,
                "Bytes the database takes on disk (media files not included).",
            )
            .sample("hearth_database_size_bytes", &[], bytes);
        }
        Err(err) => tracing::warn!("metrics: no database size: {err}"),
    }
    if let Some(bytes) = resident_memory_bytes() {
        out.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
        )
        .sample("process_resident_memory_bytes", &[], bytes);
    }
    let started = sources
        .started_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    out.family(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since the Unix epoch in seconds.",
    )
    .sample("process_start_time_seconds", &[], started);
    out.family(
        "hearth_build_info",
        Kind::Gauge,
        "Always 1; the version of Hearth running.",
    )
    .sample("hearth_build_info", &[("version", crate::VERSION)], 1_u64);
    out.finish()
}

fn federation_figures(out: &mut Exposition, app: &Services) {
    let (transactions, accepted, rejected) = app.federation.inbound_counts.read();
    out.family(
        "hearth_federation_inbound_transactions_total",
        Kind::Counter,
        "Transactions other servers sent us (signed, well-formed) that were processed.",
    )
    .sample(
        "hearth_federation_inbound_transactions_total",
        &[],
        transactions,
    );
    out.family(
        "hearth_federation_inbound_pdus_total",
        Kind::Counter,
        "PDUs of inbound transactions, by result.",
    )
    .sample(
        "hearth_federation_inbound_pdus_total",
        &[("result", "accepted")],
        accepted,
    )
    .sample(
        "hearth_federation_inbound_pdus_total",
        &[("result", "rejected")],
        rejected,
    );
    match app.federation.outbound_figures() {
        Ok(figures) => {
            out.family(
                "hearth_federation_outbound_queued",
                Kind::Gauge,
                "PDUs and EDUs waiting in the outbound queues, all servers together.",
            )
            .sample("hearth_federation_outbound_queued", &[], figures.queued);
            out.family(
                "hearth_federation_outbound_catch_up_rows",
                Kind::Gauge,
                "Catch-up rows of servers failing for long (newest event per room).",
            )
            .sample(
                "hearth_federation_outbound_catch_up_rows",
                &[],
                figures.catch_up,
            );
            out.family(
                "hearth_federation_failing_destinations",
                Kind::Gauge,
                "Servers whose last transaction failed, backing off.",
            )
            .sample(
                "hearth_federation_failing_destinations",
                &[],
                figures.failing_destinations,
            );
        }
        Err(err) => tracing::warn!("metrics: no outbound queue figures: {err}"),
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_read_strictly() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"POST /other HTTP/1.1\r\n\r\n"),
            Some(("POST", "/other"))
        );
        assert_eq!(request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_line(b"GET  /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_line(b"\xff\xfe HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_line(b"GET /metrics SPDY/3\r\n\r\n"), None);
    }

    #[test]
    fn resident_memory_is_read() {
        assert!(resident_memory_bytes().is_some_and(|bytes| bytes > 0));
    }
}
