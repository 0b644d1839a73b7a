//! `send_join`'s answer as a stream: the answer of a room of 100,000 state events is
//! 100-200 MB of JSON, more than the whole memory budget. It is written to a file in the
//! data directory as it arrives ([`AnswerFile`]), then read back by a parser on a blocking
//! thread ([`read_answer`]) that hands each event of `state` and `auth_chain` on, as raw
//! text, through a bounded channel: only the events in the channel are in memory, never
//! the answer nor a tree of it.

use std::cell::Cell;
use std::fmt;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

/// One piece of the answer, in the order the resident wrote them.
pub(super) enum Item {
    /// An event of `state` (`in_state`) or of `auth_chain`, as sent.
    Event { raw: Box<RawValue>, in_state: bool },
    /// The resident's copy of our join (`event`, for a restricted room).
    Join(Box<RawValue>),
}

/// How many events wait between the parser and the checks: the bytes in flight are at most
/// this many events (each at most [`MAX_EVENT_TEXT`]).
pub(super) const CHANNEL_EVENTS: usize = 32;

/// The longest text of one event taken: a PDU is at most 65,536 bytes of canonical JSON
/// (checked once parsed); as sent it may have whitespace and escapes. Anything longer is
/// not an event, and is not buffered to find out.
const MAX_EVENT_TEXT: u64 = 256 * 1024;

/// A file holding one `send_join` answer, removed when dropped (joined, refused or failed).
pub(super) struct AnswerFile {
    pub(super) path: PathBuf,
}

impl AnswerFile {
    /// A new empty file in `data_dir/join-answers/` (created when missing; answers left
    /// there by a crash are removed first: one join at a time writes each).
    pub(super) async fn create(data_dir: &Path) -> io::Result<(AnswerFile, tokio::fs::File)> {
        let dir = data_dir.join("join-answers");
        tokio::fs::create_dir_all(&dir).await?;
        let name: String = crate::matrix::crypto::random_bytes::<12>()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let path = dir.join(format!("{name}.json"));
        let file = tokio::fs::File::create(&path).await?;
        Ok((AnswerFile { path }, file))
    }
}

impl Drop for AnswerFile {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), "a send_join answer was not removed: {err}");
        }
    }
}

/// Reads the answer in `file`, sending each event to `events` in order; stops when the
/// receiver is gone. Runs on a blocking thread: it reads a file.
pub(super) fn read_answer(file: std::fs::File, events: &mpsc::Sender<Item>) -> Result<(), String> {
    let meter = Meter::default();
    let reader = Metered {
        inner: BufReader::with_capacity(64 * 1024, file),
        meter: &meter,
    };
    let mut parser = serde_json::Deserializer::from_reader(reader);
    let visitor = AnswerVisitor {
        meter: &meter,
        events,
    };
    serde::Deserializer::deserialize_map(&mut parser, visitor).map_err(|err| err.to_string())?;
    parser.end().map_err(|err| err.to_string())
}

/// The resident's copy of our join (`event`) in the answer at `path`, everything else read
/// past one event at a time and dropped: a rejoin of a room we hold needs nothing more, and
/// the answer of a large room is far larger than memory.
pub(super) async fn read_join_event(path: &Path) -> Result<Option<Box<RawValue>>, String> {
    let file = std::fs::File::open(path).map_err(|err| err.to_string())?;
    let (sender, mut items) = mpsc::channel(CHANNEL_EVENTS);
    let reading = tokio::task::spawn_blocking(move || read_answer(file, &sender));
    let mut join = None;
    while let Some(item) = items.recv().await {
        if let Item::Join(raw) = item {
            join = Some(raw);
        }
    }
    reading.await.map_err(|err| err.to_string())??;
    Ok(join)
}

/// How far the parser has read, and where the value it is reading began (when it is one
/// that is buffered: an event, a key).
#[derive(Default)]
struct Meter {
    read: Cell<u64>,
    value_start: Cell<Option<u64>>,
}

impl Meter {
    fn start_value(&self) {
        self.value_start.set(Some(self.read.get()));
    }

    fn end_value(&self) {
        self.value_start.set(None);
    }
}

/// The file as the parser reads it, with a value longer than [`MAX_EVENT_TEXT`] cut off.
struct Metered<'a, R> {
    inner: R,
    meter: &'a Meter,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        let total = self.meter.read.get() + read as u64;
        self.meter.read.set(total);
        if let Some(start) = self.meter.value_start.get()
            && total - start > MAX_EVENT_TEXT
        {
            return Err(io::Error::other(format!(
                "a value of the answer is longer than {MAX_EVENT_TEXT} bytes"
            )));
        }
        Ok(read)
    }
}

