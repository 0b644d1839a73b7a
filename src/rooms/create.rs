//! Creating a room (spec: client-server API, "Creation"): the create event, the creator's
//! join, power levels, the preset's rules, `initial_state`, name, topic and invites, each an
//! event built and authorized like any other.

use ruma::{OwnedRoomId, OwnedUserId, RoomVersionId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Rooms, build_in_room};
use crate::crypto::SigningKey;
use crate::error::{Error, ErrorKind};
use crate::events::builder::{NewEvent, room_id_for};
use crate::storage::Storage;

/// The body of `POST /createRoom`.
#[derive(Debug, Default, Deserialize)]
pub struct CreateRoomRequest {
    pub visibility: Option<String>,
    pub room_alias_name: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    #[serde(default)]
    pub invite: Vec<OwnedUserId>,
    #[serde(default)]
    pub invite_3pid: Vec<Value>,
    pub room_version: Option<String>,
    pub creation_content: Option<Map<String, Value>>,
    #[serde(default)]
    pub initial_state: Vec<InitialStateEvent>,
    pub preset: Option<String>,
    #[serde(default)]
    pub is_direct: bool,
    pub power_level_content_override: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
pub struct InitialStateEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub state_key: String,
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
    /// Creates a room for `creator` and returns its ID.
    pub async fn create_room(
        &self,
        storage: &Storage,
        key: &SigningKey,
        creator: &UserId,
        request: CreateRoomRequest,
        default_version: &str,
    ) -> Result<OwnedRoomId, Error> {
        let preset = preset_of(&request)?;
        check_request(&request, creator)?;
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

        // The create event names a version 12 room; older rooms get a random ID first.
        let mut room_id = room_id_for(&rules, None, server_name);
        let mut create_content = request.creation_content.clone().unwrap_or_default();
        create_content.insert("room_version".into(), json!(version.as_str()));
        if !rules.authorization.use_room_create_sender {
            create_content.insert("creator".into(), json!(creator));
        }
        let create = NewEvent::state("m.room.create", "", Value::Object(create_content));
        let (pdu, event) = build_in_room(
            storage,
            key,
            &rules,
            room_id.as_deref(),
            &[],
            creator,
            create,
        )?;
        if room_id.is_none() {
            room_id = room_id_for(&rules, Some(&pdu), server_name);
        }
        let room_id = room_id.ok_or_else(|| Error::internal("could not name the new room"))?;
        self.store(
            storage,
            &room_id,
            version.as_str(),
            &pdu,
            &event,
            crate::storage::Batch::new(),
        )
        .await?;

        for new in events_after_create(&request, preset, creator, &rules) {
            self.append(storage, key, &room_id, creator, new).await?;
        }
        tracing::info!(%room_id, version = version.as_str(), "created a room");
        Ok(room_id)
    }
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

/// What this server cannot do yet is refused before anything is written.
fn check_request(request: &CreateRoomRequest, creator: &UserId) -> Result<(), Error> {
    if request.invite.len() > MAX_LIST || request.initial_state.len() > MAX_LIST {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!("At most {MAX_LIST} invites and initial state events"),
        ));
    }
    if request.room_alias_name.is_some() {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "Room aliases are not supported by this server yet; create the room without room_alias_name",
        ));
    }
    if request.visibility.as_deref() == Some("public") {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "The public room directory is not supported by this server yet; create a private room",
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
    Ok(())
}

fn events_after_create(
    request: &CreateRoomRequest,
    preset: Preset,
    creator: &UserId,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Vec<NewEvent> {
    let mut events = vec![NewEvent::state(
        "m.room.member",
        creator.as_str(),
        json!({ "membership": "join" }),
    )];
    events.push(NewEvent::state(
        "m.room.power_levels",
        "",
        power_levels(request, preset, creator, rules),
    ));

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
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Value {
    let mut users = Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), json!(100));
    }
    if preset == Preset::TrustedPrivate {
        for invitee in &request.invite {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    let mut content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
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
