//! Outbound federation: getting our users' events and EDUs to the other servers in their
//! rooms (spec: server-server API, "Transactions"), reliably and without flooding anyone.
//!
//! # Layout
//! - [`follower`]: reads the global stream and our users' typing and presence, and queues
//!   what each server must hear, durably, together with the position it has reached.
//! - [`queue`]: the per-server queue in storage, and transactions of at most 50 PDUs and 100
//!   EDUs made from it, recorded before they are sent so a retry reuses ID and content.
//! - [`backoff`]: how long an unreachable server is left alone.
//!
//! The dispatcher here runs one sender per server with work, a bounded number at a time:
//! a sender sends transactions until its server's queue is empty, or fails and the server
//! backs off (30 s doubling to an hour, by default). A restart forgets the backoffs and
//! retries every server with a queue: that is the catch-up after an outage.

pub(crate) mod backoff;
pub(crate) mod follower;
pub(crate) mod queue;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

pub(crate) use queue::Transaction;

use super::FederationError;
use crate::federation::Federation;
use backoff::Backoff;

/// Servers sent to at the same time, at most: bounds connections, memory (a transaction
/// can be 3 MB) and the load on a small machine catching up after an outage.
pub(crate) const MAX_CONCURRENT_DESTINATIONS: usize = 8;

/// Typing and presence changes waiting for the follower, at most.
const CHANGES_CAPACITY: usize = 256;

/// The largest answer to a transaction we read: per-PDU results, nothing more.
const RESPONSE_LIMIT: usize = 1024 * 1024;

/// Servers remembered as "heard from again" until the dispatcher looks, at most.
const MAX_BACK: usize = 1024;

/// Destinations with new entries, handed from the follower to the dispatcher; and servers
/// that just sent us something, whose backoff is over (they are evidently up).
#[derive(Default)]
pub(crate) struct Wake {
    notify: Notify,
    destinations: Mutex<BTreeSet<String>>,
    back: Mutex<BTreeSet<String>>,
}

impl Wake {
    /// Tells the dispatcher that these servers have something new to send.
    pub(crate) fn add(&self, destinations: impl IntoIterator<Item = String>) {
        let mut pending = self
            .destinations
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let before = pending.len();
        pending.extend(destinations);
        if pending.len() != before {
            self.notify.notify_one();
        }
    }

    /// Tells the dispatcher that `server` is up (it just sent us a transaction): if it is
    /// backing off, it is retried now rather than in up to an hour. This is the catch-up
    /// when a server comes back.
    pub(crate) fn server_is_back(&self, server: &str) {
        let mut back = self
            .back
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if back.len() < MAX_BACK && back.insert(server.to_owned()) {
            self.notify.notify_one();
        }
    }

    fn take(&self) -> BTreeSet<String> {
        std::mem::take(
            &mut *self
                .destinations
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    fn take_back(&self) -> BTreeSet<String> {
        std::mem::take(
            &mut *self
                .back
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }
}

/// Starts the follower and the dispatcher. The returned task ends once both have stopped,
/// after `state.stopping` turns `true`; nothing is lost by stopping at any point.
pub(crate) fn spawn(fed: Arc<Federation>) -> tokio::task::JoinHandle<()> {
    let wake = fed.transport.outbound.clone();
    // Only one listener exists; a second call (never made) would follow no changes.
    let changes = fed
        .ephemeral
        .watch_changes(CHANGES_CAPACITY)
        .unwrap_or_else(|| mpsc::channel(1).1);
    let follower = actix_web::rt::spawn(follower::run(
        fed.clone(),
        wake.clone(),
        changes,
        fed.stopping.subscribe(),
    ));
    actix_web::rt::spawn(async move {
        let stopping = fed.stopping.subscribe();
        Dispatcher::new(fed, wake).run(stopping).await;
        if let Err(err) = follower.await {
            tracing::error!("federation: the outbound follower failed: {err}");
        }
        tracing::info!("federation: outbound sending stopped");
    })
}

/// What the dispatcher waits for.
enum Event {
    Woken,
    Finished(Result<(tokio::task::Id, Result<usize, FederationError>), JoinError>),
    RetryDue,
    Stopping,
}

/// Runs the senders: which servers have work, which are backing off, which are busy.
struct Dispatcher {
    fed: Arc<Federation>,
    wake: Arc<Wake>,
    /// Servers that may have something queued and no sender running.
    work: BTreeSet<String>,
    backoff: HashMap<String, Backoff>,
    running: HashMap<tokio::task::Id, String>,
    senders: JoinSet<Result<usize, FederationError>>,
}

impl Dispatcher {
    fn new(fed: Arc<Federation>, wake: Arc<Wake>) -> Dispatcher {
        Dispatcher {
            fed,
            wake,
            work: BTreeSet::new(),
            backoff: HashMap::new(),
            running: HashMap::new(),
            senders: JoinSet::new(),
        }
    }

    async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        match queue::known_destinations(&self.fed.storage) {
            Ok(known) => self.work.extend(known),
            Err(err) => tracing::error!("federation: cannot read the outbound queues: {err}"),
        }
        loop {
            if *stopping.borrow() {
                break;
            }
            self.start_ready();
            let retry = self.next_retry();
            let event = tokio::select! {
                _ = self.wake.notify.notified() => Event::Woken,
                Some(done) = self.senders.join_next_with_id() => Event::Finished(done),
                _ = sleep_until(retry) => Event::RetryDue,
                _ = stopping.changed() => Event::Stopping,
            };
            match event {
                Event::Woken => self.woken(),
                Event::Finished(done) => self.finished(done),
                Event::RetryDue => {}
                Event::Stopping => break,
            }
        }
        // A transaction cut off mid-flight is recorded and will be sent again, the same.
        self.senders.shutdown().await;
    }

    /// Takes the new work, and ends the backoff of servers heard from again.
    fn woken(&mut self) {
        self.work.extend(self.wake.take());
        for server in self.wake.take_back() {
            if self.backoff.remove(&server).is_some() {
                tracing::info!(destination = %server, "federation: server is back, retrying now");
                self.work.insert(server);
            }
        }
    }

    /// Starts a sender for each server with work that is neither busy nor backing off, up
    /// to [`MAX_CONCURRENT_DESTINATIONS`].
    fn start_ready(&mut self) {
        let now = Instant::now().into_std();
        let free = MAX_CONCURRENT_DESTINATIONS.saturating_sub(self.running.len());
        let ready: Vec<String> = self
            .work
            .iter()
            .filter(|destination| !self.running.values().any(|busy| busy == *destination))
            .filter(|destination| {
                self.backoff
                    .get(*destination)
                    .is_none_or(|backoff| backoff.is_over(now))
            })
            .take(free)
            .cloned()
            .collect();
        for destination in ready {
            self.work.remove(&destination);
            let sender = drain(self.fed.clone(), destination.clone());
            let id = self.senders.spawn(sender).id();
            self.running.insert(id, destination);
        }
    }

    /// When the first server with work comes out of its backoff.
    fn next_retry(&self) -> Option<Instant> {
        self.work
            .iter()
            .filter_map(|destination| self.backoff.get(destination))
            .map(|backoff| Instant::from_std(backoff.until))
            .min()
    }

    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, Result<usize, FederationError>), JoinError>,
    ) {
        let (id, outcome) = match done {
            Ok((id, outcome)) => (id, outcome.map_err(|err| err.to_string())),
            Err(err) => (err.id(), Err(format!("the sender failed: {err}"))),
        };
        let Some(destination) = self.running.remove(&id) else {
            return;
        };
        match outcome {
            Ok(sent) => {
                if self.backoff.remove(&destination).is_some() {
                    tracing::info!(%destination, sent, "federation: server reachable again");
                }
            }
            Err(err) => {
                let initial = Duration::from_secs(self.fed.config.federation.retry_initial_seconds);
                let previous = self.backoff.get(&destination).copied();
                let backoff = Backoff::after_failure(previous, initial, Instant::now().into_std());
                tracing::warn!(
                    %destination,
                    retry_in_seconds = backoff.delay.as_secs(),
                    "federation: sending failed: {err}"
                );
                self.backoff.insert(destination.clone(), backoff);
                self.work.insert(destination);
            }
        }
    }
}

