//! Push rules, pushers and notifications (spec: client-server API, "Push Notifications").
//! The rules and pushers live in [`crate::users::push_rules`]; [`crate::rooms::notifications`]
//! applies the rules to each event (unread counts, `/notifications`, read through the sync
//! service); `federation::push` sends notifications to the pushers' gateways.

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
    app.users.push_rules(user_id)
}

async fn change_rules(
    app: &Services,
    user_id: &UserId,
    change: impl FnOnce(&mut Ruleset) -> Result<(), Error>,
) -> Result<(), Error> {
    app.users
        .change_push_rules(&app.rooms.stream, user_id, change)
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
pub(crate) async fn get_all(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(json!({ "global": ruleset(&app, &auth.user_id)? })))
}

/// # GET /_matrix/client/v3/pushrules/global/
pub(crate) async fn get_global(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(ruleset(&app, &auth.user_id)?))
}

/// # GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
pub(crate) async fn get_rule(
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
pub(crate) struct RuleRequest {
    actions: Vec<Action>,
    #[serde(default)]
    conditions: Vec<PushCondition>,
    pattern: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PositionQuery {
    before: Option<String>,
    after: Option<String>,
}

/// # PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
pub(crate) async fn put_rule(
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
pub(crate) async fn delete_rule(
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
pub(crate) async fn get_attribute(
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
pub(crate) async fn put_attribute(
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
pub(crate) async fn get_pushers(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    let pushers = app.users.pushers(&auth.user_id)?;
    Ok(HttpResponse::Ok().json(json!({ "pushers": pushers })))
}

/// # POST /_matrix/client/v3/pushers/set
///
/// Creates, replaces (same `app_id` and `pushkey`) or, with `kind: null`, deletes a pusher.
/// Without `append`, other users' pushers with the same app and key are removed.
pub(crate) async fn set_pusher(
    app: web::Data<Services>,
    auth: Authenticated,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    // The spec wants gateways on HTTPS; plain HTTP only where the owner allowed it (tests).
    let plain_http = body
        .get("data")
        .and_then(|data| data.get("url"))
        .and_then(Value::as_str)
        .is_some_and(|url| url.starts_with("http://"));
    if body.get("kind").is_some_and(|kind| kind == "http")
        && plain_http
        && !app.config.push.allow_http
    {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "data.url must be an https:// URL",
        ));
    }
    let now = app.rooms.visible_position();
    app.users.set_pusher(&auth.user_id, body, now).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub(crate) struct NotificationsQuery {
    from: Option<String>,
    limit: Option<usize>,
    only: Option<String>,
}

/// # GET /_matrix/client/v3/notifications
///
/// The user's notifications, newest first; `from` is the `next_token` of the page before.
pub(crate) async fn notifications(
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
    let response = app
        .sync
        .notifications(&auth.user_id, before, limit, only_highlights)?;
    Ok(HttpResponse::Ok().json(response))
}
