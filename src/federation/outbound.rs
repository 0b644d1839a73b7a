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
//! backs off (30 s doubling to a day, by default; recorded, so a restart does not retry a
//! server down for days). A server that keeps failing goes into catch-up (see [`queue`]):
//! its backlog is the newest event per room. A server backing off is retried at once when
//! it contacts us ([`Wake::server_is_back`]).
//!
//! Failing servers never hold up live ones: healthy servers have
//! [`MAX_CONCURRENT_DESTINATIONS`] slots of their own; servers backing off are retried in
//! [`MAX_FAILING_DESTINATIONS`] other slots, with a shorter timeout; a sender still busy
//! after [`SLOW_AFTER`] (a server that accepts connections and never answers) stops
//! counting against the healthy slots; and servers whose last transaction was accepted
//! pick healthy slots first.

pub(crate) mod backoff;
pub(crate) mod follower;
pub(crate) mod queue;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

pub(crate) use queue::Transaction;

use super::FederationError;
use crate::federation::Federation;
use crate::matrix::time::now_ms;
use backoff::Backoff;

/// Healthy servers sent to at the same time, at most: bounds connections, memory (a
/// transaction can be 3 MB) and the load on a small machine catching up after an outage.
pub(crate) const MAX_CONCURRENT_DESTINATIONS: usize = 8;

/// Servers backing off that are retried at the same time, at most, apart from the healthy.
pub(crate) const MAX_FAILING_DESTINATIONS: usize = 4;

/// Senders at the same time, at most, however many are slow: bounds connections.
const MAX_SENDERS: usize = 2 * MAX_CONCURRENT_DESTINATIONS + MAX_FAILING_DESTINATIONS;

/// A healthy server's sender still busy after this counts as slow, and frees its healthy
/// slot: a server that accepts connections and never answers does not block the others
/// for the whole request timeout.
pub(crate) const SLOW_AFTER: Duration = Duration::from_secs(5);

/// The time a server backing off has to answer a transaction (the transport's own limit,
/// 30 s, applies to the others): it has to prove it is back, quickly.
const FAILING_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Serializes the follower's staging with the changes of a server's mode (catch-up
    /// in, on a failure; out, on a success), and holds what staging counts: see [`queue`].
    staging: Mutex<queue::Staging>,
}

impl Wake {
    /// Taken around staging a batch and around changing a server's mode; never held
    /// across an `await`.
    pub(crate) fn staging(&self) -> MutexGuard<'_, queue::Staging> {
        self.staging
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

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

/// A sender at work: for which server, since when, and whether in a failing slot.
struct Running {
    destination: String,
    started: Instant,
    failing: bool,
}

impl Running {
    /// Whether it holds a healthy slot: a healthy server's sender, not slow yet.
    fn holds_healthy_slot(&self, now: Instant) -> bool {
        !self.failing && now.duration_since(self.started) < SLOW_AFTER
    }
}

/// Runs the senders: which servers have work, which are backing off, which are busy.
struct Dispatcher {
    fed: Arc<Federation>,
    wake: Arc<Wake>,
    /// Servers that may have something queued and no sender running.
    work: BTreeSet<String>,
    backoff: HashMap<String, Backoff>,
    /// Servers whose last transaction was accepted: they go first, so a live server does
    /// not wait behind servers never tried that turn out to hang.
    reachable: HashSet<String>,
    running: HashMap<tokio::task::Id, Running>,
    senders: JoinSet<Result<usize, FederationError>>,
}

impl Dispatcher {
    fn new(fed: Arc<Federation>, wake: Arc<Wake>) -> Dispatcher {
        Dispatcher {
            fed,
            wake,
            work: BTreeSet::new(),
            backoff: HashMap::new(),
            reachable: HashSet::new(),
            running: HashMap::new(),
            senders: JoinSet::new(),
        }
    }

    async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        match queue::known_destinations(&self.fed.storage) {
            Ok(known) => self.work.extend(known),
            Err(err) => tracing::error!("federation: cannot read the outbound queues: {err}"),
        }
        self.resume_backoffs();
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

