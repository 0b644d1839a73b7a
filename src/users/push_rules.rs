//! Push rules and pushers (spec: client-server API, "Push Notifications"). Rules are kept as
//! the `m.push_rules` account data, as the spec says, starting from its default ruleset;
//! clients see changes through `/sync`. The room service applies them to each event
//! (`rooms::notifications`). Pushers are stored as clients set them, with two fields of
//! ours added ([`PUSHKEY_TS`], [`SINCE`]); `federation::push` delivers to their gateways and, through
//! [`remove_rejected_pusher`], drops those a gateway rejects.

use ruma::UserId;
use ruma::push::Ruleset;
use serde_json::{Map, Value};

use super::Users;
use crate::error::{Error, ErrorKind};
use crate::storage::stream::Stream;
use crate::storage::{Storage, StorageError};

/// When the pushkey was set (unix seconds), which gateways receive as `pushkey_ts`.
pub(crate) const PUSHKEY_TS: &str = "pushkey_ts";

/// The stream position when the pusher was set: only what happens after it is pushed.
pub(crate) const SINCE: &str = "hearth.since";

/// The most pushers one account may have.
const MAX_PUSHERS: usize = 50;

/// The user's push rules: their `m.push_rules` account data, or the spec's defaults.
pub(crate) fn ruleset(storage: &Storage, user_id: &UserId) -> Result<Ruleset, StorageError> {
    match super::account_data::get_stored(storage, user_id, None, "m.push_rules")? {
        Some(content) => serde_json::from_value(content.get("global").cloned().unwrap_or_default())
            .map_err(|err| StorageError::Corrupt(format!("stored push rules: {err}"))),
        None => Ok(Ruleset::server_default(user_id)),
    }
}

impl Users {
    pub(crate) fn push_rules(&self, user_id: &UserId) -> Result<Ruleset, Error> {
        Ok(ruleset(self.storage(), user_id)?)
    }

    /// Changes the user's push rules in one step: read, `change`, store, with no other
    /// write of them in between (see [`super::account_data::modify`]), at the next position
    /// of `stream` so `/sync` sends the new rules.
    pub(crate) async fn change_push_rules(
        &self,
        stream: &Stream,
        user_id: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<(), Error>,
    ) -> Result<(), Error> {
        super::account_data::modify(
            self.storage(),
            stream,
            user_id,
            None,
            "m.push_rules",
            |content| {
                let mut rules = match content {
                    Some(content) => {
                        serde_json::from_value(content.get("global").cloned().unwrap_or_default())
                            .map_err(|err| Error::internal(format!("stored push rules: {err}")))?
                    }
                    None => Ruleset::server_default(user_id),
                };
                change(&mut rules)?;
                let mut content = Map::new();
                content.insert(
                    "global".into(),
                    serde_json::to_value(&rules).map_err(Error::internal)?,
                );
                Ok(content)
            },
        )
        .await
    }

    /// The user's pushers as `GET /pushers` shows them.
    pub(crate) fn pushers(&self, user_id: &UserId) -> Result<Vec<Value>, StorageError> {
        let mut pushers = stored_pushers(self.storage(), user_id.as_str())?;
        for pusher in &mut pushers {
            if let Some(pusher) = pusher.as_object_mut() {
                pusher.remove(PUSHKEY_TS);
                pusher.remove(SINCE);
            }
        }
        Ok(pushers)
    }

