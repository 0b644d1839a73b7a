//! Bundled aggregations (spec: client-server API, "Aggregations of child events"): events
//! are served with a summary of what relates to them in `unsigned.m.relations`, so a client
//! can show a thread's size and latest reply, an edit, or references without fetching them.
//! Annotations (reactions) are not bundled: the spec leaves them out.

use ruma::CanonicalJsonObject;
use serde_json::{Map, Value, json};

use super::format::{client_event, set_unsigned};
use crate::storage::{Storage, StorageError, pair_prefix};

/// The events relating to one event, by kind.
#[derive(Default)]
pub struct Children {
    /// Thread replies, oldest first.
    pub thread: Vec<Value>,
    /// Valid replacements (edits).
    pub replacements: Vec<Value>,
    pub references: Vec<String>,
}

/// Reads every unredacted event relating to `parent` (a JSON object of the parent's client
/// form: its sender and type decide which edits count).
pub fn children(storage: &Storage, parent: &Value) -> Result<Children, StorageError> {
    let mut found = Children::default();
    let Some(parent_id) = parent["event_id"].as_str() else {
        return Ok(found);
    };
    for entry in storage.parent_child.scan_prefix(&pair_prefix(parent_id)) {
        let (_, child_id) = entry?;
        let meta = storage.eventid_meta.get(&child_id)?;
        if meta.as_ref().is_none_or(|meta| meta.redacted_by.is_some()) {
            continue;
        }
        let Some(json) = super::load_json(storage, &child_id)? else {
            continue;
        };
        let room = meta.map(|meta| meta.room_id);
        let event = client_event(&json, &child_id, room.as_deref());
        match rel_type(&json).as_deref() {
            Some("m.thread") => found.thread.push(event),
            Some("m.replace") if is_valid_replacement(parent, &event) => {
                found.replacements.push(event);
            }
            Some("m.reference") => found.references.push(child_id),
            _ => {}
        }
    }
    Ok(found)
}

/// Adds `unsigned.m.relations` to `event` (a client-format event) when anything relates to
/// it; `viewer` decides `current_user_participated`. Redacted events get none.
pub fn bundle(storage: &Storage, viewer: &str, event: &mut Value) -> Result<(), StorageError> {
    if event["unsigned"].get("redacted_because").is_some() {
        return Ok(());
    }
    let children = children(storage, event)?;
    let mut relations = Map::new();
    if let Some(summary) = thread_summary(event, &children, viewer) {
        relations.insert("m.thread".to_owned(), summary);
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
        relations.insert("m.replace".to_owned(), latest.clone());
    }
    if !children.references.is_empty() {
        let chunk: Vec<Value> = children
            .references
            .iter()
            .map(|id| json!({ "event_id": id }))
            .collect();
        relations.insert("m.reference".to_owned(), json!({ "chunk": chunk }));
    }
    if !relations.is_empty() {
        set_unsigned(event, "m.relations", Value::Object(relations));
    }
    Ok(())
}

/// A thread root's summary: its latest reply, how many, and whether `viewer` took part
/// (wrote the root or a reply). `None` when it has no replies.
pub fn thread_summary(root: &Value, children: &Children, viewer: &str) -> Option<Value> {
    let latest = children.thread.last()?;
    let participated = root["sender"] == viewer
        || children
            .thread
            .iter()
            .any(|reply| reply["sender"] == viewer);
    Some(json!({
        "latest_event": latest,
        "count": children.thread.len(),
        "current_user_participated": participated,
    }))
}

fn rel_type(json: &CanonicalJsonObject) -> Option<String> {
    json.get("content")?
        .as_object()?
        .get("m.relates_to")?
        .as_object()?
        .get("rel_type")?
        .as_str()
        .map(str::to_owned)
}

/// The spec's conditions for an edit to count: same sender and type as the original, the
/// original neither a state event nor itself an edit, and `m.new_content` present.
fn is_valid_replacement(original: &Value, replacement: &Value) -> bool {
    original["sender"] == replacement["sender"]
        && original["type"] == replacement["type"]
        && original.get("state_key").is_none()
        && replacement.get("state_key").is_none()
        && original["content"]["m.relates_to"]["rel_type"] != "m.replace"
        && replacement["content"]["m.new_content"].is_object()
}
