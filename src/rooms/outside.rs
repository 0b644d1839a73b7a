//! Memberships of our users in rooms we do not hold: an invite or a knock that came (or went)
//! over federation, and the leave that declines or withdraws it. The room's events do not
//! reach us, so only the membership event itself, the stripped state shown with an invite,
//! and the user's membership record are kept, at a new stream position so `/sync` shows them.

use ruma::{RoomId, UserId};
use serde_json::Value;

use super::{MembershipRecord, Rooms};
use crate::error::Error;

impl Rooms {
    /// Keeps `membership` (`invite`, `knock` or `leave`) of `user_id` in `room_id`: with its
    /// event when there is one (`(event ID, canonical JSON)`; a leave declined here only has
    /// none and points at the invite it declines), and with the room's stripped state when
    /// one was given.
    pub(crate) async fn store_outside_membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        event: Option<(String, String)>,
        membership: &str,
        stripped: Option<Vec<Value>>,
    ) -> Result<(), Error> {
        let room = room_id.to_string();
        let user = user_id.to_string();
        let key = (user, room.clone());
        let previous = self.storage.userroom_membership.get(&key)?;
        let event_id = match &event {
            Some((event_id, _)) => event_id.clone(),
            None => previous
                .as_ref()
                .map(|record| record.event_id.clone())
                .unwrap_or_default(),
        };
        self.commit_at_next_position(|batch, position| {
            let storage = &self.storage;
            if let Some((_, text)) = &event {
                storage.eventid_pdu.batch_insert(batch, &event_id, text)?;
                super::remote::stage_meta(storage, batch, &room, &event_id, Some(position))?;
            }
            crate::storage::stream::Stream::stage_room_change(storage, batch, position, &room)?;
            if let Some(stripped) = &stripped {
                storage
                    .userroom_invitestate
                    .batch_insert(batch, &key, stripped)?;
            }
            let record = MembershipRecord {
                membership: membership.to_owned(),
                stream: position,
                event_id: event_id.clone(),
                joined_stream: previous.as_ref().and_then(|p| p.joined_stream),
                invited_stream: if membership == "invite" {
                    Some(position)
                } else {
                    previous.as_ref().and_then(|p| p.invited_stream)
                },
            };
            storage
                .userroom_membership
                .batch_insert(batch, &key, &record)?;
            Ok(())
        })
        .await?;
        Ok(())
    }
}