struct AnswerVisitor<'a> {
    meter: &'a Meter,
    events: &'a mpsc::Sender<Item>,
}

impl<'de> Visitor<'de> for AnswerVisitor<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a send_join answer")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        loop {
            self.meter.start_value();
            let key = map.next_key::<String>()?;
            self.meter.end_value();
            let Some(key) = key else {
                return Ok(());
            };
            match key.as_str() {
                "state" | "auth_chain" => map.next_value_seed(EventList {
                    meter: self.meter,
                    events: self.events,
                    in_state: key == "state",
                })?,
                "event" => {
                    self.meter.start_value();
                    let raw: Box<RawValue> = map.next_value()?;
                    self.meter.end_value();
                    send(self.events, Item::Join(raw))?;
                }
                // `origin`, `servers_in_room`, `members_omitted`: skipped, not buffered.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }
}

fn send<E: serde::de::Error>(events: &mpsc::Sender<Item>, item: Item) -> Result<(), E> {
    events
        .blocking_send(item)
        .map_err(|_| E::custom("reading stopped"))
}

/// `state` or `auth_chain`: each event sent on as it is read.
struct EventList<'a> {
    meter: &'a Meter,
    events: &'a mpsc::Sender<Item>,
    in_state: bool,
}

impl<'de> DeserializeSeed<'de> for EventList<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EventList<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a list of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            self.meter.start_value();
            let next = seq.next_element::<Box<RawValue>>()?;
            self.meter.end_value();
            let Some(raw) = next else {
                return Ok(());
            };
            let in_state = self.in_state;
            send(self.events, Item::Event { raw, in_state })?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items_of(text: &str) -> (Vec<(String, bool)>, Result<(), String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("answer.json");
        std::fs::write(&path, text).expect("write");
        let (sender, mut receiver) = mpsc::channel(CHANNEL_EVENTS);
        let file = std::fs::File::open(&path).expect("open");
        let reading = std::thread::spawn(move || read_answer(file, &sender));
        let mut items = Vec::new();
        while let Some(item) = receiver.blocking_recv() {
            items.push(match item {
                Item::Event { raw, in_state } => (raw.get().to_owned(), in_state),
                Item::Join(raw) => (format!("join {}", raw.get()), false),
            });
        }
        (items, reading.join().expect("thread"))
    }

    #[test]
    fn events_come_one_by_one_in_the_order_sent() {
        let text = r#"{"origin":"a","auth_chain":[{"a":1}],"servers_in_room":["x"],
            "state":[{"s":1},{"s":2}],"event":{"j":1},"members_omitted":false}"#;
        let (items, result) = items_of(text);
        assert_eq!(result, Ok(()));
        let expected = [
            (r#"{"a":1}"#.to_owned(), false),
            (r#"{"s":1}"#.to_owned(), true),
            (r#"{"s":2}"#.to_owned(), true),
            (r#"join {"j":1}"#.to_owned(), false),
        ];
        assert_eq!(items, expected);
    }

    #[tokio::test]
    async fn a_rejoin_takes_only_the_join_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("answer.json");
        let state: Vec<String> = (0..1000).map(|i| format!(r#"{{"s":{i}}}"#)).collect();
        let text = format!(
            r#"{{"state":[{}],"event":{{"j":1}},"auth_chain":[{{"a":1}}]}}"#,
            state.join(",")
        );
        std::fs::write(&path, text).expect("write");
        let join = read_join_event(&path).await.expect("read");
        assert_eq!(
            join.map(|raw| raw.get().to_owned()),
            Some(r#"{"j":1}"#.to_owned())
        );
        std::fs::write(&path, r#"{"state":[]}"#).expect("write");
        assert!(read_join_event(&path).await.expect("read").is_none());
        std::fs::write(&path, r#"{"event":{"j":1},"state":["#).expect("write");
        assert!(read_join_event(&path).await.is_err());
    }

    #[test]
    fn an_overlong_event_or_broken_answer_is_refused() {
        let long = format!(r#"{{"state":[{{"s":"{}"}}]}}"#, "x".repeat(300 * 1024));
        let (items, result) = items_of(&long);
        assert!(items.is_empty());
        assert!(result.expect_err("refused").contains("longer than"));
        // A long list of servers is skipped, not buffered: it is no event.
        let servers = format!(
            r#"{{"servers_in_room":["{}"],"state":[]}}"#,
            "x".repeat(300 * 1024)
        );
        assert_eq!(items_of(&servers).1, Ok(()));
        let (_, cut) = items_of(r#"{"state":[{"s":1},"#);
        assert!(cut.is_err());
        let (_, trailing) = items_of(r#"{"state":[]} junk"#);
        assert!(trailing.is_err());
    }
}
