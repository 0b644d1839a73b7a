//! Push: notifications for our users' phones, sent to the push gateways their apps named
//! with `POST /pushers/set` (spec: client-server API, "Push Notifications"; push gateway
//! API). It lives with federation because a gateway is a remote server reached like one:
//! it shares the outbound HTTPS client, the private-address check and the wire format, and
//! nothing else of federation.
//!
//! - [`follower`]: the stream → each pusher's durable queue ([`queue`]), resumed after a
//!   restart from its recorded position.
//! - [`payload`]: the notification a gateway receives, built when it is sent.
//! - [`gateway`]: the one entry point that posts it ([`gateway::Gateway::notify`]).
//!
//! Delivery is off the send path: a message is stored and answered before anything here
//! reads it. One task follows the stream and starts deliveries, at most
//! [`MAX_CONCURRENT_DELIVERIES`] at once, one per pusher at a time, each try limited to
//! [`gateway::GATEWAY_TIMEOUT`]; a pusher whose gateway fails waits (doubling from
//! [`FIRST_RETRY`] to [`LONGEST_RETRY`]) while the others go on.

pub(crate) mod follower;
pub(crate) mod gateway;
pub(crate) mod payload;
pub(crate) mod queue;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::rooms::Rooms;
use crate::storage::{Storage, StorageError};
use gateway::{Gateway, GatewayError};

/// Deliveries in flight at once, all pushers together.
pub(crate) const MAX_CONCURRENT_DELIVERIES: usize = 4;

/// The wait after a gateway's first failure; it doubles with each failure after it.
pub(crate) const FIRST_RETRY: Duration = Duration::from_secs(1);
pub(crate) const LONGEST_RETRY: Duration = Duration::from_secs(600);

/// An item nobody could deliver for this long is dropped: the news is stale.
const ITEM_LIFETIME_MS: u64 = 24 * 3600 * 1000;

/// Waited after a storage failure before trying again.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The push service: the handles it works with.
pub(crate) struct Push {
    pub(crate) storage: Arc<Storage>,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) gateway: Gateway,
}

/// How one pusher's delivery run ended.
enum Outcome {
    /// Its queue is empty (or the pusher is gone).
    Done,
    /// Its gateway failed: wait before the next try.
    Failed,
}

/// Starts the push task; it stops soon after `stopping` turns `true`.
pub(crate) fn spawn(
    push: Arc<Push>,
    stopping: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    actix_web::rt::spawn(run(push, stopping))
}

