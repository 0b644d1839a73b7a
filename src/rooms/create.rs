//! Creating a room (spec: client-server API, "Creation"): the create event, the creator's
//! join, power levels, the preset's rules, `initial_state`, name, topic and invites, each an
//! event built and authorized like any other.

use std::collections::HashMap;
use std::sync::Arc;

use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Rooms, StagedEvent, build_error};
use crate::error::{Error, ErrorKind};
use crate::matrix::crypto::SigningKey;
use crate::matrix::events::Pdu;
use crate::matrix::events::builder::{NewEvent, RoomContext, build_event, room_id_for};
use crate::storage::Storage;

/// The body of `POST /createRoom`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CreateRoomRequest {
    pub(crate) visibility: Option<String>,
    pub(crate) room_alias_name: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) topic: Option<String>,
    #[serde(default)]
    pub(crate) invite: Vec<OwnedUserId>,
    #[serde(default)]
    pub(crate) invite_3pid: Vec<Value>,
    pub(crate) room_version: Option<String>,
    pub(crate) creation_content: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) initial_state: Vec<InitialStateEvent>,
    pub(crate) preset: Option<String>,
    #[serde(default)]
    pub(crate) is_direct: bool,
    pub(crate) power_level_content_override: Option<Map<String, Value>>,
    /// The full alias made from `room_alias_name`, set by the caller once it is known to be
    /// free: it becomes the room's canonical alias.
    #[serde(skip)]
    pub(crate) canonical_alias: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct InitialStateEvent {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) state_key: String,
    pub content: Map<String, Value>,
}

/// At most this many invites and initial state events in one request.
const MAX_LIST: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preset {
    Private,
    TrustedPrivate,
    Public,
}

impl Rooms {
    /// Creates a room for `creator` and returns its ID. Every event is built and authorized
    /// in memory first, then all are stored in one batch: a request that fails leaves no
    /// half-made room behind.
    pub(crate) async fn create_room(
        &self,
        creator: &UserId,
        request: CreateRoomRequest,
        default_version: &str,
    ) -> Result<OwnedRoomId, Error> {
        let (storage, key) = (&*self.storage, &self.signing_key);
        let preset = preset_of(&request)?;
        check_request(storage, &request, creator)?;
        let version_text = request
            .room_version
            .clone()
            .unwrap_or_else(|| default_version.to_owned());
        let version = RoomVersionId::try_from(version_text.as_str())
            .ok()
            .filter(|version| version.rules().is_some())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::UnsupportedRoomVersion,
                    format!("Room version {version_text} is not supported; 1 to 12 are"),
                )
            })?;
        let rules = version.rules().expect("checked above");
        let server_name = creator.server_name().as_str();

        let mut room = NewRoom {
            rules: &rules,
            room_id: room_id_for(&rules, None, server_name),
            events: HashMap::new(),
            state: HashMap::new(),
            staged: Vec::new(),
        };
        room.add(
            key,
            creator,
            &create_event(&request, preset, creator, &rules, version.as_str()),
        )?;
        if room.room_id.is_none() {
            // A version 12 room is named by its create event.
            room.room_id = room_id_for(&rules, room.staged.first().map(|s| &s.pdu), server_name);
        }
        let profile = storage
            .userid_profile
            .get(&creator.to_string())?
            .unwrap_or_default();
        for new in events_after_create(&request, preset, creator, &rules, &profile) {
            room.add(key, creator, &new)?;
        }
        let room_id = room
            .room_id
            .clone()
            .ok_or_else(|| Error::internal("could not name the new room"))?;
        self.store_events(&room_id, version.as_str(), room.staged)
            .await?;
        tracing::info!(%room_id, version = version.as_str(), "created a room");
        Ok(room_id)
    }
}

/// A room being built in memory: its events so far and their state.
struct NewRoom<'a> {
    rules: &'a RoomVersionRules,
    room_id: Option<OwnedRoomId>,
    events: HashMap<OwnedEventId, Arc<Pdu>>,
    state: HashMap<(String, String), OwnedEventId>,
    staged: Vec<StagedEvent>,
}