/// Sleeps until `at`, or forever without it.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends transactions to `destination` until its queue is empty; returns how many.
async fn drain(fed: Arc<Federation>, destination: String) -> Result<usize, FederationError> {
    let mut sent = 0;
    while let Some(transaction) =
        queue::next_transaction(&fed.storage, &destination, crate::matrix::time::now_ms()).await?
    {
        send(&fed, &destination, &transaction).await?;
        queue::complete(&fed.storage, &destination, &transaction).await?;
        tracing::debug!(
            %destination,
            txn_id = %transaction.pending.txn_id,
            pdus = transaction.pdus.len(),
            edus = transaction.edus.len(),
            "federation: transaction accepted"
        );
        sent += 1;
    }
    Ok(sent)
}

/// `PUT /_matrix/federation/v1/send/{txnId}`; only a `200` counts as delivered. PDUs the
/// server refused are its decision, logged and not retried.
async fn send(
    fed: &Federation,
    destination: &str,
    transaction: &Transaction,
) -> Result<(), FederationError> {
    let path = format!("/_matrix/federation/v1/send/{}", transaction.pending.txn_id);
    let body = transaction.body(fed.transport.origin.as_str());
    let response = fed
        .transport
        .signed_request(destination, "PUT", &path, Some(&body), RESPONSE_LIMIT)
        .await?;
    if response.status != 200 {
        return Err(FederationError::Status {
            server: destination.to_owned(),
            status: response.status,
        });
    }
    log_refused_pdus(destination, &response.body);
    Ok(())
}

fn log_refused_pdus(destination: &str, body: &[u8]) {
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let Some(results) = answer.get("pdus").and_then(|pdus| pdus.as_object()) else {
        return;
    };
    for (event_id, result) in results {
        if let Some(error) = result.get("error").and_then(|error| error.as_str()) {
            tracing::info!(%destination, %event_id, "federation: the server refused an event: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use super::*;
    use crate::federation::test_state::test_state;

    #[actix_web::test]
    async fn a_server_heard_from_is_retried_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fed = test_state(dir.path(), "");
        let wake = fed.transport.outbound.clone();
        let mut dispatcher = Dispatcher::new(fed, wake.clone());
        let backoff = Backoff::first(Duration::from_secs(3600), StdInstant::now());
        dispatcher.backoff.insert("down.test".to_owned(), backoff);
        dispatcher
            .backoff
            .insert("still-down.test".to_owned(), backoff);
        wake.server_is_back("down.test");
        wake.server_is_back("never-failed.test");
        wake.add(["new.test".to_owned()]);
        dispatcher.woken();
        let expected = BTreeSet::from(["down.test".to_owned(), "new.test".to_owned()]);
        assert_eq!(dispatcher.work, expected);
        assert_eq!(
            dispatcher.backoff.keys().collect::<Vec<_>>(),
            ["still-down.test"]
        );
    }
}