async fn run(push: Arc<Push>, mut stopping: watch::Receiver<bool>) {
    let mut visible = push.rooms.subscribe();
    let mut handled = loop {
        match follower::start(&push.storage, push.rooms.visible_position()) {
            Ok(handled) => break handled,
            Err(err) => {
                tracing::error!("push: cannot read the push position: {err}");
                if pause(&mut stopping).await {
                    return;
                }
            }
        }
    };
    let mut deliveries = Deliveries::default();
    loop {
        if *stopping.borrow() {
            return;
        }
        let upto = *visible.borrow_and_update();
        match follower::catch_up(&push.storage, handled, upto).await {
            Ok((now_handled, _)) => handled = now_handled,
            Err(err) => {
                tracing::error!("push: queueing notifications failed: {err}");
                if pause(&mut stopping).await {
                    return;
                }
                continue;
            }
        }
        if let Err(err) = deliveries.start_ready(&push) {
            tracing::error!("push: cannot read the push queues: {err}");
        }
        let next_retry = deliveries.next_retry();
        let retry = async {
            match next_retry {
                Some(until) => tokio::time::sleep_until(until.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = visible.changed() => if changed.is_err() { return },
            Some(joined) = deliveries.running.join_next_with_id() => deliveries.finished(joined),
            () = retry => {}
            _ = stopping.changed() => return,
        }
    }
}

/// The deliveries in flight (one per pusher at most) and the pushers waiting after a
/// failure. Dropped when the server stops, which cancels what is in flight (an item is
/// removed from its queue only once delivered, so it goes again after the restart).
#[derive(Default)]
struct Deliveries {
    running: JoinSet<Outcome>,
    /// The pusher of each running delivery.
    in_flight: HashMap<tokio::task::Id, String>,
    /// Per pusher: failures in a row, and when to try again.
    failures: HashMap<String, (u32, Instant)>,
}

impl Deliveries {
    /// Starts a delivery for each pusher with something queued, not already being
    /// delivered to and not waiting after a failure, up to the concurrency bound.
    fn start_ready(&mut self, push: &Arc<Push>) -> Result<(), StorageError> {
        let now = Instant::now();
        for key in queue::waiting(&push.storage)? {
            if self.in_flight.len() >= MAX_CONCURRENT_DELIVERIES {
                break;
            }
            let waiting = self
                .failures
                .get(&key)
                .is_some_and(|(_, until)| *until > now);
            if waiting || self.in_flight.values().any(|running| *running == key) {
                continue;
            }
            let (push, pusher) = (push.clone(), key.clone());
            let task = self.running.spawn_local(async move {
                deliver_queue(&push, &pusher).await.unwrap_or_else(|err| {
                    tracing::error!("push: delivery stopped on a storage error: {err}");
                    Outcome::Failed
                })
            });
            self.in_flight.insert(task.id(), key);
        }
        Ok(())
    }

    /// Notes how a delivery ended: a failure (or a task that died) waits, doubling from
    /// [`FIRST_RETRY`] up to [`LONGEST_RETRY`].
    fn finished(&mut self, joined: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>) {
        let (id, outcome) = match joined {
            Ok((id, outcome)) => (id, outcome),
            Err(err) => (err.id(), Outcome::Failed),
        };
        let Some(key) = self.in_flight.remove(&id) else {
            return;
        };
        match outcome {
            Outcome::Done => {
                self.failures.remove(&key);
            }
            Outcome::Failed => {
                let count = self.failures.get(&key).map_or(0, |(count, _)| *count);
                let delay = FIRST_RETRY
                    .saturating_mul(1 << count.min(16))
                    .min(LONGEST_RETRY);
                self.failures
                    .insert(key, (count + 1, Instant::now() + delay));
            }
        }
    }

    /// When the next waiting pusher may be tried.
    fn next_retry(&self) -> Option<Instant> {
        self.failures
            .iter()
            .filter(|(key, _)| !self.in_flight.values().any(|running| running == *key))
            .map(|(_, (_, until))| *until)
            .min()
    }
}

/// Sends a pusher's queued items in order until it is empty or its gateway fails.
async fn deliver_queue(push: &Push, key: &str) -> Result<Outcome, StorageError> {
    let storage = &push.storage;
    while let Some((position, item)) = queue::first(storage, key)? {
        let pusher = crate::users::push_rules::stored_pushers(storage, &item.user_id)?
            .into_iter()
            .find(|pusher| {
                pusher["app_id"] == item.app_id.as_str()
                    && pusher["pushkey"] == item.pushkey.as_str()
            });
        let Some(pusher) = pusher.filter(|pusher| pusher["kind"] == "http") else {
            // Deleted (`kind: null`, or replaced by another user's): nothing more goes there.
            queue::clear(storage, key)?;
            return Ok(Outcome::Done);
        };
        if crate::matrix::time::now_ms().saturating_sub(item.queued_ms) > ITEM_LIFETIME_MS {
            tracing::info!(
                user = item.user_id,
                "push: a notification undelivered for a day is dropped"
            );
            queue::remove(storage, key, position)?;
            continue;
        }
        let upto = push.rooms.visible_position();
        let Some(body) = payload::notification(storage, &item, &pusher, upto)? else {
            queue::remove(storage, key, position)?;
            continue;
        };
        let url = pusher["data"]["url"].as_str().unwrap_or_default();
        match push.gateway.notify(url, &body).await {
            Ok(delivered) => {
                if delivered.rejected.contains(&item.pushkey) {
                    tracing::info!(
                        user = item.user_id,
                        app_id = item.app_id,
                        "push: the gateway rejected a pushkey; its pusher is removed"
                    );
                    crate::users::push_rules::remove_rejected_pusher(
                        storage,
                        &item.user_id,
                        &item.app_id,
                        &item.pushkey,
                    )?;
                    queue::clear(storage, key)?;
                    storage.flush().await?;
                    return Ok(Outcome::Done);
                }
                queue::remove(storage, key, position)?;
            }
            Err(GatewayError::Permanent(reason)) => {
                tracing::warn!(
                    user = item.user_id,
                    "push: a notification cannot be delivered: {reason}"
                );
                queue::remove(storage, key, position)?;
            }
            Err(GatewayError::Temporary(reason)) => {
                tracing::info!(
                    user = item.user_id,
                    "push: the gateway failed, will retry: {reason}"
                );
                return Ok(Outcome::Failed);
            }
        }
    }
    Ok(Outcome::Done)
}

/// Waits a little after a failure; `true` if the server is stopping meanwhile.
async fn pause(stopping: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(PAUSE_AFTER_FAILURE) => *stopping.borrow(),
        _ = stopping.changed() => true,
    }
}