impl NewRoom<'_> {
    fn add(&mut self, key: &SigningKey, sender: &UserId, new: &NewEvent) -> Result<(), Error> {
        let events = &self.events;
        let state = &self.state;
        let lookup = |kind: &StateEventType, state_key: &str| {
            state
                .get(&(kind.to_string(), state_key.to_owned()))
                .and_then(|id| events.get(id))
                .cloned()
        };
        let fetch = |id: &EventId| events.get(id).cloned();
        let prev_events: Vec<(OwnedEventId, u64)> = self
            .staged
            .last()
            .map(|last| vec![(last.pdu.event_id.clone(), last.pdu.depth)])
            .unwrap_or_default();
        let context = RoomContext {
            rules: self.rules,
            room_id: self.room_id.as_deref(),
            prev_events: &prev_events,
            state: &lookup,
            event: &fetch,
        };
        let (pdu, json) = build_event(new, sender, &context, key, crate::matrix::time::now_ms())
            .map_err(build_error)?;
        if let Some(state_key) = &pdu.state_key {
            self.state.insert(
                (pdu.kind.to_string(), state_key.clone()),
                pdu.event_id.clone(),
            );
        }
        self.events
            .insert(pdu.event_id.clone(), Arc::new(pdu.clone()));
        self.staged.push(StagedEvent {
            pdu,
            json,
            txn: None,
            relay: false,
        });
        Ok(())
    }
}

fn create_event(
    request: &CreateRoomRequest,
    preset: Preset,
    creator: &UserId,
    rules: &RoomVersionRules,
    version: &str,
) -> NewEvent {
    let mut content = request.creation_content.clone().unwrap_or_default();
    content.insert("room_version".into(), json!(version));
    if !rules.authorization.use_room_create_sender {
        content.insert("creator".into(), json!(creator));
    }
    // In room version 12 a trusted private chat makes its invitees creators too (the spec's
    // preset table): merged, without duplicates, into `additional_creators`.
    if preset == Preset::TrustedPrivate && rules.authorization.additional_room_creators {
        let mut creators: Vec<Value> = content
            .get("additional_creators")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for invitee in &request.invite {
            let invitee = json!(invitee);
            if !creators.contains(&invitee) {
                creators.push(invitee);
            }
        }
        content.insert("additional_creators".into(), Value::Array(creators));
    }
    NewEvent::state("m.room.create", "", Value::Object(content))
}

fn preset_of(request: &CreateRoomRequest) -> Result<Preset, Error> {
    match request.preset.as_deref() {
        Some("private_chat") => Ok(Preset::Private),
        Some("trusted_private_chat") => Ok(Preset::TrustedPrivate),
        Some("public_chat") => Ok(Preset::Public),
        Some(other) => Err(Error::new(
            ErrorKind::InvalidParam,
            format!("Unknown preset {other}"),
        )),
        None => match request.visibility.as_deref() {
            Some("public") => Ok(Preset::Public),
            None | Some("private") => Ok(Preset::Private),
            Some(other) => Err(Error::new(
                ErrorKind::InvalidParam,
                format!("Unknown visibility {other}"),
            )),
        },
    }
}

/// What this server cannot do (yet) is refused before anything is built.
fn check_request(
    storage: &Storage,
    request: &CreateRoomRequest,
    creator: &UserId,
) -> Result<(), Error> {
    if request.invite.len() > MAX_LIST || request.initial_state.len() > MAX_LIST {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!("At most {MAX_LIST} invites and initial state events"),
        ));
    }
    if !request.invite_3pid.is_empty() {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "Invites by e-mail or phone are not supported",
        ));
    }
    if let Some(remote) = request
        .invite
        .iter()
        .find(|user| user.server_name() != creator.server_name())
    {
        return Err(Error::new(
            ErrorKind::BadRequest,
            format!(
                "{remote} is on another server; federation is not supported by this server yet"
            ),
        ));
    }
    if request.invite.iter().any(|user| user == creator) {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "You cannot invite yourself",
        ));
    }
    for invitee in &request.invite {
        let exists = crate::users::accounts::get(storage, invitee)
            .map_err(|err| Error::internal(err.to_string()))?
            .is_some_and(|account| !account.deactivated);
        if !exists {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("There is no user {invitee}"),
            ));
        }
    }
    if let Some(event) = request
        .initial_state
        .iter()
        .find(|event| event.kind == "m.room.create" || event.kind == "m.room.member")
    {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!(
                "initial_state cannot hold {}: use creation_content and invite",
                event.kind
            ),
        ));
    }
    Ok(())
}

