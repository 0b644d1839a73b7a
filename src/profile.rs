//! Profiles (spec: client-server API, "Profiles"): a display name and an avatar, shown to
//! others through the user's membership events in every room they are in.

use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::events::builder::NewEvent;
use crate::rooms;
use crate::state::AppState;
use crate::storage::StorageError;

/// The fields of the spec's profile that Hearth stores, each at most this long.
pub const MAX_FIELD_BYTES: usize = 1024;

pub fn get(state: &AppState, user_id: &UserId) -> Result<Option<Map<String, Value>>, StorageError> {
    if crate::accounts::get(&state.storage, user_id)
        .map_err(|err| StorageError::Corrupt(err.to_string()))?
        .is_none()
    {
        return Ok(None);
    }
    Ok(Some(
        state
            .storage
            .userid_profile
            .get(&user_id.to_string())?
            .unwrap_or_default(),
    ))
}

/// Sets (or, with `None`, removes) one profile field, then sends a new membership event with
/// it to every room the user is in, as the spec asks.
pub async fn set_field(
    state: &AppState,
    user_id: &UserId,
    field: &str,
    value: Option<String>,
) -> Result<(), Error> {
    if value
        .as_ref()
        .is_some_and(|value| value.len() > MAX_FIELD_BYTES)
    {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!("{field} is limited to {MAX_FIELD_BYTES} bytes"),
        ));
    }
    if field == "avatar_url"
        && value
            .as_ref()
            .is_some_and(|url| !url.is_empty() && !url.starts_with("mxc://"))
    {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "avatar_url must be an mxc:// URI",
        ));
    }
    state
        .storage
        .userid_profile
        .update(&user_id.to_string(), |profile| {
            let mut profile = profile.unwrap_or_default();
            match &value {
                Some(value) if !value.is_empty() => {
                    profile.insert(field.to_owned(), json!(value));
                }
                _ => {
                    profile.remove(field);
                }
            }
            Some(profile)
        })?;
    state.storage.flush().await?;
    let profile = state
        .storage
        .userid_profile
        .get(&user_id.to_string())?
        .unwrap_or_default();
    for (room_id, record) in rooms::memberships(&state.storage, user_id)? {
        if record.membership != "join" {
            continue;
        }
        let new = NewEvent::state(
            "m.room.member",
            user_id.as_str(),
            member_content("join", &profile),
        );
        // A room that refuses the change (its rules) keeps the old name; the others update.
        if let Err(err) = state
            .rooms
            .append(&state.storage, &state.signing_key, &room_id, user_id, new)
            .await
        {
            tracing::warn!(%room_id, "could not update the membership with the new profile: {err}");
        }
    }
    Ok(())
}

/// A membership event's content with the user's profile, as joins and profile changes send.
pub fn member_content(membership: &str, profile: &Map<String, Value>) -> Value {
    let mut content = json!({ "membership": membership });
    for field in ["displayname", "avatar_url"] {
        if let Some(value) = profile.get(field) {
            content[field] = value.clone();
        }
    }
    content
}