    /// Takes up the backoffs recorded before a restart.
    fn resume_backoffs(&mut self) {
        let failing = match queue::failing_destinations(&self.fed.storage) {
            Ok(failing) => failing,
            Err(err) => {
                tracing::error!("federation: cannot read the failing servers: {err}");
                return;
            }
        };
        let (now, now_ms) = (Instant::now().into_std(), crate::matrix::time::now_ms());
        for (destination, state) in failing {
            let backoff = Backoff::recorded(state.delay_ms, state.retry_at_ms, now, now_ms);
            self.backoff.insert(destination.clone(), backoff);
            self.work.insert(destination);
        }
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

    /// Starts a sender for each server with work that is neither busy nor backing off:
    /// healthy servers up to [`MAX_CONCURRENT_DESTINATIONS`] (slow senders left out),
    /// servers whose backoff is over up to [`MAX_FAILING_DESTINATIONS`] (slow senders
    /// counted in), all of them up to [`MAX_SENDERS`].
    fn start_ready(&mut self) {
        let now = Instant::now();
        let healthy_busy = self
            .running
            .values()
            .filter(|running| running.holds_healthy_slot(now))
            .count();
        let mut healthy_free = MAX_CONCURRENT_DESTINATIONS.saturating_sub(healthy_busy);
        let mut failing_free =
            MAX_FAILING_DESTINATIONS.saturating_sub(self.running.len() - healthy_busy);
        let mut total_free = MAX_SENDERS.saturating_sub(self.running.len());
        let mut ready = Vec::new();
        let (known_good, others): (Vec<&String>, Vec<&String>) = self
            .work
            .iter()
            .partition(|destination| self.reachable.contains(*destination));
        for destination in known_good.into_iter().chain(others) {
            if total_free == 0 {
                break;
            }
            if self
                .running
                .values()
                .any(|running| running.destination == *destination)
            {
                continue;
            }
            let failing = match self.backoff.get(destination) {
                Some(backoff) if !backoff.is_over(now.into_std()) => continue,
                Some(_) => true,
                None => false,
            };
            let free = if failing {
                &mut failing_free
            } else {
                &mut healthy_free
            };
            if *free == 0 {
                continue;
            }
            *free -= 1;
            total_free -= 1;
            ready.push((destination.clone(), failing));
        }
        for (destination, failing) in ready {
            self.work.remove(&destination);
            let sender = drain(self.fed.clone(), destination.clone(), failing);
            let id = self.senders.spawn(sender).id();
            let running = Running {
                destination,
                started: now,
                failing,
            };
            self.running.insert(id, running);
        }
    }

    /// When the first server with work comes out of its backoff, or the first healthy
    /// sender turns slow (freeing its slot).
    fn next_retry(&self) -> Option<Instant> {
        let retries = self
            .work
            .iter()
            .filter_map(|destination| self.backoff.get(destination))
            .map(|backoff| Instant::from_std(backoff.until));
        let now = Instant::now();
        let slow = self
            .running
            .values()
            .filter(|running| running.holds_healthy_slot(now))
            .map(|running| running.started + SLOW_AFTER);
        retries.chain(slow).min()
    }

    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, Result<usize, FederationError>), JoinError>,
    ) {
        let (id, outcome) = match done {
            Ok((id, outcome)) => (id, outcome.map_err(|err| err.to_string())),
            Err(err) => (err.id(), Err(format!("the sender failed: {err}"))),
        };
        let Some(Running { destination, .. }) = self.running.remove(&id) else {
            return;
        };
        match outcome {
            // Nothing was sent, so nothing was learnt: a backoff stays as it is.
            Ok(0) => {}
            Ok(sent) => {
                self.reachable.insert(destination.clone());
                if self.backoff.remove(&destination).is_some() {
                    tracing::info!(%destination, sent, "federation: server reachable again");
                }
            }
            Err(err) => {
                let initial = Duration::from_secs(self.fed.config.federation.retry_initial_seconds);
                let previous = self.backoff.get(&destination).copied();
                let backoff = Backoff::after_failure(previous, initial, Instant::now().into_std());
                self.reachable.remove(&destination);
                let catching_up = self.record_failure(&destination, backoff);
                tracing::warn!(
                    %destination,
                    retry_in_seconds = backoff.delay.as_secs(),
                    catching_up,
                    "federation: sending failed: {err}"
                );
                self.backoff.insert(destination.clone(), backoff);
                self.work.insert(destination);
            }
        }
    }

