//! Push rules and pushers (spec: client-server API, "Push Notifications"). Rules are kept as
//! the `m.push_rules` account data, as the spec says, starting from its default ruleset;
//! clients see changes through `/sync`. [`crate::rooms::notifications`] applies them to each event
//! (unread counts, `/notifications`); sending to push gateways is not built yet: pushers
//! are stored faithfully for then.

use actix_web::{HttpResponse, web};
use ruma::push::{
    Action, AnyPushRuleRef, NewConditionalPushRule, NewPatternedPushRule, NewPushRule,
    NewSimplePushRule, PushCondition, RuleKind, Ruleset,
};
use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};

fn ruleset(app: &Services, user_id: &UserId) -> Result<Ruleset, Error> {
    Ok(crate::rooms::notifications::ruleset(&app.storage, user_id)?)
}

/// Changes the user's push rules in one step: read, `change`, store, with no other write
/// of them in between (see [`crate::users::account_data::modify`]).
async fn change_rules(
    app: &Services,
    user_id: &UserId,
    change: impl FnOnce(&mut Ruleset) -> Result<(), Error>,
) -> Result<(), Error> {
    crate::users::account_data::modify(
        &app.storage,
        &app.rooms.stream,
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

fn rule_json(rule: AnyPushRuleRef<'_>) -> Value {
    let value = match rule {
        AnyPushRuleRef::Override(rule) | AnyPushRuleRef::Underride(rule) => {
            serde_json::to_value(rule)
        }
        AnyPushRuleRef::Content(rule) => serde_json::to_value(rule),
        AnyPushRuleRef::Room(rule) => serde_json::to_value(rule),
        AnyPushRuleRef::Sender(rule) => serde_json::to_value(rule),
        _ => Ok(Value::Null),
    };
    value.unwrap_or(Value::Null)
}

fn kind_of(text: &str) -> Result<RuleKind, Error> {
    match text {
        "override" | "underride" | "sender" | "room" | "content" => Ok(RuleKind::from(text)),
        _ => Err(Error::new(
            ErrorKind::InvalidParam,
            format!("Unknown rule kind {text}"),
        )),
    }
}

fn scope(scope: &str) -> Result<(), Error> {
    if scope == "global" {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidParam,
            "The only scope is global",
        ))
    }
}

fn not_found() -> Error {
    Error::not_found("No such push rule")
}

/// # GET /_matrix/client/v3/pushrules/
pub async fn get_all(app: web::Data<Services>, auth: Authenticated) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(json!({ "global": ruleset(&app, &auth.user_id)? })))
}

/// # GET /_matrix/client/v3/pushrules/global/
pub async fn get_global(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(ruleset(&app, &auth.user_id)?))
}

/// # GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
pub async fn get_rule(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, Error> {
    let (scope_name, kind, rule_id) = path.into_inner();
    scope(&scope_name)?;
    let rules = ruleset(&app, &auth.user_id)?;
    let rule = rules.get(kind_of(&kind)?, &rule_id).ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(rule_json(rule)))
}

