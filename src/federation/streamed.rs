//! Large answers to other servers written while they are sent: `send_join`, `/state`,
//! `/state_ids` and `/event_auth` of a room of 100,000 state events are tens of MB of
//! JSON. The answer is planned first (its lists of events as short IDs, 8 bytes each), then
//! written chunk by chunk from the stored JSON text of each event, so that only one chunk
//! is in memory at a time, never the whole answer nor a tree of it.

use std::collections::VecDeque;
use std::sync::Arc;

use ruma::room_version_rules::RoomVersionRules;

use crate::error::Error;
use crate::storage::Storage;

/// About how much JSON one chunk holds (an event may take it over, by up to 64 KiB).
const CHUNK_BYTES: usize = 64 * 1024;

/// One piece of an answer.
pub(crate) enum Part {
    /// JSON text written as is.
    Text(String),
    /// Events (short IDs) in federation format, comma-separated; unknown ones left out.
    Events(Vec<u64>),
    /// Event IDs (short IDs) as JSON strings, comma-separated.
    Ids(Vec<u64>),
    /// Events (by event ID: a page of history, never a room's state) in federation format,
    /// each redacted when its flag says the asking server may not see it; unknown ones left
    /// out.
    Seen(Vec<(String, bool)>),
}

/// A planned answer, written by [`StreamedAnswer::next_chunk`].
pub(crate) struct StreamedAnswer {
    storage: Arc<Storage>,
    rules: RoomVersionRules,
    parts: VecDeque<Part>,
    /// Items of the front list written so far.
    at: usize,
    /// Whether the front list has written an item (a comma goes before the next).
    wrote_item: bool,
}

impl StreamedAnswer {
    pub(crate) fn new(
        storage: Arc<Storage>,
        rules: RoomVersionRules,
        parts: Vec<Part>,
    ) -> StreamedAnswer {
        StreamedAnswer {
            storage,
            rules,
            parts: parts.into(),
            at: 0,
            wrote_item: false,
        }
    }

    /// The next chunk of the answer, `None` once all is written. An error midway (the
    /// database failing) ends the answer: the asking server sees it cut, not a wrong one.
    pub(crate) fn next_chunk(&mut self) -> Result<Option<String>, Error> {
        let mut out = String::new();
        while out.len() < CHUNK_BYTES {
            let Some(part) = self.parts.front() else {
                break;
            };
            // The next item: its short ID or event ID, and `None` for an ID or whether to
            // redact it.
            let next = match part {
                Part::Text(text) => {
                    out.push_str(text);
                    self.next_part();
                    continue;
                }
                Part::Events(ids) => ids.get(self.at).map(|short| (Ok(*short), Some(false))),
                Part::Ids(ids) => ids.get(self.at).map(|short| (Ok(*short), None)),
                Part::Seen(events) => events
                    .get(self.at)
                    .map(|(id, hidden)| (Err(id.clone()), Some(*hidden))),
            };
            let Some((id, redact)) = next else {
                self.next_part();
                continue;
            };
            self.at += 1;
            let event_id = match id {
                Err(event_id) => event_id,
                Ok(short) => match self.storage.short_eventid.get(&short)? {
                    Some(event_id) => event_id,
                    None => continue,
                },
            };
            let item = match redact {
                None => serde_json::to_string(&event_id).map_err(Error::internal)?,
                Some(redact) => {
                    match super::serve::federation_pdu(
                        &self.storage,
                        &self.rules,
                        &event_id,
                        redact,
                    )? {
                        Some(pdu) => String::from(Box::<str>::from(pdu)),
                        None => continue,
                    }
                }
            };
            if self.wrote_item {
                out.push(',');
            }
            out.push_str(&item);
            self.wrote_item = true;
        }
        Ok((!out.is_empty()).then_some(out))
    }

    fn next_part(&mut self) {
        self.parts.pop_front();
        self.at = 0;
        self.wrote_item = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Batch;

    #[test]
    fn lists_are_written_from_stored_text_in_chunks() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let storage = Arc::new(storage);
        let mut batch = Batch::new();
        let mut shorts = Vec::new();
        for i in 0..2_000 {
            let id = format!("$event{i}");
            let text = format!(
                r#"{{"content":{{"i":{i},"pad":"{}"}},"type":"m.x"}}"#,
                "p".repeat(100)
            );
            storage
                .eventid_pdu
                .batch_insert(&mut batch, &id, &text)
                .expect("insert");
            shorts.push(crate::storage::snapshots::short_event_id(&storage, &id).expect("short"));
        }
        storage.apply(batch).expect("apply");
        let rules = ruma::RoomVersionId::V11.rules().expect("rules");
        let parts = vec![
            Part::Text("{\"state\":[".to_owned()),
            Part::Events(shorts.clone()),
            Part::Text("],\"ids\":[".to_owned()),
            Part::Ids(shorts[..3].to_vec()),
            Part::Text("],\"none\":[".to_owned()),
            Part::Events(Vec::new()),
            Part::Text("]}".to_owned()),
        ];
        let mut answer = StreamedAnswer::new(storage.clone(), rules, parts);
        let mut chunks = Vec::new();
        while let Some(chunk) = answer.next_chunk().expect("chunk") {
            assert!(chunk.len() < 2 * CHUNK_BYTES);
            chunks.push(chunk);
        }
        assert!(chunks.len() > 2, "written in several chunks");
        let whole: serde_json::Value = serde_json::from_str(&chunks.concat()).expect("JSON");
        assert_eq!(whole["state"].as_array().map(Vec::len), Some(2_000));
        assert_eq!(whole["state"][1999]["content"]["i"], 1999);
        assert_eq!(
            whole["ids"],
            serde_json::json!(["$event0", "$event1", "$event2"])
        );
        assert_eq!(whole["none"], serde_json::json!([]));
    }
}
