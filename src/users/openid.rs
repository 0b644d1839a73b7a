//! OpenID tokens (spec: client-server API, "OpenID"): a short-lived token a user hands to a
//! third party (an integration manager, a widget), which asks this server over federation
//! (`/openid/userinfo`) whom it belongs to. Kept in the `openid_user` tree, token →
//! `{user_id, expires_at}`.

use ruma::UserId;
use serde_json::json;

use super::accounts::sessions::new_access_token;
use crate::storage::{Storage, StorageError};

/// How long a token is good for, in seconds.
pub(crate) const LIFETIME_SECS: u64 = 3600;

/// A new token for `user_id`, good for [`LIFETIME_SECS`] from `now_ms`. Expired tokens are
/// removed as new ones come, so the tree stays small. Not flushed.
pub(crate) fn issue(
    storage: &Storage,
    user_id: &UserId,
    now_ms: u64,
) -> Result<String, StorageError> {
    let token = new_access_token();
    let expires_at = now_ms + LIFETIME_SECS * 1000;
    let expired: Vec<String> = storage
        .openid_user
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, record)| record["expires_at"].as_u64().is_none_or(|at| at <= now_ms))
        .map(|(token, _)| token)
        .collect();
    for old in expired {
        storage.openid_user.remove(&old)?;
    }
    storage.openid_user.insert(
        &token,
        &json!({ "user_id": user_id, "expires_at": expires_at }),
    )?;
    Ok(token)
}
