//! Push rules and pushers (spec: client-server API, "Push Notifications"). Rules are kept as
//! the `m.push_rules` account data, as the spec says, starting from its default ruleset;
//! clients see changes through `/sync`. The room service applies them to each event
//! (`rooms::notifications`). Pushers are stored faithfully for when sending to push
//! gateways is built.

use ruma::UserId;
use ruma::push::Ruleset;
use serde_json::{Map, Value};

use super::Users;
use crate::error::{Error, ErrorKind};
use crate::storage::stream::Stream;
use crate::storage::{Storage, StorageError};

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

    pub(crate) fn pushers(&self, user_id: &UserId) -> Result<Vec<Value>, StorageError> {
        Ok(self
            .storage()
            .userid_pushers
            .get(&user_id.to_string())?
            .unwrap_or_default())
    }

    /// `POST /pushers/set`: creates, replaces (same `app_id` and `pushkey`) or, with
    /// `kind: null`, deletes a pusher; flushed.
    pub(crate) async fn set_pusher(
        &self,
        user_id: &UserId,
        body: Map<String, Value>,
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
        let mut pushers = self.pushers(user_id)?;
        let same = |pusher: &Value| {
            pusher["app_id"] == app_id.as_str() && pusher["pushkey"] == pushkey.as_str()
        };
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
                let append = body.get("append").and_then(Value::as_bool).unwrap_or(false);
                if !append {
                    // Without `append`, other users' pushers with this key go; ours: replaced.
                    pushers.retain(|pusher| {
                        pusher["pushkey"] != pushkey.as_str() || pusher["app_id"] != app_id.as_str()
                    });
                } else {
                    pushers.retain(|pusher| !same(pusher));
                }
                let mut pusher = body.clone();
                pusher.remove("append");
                pushers.push(Value::Object(pusher));
                if pushers.len() > MAX_PUSHERS {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded { retry_after_ms: 0 },
                        "Too many pushers",
                    ));
                }
            }
        }
        storage
            .userid_pushers
            .insert(&user_id.to_string(), &pushers)?;
        drop(exclusive);
        self.flush().await?;
        Ok(())
    }
}
