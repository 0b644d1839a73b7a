//! Kept-alive connections of the outbound client ([`super::client::HttpsClient`]), so that a
//! busy peer costs one TLS handshake, not one per request. A connection is remembered under
//! the address it was dialled at and the name its certificate was checked for ([`Key`]): a
//! pooled connection is only ever reused for the same checked address and the same
//! certificate name, so a later DNS answer pointing elsewhere (a private address, another
//! host) never rides on it. HTTP/2 connections (when the peer offered `h2` by ALPN) are
//! shared by every request at once; HTTP/1.1 ones serve one request at a time and come back
//! here when their answer was read to the end.
//!
//! Bounded: at most [`MAX_IDLE_PER_PEER`] idle connections per key and [`MAX_IDLE`] in all,
//! each forgotten (and so closed) after [`IDLE_TIMEOUT`]; a Pi talks to a handful of
//! servers, and an idle TLS connection costs a few dozen KiB.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

/// The body of an outbound request: it is always whole in hand (JSON we made).
pub(crate) type Body = Full<Bytes>;

/// Idle connections kept per address and certificate name.
const MAX_IDLE_PER_PEER: usize = 4;
/// Idle connections kept in all.
const MAX_IDLE: usize = 64;
/// How long an unused connection is kept: servers commonly close theirs after 60 s to
/// a few minutes; reusing one they are closing costs a retry.
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);
/// The largest response head an HTTP/2 peer may send (as for HTTP/1.1, where hyper's own
/// limits apply).
const MAX_HEADER_LIST: u32 = 32 * 1024;

/// What a connection is for: the address dialled (checked against the private ranges when
/// dialled) and the name its certificate was verified for (`None`: plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) address: SocketAddr,
    pub(crate) tls_name: Option<ServerName<'static>>,
}

/// A connection's request side.
pub(crate) enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

impl Sender {
    /// Starts HTTP on a connected stream: HTTP/2 when ALPN chose it, HTTP/1.1 otherwise.
    /// The connection itself runs in a task of its own until both sides are done with it.
    pub(crate) async fn handshake<T>(io: T, http2: bool) -> Result<Sender, hyper::Error>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if http2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(MAX_HEADER_LIST)
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!("outbound HTTP/2 connection ended: {err}");
                }
            });
            Ok(Sender::Http2(sender))
        } else {
            let (sender, connection) = http1::handshake(io).await?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!("outbound HTTP/1.1 connection ended: {err}");
                }
            });
            Ok(Sender::Http1(sender))
        }
    }

    pub(crate) fn is_http2(&self) -> bool {
        matches!(self, Sender::Http2(_))
    }

    /// Whether the connection is still open (an HTTP/1.1 one may still be finishing its
    /// last answer: [`Sender::send`] waits until it is ready).
    fn is_usable(&self) -> bool {
        match self {
            Sender::Http1(sender) => !sender.is_closed(),
            Sender::Http2(sender) => !sender.is_closed(),
        }
    }

    /// Sends `request` and waits for the answer's head.
    pub(crate) async fn send(
        &mut self,
        request: hyper::Request<Body>,
    ) -> Result<hyper::Response<Incoming>, hyper::Error> {
        match self {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    }

    /// Another handle on the same connection, for an HTTP/2 one (which multiplexes).
    fn share(&self) -> Option<Sender> {
        match self {
            Sender::Http1(_) => None,
            Sender::Http2(sender) => Some(Sender::Http2(sender.clone())),
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The idle connections, by [`Key`].
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
}

impl Pool {
    /// A live connection for `key`, if one is kept: an HTTP/1.1 one leaves the pool until
    /// [`Pool::put`] brings it back, an HTTP/2 one stays (shared).
    pub(crate) fn take(&self, key: &Key) -> Option<Sender> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let list = idle.get_mut(key)?;
        let now = Instant::now();
        list.retain(|entry| {
            now.duration_since(entry.since) < IDLE_TIMEOUT && entry.sender.is_usable()
        });
        let found = match list.iter_mut().find(|entry| entry.sender.is_http2()) {
            Some(shared) => {
                shared.since = now;
                shared.sender.share()
            }
            None => list.pop().map(|entry| entry.sender),
        };
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Keeps a connection whose last answer was read whole (HTTP/1.1), or a new HTTP/2 one,
    /// unless the bounds are reached (it is then closed as it is dropped).
    pub(crate) fn put(&self, key: Key, sender: Sender) {
        if !sender.is_usable() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        idle.retain(|_, list| {
            list.retain(|entry| now.duration_since(entry.since) < IDLE_TIMEOUT);
            !list.is_empty()
        });
        let total: usize = idle.values().map(Vec::len).sum();
        let list = idle.get(&key).map(Vec::as_slice).unwrap_or_default();
        // One shared HTTP/2 connection per peer is enough: a newer one replaces it.
        let replacing = sender.is_http2() && list.iter().any(|entry| entry.sender.is_http2());
        if !replacing && (total >= MAX_IDLE || list.len() >= MAX_IDLE_PER_PEER) {
            return;
        }
        let list = idle.entry(key).or_default();
        if replacing {
            list.retain(|entry| !entry.sender.is_http2());
        }
        list.push(Idle { sender, since: now });
    }

    /// How many connections are kept (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.values().map(Vec::len).sum()
    }
}
