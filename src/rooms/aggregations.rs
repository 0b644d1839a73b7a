//! Bundled aggregations (spec: client-server API, "Aggregations of child events"): events
//! are served with a summary of what relates to them in `unsigned.m.relations`, so a client
//! can show a thread's size and latest reply, an edit, or references without fetching them.
//! Annotations (reactions) are not bundled: the spec leaves them out, and the index keeps
//! them apart so that an event with thousands of reactions costs nothing here.
//!
//! Only children the reader may see count (history visibility, per child), and redacted
//! children never do.

use serde_json::{Map, Value, json};

use super::format::{client_event, set_unsigned};
use super::visibility::Visibility;
use crate::storage::{Storage, StorageError, pair_prefix};

/// The relation types that are bundled.
const THREAD: &str = "m.thread";
const REPLACE: &str = "m.replace";
const REFERENCE: &str = "m.reference";

/// The events relating to one event, as one reader may see them.
#[derive(Default)]
pub(crate) struct Children {
    pub(crate) thread_count: usize,
    /// The latest thread reply, in client form.
    pub(crate) thread_latest: Option<Value>,
    /// Whether the reader wrote a reply.
    pub(crate) replied: bool,
    /// Valid replacements (edits), in client form.
    pub(crate) replacements: Vec<Value>,
    pub(crate) references: Vec<String>,
}

/// One indexed child: its stream position, ID and sender.
struct Child {
    position: u64,
    event_id: String,
    sender: String,
}

/// The children of `parent_id` under `rel_type` that `view` allows and no redaction removed.
fn indexed(
    storage: &Storage,
    parent_id: &str,
    rel_type: &str,
    view: &Visibility,
) -> Result<Vec<Child>, StorageError> {
    let mut prefix = pair_prefix(parent_id);
    prefix.extend_from_slice(&pair_prefix(rel_type));
    let mut children = Vec::new();
    for entry in storage.parentrel_child.scan_prefix(&prefix) {
        let ((_, _, position), (event_id, sender)) = entry?;
        if !view.allows(position) {
            continue;
        }
        let redacted = storage
            .eventid_meta
            .get(&event_id)?
            .is_none_or(|meta| meta.redacted_by.is_some());
        if !redacted {
            children.push(Child {
                position,
                event_id,
                sender,
            });
        }
    }
    Ok(children)
}

/// What relates to `parent` (its client form: its sender and type decide which edits
/// count) that `viewer` may see.
pub(crate) fn children(
    storage: &Storage,
    parent: &Value,
    viewer: &str,
) -> Result<Children, StorageError> {
    let mut found = Children::default();
    let Some(parent_id) = parent["event_id"].as_str() else {
        return Ok(found);
    };
    let Some(meta) = storage.eventid_meta.get(&parent_id.to_owned())? else {
        return Ok(found);
    };
    // Most events have no children: answer without reading the reader's visibility.
    if storage
        .parentrel_child
        .scan_prefix(&pair_prefix(parent_id))
        .next()
        .is_none()
    {
        return Ok(found);
    }
    let room_id = match ruma::OwnedRoomId::try_from(meta.room_id.as_str()) {
        Ok(room_id) => room_id,
        Err(_) => return Ok(found),
    };
    let view = Visibility::for_user(storage, &room_id, viewer)?;
    let load = |child: &Child| -> Result<Option<Value>, StorageError> {
        Ok(super::load_json(storage, &child.event_id)?
            .map(|json| client_event(&json, &child.event_id, Some(&meta.room_id))))
    };
    let thread = indexed(storage, parent_id, THREAD, &view)?;
    found.thread_count = thread.len();
    found.replied = thread.iter().any(|child| child.sender == viewer);
    if let Some(latest) = thread.iter().max_by_key(|child| child.position) {
        found.thread_latest = load(latest)?;
    }
    for child in indexed(storage, parent_id, REPLACE, &view)? {
        if child.sender != parent["sender"].as_str().unwrap_or_default() {
            continue;
        }
        if let Some(event) = load(&child)?
            && is_valid_replacement(parent, &event)
        {
            found.replacements.push(event);
        }
    }
    found.references = indexed(storage, parent_id, REFERENCE, &view)?
        .into_iter()
        .map(|child| child.event_id)
        .collect();
    Ok(found)
}

/// Adds `unsigned.m.relations` to `event` (a client-format event) when anything `viewer`
/// may see relates to it. Redacted events get none.
pub(crate) fn bundle(
    storage: &Storage,
    viewer: &str,
    event: &mut Value,
) -> Result<(), StorageError> {
    if event["unsigned"].get("redacted_because").is_some() {
        return Ok(());
    }
    let children = children(storage, event, viewer)?;
    let mut relations = Map::new();
    if let Some(summary) = thread_summary(event, &children, viewer) {
        relations.insert(THREAD.to_owned(), summary);
    }
    // The most recent edit: latest `origin_server_ts`, ties to the greatest event ID.
    if let Some(latest) = children.replacements.iter().max_by(|a, b| {
        let key = |e: &Value| {
            (
                e["origin_server_ts"].as_u64(),
                e["event_id"].as_str().map(str::to_owned),
            )
        };
        key(a).cmp(&key(b))
    }) {
        relations.insert(REPLACE.to_owned(), latest.clone());
    }
    if !children.references.is_empty() {
        let chunk: Vec<Value> = children
            .references
            .iter()
            .map(|id| json!({ "event_id": id }))
            .collect();
        relations.insert(REFERENCE.to_owned(), json!({ "chunk": chunk }));
    }
    if !relations.is_empty() {
        set_unsigned(event, "m.relations", Value::Object(relations));
    }
    Ok(())
}

/// A thread root's summary: its latest reply, how many, and whether `viewer` took part
/// (wrote the root or a reply). `None` when it has no replies the viewer may see.
pub(crate) fn thread_summary(root: &Value, children: &Children, viewer: &str) -> Option<Value> {
    let latest = children.thread_latest.as_ref()?;
    Some(json!({
        "latest_event": latest,
        "count": children.thread_count,
        "current_user_participated": root["sender"] == viewer || children.replied,
    }))
}

/// The spec's conditions for an edit to count: same sender and type as the original, the
/// original neither a state event nor itself an edit, and `m.new_content` present.
fn is_valid_replacement(original: &Value, replacement: &Value) -> bool {
    original["sender"] == replacement["sender"]
        && original["type"] == replacement["type"]
        && original.get("state_key").is_none()
        && replacement.get("state_key").is_none()
        && original["content"]["m.relates_to"]["rel_type"] != REPLACE
        && replacement["content"]["m.new_content"].is_object()
}
