//! Accounts (Synapse's user admin API): list, query, create or modify, deactivate, reset a
//! password, whois, and a user's devices.

use actix_web::{HttpResponse, web};
use ruma::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ServerAdmin, local_user, page};
use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::error::{Error, ErrorKind};
use crate::users::accounts::sessions::Device;
use crate::users::admin::AdminAccount;

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    from: Option<usize>,
    limit: Option<usize>,
    name: Option<String>,
    user_id: Option<String>,
    /// Hearth has no guest accounts: accepted, nothing to exclude.
    #[allow(dead_code)]
    guests: Option<bool>,
    deactivated: Option<bool>,
    admins: Option<bool>,
    locked: Option<bool>,
    order_by: Option<String>,
    dir: Option<String>,
}

/// # GET /_synapse/admin/v2/users
///
/// Local accounts by user ID, paged with `from`/`limit` (`next_token`, `total`); `name`
/// matches the localpart or the display name, `user_id` the whole ID; deactivated and
/// locked accounts only when asked for.
pub(crate) async fn list(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, Error> {
    let mut accounts: Vec<AdminAccount> = app
        .users
        .admin_accounts()?
        .into_iter()
        .filter(|account| matches(account, &query))
        .collect();
    sort(
        &mut accounts,
        query.order_by.as_deref(),
        query.dir.as_deref(),
    )?;
    let from = query.from.unwrap_or(0);
    let (accounts, total, next) = page(accounts, from, query.limit.unwrap_or(100));
    let mut answer = json!({
        "users": accounts.iter().map(listed_account).collect::<Vec<_>>(),
        "total": total,
    });
    if let Some(next) = next {
        answer["next_token"] = json!(next.to_string());
    }
    Ok(HttpResponse::Ok().json(answer))
}

fn matches(account: &AdminAccount, query: &ListQuery) -> bool {
    let summary = &account.summary;
    let by_name = match (&query.name, &query.user_id) {
        (Some(name), _) => {
            summary.user_id.localpart().contains(name.as_str())
                || account
                    .displayname
                    .as_deref()
                    .is_some_and(|shown| shown.contains(name.as_str()))
        }
        (None, Some(user_id)) => summary.user_id.as_str().contains(user_id.as_str()),
        (None, None) => true,
    };
    by_name
        && (query.deactivated == Some(true) || !summary.deactivated)
        && (query.locked == Some(true) || !summary.locked)
        && query.admins.is_none_or(|admins| admins == summary.admin)
}

/// Orders by `order_by` (Synapse's names; ties by user ID), `dir=b` reversing it.
fn sort(
    accounts: &mut [AdminAccount],
    order_by: Option<&str>,
    dir: Option<&str>,
) -> Result<(), Error> {
    match order_by.unwrap_or("name") {
        "name" => {}
        "displayname" => accounts.sort_by(|a, b| a.displayname.cmp(&b.displayname)),
        "avatar_url" => accounts.sort_by(|a, b| a.avatar_url.cmp(&b.avatar_url)),
        "creation_ts" => accounts.sort_by_key(|a| a.summary.created_at_ms),
        "admin" => accounts.sort_by_key(|a| a.summary.admin),
        "deactivated" => accounts.sort_by_key(|a| a.summary.deactivated),
        "is_guest" | "user_type" | "shadow_banned" | "last_seen_ts" => {}
        other => {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                format!("Unknown value for order_by: {other}"),
            ));
        }
    }
    match dir.unwrap_or("f") {
        "f" => Ok(()),
        "b" => {
            accounts.reverse();
            Ok(())
        }
        _ => Err(Error::new(
            ErrorKind::InvalidParam,
            "dir must be `f` or `b`",
        )),
    }
}

/// An account as `/v2/users` lists it (`creation_ts` in milliseconds there).
fn listed_account(account: &AdminAccount) -> Value {
    let summary = &account.summary;
    json!({
        "name": summary.user_id,
        "is_guest": false,
        "admin": summary.admin,
        "user_type": null,
        "deactivated": summary.deactivated,
        "erased": false,
        "shadow_banned": false,
        "displayname": account.displayname,
        "avatar_url": account.avatar_url,
        "creation_ts": summary.created_at_ms,
        "locked": summary.locked,
        "suspended": summary.suspended,
    })
}

/// # GET /_synapse/admin/v2/users/{userId}
pub(crate) async fn query(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &user)?;
    Ok(HttpResponse::Ok().json(account_details(&app, &user_id)?))
}

