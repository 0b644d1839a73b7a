//! The global stream: one monotonically increasing position orders everything a client can
//! receive (events, receipts, account data). Positions are taken and their batch applied
//! under one short lock, so they are applied in order; the flush runs outside it
//! (concurrent flushes share the disk's work); the visible position moves forward only once
//! the flush is done. A reader that sees position N has everything up to N stored and on
//! disk: no `/sync` steps over a write in progress or hands out a position a crash could
//! take back.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use super::{Batch, Storage, StorageError};

pub(crate) struct Stream {
    /// Held while stream positions are taken and their batch applied.
    ordered: Mutex<()>,
    /// The newest position whose write, and every earlier one, is stored and flushed.
    visible: watch::Sender<u64>,
}

impl Stream {
    pub(crate) fn new(current_position: u64) -> Stream {
        Stream {
            ordered: Mutex::new(()),
            visible: watch::channel(current_position).0,
        }
    }

    /// A receiver that changes whenever new positions become visible.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.visible.subscribe()
    }

    /// The newest stream position that readers may serve.
    pub(crate) fn visible_position(&self) -> u64 {
        *self.visible.borrow()
    }

    /// Held around taking positions and applying their batch (keep it short: it is shared
    /// by every room and user).
    pub(crate) fn ordered(&self) -> MutexGuard<'_, ()> {
        self.ordered
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Takes the next position, lets `stage` fill a batch for it, applies and flushes the
    /// batch, then makes the position visible.
    pub(crate) async fn commit_at_next_position<E: From<StorageError>>(
        &self,
        storage: &Storage,
        stage: impl FnOnce(&mut Batch, u64) -> Result<(), E>,
    ) -> Result<u64, E> {
        let position = {
            let _ordered = self.ordered();
            let position = storage.next_stream_position()?;
            let mut batch = Batch::new();
            stage(&mut batch, position)?;
            storage.apply(batch)?;
            position
        };
        storage.flush().await?;
        self.publish(position);
        Ok(position)
    }

    /// Notes that something happened in `room` at `position` (an event, a receipt): an
    /// incremental `/sync` then visits only the rooms that changed. The one writer of
    /// `stream_room`.
    pub(crate) fn stage_room_change(
        storage: &Storage,
        batch: &mut Batch,
        position: u64,
        room: &str,
    ) -> Result<(), StorageError> {
        storage
            .stream_room
            .batch_insert(batch, &position, &room.to_owned())
    }

    /// Moves the visible position forward (never back) and wakes whoever waits on it.
    pub(crate) fn publish(&self, position: u64) {
        self.visible.send_if_modified(|visible| {
            let newer = position > *visible;
            if newer {
                *visible = position;
            }
            newer
        });
    }
}
