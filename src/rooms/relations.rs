//! Relations and threads (spec: client-server API, "Relationships", "Threading"): the
//! events that relate to an event (replies in a thread, reactions, edits, references), and a
//! room's threads, newest activity first, as a member may see them.

use ruma::{RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::format::stored_event_for_client;
use super::timeline::{history_start, parse_token};
use super::visibility::Visibility;
use super::{Rooms, membership};
use crate::error::{Error, ErrorKind};
use crate::storage::pair_prefix;

/// How deep `recurse=true` follows relations of relations (the spec asks for at least 3).
const MAX_DEPTH: usize = 3;
const MAX_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
pub(crate) struct RelationsQuery {
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) limit: Option<usize>,
    pub(crate) dir: Option<String>,
    pub(crate) recurse: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ThreadsQuery {
    pub(crate) include: Option<String>,
    pub(crate) from: Option<String>,
    pub(crate) limit: Option<usize>,
}

impl Rooms {
    /// The events that relate to `event_id` (spec: "Relationships"), as `user_id` may see
    /// them: of one relation type and event type if asked, following relations of relations
    /// up to [`MAX_DEPTH`] with `recurse`, paged by stream position.
    pub(crate) fn relations(
        &self,
        (user_id, device_id): (&UserId, &str),
        room_id: &RoomId,
        event_id: &str,
        (rel_type, event_type): (Option<String>, Option<String>),
        query: &RelationsQuery,
    ) -> Result<Value, Error> {
        let view = self.visible_event(user_id, room_id, event_id)?;
        let backwards = match query.dir.as_deref() {
            None | Some("b") => true,
            Some("f") => false,
            Some(_) => return Err(Error::new(ErrorKind::InvalidParam, "dir must be b or f")),
        };
        let position = |token: &Option<String>| -> Result<Option<u64>, Error> {
            token
                .as_deref()
                .map(|token| {
                    parse_token(token)
                        .map(|(p, _)| p)
                        .ok_or_else(|| Error::new(ErrorKind::InvalidParam, "Invalid token"))
                })
                .transpose()
        };
        let (from, to) = (position(&query.from)?, position(&query.to)?);
        let limit = query.limit.unwrap_or(50).clamp(1, MAX_PAGE);
        let depth = if query.recurse.unwrap_or(false) {
            MAX_DEPTH
        } else {
            1
        };

        // Children (and, recursing, their children), each with its position.
        let mut found: Vec<(u64, String)> = Vec::new();
        let mut parents = vec![event_id.to_owned()];
        for _ in 0..depth {
            let mut next = Vec::new();
            for parent in &parents {
                for entry in self.storage.parent_child.scan_prefix(&pair_prefix(parent)) {
                    let ((_, position), child) = entry?;
                    next.push(child.clone());
                    found.push((position, child));
                }
            }
            if next.is_empty() {
                break;
            }
            parents = next;
        }
        found.sort_by_key(|(position, _)| *position);
        if backwards {
            found.reverse();
        }
        let mut chunk = Vec::new();
        let mut next_batch = None;
        for (position, child) in found {
            let in_range = if backwards {
                from.is_none_or(|from| position <= from) && to.is_none_or(|to| position > to)
            } else {
                from.is_none_or(|from| position >= from) && to.is_none_or(|to| position < to)
            };
            // Each child on its own: a member who left and came back does not read
            // what was said while away through the relations of an event they saw.
            if !in_range || !view.allows(position) {
                continue;
            }
            let Some(event) = stored_event_for_client(
                &self.storage,
                &child,
                Some(room_id.as_str()),
                Some(device_id),
            )?
            else {
                continue;
            };
            let relation = &event["content"]["m.relates_to"];
            if rel_type
                .as_deref()
                .is_some_and(|wanted| relation["rel_type"] != wanted)
                || event_type
                    .as_deref()
                    .is_some_and(|wanted| event["type"] != wanted)
            {
                continue;
            }
            if chunk.len() == limit {
                next_batch = Some(position.to_string());
                break;
            }
            chunk.push(event);
        }
        let mut response = json!({ "chunk": chunk });
        if let Some(next_batch) = next_batch {
            response["next_batch"] = json!(next_batch);
        }
        if depth > 1 {
            response["recursion_depth"] = json!(depth);
        }
        Ok(response)
    }

    /// The room's threads (spec: "Threading"), newest activity first, all of them or those
    /// `user_id` took part in.
    pub(crate) fn threads(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        query: &ThreadsQuery,
    ) -> Result<Value, Error> {
        let record = match membership(&self.storage, user_id, room_id)? {
            Some(record) if record.membership == "join" => record,
            _ => return Err(Error::new(ErrorKind::Forbidden, "You are not in this room")),
        };
        let participated_only = match query.include.as_deref() {
            None | Some("all") => false,
            Some("participated") => true,
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidParam,
                    "include must be all or participated",
                ));
            }
        };
        let start = history_start(&self.storage, room_id, &record)?;
        let view = Visibility::for_user(&self.storage, room_id, user_id.as_str())?;
        let skip: usize = match query.from.as_deref() {
            Some(token) => token
                .parse()
                .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid from token"))?,
            None => 0,
        };
        let limit = query.limit.unwrap_or(20).clamp(1, MAX_PAGE);
        let mut roots: Vec<(u64, String)> = Vec::new();
        for entry in self
            .storage
            .roomthread_latest
            .scan_prefix(&pair_prefix(room_id.as_str()))
        {
            let ((_, root), latest) = entry?;
            roots.push((latest, root));
        }
        roots.sort_by_key(|(latest, _)| std::cmp::Reverse(*latest));
        let mut chunk = Vec::new();
        let mut seen = 0;
        let mut next_batch = None;
        for (_, root) in roots {
            let Some(meta) = self.storage.eventid_meta.get(&root)? else {
                continue;
            };
            // A thread whose root the reader may not see is not theirs to list (its replies
            // they may see are counted in its summary, each checked on its own).
            if meta.stream < start || meta.room_id != room_id.as_str() || !view.allows(meta.stream)
            {
                continue;
            }
            let Some(mut event) =
                stored_event_for_client(&self.storage, &root, Some(room_id.as_str()), None)?
            else {
                continue;
            };
            let children = super::aggregations::children(&self.storage, &event, user_id.as_str())?;
            let summary = super::aggregations::thread_summary(&event, &children, user_id.as_str());
            let participated = summary
                .as_ref()
                .is_some_and(|summary| summary["current_user_participated"] == true);
            if participated_only && !participated {
                continue;
            }
            seen += 1;
            if seen <= skip {
                continue;
            }
            if chunk.len() == limit {
                next_batch = Some((skip + limit).to_string());
                break;
            }
            super::aggregations::bundle(&self.storage, user_id.as_str(), &mut event)?;
            chunk.push(event);
        }
        let mut response = json!({ "chunk": chunk });
        if let Some(next_batch) = next_batch {
            response["next_batch"] = json!(next_batch);
        }
        Ok(response)
    }

    /// Checks that the user, joined, may see the room's event `event_id` (history
    /// visibility at that event), and returns their view of the room's history, by which
    /// each related event is then checked.
    fn visible_event(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        event_id: &str,
    ) -> Result<Visibility, Error> {
        let not_found = || Error::not_found("No such event in this room");
        match membership(&self.storage, user_id, room_id)? {
            Some(record) if record.membership == "join" => {}
            _ => return Err(Error::new(ErrorKind::Forbidden, "You are not in this room")),
        }
        let meta = self
            .storage
            .eventid_meta
            .get(&event_id.to_owned())?
            .ok_or_else(not_found)?;
        let view = Visibility::for_user(&self.storage, room_id, user_id.as_str())?;
        if meta.room_id != room_id.as_str() || !view.allows(meta.stream) {
            return Err(not_found());
        }
        Ok(view)
    }
}
