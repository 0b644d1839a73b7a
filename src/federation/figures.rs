//! What federation reports to the metrics listener: inbound transactions and their PDUs
//! (counted as they are answered), and the outbound queues' depth and failing servers (read
//! from storage when scraped). No figure is per server: the label sets stay bounded however
//! many servers we talk to.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Federation;
use crate::storage::StorageError;

/// The most queue entries counted at one scrape: a server down for long is collapsed to a
/// catch-up long before, so this only bounds the scrape's own cost.
const COUNT_LIMIT: usize = 1_000_000;

/// Inbound `/send` transactions and their PDUs, counted since start.
#[derive(Default)]
pub(crate) struct InboundCounts {
    transactions: AtomicU64,
    pdus_accepted: AtomicU64,
    pdus_rejected: AtomicU64,
}

impl InboundCounts {
    /// A transaction whose signature and shape passed, about to be processed.
    pub(crate) fn transaction(&self) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }

    /// One PDU of a transaction: accepted (stored, soft-failed or already known) or not
    /// (refused, or dropped for want of an event ID).
    pub(crate) fn pdu(&self, accepted: bool) {
        let counter = if accepted {
            &self.pdus_accepted
        } else {
            &self.pdus_rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Transactions, PDUs accepted and PDUs rejected.
    pub(crate) fn read(&self) -> (u64, u64, u64) {
        (
            self.transactions.load(Ordering::Relaxed),
            self.pdus_accepted.load(Ordering::Relaxed),
            self.pdus_rejected.load(Ordering::Relaxed),
        )
    }
}

/// The outbound side at one moment, all servers together.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutboundFigures {
    /// Entries waiting in the per-server queues (PDUs and EDUs).
    pub(crate) queued: u64,
    /// Catch-up rows of servers that failed long enough to be collapsed (one per room and
    /// receipt sender: the newest event to send them).
    pub(crate) catch_up: u64,
    /// Servers whose last transaction failed (backing off).
    pub(crate) failing_destinations: u64,
}

impl Federation {
    /// Counts the outbound queues (keys only, up to a bound): called when scraped, never on
    /// a request's path.
    pub(crate) fn outbound_figures(&self) -> Result<OutboundFigures, StorageError> {
        let storage = &self.storage;
        Ok(OutboundFigures {
            queued: count(storage.destination_queue.scan_prefix_keys(&[]))?,
            catch_up: count(storage.destination_catchup.scan_prefix_keys(&[]))?,
            failing_destinations: count(storage.destination_state.scan_prefix_keys(&[]))?,
        })
    }
}

fn count<K>(keys: impl Iterator<Item = Result<K, StorageError>>) -> Result<u64, StorageError> {
    keys.take(COUNT_LIMIT)
        .try_fold(0, |count, key| key.map(|_| count + 1))
}
