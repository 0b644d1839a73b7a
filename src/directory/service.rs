//! [`Directory`]: the directory service the HTTP layer calls. It holds the database handle
//! and our server's name (only our aliases are made and resolved here), and answers each
//! client request whole: the checks of who may do what, the change, the flush before
//! answering. The rules it applies are the free functions of [`super`] and
//! [`super::spaces`], which federation's directory answers use too.

use std::sync::Arc;

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedServerName, RoomAliasId, RoomId, UserId};
use serde_json::{Value, json};

use super::spaces::{self, HierarchyPage, HierarchyRequest};
use super::{AliasRecord, aliases_of, create_alias, delete_alias, is_published, local_alias};
use crate::error::{Error, ErrorKind};
use crate::rooms;
use crate::rooms::create::CreateRoomRequest;
use crate::storage::{Storage, StorageError};

/// The most rooms per page of the public room list.
const MAX_PAGE: usize = 100;

pub(crate) struct Directory {
    pub(super) storage: Arc<Storage>,
    pub(super) server_name: OwnedServerName,
}

impl Directory {
    pub(crate) fn new(storage: Arc<Storage>, server_name: OwnedServerName) -> Directory {
        Directory {
            storage,
            server_name,
        }
    }

    /// An alias of this server, or `M_INVALID_PARAM`.
    pub(crate) fn local_alias(&self, text: &str) -> Result<OwnedRoomAliasId, Error> {
        local_alias(&self.server_name, text)
    }

    /// The room a `roomIdOrAlias` path segment names: an ID as is, a local alias resolved.
    pub(crate) fn room_id_or_alias(&self, text: &str) -> Result<OwnedRoomId, Error> {
        super::room_id_or_alias(&self.storage, text)
    }

    /// Where a local alias points.
    pub(crate) fn resolve(&self, alias: &RoomAliasId) -> Result<Option<AliasRecord>, StorageError> {
        super::resolve(&self.storage, alias)
    }

