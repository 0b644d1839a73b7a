//! The write gate: how a backup of a running server sees the whole database at one instant.
//!
//! sled has no snapshot that spans trees: reading tree after tree while writes land would
//! copy an event's index without the event, or the event without its stream position. So
//! every write of this module (each `Tree` insert, remove or update, each counter, each
//! [`super::Batch`]) passes the gate *shared*, for the length of that one sled call, and
//! [`super::Storage::frozen`] closes it *exclusively* while the backup reads. Writers then
//! wait (for as long as the export takes: about a second for the standard workload's
//! data), readers never do.
//!
//! What the backup sees is therefore the database between two write calls, the same state
//! a power cut at that instant would have left after a flush, which the rest of Hearth is
//! already built to start from (a batch is whole or absent; writes outside batches are made
//! in an order that tolerates a stop between them). A write acknowledged to a client before
//! the gate closed is in it.
//!
//! No write passes the gate twice in one call (a `Tree::update` closure is pure), so a
//! writer never waits on the gate while holding it, and nothing running under
//! [`super::Storage::frozen`] may write.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Clone, Default)]
pub(crate) struct Gate(Arc<RwLock<()>>);

impl Gate {
    /// Held by one write call.
    pub(super) fn pass(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Held while a backup reads: no write runs meanwhile.
    pub(super) fn close(&self) -> RwLockWriteGuard<'_, ()> {
        self.0.write().unwrap_or_else(|poison| poison.into_inner())
    }
}
