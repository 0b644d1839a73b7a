//! Rooms an administrator blocked (the administration API's room deletion with `block`, or
//! its block endpoint): nobody of ours may join, knock on or be invited to them, and other
//! servers cannot join or knock through us.

use ruma::{RoomId, UserId};

use super::Rooms;
use crate::error::{Error, ErrorKind};
use crate::storage::{Storage, StorageError};

/// Who blocked the room, if it is blocked.
pub(crate) fn blocked_by(
    storage: &Storage,
    room_id: &RoomId,
) -> Result<Option<String>, StorageError> {
    storage.roomid_blocked.get(&room_id.to_string())
}

/// `403 M_FORBIDDEN` for a blocked room: the check before a join, knock or invite.
pub(crate) fn refuse_if_blocked(storage: &Storage, room_id: &RoomId) -> Result<(), Error> {
    if blocked_by(storage, room_id)?.is_some() {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "This room has been blocked on this server",
        ));
    }
    Ok(())
}

impl Rooms {
    /// Who blocked the room, if it is blocked.
    pub(crate) fn blocked_by(&self, room_id: &RoomId) -> Result<Option<String>, StorageError> {
        blocked_by(&self.storage, room_id)
    }

    /// Blocks the room (`by`: the administrator) or lifts the block (`None`). Flushed.
    pub(crate) async fn set_blocked(
        &self,
        room_id: &RoomId,
        by: Option<&UserId>,
    ) -> Result<(), StorageError> {
        match by {
            Some(admin) => self
                .storage
                .roomid_blocked
                .insert(&room_id.to_string(), &admin.to_string())?,
            None => self.storage.roomid_blocked.remove(&room_id.to_string())?,
        }
        self.storage.flush().await
    }
}