    /// Records a failure and its backoff in storage (which may put the server into
    /// catch-up); whether the server is in catch-up. A storage failure is logged: the
    /// backoff holds in memory all the same.
    fn record_failure(&self, destination: &str, backoff: Backoff) -> bool {
        let delay_ms = u64::try_from(backoff.delay.as_millis()).unwrap_or(u64::MAX);
        let retry_at_ms = crate::matrix::time::now_ms().saturating_add(delay_ms);
        let mut staging = self.wake.staging();
        let storage = &self.fed.storage;
        match queue::record_failure(storage, &mut staging, destination, delay_ms, retry_at_ms) {
            Ok(state) => state.catching_up,
            Err(err) => {
                tracing::error!(%destination, "federation: cannot record a failure: {err}");
                false
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

/// Sends transactions to `destination` until its queue is empty; returns how many. A
/// server backing off (`failing`) has [`FAILING_REQUEST_TIMEOUT`] to answer each.
async fn drain(
    fed: Arc<Federation>,
    destination: String,
    failing: bool,
) -> Result<usize, FederationError> {
    let mut sent = 0;
    let origin = fed.transport.origin.as_str();
    while let Some(transaction) =
        queue::next_transaction(&fed.storage, origin, &destination, now_ms()).await?
    {
        let sending = send(&fed, &destination, &transaction);
        if failing {
            tokio::time::timeout(FAILING_REQUEST_TIMEOUT, sending)
                .await
                .map_err(|_| FederationError::Timeout(destination.clone()))??;
        } else {
            sending.await?;
        }
        {
            let _staging = fed.transport.outbound.staging();
            queue::complete(&fed.storage, origin, &destination, &transaction)?;
        }
        // Not flushed here (sled writes it out within half a second): were it lost in a
        // crash, the same transaction would go again, and the server ignores a `txnId` it
        // has seen. One `flush_async` fewer per transaction also makes sled 0.34's
        // deadlock between concurrent `flush_async` calls and batches rarer.
        tracing::debug!(
            %destination,
            txn_id = %transaction.pending.txn_id,
            pdus = transaction.pdus.len(),
            edus = transaction.edus.len(),
            catch_up = !transaction.pending.catch_up.is_empty(),
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

    /// The destinations of the senders running, failing ones and healthy ones.
    fn running(dispatcher: &Dispatcher) -> (BTreeSet<String>, BTreeSet<String>) {
        let (failing, healthy): (Vec<&Running>, Vec<&Running>) = dispatcher
            .running
            .values()
            .partition(|running| running.failing);
        let names = |all: Vec<&Running>| all.iter().map(|r| r.destination.clone()).collect();
        (names(failing), names(healthy))
    }

    #[actix_web::test]
    async fn failing_servers_have_their_own_slots_and_slow_ones_free_theirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fed = test_state(dir.path(), "");
        let wake = fed.transport.outbound.clone();
        let mut dispatcher = Dispatcher::new(fed, wake);
        // Twenty servers whose backoff is over, and one that never failed.
        let over = Backoff {
            delay: Duration::from_secs(30),
            until: StdInstant::now(),
        };
        for n in 0..20 {
            let name = format!("dead{n:02}.test");
            dispatcher.backoff.insert(name.clone(), over);
            dispatcher.work.insert(name);
        }
        dispatcher.work.insert("live.test".to_owned());
        dispatcher.start_ready();
        let (failing, healthy) = running(&dispatcher);
        assert_eq!(failing.len(), MAX_FAILING_DESTINATIONS);
        assert_eq!(healthy, BTreeSet::from(["live.test".to_owned()]));

        // Healthy servers that never answer: after SLOW_AFTER their slots are free again.
        for n in 0..MAX_CONCURRENT_DESTINATIONS {
            dispatcher.work.insert(format!("silent{n}.test"));
        }
        dispatcher.start_ready();
        assert_eq!(running(&dispatcher).1.len(), MAX_CONCURRENT_DESTINATIONS);
        dispatcher.work.insert("late.test".to_owned());
        dispatcher.start_ready();
        assert!(!running(&dispatcher).1.contains("late.test"), "no slot yet");
        // A server that took our last transaction goes before those never tried.
        let first_slot = dispatcher
            .running
            .iter()
            .find(|(_, running)| running.destination == "silent0.test")
            .map(|(id, _)| *id)
            .expect("running");
        dispatcher.running.remove(&first_slot);
        dispatcher.work.insert("zz-known-good.test".to_owned());
        dispatcher.reachable.insert("zz-known-good.test".to_owned());
        dispatcher.start_ready();
        assert!(running(&dispatcher).1.contains("zz-known-good.test"));
        assert!(!running(&dispatcher).1.contains("late.test"));
        let due = dispatcher.next_retry().expect("a slot frees up");
        assert!(due <= Instant::now() + SLOW_AFTER);
        for running in dispatcher.running.values_mut() {
            running.started -= SLOW_AFTER;
        }
        dispatcher.start_ready();
        assert!(running(&dispatcher).1.contains("late.test"));
        assert!(dispatcher.running.len() <= MAX_SENDERS);
        dispatcher.senders.shutdown().await;
    }

    #[actix_web::test]
    async fn recorded_backoffs_are_taken_up_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fed = test_state(dir.path(), "");
        let now_ms = crate::matrix::time::now_ms();
        for (name, retry_at_ms) in [("later.test", now_ms + 3_600_000), ("due.test", 0)] {
            let mut staging = queue::Staging::default();
            queue::record_failure(&fed.storage, &mut staging, name, 3_600_000, retry_at_ms)
                .expect("record");
        }
        let wake = fed.transport.outbound.clone();
        let mut dispatcher = Dispatcher::new(fed, wake.clone());
        dispatcher.resume_backoffs();
        let now = StdInstant::now();
        assert!(!dispatcher.backoff["later.test"].is_over(now));
        assert!(dispatcher.backoff["due.test"].is_over(now));
        assert!(dispatcher.work.contains("later.test"));
        // It contacts us: retried at once.
        wake.server_is_back("later.test");
        dispatcher.woken();
        assert!(!dispatcher.backoff.contains_key("later.test"));
    }
}