#[derive(Debug, Deserialize)]
pub struct RuleRequest {
    actions: Vec<Action>,
    #[serde(default)]
    conditions: Vec<PushCondition>,
    pattern: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PositionQuery {
    before: Option<String>,
    after: Option<String>,
}

/// # PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
pub async fn put_rule(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    query: web::Query<PositionQuery>,
    MatrixJson(body): MatrixJson<RuleRequest>,
) -> Result<HttpResponse, Error> {
    let (scope_name, kind, rule_id) = path.into_inner();
    scope(&scope_name)?;
    let invalid = |message: &str| Error::new(ErrorKind::InvalidParam, message.to_owned());
    let rule = match kind.as_str() {
        "override" => NewPushRule::Override(NewConditionalPushRule::new(
            rule_id,
            body.conditions,
            body.actions,
        )),
        "underride" => NewPushRule::Underride(NewConditionalPushRule::new(
            rule_id,
            body.conditions,
            body.actions,
        )),
        "content" => {
            let pattern = body.pattern.ok_or_else(|| {
                Error::new(ErrorKind::MissingParam, "A content rule needs a pattern")
            })?;
            NewPushRule::Content(NewPatternedPushRule::new(rule_id, pattern, body.actions))
        }
        "room" => {
            let room = OwnedRoomId::try_from(rule_id)
                .map_err(|_| invalid("A room rule's ID is a room ID"))?;
            NewPushRule::Room(NewSimplePushRule::new(room, body.actions))
        }
        "sender" => {
            let user = OwnedUserId::try_from(rule_id)
                .map_err(|_| invalid("A sender rule's ID is a user ID"))?;
            NewPushRule::Sender(NewSimplePushRule::new(user, body.actions))
        }
        other => return Err(invalid(&format!("Unknown rule kind {other}"))),
    };
    change_rules(&app, &auth.user_id, |rules| {
        rules
            .insert(rule, query.after.as_deref(), query.before.as_deref())
            .map_err(|err| match err {
                ruma::push::InsertPushRuleError::UnknownRuleId => Error::not_found(err.to_string()),
                other => Error::new(ErrorKind::InvalidParam, other.to_string()),
            })
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # DELETE /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
pub async fn delete_rule(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, Error> {
    let (scope_name, kind, rule_id) = path.into_inner();
    scope(&scope_name)?;
    let kind = kind_of(&kind)?;
    change_rules(&app, &auth.user_id, |rules| {
        rules.remove(kind, &rule_id).map_err(|err| match err {
            ruma::push::RemovePushRuleError::NotFound => not_found(),
            other => Error::new(ErrorKind::BadRequest, other.to_string()),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/{attribute}
pub async fn get_attribute(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, Error> {
    let (scope_name, kind, rule_id, attribute) = path.into_inner();
    scope(&scope_name)?;
    let rules = ruleset(&app, &auth.user_id)?;
    let rule = rules.get(kind_of(&kind)?, &rule_id).ok_or_else(not_found)?;
    match attribute.as_str() {
        "enabled" => Ok(HttpResponse::Ok().json(json!({ "enabled": rule.enabled() }))),
        "actions" => Ok(HttpResponse::Ok().json(json!({ "actions": rule.actions() }))),
        _ => Err(Error::unrecognized()),
    }
}

/// # PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/{attribute}
pub async fn put_attribute(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (scope_name, kind, rule_id, attribute) = path.into_inner();
    scope(&scope_name)?;
    let kind = kind_of(&kind)?;
    let bad = |field: &str| {
        Error::new(
            ErrorKind::BadJson,
            format!("`{field}` is missing or of the wrong type"),
        )
    };
    match attribute.as_str() {
        "enabled" => {
            let enabled = body
                .get("enabled")
                .and_then(Value::as_bool)
                .ok_or_else(|| bad("enabled"))?;
            change_rules(&app, &auth.user_id, |rules| {
                rules
                    .set_enabled(kind, &rule_id, enabled)
                    .map_err(|_| not_found())
            })
            .await?;
        }
        "actions" => {
            let actions: Vec<Action> = body
                .get("actions")
                .cloned()
                .and_then(|actions| serde_json::from_value(actions).ok())
                .ok_or_else(|| bad("actions"))?;
            change_rules(&app, &auth.user_id, |rules| {
                rules
                    .set_actions(kind, &rule_id, actions)
                    .map_err(|_| not_found())
            })
            .await?;
        }
        _ => return Err(Error::unrecognized()),
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_matrix/client/v3/pushers
pub async fn get_pushers(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    let pushers = app
        .storage
        .userid_pushers
        .get(&auth.user_id.to_string())?
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({ "pushers": pushers })))
}

/// The most pushers one account may have.
const MAX_PUSHERS: usize = 50;

/// # POST /_matrix/client/v3/pushers/set
///
/// Creates, replaces (same `app_id` and `pushkey`) or, with `kind: null`, deletes a pusher.
pub async fn set_pusher(
    app: web::Data<Services>,
    auth: Authenticated,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
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
    // Read, change, write with no other write of this user's pushers in between.
    let exclusive = app.storage.exclusive();
    let mut pushers = app
        .storage
        .userid_pushers
        .get(&auth.user_id.to_string())?
        .unwrap_or_default();
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
    app.storage
        .userid_pushers
        .insert(&auth.user_id.to_string(), &pushers)?;
    drop(exclusive);
    app.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct NotificationsQuery {
    from: Option<String>,
    limit: Option<usize>,
    only: Option<String>,
}

/// # GET /_matrix/client/v3/notifications
///
/// The user's notifications, newest first; `from` is the `next_token` of the page before.
pub async fn notifications(
    app: web::Data<Services>,
    auth: Authenticated,
    query: web::Query<NotificationsQuery>,
) -> Result<HttpResponse, Error> {
    let before = match query.from.as_deref() {
        None => None,
        Some(token) => Some(token.parse::<u64>().map_err(|_| {
            Error::new(
                ErrorKind::InvalidParam,
                "`from` is not a token from this server",
            )
        })?),
    };
    let only_highlights = match query.only.as_deref() {
        None => false,
        Some("highlight") => true,
        Some(other) => {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                format!("Unknown `only` value {other}"),
            ));
        }
    };
    let limit = query.limit.unwrap_or(20).clamp(1, 100);
    let page = crate::rooms::notifications::list(
        &app.storage,
        &auth.user_id,
        before,
        limit,
        only_highlights,
    )?;
    let mut notifications = Vec::new();
    for notification in &page.notifications {
        let Some(event) = crate::rooms::format::stored_event_for_client(
            &app.storage,
            &notification.record.event_id,
            Some(&notification.record.room_id),
            None,
        )?
        else {
            continue;
        };
        notifications.push(json!({
            "actions": notification.record.actions,
            "event": event,
            "read": notification.read,
            "room_id": notification.record.room_id,
            "ts": notification.record.ts,
        }));
    }
    let mut response = json!({ "notifications": notifications });
    if let Some(next) = page.next {
        response["next_token"] = json!(next.to_string());
    }
    Ok(HttpResponse::Ok().json(response))
}
