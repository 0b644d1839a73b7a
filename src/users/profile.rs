//! Profiles (spec: client-server API, "Profiles"): a display name and an avatar, shown to
//! others through the user's membership events in every room they are in, and (v1.16)
//! any other fields a client keeps there (`m.tz`, custom keys), up to 64 KiB in all.

use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::storage::{Storage, StorageError};

/// The display name and avatar URL are each at most this long.
pub(crate) const MAX_FIELD_BYTES: usize = 1024;

/// A whole profile, as canonical JSON, is at most this large (spec: 64 KiB).
pub(crate) const MAX_PROFILE_BYTES: usize = 65_536;

/// A profile key is at most this long (spec: 255 bytes).
pub(crate) const MAX_KEY_BYTES: usize = 255;

/// The fields shown in membership events: changing one updates the user's rooms.
const MEMBER_FIELDS: [&str; 2] = ["displayname", "avatar_url"];

/// Checks a new value for `field`: the spec's fields are strings (the avatar an `mxc://`
/// URI); other fields take any JSON.
pub(crate) fn check_value(field: &str, value: &Value) -> Result<(), Error> {
    if field.is_empty() {
        return Err(Error::new(ErrorKind::MissingParam, "The key is empty"));
    }
    if field.len() > MAX_KEY_BYTES {
        return Err(Error::new(
            ErrorKind::KeyTooLarge,
            format!("A profile key is at most {MAX_KEY_BYTES} bytes"),
        ));
    }
    if matches!(field, "displayname" | "avatar_url" | "m.tz") && !value.is_string() {
        return Err(Error::new(
            ErrorKind::BadJson,
            format!("{field} must be a string"),
        ));
    }
    Ok(())
}

pub(crate) fn get(
    storage: &Storage,
    user_id: &UserId,
) -> Result<Option<Map<String, Value>>, StorageError> {
    if crate::users::accounts::get(storage, user_id)
        .map_err(|err| StorageError::Corrupt(err.to_string()))?
        .is_none()
    {
        return Ok(None);
    }
    Ok(Some(
        storage
            .userid_profile
            .get(&user_id.to_string())?
            .unwrap_or_default(),
    ))
}

/// Sets (or, with `None`, removes) one profile field. Answers the new profile when the field
/// is one that membership events carry (display name, avatar): the room service then sends
/// a new membership event with it to every room the user is in, as the spec asks.
pub(crate) async fn set_field(
    storage: &Storage,
    user_id: &UserId,
    field: &str,
    value: Option<Value>,
) -> Result<Option<Map<String, Value>>, Error> {
    if let Some(value) = &value {
        check_value(field, value)?;
    }
    let text = value.as_ref().and_then(Value::as_str);
    if MEMBER_FIELDS.contains(&field) && text.is_some_and(|value| value.len() > MAX_FIELD_BYTES) {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!("{field} is limited to {MAX_FIELD_BYTES} bytes"),
        ));
    }
    if field == "avatar_url"
        && text.is_some_and(|url| !url.is_empty() && !url.starts_with("mxc://"))
    {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "avatar_url must be an mxc:// URI",
        ));
    }
    let mut too_large = false;
    storage
        .userid_profile
        .update(&user_id.to_string(), |profile| {
            let original = profile.clone();
            let mut profile = profile.unwrap_or_default();
            match &value {
                // An empty display name or avatar is no display name or avatar.
                Some(Value::String(text)) if text.is_empty() && MEMBER_FIELDS.contains(&field) => {
                    profile.remove(field);
                }
                Some(value) => {
                    profile.insert(field.to_owned(), value.clone());
                }
                None => {
                    profile.remove(field);
                }
            }
            if serde_json::to_vec(&profile).map_or(0, |bytes| bytes.len()) > MAX_PROFILE_BYTES {
                too_large = true;
                return original;
            }
            Some(profile)
        })?;
    if too_large {
        return Err(Error::new(
            ErrorKind::ProfileTooLarge,
            format!("A profile is at most {MAX_PROFILE_BYTES} bytes"),
        ));
    }
    storage.flush().await?;
    if !MEMBER_FIELDS.contains(&field) {
        return Ok(None);
    }
    Ok(Some(
        storage
            .userid_profile
            .get(&user_id.to_string())?
            .unwrap_or_default(),
    ))
}

/// A membership event's content with the user's profile, as joins and profile changes send.
pub(crate) fn member_content(membership: &str, profile: &Map<String, Value>) -> Value {
    let mut content = json!({ "membership": membership });
    for field in ["displayname", "avatar_url"] {
        if let Some(value) = profile.get(field) {
            content[field] = value.clone();
        }
    }
    content
}

/// The user directory's search over this server's accounts (spec: client-server API, "User
/// directory"): active accounts whose ID or display name contains `term` (case aside) and
/// that `visible` lets the searcher see, in account order, at most `limit` of them, each
/// as `{user_id, displayname?, avatar_url?}`. The second value says whether more were
/// found. Who may see whom is a question of rooms, which this module does not know: the
/// directory service asks it through `visible`, only for accounts that match.
pub(crate) fn search(
    storage: &Storage,
    term: &str,
    limit: usize,
    mut visible: impl FnMut(&UserId) -> Result<bool, Error>,
) -> Result<(Vec<Value>, bool), Error> {
    let term = term.to_lowercase();
    let mut results = Vec::new();
    for account in
        crate::users::accounts::list(storage).map_err(|err| Error::internal(err.to_string()))?
    {
        if account.deactivated {
            continue;
        }
        let profile = storage
            .userid_profile
            .get(&account.user_id.to_string())?
            .unwrap_or_default();
        let name = profile
            .get("displayname")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let matches = account.user_id.as_str().to_lowercase().contains(&term)
            || name.to_lowercase().contains(&term);
        if !matches || !visible(&account.user_id)? {
            continue;
        }
        if results.len() == limit {
            return Ok((results, true));
        }
        let mut result = json!({ "user_id": account.user_id });
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = profile.get(field) {
                result[field] = value.clone();
            }
        }
        results.push(result);
    }
    Ok((results, false))
}