fn events_after_create(
    request: &CreateRoomRequest,
    preset: Preset,
    creator: &UserId,
    rules: &RoomVersionRules,
    profile: &Map<String, Value>,
) -> Vec<NewEvent> {
    let mut events = vec![NewEvent::state(
        "m.room.member",
        creator.as_str(),
        crate::users::profile::member_content("join", profile),
    )];
    events.push(NewEvent::state(
        "m.room.power_levels",
        "",
        power_levels(request, preset, creator, rules),
    ));
    if let Some(alias) = &request.canonical_alias {
        events.push(NewEvent::state(
            "m.room.canonical_alias",
            "",
            json!({ "alias": alias }),
        ));
    }

    let (join_rule, guest_access) = match preset {
        Preset::Public => ("public", "forbidden"),
        Preset::Private | Preset::TrustedPrivate => ("invite", "can_join"),
    };
    let mut preset_state = vec![
        NewEvent::state("m.room.join_rules", "", json!({ "join_rule": join_rule })),
        NewEvent::state(
            "m.room.history_visibility",
            "",
            json!({ "history_visibility": "shared" }),
        ),
        NewEvent::state(
            "m.room.guest_access",
            "",
            json!({ "guest_access": guest_access }),
        ),
    ];
    // `initial_state` overrides the preset's events of the same type and key.
    let initial: Vec<NewEvent> = request
        .initial_state
        .iter()
        .map(|event| {
            NewEvent::state(
                &event.kind,
                &event.state_key,
                Value::Object(event.content.clone()),
            )
        })
        .collect();
    preset_state.retain(|preset_event| {
        !initial.iter().any(|event| {
            event.kind == preset_event.kind && event.state_key == preset_event.state_key
        })
    });
    events.extend(preset_state);
    events.extend(initial);
    if let Some(name) = &request.name {
        events.push(NewEvent::state("m.room.name", "", json!({ "name": name })));
    }
    if let Some(topic) = &request.topic {
        events.push(NewEvent::state(
            "m.room.topic",
            "",
            json!({ "topic": topic }),
        ));
    }
    for invitee in &request.invite {
        let mut content = json!({ "membership": "invite" });
        if request.is_direct {
            content["is_direct"] = json!(true);
        }
        events.push(NewEvent::state("m.room.member", invitee.as_str(), content));
    }
    events
}

/// The spec's default power levels, with the creator at 100 (room version 12 privileges
/// creators without listing them), invitees too in a trusted private chat, and the client's
/// override on top.
fn power_levels(
    request: &CreateRoomRequest,
    preset: Preset,
    creator: &UserId,
    rules: &RoomVersionRules,
) -> Value {
    let mut users = Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), json!(100));
    }
    // Invitees of a trusted private chat share the creator's power: as creators in room
    // version 12 (see `create_event`), at 100 before.
    if preset == Preset::TrustedPrivate && !rules.authorization.explicitly_privilege_room_creators {
        for invitee in &request.invite {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    // Tombstoning ends a room: in version 12 it needs more than the 100 an admin has.
    let tombstone = if rules.authorization.explicitly_privilege_room_creators {
        150
    } else {
        100
    };
    let mut content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": tombstone,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
    });
    if let (Some(overrides), Some(object)) = (
        &request.power_level_content_override,
        content.as_object_mut(),
    ) {
        for (key, value) in overrides {
            object.insert(key.clone(), value.clone());
        }
    }
    content
}