/// One account as Synapse shows it (`creation_ts` in seconds here, as Synapse has it).
fn account_details(app: &Services, user_id: &UserId) -> Result<Value, Error> {
    let (record, profile) = app
        .users
        .admin_account(user_id)?
        .ok_or_else(|| Error::not_found("User not found"))?;
    let last_seen = app
        .users
        .devices(user_id)?
        .iter()
        .filter_map(|device| device.last_seen_ts)
        .max();
    Ok(json!({
        "name": user_id,
        "displayname": profile.get("displayname"),
        "avatar_url": profile.get("avatar_url"),
        "threepids": [],
        "external_ids": [],
        "is_guest": false,
        "admin": record.admin,
        "deactivated": record.deactivated,
        "erased": false,
        "shadow_banned": false,
        "locked": record.locked,
        "suspended": record.suspended,
        "creation_ts": record.created_at_ms / 1000,
        "last_seen_ts": last_seen,
        "appservice_id": null,
        "consent_server_notice_sent": null,
        "consent_version": null,
        "consent_ts": null,
        "user_type": null,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct AccountChange {
    password: Option<String>,
    logout_devices: Option<bool>,
    displayname: Option<String>,
    avatar_url: Option<String>,
    admin: Option<bool>,
    deactivated: Option<bool>,
    locked: Option<bool>,
}

/// # PUT /_synapse/admin/v2/users/{userId}
///
/// Creates the account (`201`) or changes it (`200`): password (ending its sessions unless
/// `logout_devices` is false), display name and avatar (sent to its rooms, as a profile
/// change is), the admin flag, deactivation or reactivation (which needs a password), the
/// lock. Answers the account as [`query`] does.
pub(crate) async fn create_or_modify(
    app: web::Data<Services>,
    admin: ServerAdmin,
    user: web::Path<String>,
    MatrixJson(change): MatrixJson<AccountChange>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &user)?;
    let password_hash = match &change.password {
        Some(password) => {
            crate::users::accounts::check_password(password)?;
            Some(app.users.password_hasher.hash(password.clone()).await?)
        }
        None => None,
    };
    let existing = app.users.admin_account(&user_id)?;
    let created = existing.is_none();
    match existing {
        None => {
            if change.deactivated == Some(true) {
                return Err(Error::new(
                    ErrorKind::InvalidParam,
                    "A new account cannot be deactivated",
                ));
            }
            crate::users::accounts::local_user_id(
                user_id.localpart(),
                &app.config.server.server_name,
            )?;
            app.users
                .create_account_as_admin(&user_id, password_hash, change.admin.unwrap_or(false))
                .await?;
        }
        Some((record, _)) => {
            modify(&app, &admin, &user_id, &record, &change, password_hash).await?;
        }
    }
    if let Some(locked) = change.locked {
        app.users
            .set_restriction(
                &admin.0.user_id,
                user_id.as_str(),
                crate::users::accounts::moderation::Restriction::Lock,
                locked,
            )
            .await?;
    }
    for (field, value) in [
        ("displayname", &change.displayname),
        ("avatar_url", &change.avatar_url),
    ] {
        if let Some(value) = value {
            // An empty value removes the field, as in Synapse.
            let value = (!value.is_empty()).then(|| json!(value));
            app.rooms.set_profile_field(&user_id, field, value).await?;
        }
    }
    tracing::info!(admin = %admin.0.user_id, user = %user_id, created, "admin API: account changed");
    let details = account_details(&app, &user_id)?;
    Ok(if created {
        HttpResponse::Created().json(details)
    } else {
        HttpResponse::Ok().json(details)
    })
}

/// The changes to an existing account, in an order that leaves no half-changed account
/// behind a refusal: every check first, then the writes.
async fn modify(
    app: &Services,
    admin: &ServerAdmin,
    user_id: &UserId,
    record: &crate::users::accounts::AccountRecord,
    change: &AccountChange,
    password_hash: Option<String>,
) -> Result<(), Error> {
    if change.admin == Some(false) && user_id == admin.0.user_id {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "You may not demote yourself",
        ));
    }
    let reactivating = record.deactivated && change.deactivated == Some(false);
    if reactivating && password_hash.is_none() {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "Reactivating an account needs a password",
        ));
    }
    if record.deactivated && !reactivating && change.password.is_some() {
        return Err(Error::new(
            ErrorKind::UserDeactivated,
            "This account is deactivated; reactivate it with `deactivated: false`",
        ));
    }
    if let Some(admin_flag) = change.admin {
        app.users.set_admin(user_id, admin_flag)?;
    }
    if reactivating {
        if let Some(hash) = password_hash {
            app.users.reactivate(user_id, &hash)?;
        }
    } else if change.deactivated == Some(true) && !record.deactivated {
        app.users.deactivate(&app.rooms.stream, user_id).await?;
    } else if let Some(hash) = password_hash {
        let logout = change.logout_devices.unwrap_or(true);
        app.users
            .reset_password(&app.rooms.stream, user_id, hash, logout)
            .await?;
    }
    app.users.flush_changes().await?;
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeactivateRequest {
    /// Hearth keeps no erasure flag: `erase` removes the display name and avatar.
    #[serde(default)]
    erase: bool,
}

