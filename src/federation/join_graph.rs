//! The events of a `send_join` answer as a graph of short IDs, for rooms of any size: the
//! events themselves are written to storage as they are checked (see
//! [`super::join_answer`]); in memory stays one small node per event (its short ID, those
//! of its auth events, a few flags), about 90 bytes, never the events nor their ID strings.
//!
//! Once every event is in, [`JoinGraph::authorize`] runs the auth rules for each event
//! against its own auth events, auth events first (a depth-first walk of the auth edges,
//! reading the events back from storage): an event whose auth event is missing, fails, or
//! lies on a cycle fails too. A state event failing refuses the whole answer.

use std::cell::RefCell;
use std::collections::HashMap;

use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, RoomId};

use super::room_state;
use crate::matrix::events::Pdu;
use crate::rooms::load_pdu;
use crate::storage::snapshots::{self, StateMap};
use crate::storage::{Storage, StorageError};

/// One event named in the answer (given, or only named as an auth event).
#[derive(Default)]
struct Node {
    auth: Box<[u64]>,
    /// The answer holds the event (else it was only named by another's `auth_events`).
    given: bool,
    in_state: bool,
    /// Our join rests on it: it must pass.
    needed: bool,
    /// Written to storage for this answer (not held before): removed if refused.
    written: bool,
    status: Status,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Status {
    #[default]
    Unvisited,
    Visiting,
    Passed,
    Failed,
}

/// How many events read back are kept for the events resting on them (the create event,
/// power levels, join rules and senders' memberships are the auth events of most).
const CACHED_EVENTS: usize = 4096;

/// Why an answer is refused: an event the room rests on fails, or the state is not one.
pub(super) type Refusal = String;

#[derive(Default)]
pub(super) struct JoinGraph {
    nodes: HashMap<u64, Node>,
}

/// What [`JoinGraph::authorize`] found.
pub(super) struct Authorized {
    /// The state the answer gives, by short IDs.
    pub(super) state: StateMap,
    /// Events written for this answer that failed (only in the auth chain: else the answer
    /// is refused), to be removed again.
    pub(super) failed_written: Vec<u64>,
    pub(super) failed: usize,
}

impl JoinGraph {
    /// Whether the answer gave `short` already.
    pub(super) fn has(&self, short: u64) -> bool {
        self.nodes.get(&short).is_some_and(|node| node.given)
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Adds an event of the answer (again, when it is in both lists).
    pub(super) fn add(&mut self, short: u64, auth: Vec<u64>, in_state: bool, written: bool) {
        for parent in &auth {
            self.nodes.entry(*parent).or_default();
        }
        let node = self.nodes.entry(short).or_default();
        if !node.given {
            node.auth = auth.into_boxed_slice();
            node.given = true;
        }
        node.in_state |= in_state;
        node.written |= written;
    }

    /// Marks an event our join rests on; false when the answer does not give it.
    pub(super) fn need(&mut self, short: u64) -> bool {
        match self.nodes.get_mut(&short) {
            Some(node) if node.given => {
                node.needed = true;
                true
            }
            _ => false,
        }
    }

    /// The short IDs of the events written for this answer.
    pub(super) fn written(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes
            .iter()
            .filter(|(_, node)| node.written)
            .map(|(short, _)| *short)
    }

    /// Runs the auth rules for every event given, auth events first, and names the state.
    pub(super) fn authorize(
        &mut self,
        storage: &Storage,
        (room_id, version, rules): (&RoomId, &str, &RoomVersionRules),
    ) -> Result<Result<Authorized, Refusal>, StorageError> {
        let mut walk = Walk {
            storage,
            rules,
            cache: RefCell::new(HashMap::new()),
            state: StateMap::new(),
            failed_written: Vec::new(),
            failed: 0,
        };
        let roots: Vec<u64> = self.nodes.keys().copied().collect();
        for root in roots {
            if let Err(refusal) = walk.from(&mut self.nodes, root)? {
                return Ok(Err(refusal));
            }
        }
        let create_key = snapshots::short_state_key(storage, "m.room.create", "")?;
        let Some(create) = walk.state.get(&create_key) else {
            return Ok(Err("the state has no create event".to_owned()));
        };
        let create = walk.load(*create)?.ok_or_else(|| {
            StorageError::Corrupt("the create event of a join vanished".to_owned())
        })?;
        if let Err(why) = room_state::check_create(&create, room_id, version, rules) {
            return Ok(Err(why));
        }
        Ok(Ok(Authorized {
            state: walk.state,
            failed_written: walk.failed_written,
            failed: walk.failed,
        }))
    }
}

/// The auth walk's work in progress.
struct Walk<'a> {
    storage: &'a Storage,
    rules: &'a RoomVersionRules,
    cache: RefCell<HashMap<u64, Pdu>>,
    state: StateMap,
    failed_written: Vec<u64>,
    failed: usize,
}

impl Walk<'_> {
    /// Decides `root` and everything it rests on not decided yet, auth events first.
    fn from(
        &mut self,
        nodes: &mut HashMap<u64, Node>,
        root: u64,
    ) -> Result<Result<(), Refusal>, StorageError> {
        let mut stack = vec![(root, false)];
        while let Some((short, expanded)) = stack.pop() {
            let Some(node) = nodes.get_mut(&short) else {
                continue;
            };
            if !node.given {
                continue;
            }
            if !expanded {
                if node.status != Status::Unvisited {
                    continue;
                }
                node.status = Status::Visiting;
                stack.push((short, true));
                let Some(node) = nodes.get(&short) else {
                    continue;
                };
                for parent in node.auth.iter() {
                    if nodes
                        .get(parent)
                        .is_some_and(|parent| parent.status == Status::Unvisited)
                    {
                        stack.push((*parent, false));
                    }
                }
                continue;
            }
            let verdict = self.decide(nodes, short)?;
            let Some(node) = nodes.get_mut(&short) else {
                continue;
            };
            match verdict {
                Ok(()) => node.status = Status::Passed,
                Err(why) => {
                    node.status = Status::Failed;
                    self.failed += 1;
                    if node.in_state || node.needed {
                        let id = self.id_of(short)?;
                        return Ok(Err(format!("state event {id} fails auth: {why}")));
                    }
                    if node.written {
                        self.failed_written.push(short);
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    /// Whether the event passes the auth rules against its own auth events (all decided).
    /// A passing state event takes its place in the state (refusing the answer if the place
    /// is taken).
    fn decide(
        &mut self,
        nodes: &HashMap<u64, Node>,
        short: u64,
    ) -> Result<Result<(), Refusal>, StorageError> {
        let Some(node) = nodes.get(&short) else {
            return Ok(Ok(()));
        };
        for parent in node.auth.iter() {
            let status = nodes
                .get(parent)
                .filter(|parent| parent.given)
                .map(|p| p.status);
            let why = match status {
                None => "is not given",
                Some(Status::Failed) => "fails auth",
                Some(Status::Visiting | Status::Unvisited) => "rests on the event itself",
                Some(Status::Passed) => continue,
            };
            let id = self.id_of(*parent)?;
            return Ok(Err(format!("auth event {id} {why}")));
        }
        let pdu = self
            .load(short)?
            .ok_or_else(|| StorageError::Corrupt(format!("event {short} of a join vanished")))?;
        let fetch = |id: &EventId| -> Option<Pdu> {
            let short = self.storage.eventid_short.get(&id.to_string()).ok()??;
            nodes.get(&short).filter(|node| node.given)?;
            self.load(short).ok()?
        };
        if let Err(why) = room_state::authorized_by_own_auth_events(self.rules, &pdu, fetch) {
            return Ok(Err(why));
        }
        if node.in_state {
            let Some(state_key) = &pdu.state_key else {
                return Ok(Err(format!(
                    "{} in the state is not a state event",
                    pdu.event_id
                )));
            };
            let kind = pdu.kind.to_string();
            let key = snapshots::short_state_key(self.storage, &kind, state_key)?;
            if let Some(other) = self.state.insert(key, short)
                && other != short
            {
                let other = self.id_of(other)?;
                return Ok(Err(format!(
                    "two events for ({kind}, {state_key:?}) in the state: {other} and {}",
                    pdu.event_id
                )));
            }
        }
        Ok(Ok(()))
    }

    /// An event of the answer read back from storage (or the cache).
    fn load(&self, short: u64) -> Result<Option<Pdu>, StorageError> {
        if let Some(pdu) = self.cache.borrow().get(&short) {
            return Ok(Some(pdu.clone()));
        }
        let id = self.id_of(short)?;
        let pdu = load_pdu(self.storage, &id, self.rules)?;
        if let Some(pdu) = &pdu {
            let mut cache = self.cache.borrow_mut();
            if cache.len() >= CACHED_EVENTS {
                cache.clear();
            }
            cache.insert(short, pdu.clone());
        }
        Ok(pdu)
    }

    fn id_of(&self, short: u64) -> Result<String, StorageError> {
        self.storage
            .short_eventid
            .get(&short)?
            .ok_or_else(|| StorageError::Corrupt(format!("unknown short event {short}")))
    }
}