    /// `PUT /directory/room/{roomAlias}`: a member of the room points a new alias of ours
    /// at it (`409` if the alias exists); flushed.
    pub(crate) async fn put_alias(
        &self,
        user: &UserId,
        alias: &str,
        room_id: &RoomId,
    ) -> Result<(), Error> {
        let alias = self.local_alias(alias)?;
        match rooms::membership(&self.storage, user, room_id)? {
            Some(record) if record.membership == "join" => {}
            _ => return Err(Error::new(ErrorKind::Forbidden, "You are not in this room")),
        }
        if !create_alias(&self.storage, &alias, room_id, user)? {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("Room alias {alias} already exists"),
            ));
        }
        Ok(self.storage.flush().await?)
    }

    /// `DELETE /directory/room/{roomAlias}`: its creator may remove an alias, and so may
    /// whoever may change the room's canonical alias; flushed.
    pub(crate) async fn remove_alias(&self, user: &UserId, alias: &str) -> Result<(), Error> {
        let alias = self.local_alias(alias)?;
        let record = self
            .resolve(&alias)?
            .ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?;
        let room_id = OwnedRoomId::try_from(record.room_id)
            .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid room ID"))?;
        let allowed = record.creator == user.as_str()
            || rooms::may_send_state(&self.storage, &room_id, user, "m.room.canonical_alias")?;
        if !allowed {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "You may not remove this alias",
            ));
        }
        delete_alias(&self.storage, &alias)?;
        Ok(self.storage.flush().await?)
    }

    /// A room's local aliases, for its members (or anyone, if it is world-readable).
    pub(crate) fn room_aliases(
        &self,
        user: &UserId,
        room_id: &RoomId,
    ) -> Result<Vec<String>, Error> {
        let member = rooms::membership(&self.storage, user, room_id)?
            .is_some_and(|r| r.membership == "join");
        let world_readable =
            rooms::state_content(&self.storage, room_id, "m.room.history_visibility", "")?
                .is_some_and(|c| c["history_visibility"] == "world_readable");
        if !member && !world_readable {
            return Err(Error::new(ErrorKind::Forbidden, "You are not in this room"));
        }
        Ok(aliases_of(&self.storage, room_id)?)
    }

    /// Whether a room of this server is in the public room list (`404` for an unknown room).
    pub(crate) fn is_listed(&self, room_id: &RoomId) -> Result<bool, Error> {
        self.known_room(room_id)?;
        Ok(is_published(&self.storage, room_id)?)
    }

    /// Lists a room in the public room list or takes it off; who may change the room's join
    /// rules may. Flushed.
    pub(crate) async fn set_listed(
        &self,
        user: &UserId,
        room_id: &RoomId,
        published: bool,
    ) -> Result<(), Error> {
        self.known_room(room_id)?;
        if !rooms::may_send_state(&self.storage, room_id, user, "m.room.join_rules")? {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "You may not change whether this room is listed",
            ));
        }
        self.publish(room_id, published)?;
        Ok(self.storage.flush().await?)
    }

    /// Lists or unlists a room without checks (the creator of a room made public); not
    /// flushed.
    pub(crate) fn publish(&self, room_id: &RoomId, published: bool) -> Result<(), StorageError> {
        super::set_published(&self.storage, room_id, published)
    }

    /// `POST /createRoom`: a room made by `creator` through the room service, with the
    /// alias `room_alias_name` asks for (refused with `M_ROOM_IN_USE` before anything is
    /// made if it is taken) and, for `visibility: public`, a place in the public list.
    /// The alias becomes the room's canonical alias, so it is claimed only after the room
    /// exists; a race that takes it meanwhile leaves the room without it (logged).
    /// Flushed.
    pub(crate) async fn create_room(
        &self,
        rooms: &rooms::Rooms,
        creator: &UserId,
        mut request: CreateRoomRequest,
    ) -> Result<OwnedRoomId, Error> {
        let alias = match &request.room_alias_name {
            Some(name) => {
                let alias = self.local_alias(&format!("#{name}:{}", self.server_name))?;
                if self.resolve(&alias)?.is_some() {
                    return Err(Error::new(
                        ErrorKind::RoomInUse,
                        format!("The alias {alias} is taken"),
                    ));
                }
                Some(alias)
            }
            None => None,
        };
        request.canonical_alias = alias.as_ref().map(ToString::to_string);
        let publish = request.visibility.as_deref() == Some("public");
        let room_id = rooms
            .create_room(
                creator,
                request,
                crate::matrix::events::DEFAULT_ROOM_VERSION,
            )
            .await?;
        if let Some(alias) = &alias
            && !create_alias(&self.storage, alias, &room_id, creator)?
        {
            tracing::warn!(%alias, %room_id, "the alias was taken while the room was made");
        }
        if publish {
            self.publish(&room_id, true)?;
        }
        self.storage.flush().await?;
        Ok(room_id)
    }

    /// After a room upgrade: `old`'s local aliases point at `new` instead (recreated in
    /// `user`'s name, who made the upgrade), and if `old` was in the public list, `new`
    /// takes its place. Not flushed: the room service flushes the upgrade as a whole.
    pub(crate) fn move_room(&self, old: &RoomId, new: &RoomId, user: &UserId) -> Result<(), Error> {
        for alias in aliases_of(&self.storage, old)? {
            if let Ok(alias) = OwnedRoomAliasId::try_from(alias.as_str()) {
                delete_alias(&self.storage, &alias)?;
                create_alias(&self.storage, &alias, new, user)?;
            }
        }
        if is_published(&self.storage, old)? {
            self.publish(old, false)?;
            self.publish(new, true)?;
        }
        Ok(())
    }

    fn known_room(&self, room_id: &RoomId) -> Result<(), Error> {
        if self
            .storage
            .roomid_room
            .get(&room_id.to_string())?
            .is_none()
        {
            return Err(Error::not_found("Room not found"));
        }
        Ok(())
    }

    /// A page of this server's public room list: `since` is the offset a previous page
    /// gave (`next_batch`, `prev_batch`), `search` a term to look for in names, topics and
    /// aliases.
    pub(crate) fn public_rooms_page(
        &self,
        limit: Option<usize>,
        since: Option<&str>,
        search: Option<&str>,
    ) -> Result<Value, Error> {
        let rooms = super::public_rooms(&self.storage, search)?;
        let start: usize = match since {
            Some(token) => token
                .parse()
                .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid since token"))?,
            None => 0,
        };
        let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
        let total = rooms.len();
        let chunk: Vec<Value> = rooms.into_iter().skip(start).take(limit).collect();
        let mut response = json!({ "chunk": chunk, "total_room_count_estimate": total });
        if start.saturating_add(limit) < total {
            response["next_batch"] = json!((start + limit).to_string());
        }
        if start > 0 {
            response["prev_batch"] = json!(start.saturating_sub(limit).to_string());
        }
        Ok(response)
    }

    /// Whether `user` may see what a room is without being in it ([`super::may_preview`]).
    pub(crate) fn may_preview(
        &self,
        user: &UserId,
        room_id: &RoomId,
    ) -> Result<bool, StorageError> {
        super::may_preview(&self.storage, user, room_id)
    }

    /// A room's summary (spec: `RoomSummary`) as `user` may see it, with their membership
    /// if they have one worth telling; a room here they may not preview is `404`, as if it
    /// did not exist.
    pub(crate) fn room_summary(&self, user: &UserId, room_id: &RoomId) -> Result<Value, Error> {
        if self
            .storage
            .roomid_room
            .get(&room_id.to_string())?
            .is_none()
            || !self.may_preview(user, room_id)?
        {
            return Err(Error::not_found("No such room"));
        }
        let mut summary = super::summary(&self.storage, room_id)?;
        let membership = rooms::membership(&self.storage, user, room_id)?
            .map(|r| r.membership)
            .filter(|m| matches!(m.as_str(), "join" | "invite" | "knock"));
        if let Some(membership) = membership {
            summary["membership"] = json!(membership);
        }
        Ok(summary)
    }

    /// The user directory (spec: client-server API, "User directory"): this server's users
    /// whose ID or display name contains `term`, among those `searcher` may find: themself,
    /// anyone they share a room with, anyone in a published room. At most `limit` (10
    /// unless asked, 1 to 50); the second value says whether more were found. The search
    /// over accounts and profiles is the users module's ([`crate::users::profile::search`]);
    /// who may be found is a question of memberships and published rooms, answered here,
    /// the one service that sees both.
    pub(crate) fn search_users(
        &self,
        searcher: &UserId,
        term: &str,
        limit: Option<usize>,
    ) -> Result<(Vec<Value>, bool), Error> {
        let limit = limit.unwrap_or(10).clamp(1, 50);
        crate::users::profile::search(&self.storage, term, limit, |other| {
            Ok(other == searcher || self.findable_by(searcher, other)?)
        })
    }

    /// Whether `other` shares a room with `user`, or is in a published room.
    fn findable_by(&self, user: &UserId, other: &UserId) -> Result<bool, Error> {
        for (room, record) in rooms::memberships(&self.storage, other)? {
            if record.membership != "join" {
                continue;
            }
            if is_published(&self.storage, &room)?
                || rooms::membership(&self.storage, user, &room)?
                    .is_some_and(|r| r.membership == "join")
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A page of the space tree under `root`, as `user` may see it ([`spaces::hierarchy`]).
    pub(crate) fn hierarchy(
        &self,
        user: &UserId,
        root: &RoomId,
        request: &HierarchyRequest,
    ) -> Result<HierarchyPage, Error> {
        spaces::hierarchy(&self.storage, user, root, request)
    }
}