/// # POST /_synapse/admin/v1/deactivate/{userId}
pub(crate) async fn deactivate(
    app: web::Data<Services>,
    admin: ServerAdmin,
    user: web::Path<String>,
    body: Option<MatrixJson<DeactivateRequest>>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &user)?;
    let erase = body.is_some_and(|MatrixJson(body)| body.erase);
    app.users.deactivate(&app.rooms.stream, &user_id).await?;
    if erase {
        for field in ["displayname", "avatar_url"] {
            app.rooms.set_profile_field(&user_id, field, None).await?;
        }
    }
    tracing::info!(admin = %admin.0.user_id, user = %user_id, "admin API: account deactivated");
    Ok(HttpResponse::Ok().json(json!({ "id_server_unbind_result": "success" })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ResetPassword {
    new_password: String,
    logout_devices: Option<bool>,
}

/// # POST /_synapse/admin/v1/reset_password/{userId}
pub(crate) async fn reset_password(
    app: web::Data<Services>,
    admin: ServerAdmin,
    user: web::Path<String>,
    MatrixJson(body): MatrixJson<ResetPassword>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &user)?;
    crate::users::accounts::check_password(&body.new_password)?;
    if app.users.admin_account(&user_id)?.is_none() {
        return Err(Error::not_found("User not found"));
    }
    let hash = app.users.password_hasher.hash(body.new_password).await?;
    app.users
        .reset_password(
            &app.rooms.stream,
            &user_id,
            hash,
            body.logout_devices.unwrap_or(true),
        )
        .await?;
    tracing::info!(admin = %admin.0.user_id, user = %user_id, "admin API: password reset");
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_synapse/admin/v1/whois/{userId}
pub(crate) async fn whois(
    app: web::Data<Services>,
    admin: ServerAdmin,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &user)?;
    let devices = app.users.whois_devices(&admin.0.user_id, &user_id)?;
    Ok(HttpResponse::Ok().json(crate::api::client::admin::whois_answer(&user_id, &devices)))
}

/// A device as Synapse's admin API shows it.
fn device_json(user_id: &UserId, device: &Device) -> Value {
    json!({
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
        "last_seen_user_agent": null,
        "user_id": user_id,
        "dehydrated": false,
    })
}

/// # GET /_synapse/admin/v2/users/{userId}/devices
pub(crate) async fn devices(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &user)?;
    let devices: Vec<Value> = app
        .users
        .devices(&user_id)?
        .iter()
        .map(|device| device_json(&user_id, device))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "total": devices.len(), "devices": devices })))
}

/// # GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}
pub(crate) async fn device(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &path.0)?;
    let device = app
        .users
        .device(&user_id, &path.1)?
        .ok_or_else(|| Error::not_found("No device found"))?;
    Ok(HttpResponse::Ok().json(device_json(&user_id, &device)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RenameDevice {
    display_name: Option<String>,
}

/// # PUT /_synapse/admin/v2/users/{userId}/devices/{deviceId}
pub(crate) async fn rename_device(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    path: web::Path<(String, String)>,
    MatrixJson(body): MatrixJson<RenameDevice>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &path.0)?;
    if !app
        .users
        .rename_device(&app.rooms.stream, &user_id, &path.1, body.display_name)
        .await?
    {
        return Err(Error::not_found("No device found"));
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}
///
/// Ends the device's session; deleting a device that is gone already is no error.
pub(crate) async fn delete_device(
    app: web::Data<Services>,
    admin: ServerAdmin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &path.0)?;
    app.users
        .remove_devices(&app.rooms.stream, &user_id, std::slice::from_ref(&path.1))
        .await?;
    tracing::info!(admin = %admin.0.user_id, user = %user_id, "admin API: device deleted");
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteDevices {
    devices: Vec<String>,
}

/// # POST /_synapse/admin/v2/users/{userId}/delete_devices
pub(crate) async fn delete_devices(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    user: web::Path<String>,
    MatrixJson(body): MatrixJson<DeleteDevices>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &user)?;
    if body.devices.len() > super::MAX_PAGE {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!("At most {} devices at a time", super::MAX_PAGE),
        ));
    }
    app.users
        .remove_devices(&app.rooms.stream, &user_id, &body.devices)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}