    /// `POST /pushers/set`: creates, replaces (same `app_id` and `pushkey`) or, with
    /// `kind: null`, deletes a pusher; flushed. A new pusher gets what happens after stream
    /// position `now`.
    pub(crate) async fn set_pusher(
        &self,
        user_id: &UserId,
        body: Map<String, Value>,
        now: u64,
    ) -> Result<(), Error> {
        let text = |field: &str| -> Result<String, Error> {
            body.get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::MissingParam,
                        format!("`{field}` is missing or not a string"),
                    )
                })
        };
        let app_id = text("app_id")?;
        let pushkey = text("pushkey")?;
        if app_id.len() > 64 || pushkey.len() > 512 {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "app_id is at most 64 bytes and pushkey 512",
            ));
        }
        let kind = match body.get("kind") {
            Some(Value::Null) => None,
            Some(Value::String(kind)) if kind == "http" || kind == "email" => Some(kind.clone()),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidParam,
                    "kind must be http, email or null",
                ));
            }
        };
        let storage = self.storage();
        // Read, change, write with no other write of this user's pushers in between.
        let exclusive = storage.exclusive();
        let mut pushers = stored_pushers(storage, user_id.as_str())?;
        let same = |pusher: &Value| {
            pusher["app_id"] == app_id.as_str() && pusher["pushkey"] == pushkey.as_str()
        };
        // Without `append`, the spec says other users' pushers with this app and key go:
        // the device now belongs to this user.
        let mut take_over = false;
        match kind {
            None => pushers.retain(|pusher| !same(pusher)),
            Some(kind) => {
                for field in ["app_display_name", "device_display_name", "lang"] {
                    text(field)?;
                }
                let data = body
                    .get("data")
                    .and_then(Value::as_object)
                    .ok_or_else(|| Error::new(ErrorKind::MissingParam, "`data` is missing"))?;
                if kind == "http" {
                    let url = data.get("url").and_then(Value::as_str).unwrap_or_default();
                    if !(url.starts_with("https://") || url.starts_with("http://"))
                        || !url.ends_with("/_matrix/push/v1/notify")
                    {
                        return Err(Error::new(
                            ErrorKind::InvalidParam,
                            "data.url must be a push gateway URL ending in /_matrix/push/v1/notify",
                        ));
                    }
                }
                take_over = !body.get("append").and_then(Value::as_bool).unwrap_or(false);
                pushers.retain(|pusher| !same(pusher));
                let mut pusher = body.clone();
                pusher.remove("append");
                let now_seconds = crate::matrix::time::now_ms() / 1000;
                pusher.insert(PUSHKEY_TS.into(), now_seconds.into());
                pusher.insert(SINCE.into(), now.into());
                pushers.push(Value::Object(pusher));
                if pushers.len() > MAX_PUSHERS {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded { retry_after_ms: 0 },
                        "Too many pushers",
                    ));
                }
            }
        }
        if take_over {
            remove_others_pushers(storage, user_id.as_str(), &app_id, &pushkey)?;
        }
        storage
            .userid_pushers
            .insert(&user_id.to_string(), &pushers)?;
        drop(exclusive);
        self.flush().await?;
        Ok(())
    }
}

/// The user's pushers as stored, our fields included.
pub(crate) fn stored_pushers(storage: &Storage, user_id: &str) -> Result<Vec<Value>, StorageError> {
    Ok(storage
        .userid_pushers
        .get(&user_id.to_owned())?
        .unwrap_or_default())
}

/// Removes the pusher `(app_id, pushkey)` of every user but `user_id` (a family server has
/// few accounts, so walking them is cheap). Call with `exclusive` held.
fn remove_others_pushers(
    storage: &Storage,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
) -> Result<(), StorageError> {
    let mut changed = Vec::new();
    for entry in storage.userid_pushers.iter() {
        let (user, mut pushers) = entry?;
        if user == user_id {
            continue;
        }
        let before = pushers.len();
        pushers.retain(|pusher| pusher["app_id"] != app_id || pusher["pushkey"] != pushkey);
        if pushers.len() != before {
            changed.push((user, pushers));
        }
    }
    for (user, pushers) in changed {
        storage.userid_pushers.insert(&user, &pushers)?;
    }
    Ok(())
}

/// Removes a pusher whose gateway listed its pushkey in `rejected` (the spec: the
/// homeserver must stop sending to it and remove it). Returns whether it was there.
pub(crate) fn remove_rejected_pusher(
    storage: &Storage,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
) -> Result<bool, StorageError> {
    let _exclusive = storage.exclusive();
    let mut pushers = stored_pushers(storage, user_id)?;
    let before = pushers.len();
    pushers.retain(|pusher| pusher["app_id"] != app_id || pusher["pushkey"] != pushkey);
    if pushers.len() == before {
        return Ok(false);
    }
    storage
        .userid_pushers
        .insert(&user_id.to_owned(), &pushers)?;
    Ok(true)
}
