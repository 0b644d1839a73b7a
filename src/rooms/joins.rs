//! A local user's own membership changes in a room this server holds: joining, leaving,
//! knocking (spec: client-server API, "Room membership"). Joins through other servers are
//! federation's; this is the part that needs only our copy of the room.

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use super::Rooms;
use super::restricted::{JoinAuthorisation, authorise_join};
use crate::error::Error;
use crate::matrix::events::builder::NewEvent;

impl Rooms {
    /// Sends `user_id`'s own membership event `membership` (`join`, `leave`, `knock`) with
    /// `reason`, in a room we hold (`404` otherwise: a room elsewhere needs federation).
    ///
    /// A join carries the user's `profile` (read by the caller from the users service), as
    /// clients show members by it; joining a room one is in already sends nothing. In a
    /// restricted room one of our users in the room vouches for the join, as the auth rules
    /// ask (`M_UNABLE_TO_GRANT_JOIN` if none may: another resident server might).
    pub(crate) async fn change_own_membership(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        membership: &str,
        reason: Option<String>,
        profile: &Map<String, Value>,
    ) -> Result<(), Error> {
        if !self.exists(room_id)? {
            return Err(Error::not_found(
                "This server is not in that room; joining rooms on other servers needs federation, which is not supported yet",
            ));
        }
        if membership == "join" || membership == "knock" {
            super::blocked::refuse_if_blocked(&self.storage, room_id)?;
        }
        let current = self.membership(user_id, room_id)?;
        if membership == "join" && current.is_some_and(|record| record.membership == "join") {
            return Ok(());
        }
        let mut content = if membership == "join" {
            crate::users::profile::member_content(membership, profile)
        } else {
            json!({ "membership": membership })
        };
        if let Some(reason) = reason {
            content["reason"] = json!(reason);
        }
        if membership == "join"
            && let JoinAuthorisation::Via(authoriser) =
                authorise_join(&self.storage, room_id, user_id, user_id.server_name())?
        {
            content["join_authorised_via_users_server"] = json!(authoriser);
        }
        let new = NewEvent::state("m.room.member", user_id.as_str(), content);
        self.append(room_id, user_id, new).await?;
        Ok(())
    }
}
