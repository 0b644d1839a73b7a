//! A federation transaction's events, stored one by one and flushed once: the answer to the
//! transaction waits for the one flush, so no event we answered for is lost, and a
//! transaction of 50 events costs one `fdatasync` instead of 50.

use ruma::{CanonicalJsonObject, OwnedEventId, RoomId};

use super::{NamedState, Rooms, remote};
use crate::matrix::events::Pdu;

/// Events stored, not yet flushed nor visible (see [`Rooms::store_remote_unflushed`]): whether
/// any write waits for a flush, and the newest stream position and the number of timeline
/// events among them.
#[derive(Default)]
pub(crate) struct Unflushed {
    written: std::sync::Mutex<Option<(Option<u64>, usize)>>,
}

impl Unflushed {
    /// Counts a write: a timeline event at `position`, or (`None`) an event kept outside
    /// the timeline.
    pub(super) fn written(&self, position: Option<u64>) {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (newest, events) = written.get_or_insert((None, 0));
        if let Some(position) = position {
            *newest = Some(newest.map_or(position, |newest| newest.max(position)));
            *events += 1;
        }
    }

    fn take(self) -> Option<(Option<u64>, usize)> {
        self.written
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Rooms {
    /// [`Rooms::store_remote_at_gap`] for one event of a transaction: the event is stored
    /// but neither flushed nor made visible; `unflushed` keeps track of it until
    /// [`Rooms::make_durable`], once for the whole transaction (one `fdatasync` for 50
    /// events instead of 50).
    pub(crate) async fn store_remote_unflushed(
        &self,
        room_id: &RoomId,
        (json, pdu): (CanonicalJsonObject, Pdu),
        gap: &[(OwnedEventId, NamedState)],
        unflushed: &Unflushed,
    ) -> Result<remote::Outcome, remote::Refused> {
        self.store_remote_in(room_id, (json, pdu), (false, gap), Some(unflushed))
            .await
    }

    /// Flushes the events `unflushed` kept track of, then makes them visible and wakes
    /// `/sync`: what a transaction's answer waits for.
    pub(crate) async fn make_durable(
        &self,
        unflushed: Unflushed,
    ) -> Result<(), crate::storage::StorageError> {
        let Some((position, events)) = unflushed.take() else {
            return Ok(());
        };
        self.storage.flush().await?;
        if let Some(position) = position {
            self.publish(position, events);
        }
        Ok(())
    }
}
