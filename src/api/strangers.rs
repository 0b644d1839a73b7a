//! What a stranger may hold of the server before we know who it is, shared by every worker:
//! the bytes of bodies not yet authenticated (one budget for the whole server), the requests
//! in flight per client address, and the federation requests in flight per origin. Each is
//! refused cheaply when full (`429 M_LIMIT_EXCEEDED`) rather than queued: a queue would hold
//! the very connections and memory the limit is there to bound.
//!
//! The tables hold an entry only while a request is in flight, so they are never larger than
//! the number of open connections.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;
use crate::error::{Error, ErrorKind};

/// Transactions (`/send`) in flight per origin: the spec has a server send them one at a time.
const TRANSACTIONS_PER_ORIGIN: usize = 1;
/// Other signed requests in flight per origin (joins, backfill, state, key queries...): a few,
/// as a server fetching what it missed may ask for several things at once.
const REQUESTS_PER_ORIGIN: usize = 16;
/// What a refused request is told to wait: these limits free up as requests finish.
const RETRY_AFTER_MS: u64 = 1000;

pub(crate) struct Strangers {
    unauthenticated_bytes: Arc<Semaphore>,
    addresses: Arc<Counters<IpAddr>>,
    origins: Arc<Counters<(String, bool)>>,
    max_requests_per_address: usize,
    /// The time a whole request body has to arrive.
    pub(crate) body_timeout: Duration,
}

impl Strangers {
    pub(crate) fn new(limits: &LimitsConfig) -> Strangers {
        Strangers {
            unauthenticated_bytes: Arc::new(Semaphore::new(
                limits
                    .unauthenticated_body_bytes
                    .min(Semaphore::MAX_PERMITS),
            )),
            addresses: Arc::default(),
            origins: Arc::default(),
            max_requests_per_address: limits.max_requests_per_address,
            body_timeout: Duration::from_secs(limits.body_timeout_seconds),
        }
    }

    /// Takes `bytes` more of the unauthenticated budget into `held`, or refuses.
    pub(crate) fn hold_bytes(
        &self,
        held: &mut Option<OwnedSemaphorePermit>,
        bytes: usize,
    ) -> Result<(), Error> {
        let refused =
            || limit_exceeded("The server is busy reading other unauthenticated requests");
        let bytes = u32::try_from(bytes).map_err(|_| refused())?;
        let permit = self
            .unauthenticated_bytes
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| refused())?;
        match held {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }

    /// A place for one more request from `address`, given back when the slot is dropped.
    pub(crate) fn enter_address(&self, address: IpAddr) -> Result<Slot<IpAddr>, Error> {
        let key = super::ratelimit::address_key(address);
        self.addresses
            .enter(key, self.max_requests_per_address)
            .ok_or_else(|| limit_exceeded("Too many requests in flight from your address"))
    }

    /// A place for one more authenticated request from `origin`: one transaction at a time,
    /// a few other requests.
    pub(crate) fn enter_origin(
        &self,
        origin: &str,
        transaction: bool,
    ) -> Result<Slot<(String, bool)>, Error> {
        let cap = if transaction {
            TRANSACTIONS_PER_ORIGIN
        } else {
            REQUESTS_PER_ORIGIN
        };
        self.origins
            .enter((origin.to_owned(), transaction), cap)
            .ok_or_else(|| {
                limit_exceeded(if transaction {
                    "A transaction from your server is still being processed"
                } else {
                    "Too many requests in flight from your server"
                })
            })
    }
}

fn limit_exceeded(message: &'static str) -> Error {
    Error::new(
        ErrorKind::LimitExceeded {
            retry_after_ms: RETRY_AFTER_MS,
        },
        message,
    )
}

/// Requests in flight per key.
struct Counters<K>(Mutex<HashMap<K, usize>>);

impl<K> Default for Counters<K> {
    fn default() -> Self {
        Counters(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq + Clone> Counters<K> {
    fn enter(self: &Arc<Self>, key: K, cap: usize) -> Option<Slot<K>> {
        let mut table = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        let count = table.entry(key.clone()).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(Slot {
            counters: self.clone(),
            key,
        })
    }
}

/// One request's place in a [`Counters`] table, given back on drop (whatever way the request
/// ends: answered, failed, or its connection gone).
pub(crate) struct Slot<K: Hash + Eq> {
    counters: Arc<Counters<K>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut table = self
            .counters
            .0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(count) = table.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strangers(bytes: usize, per_address: usize) -> Strangers {
        Strangers::new(&LimitsConfig {
            unauthenticated_body_bytes: bytes,
            max_requests_per_address: per_address,
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn the_byte_budget_is_shared_and_given_back() {
        let strangers = strangers(1000, 1);
        let mut first = None;
        strangers.hold_bytes(&mut first, 600).expect("fits");
        strangers.hold_bytes(&mut first, 300).expect("fits");
        let mut second = None;
        let err = strangers.hold_bytes(&mut second, 200).expect_err("full");
        assert_eq!(err.kind.errcode(), "M_LIMIT_EXCEEDED");
        drop(first);
        strangers.hold_bytes(&mut second, 1000).expect("given back");
    }

    #[test]
    fn addresses_and_origins_have_their_own_places() {
        let strangers = strangers(1000, 2);
        let a: IpAddr = [192, 0, 2, 1].into();
        let first = strangers.enter_address(a).expect("first");
        let _second = strangers.enter_address(a).expect("second");
        assert!(strangers.enter_address(a).is_err());
        assert!(strangers.enter_address([192, 0, 2, 2].into()).is_ok());
        drop(first);
        assert!(strangers.enter_address(a).is_ok());

        let transaction = strangers.enter_origin("a.example", true).expect("one");
        assert!(strangers.enter_origin("a.example", true).is_err());
        assert!(strangers.enter_origin("b.example", true).is_ok());
        assert!(strangers.enter_origin("a.example", false).is_ok());
        drop(transaction);
        assert!(strangers.enter_origin("a.example", true).is_ok());
        assert!(strangers.origins.0.lock().expect("lock").is_empty());
    }
}
