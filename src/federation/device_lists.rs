//! Device lists across servers (spec: server-server API, "Device Management"):
//! `m.device_list_update` EDUs out and in, the resync through `/user/devices`, and the
//! cache of other servers' users' device lists that lets `/keys/query` answer here.
//!
//! - **Out**: each of our users' rows on the device-list stream
//!   ([`crate::users::device_lists`]) becomes one EDU per device that changed, with
//!   `stream_id` the row's position and `prev_id` the user's change before it, queued by the
//!   outbound follower for every server sharing a room with the user.
//! - **In**: an update for a user we share a room with is applied to the cached list when
//!   its `prev_id`s are all ones we have seen (`<=` the list's `stream_id`); otherwise (a
//!   gap, or no list cached yet) the whole list is fetched again from the user's server,
//!   in the background (the transaction is answered at once), at most one fetch per
//!   user at a time and [`MAX_RESYNCS`] in all, each within
//!   [`RESYNC_TIMEOUT`], and not again for a minute after one failed. Either way the change goes on our stream, so our users' `/sync`
//!   lists the remote user in `device_lists.changed`.
//! - **Cache**: one record per remote user (`userid_remotedevices`, written here only),
//!   at most [`MAX_DEVICES_PER_USER`] devices each and [`MAX_CACHED_USERS`] users in all
//!   (past that, new users are not cached and `/keys/query` asks their server as before).
//!   A list is used only while the user shares a room with one of ours (we hear their
//!   updates only then), and is dropped when they stop sharing any (the follower sees the
//!   leave): it is fetched again when needed.
//!
//! Device keys from another server are stored as that server gave them: the device's own
//! signature is for clients to check (they do), as with `/user/keys/query` answers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ruma::{OwnedUserId, ServerName, UserId};
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::federation::Federation;
use crate::federation::device_keys::{self, Fanout};
use crate::storage::records::RemoteDeviceList;
use crate::storage::{Storage, StorageError};
use crate::users::device_lists;

/// The most devices kept for one remote user (the rest of a longer list is left out).
pub(crate) const MAX_DEVICES_PER_USER: usize = 200;

/// The most remote users whose device lists are kept.
pub(crate) const MAX_CACHED_USERS: usize = 10_000;

/// Resyncs running at once, all users together.
pub(crate) const MAX_RESYNCS: usize = 4;

/// Users whose resync runs or waits for its turn, at most (others are skipped: their
/// next update tries again).
const MAX_WAITING_RESYNCS: usize = 256;

/// The longest a resync waits for the other server (and for its turn).
pub(crate) const RESYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest device-list answer read from another server.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// After a failed fetch of a user's list, the next is tried only this much later: a
/// transaction of a hundred updates from a server that does not answer its
/// `/user/devices` costs one timeout, not a hundred.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Failed fetches remembered, at most (all are forgotten past it).
const MAX_FAILURES_REMEMBERED: usize = 1024;

/// The resyncs in progress: one per user at a time, [`MAX_RESYNCS`] in all; and the users
/// whose last fetch failed recently.
pub(crate) struct Resyncs {
    running: Mutex<HashSet<OwnedUserId>>,
    failed: Mutex<HashMap<OwnedUserId, Instant>>,
    permits: tokio::sync::Semaphore,
}

impl Default for Resyncs {
    fn default() -> Resyncs {
        Resyncs {
            running: Mutex::new(HashSet::new()),
            failed: Mutex::new(HashMap::new()),
            permits: tokio::sync::Semaphore::new(MAX_RESYNCS),
        }
    }
}

/// Marks a user's resync as running until dropped.
struct Running<'a> {
    resyncs: &'a Resyncs,
    user_id: OwnedUserId,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.resyncs
            .running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&self.user_id);
    }
}

impl Resyncs {
    /// The user's turn, or `None` when a resync of theirs is already running (it fetches
    /// the newest list, so a second one would learn nothing more).
    /// Whether [`Resyncs::start`] would let a fetch of the user's list begin now.
    fn may_start(&self, user_id: &UserId) -> bool {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        running.len() < MAX_WAITING_RESYNCS
            && !running.contains(user_id)
            && !self.failed_recently(user_id)
    }

    fn failed_recently(&self, user_id: &UserId) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(user_id)
            .is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE)
    }

    fn start(&self, user_id: &UserId) -> Option<Running<'_>> {
        if self.failed_recently(user_id) {
            return None;
        }
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if running.len() >= MAX_WAITING_RESYNCS || !running.insert(user_id.to_owned()) {
            return None;
        }
        Some(Running {
            resyncs: self,
            user_id: user_id.to_owned(),
        })
    }

    /// Notes how a fetch of the user's list ended.
    fn finished(&self, user_id: &UserId, ok: bool) {
        let mut failed = self
            .failed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if ok {
            failed.remove(user_id);
            return;
        }
        if failed.len() >= MAX_FAILURES_REMEMBERED {
            failed.retain(|_, at| at.elapsed() < RETRY_AFTER_FAILURE);
            if failed.len() >= MAX_FAILURES_REMEMBERED {
                failed.clear();
            }
        }
        failed.insert(user_id.to_owned(), Instant::now());
    }
}

// ---- out

/// The `m.device_list_update` EDUs for our users' device-list changes at positions
/// `(from, to]`, each with the servers it goes to (those sharing a room with the user).
pub(crate) fn outgoing(
    storage: &Storage,
    origin: &ServerName,
    (from, to): (u64, u64),
    servers_of: &mut impl FnMut(&UserId) -> Result<BTreeSet<String>, StorageError>,
) -> Result<Vec<(Value, BTreeSet<String>)>, StorageError> {
    let mut out = Vec::new();
    for (position, change) in device_lists::changes_between(storage, from, to)? {
        let Ok(user_id) = UserId::parse(change.user_id.as_str()) else {
            continue;
        };
        if user_id.server_name() != origin {
            continue;
        }
        let servers = servers_of(&user_id)?;
        if servers.is_empty() {
            continue;
        }
        for device_id in &change.devices {
            let edu = update_edu(storage, &user_id, device_id, position, change.prev_id)?;
            out.push((edu, servers.clone()));
        }
    }
    Ok(out)
}

/// One device's update as it stands now: its keys, or `deleted` when the device is gone.
fn update_edu(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
    stream_id: u64,
    prev_id: Option<u64>,
) -> Result<Value, StorageError> {
    let key = (user_id.as_str().to_owned(), device_id.to_owned());
    let exists = storage.userdevice_device.contains_key(&key)?;
    let mut content = json!({
        "user_id": user_id,
        "device_id": device_id,
        "stream_id": stream_id,
        "prev_id": prev_id.into_iter().collect::<Vec<_>>(),
        "deleted": !exists,
    });
    if exists && let Some(keys) = storage.userdevice_keys.get(&key)? {
        // With the user's own cross-signing signatures of the device, as `/user/devices`
        // and `/user/keys/query` give them: how other servers' users see it verified.
        let mut devices = Map::new();
        devices.insert(device_id.to_owned(), keys);
        crate::users::cross_signing::signatures::merge_into_devices(
            storage,
            user_id.as_str(),
            &mut devices,
            None,
        )?;
        if let Some(keys) = devices.remove(device_id) {
            content["keys"] = keys;
        }
    }
    Ok(json!({ "edu_type": "m.device_list_update", "content": content }))
}

/// `/user/devices/{userId}`'s `stream_id`: the position of the user's newest change.
pub(crate) fn stream_id_of(storage: &Storage, user_id: &UserId) -> Result<u64, StorageError> {
    device_lists::latest_position(storage, user_id)
}

// ---- in

/// `m.device_list_update` from `origin`: applied when in order, else a resync.
pub(crate) async fn receive_update(
    fed: &Arc<Federation>,
    origin: &ServerName,
    content: &Value,
) -> Result<(), Error> {
    let user_id = remote_user(origin, &content["user_id"])?;
    if !shares_a_room_with_us(&fed.storage, &user_id)? {
        return Err(Error::new(ErrorKind::Forbidden, "shares no room with us"));
    }
    let device_id = content["device_id"]
        .as_str()
        .filter(|id| !id.is_empty() && id.len() <= 255)
        .ok_or_else(|| bad("device_id must be a string"))?;
    let stream_id = content["stream_id"]
        .as_u64()
        .ok_or_else(|| bad("stream_id must be an integer"))?;
    let prev_ids: Vec<u64> = match content.get("prev_id") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_u64).collect(),
        Some(_) => return Err(bad("prev_id must be a list")),
    };
    let key = user_id.as_str().to_owned();
    let Some(mut list) = fed.storage.userid_remotedevices.get(&key)? else {
        spawn_resync(fed, user_id);
        return Ok(());
    };
    if stream_id < list.stream_id {
        return Ok(()); // Old news.
    }
    if prev_ids.iter().any(|prev| *prev > list.stream_id) {
        tracing::info!(%user_id, stream_id, "federation: a device-list update was missed; resyncing");
        spawn_resync(fed, user_id);
        return Ok(());
    }
    let deleted = content["deleted"].as_bool().unwrap_or(false);
    if deleted {
        list.devices.remove(device_id);
    } else if let Some(keys) = content.get("keys").filter(|keys| !keys.is_null()) {
        check_device_keys(&user_id, device_id, keys)?;
        if list.devices.len() < MAX_DEVICES_PER_USER || list.devices.contains_key(device_id) {
            list.devices.insert(device_id.to_owned(), keys.clone());
        }
    }
    list.stream_id = stream_id;
    fed.storage.userid_remotedevices.insert(&key, &list)?;
    tracing::debug!(%user_id, device_id, stream_id, deleted, "federation: device-list update applied");
    device_lists::note_change(
        &fed.storage,
        &fed.rooms.stream,
        &user_id,
        &[device_id.to_owned()],
    )
    .await?;
    Ok(())
}

/// `m.signing_key_update` from `origin`: the user's cross-signing keys changed. The cached
/// list is dropped (the next `/keys/query` asks their server, which has the new keys) and
/// our users are told.
pub(crate) async fn receive_signing_key_update(
    fed: &Federation,
    origin: &ServerName,
    content: &Value,
) -> Result<(), Error> {
    let user_id = remote_user(origin, &content["user_id"])?;
    if !shares_a_room_with_us(&fed.storage, &user_id)? {
        return Err(Error::new(ErrorKind::Forbidden, "shares no room with us"));
    }
    fed.storage
        .userid_remotedevices
        .remove(&user_id.as_str().to_owned())?;
    device_lists::note_change(&fed.storage, &fed.rooms.stream, &user_id, &[]).await?;
    Ok(())
}

/// Starts a [`resync`] of the user's list in the background: the transaction that
/// revealed the gap is answered without waiting for the user's server. Skipped when one
/// runs for the user already, one failed a moment ago, or too many wait.
fn spawn_resync(fed: &Arc<Federation>, user_id: OwnedUserId) {
    if !fed.device_lists.may_start(&user_id) {
        return;
    }
    let fed = Arc::clone(fed);
    tokio::spawn(async move {
        if let Err(err) = resync(&fed, &user_id).await {
            tracing::info!(%user_id, "federation: device-list resync failed: {err}");
        }
    });
}

/// Fetches the user's whole device list from their server and keeps it (a user whose
/// resync is already running is left to it). Our users are told of the change.
pub(crate) async fn resync(fed: &Federation, user_id: &UserId) -> Result<(), Error> {
    if fetch_list(fed, user_id, RESYNC_TIMEOUT).await? {
        device_lists::note_change(&fed.storage, &fed.rooms.stream, user_id, &[]).await?;
    }
    Ok(())
}

/// Fills the cache for remote users `/keys/query` asks about who share a room with ours
/// but whose lists are not cached (at most [`MAX_FILLS_PER_QUERY`], at once, within
/// `timeout`): from then on their updates keep the list current and queries stay local.
/// Nothing is announced (nothing changed that anyone was told of). Returns the users
/// whose server failed to answer.
pub(crate) async fn fill_cache(
    fed: &Federation,
    users: &[OwnedUserId],
    timeout: Duration,
) -> Vec<OwnedUserId> {
    let mut wanted = Vec::new();
    for user_id in users {
        if wanted.len() >= MAX_FILLS_PER_QUERY {
            break;
        }
        let cached = fed
            .storage
            .userid_remotedevices
            .contains_key(&user_id.as_str().to_owned());
        if matches!(cached, Ok(false))
            && shares_a_room_with_us(&fed.storage, user_id).unwrap_or(false)
        {
            wanted.push(user_id.clone());
        }
    }
    let fetches = wanted.iter().map(|user_id| async move {
        let fetched = fetch_list(fed, user_id, timeout.min(RESYNC_TIMEOUT)).await;
        (user_id, fetched)
    });
    let mut failed = Vec::new();
    for (user_id, fetched) in futures_util::future::join_all(fetches).await {
        if let Err(err) = fetched {
            tracing::info!(%user_id, "federation: fetching a device list failed: {err}");
            failed.push(user_id.clone());
        }
    }
    failed
}

/// Users whose lists one `/keys/query` fetches into the cache, at most.
const MAX_FILLS_PER_QUERY: usize = 16;

/// Fetches the user's whole list from their server into the cache; `false` when a fetch
/// of theirs was already running (it gets the newest list) or nothing was kept.
async fn fetch_list(fed: &Federation, user_id: &UserId, timeout: Duration) -> Result<bool, Error> {
    let Some(_running) = fed.device_lists.start(user_id) else {
        return Ok(false);
    };
    let fetched = fetch_and_keep(fed, user_id, timeout).await;
    fed.device_lists.finished(user_id, fetched.is_ok());
    fetched
}

/// The fetch itself: `/user/devices` within `timeout` (waiting for a permit included).
async fn fetch_and_keep(
    fed: &Federation,
    user_id: &UserId,
    timeout: Duration,
) -> Result<bool, Error> {
    let answer = tokio::time::timeout(timeout, async {
        let _permit = fed
            .device_lists
            .permits
            .acquire()
            .await
            .map_err(|_| Error::internal("the resync permits are closed"))?;
        let path = format!(
            "/_matrix/federation/v1/user/devices/{}",
            crate::federation::transport::encode(user_id.as_str())
        );
        fed.transport
            .request_raw(
                user_id.server_name().as_str(),
                "GET",
                &path,
                None,
                MAX_ANSWER_BYTES,
            )
            .await
    })
    .await
    .map_err(|_| {
        Error::new(
            ErrorKind::RemoteUnavailable,
            "the device-list resync timed out",
        )
    })??;
    let answer: Value = serde_json::from_slice(&answer)
        .map_err(|_| Error::new(ErrorKind::RemoteUnavailable, "the device list is not JSON"))?;
    let list = parse_devices_answer(user_id, &answer)?;
    let key = user_id.as_str().to_owned();
    let known = fed.storage.userid_remotedevices.contains_key(&key)?;
    if !known && cached_users(&fed.storage) >= MAX_CACHED_USERS {
        tracing::info!(%user_id, "federation: device-list cache full; not keeping this user's");
        return Ok(false);
    }
    fed.storage.userid_remotedevices.insert(&key, &list)?;
    Ok(true)
}

/// How many remote users' lists are kept (keys only are read; counted only when a new
/// user would be added).
fn cached_users(storage: &Storage) -> usize {
    storage
        .userid_remotedevices
        .scan_prefix_keys(&[])
        .take(MAX_CACHED_USERS)
        .count()
}

/// A `/user/devices` answer as a list to keep: for this user, bounded, each device's keys
/// for that device.
fn parse_devices_answer(user_id: &UserId, answer: &Value) -> Result<RemoteDeviceList, Error> {
    if answer["user_id"].as_str() != Some(user_id.as_str()) {
        return Err(bad("the answer is about another user"));
    }
    let stream_id = answer["stream_id"]
        .as_u64()
        .ok_or_else(|| bad("stream_id must be an integer"))?;
    let mut list = RemoteDeviceList {
        stream_id,
        fetched_ms: crate::matrix::time::now_ms(),
        ..RemoteDeviceList::default()
    };
    for device in answer["devices"]
        .as_array()
        .ok_or_else(|| bad("devices must be a list"))?
    {
        if list.devices.len() >= MAX_DEVICES_PER_USER {
            break;
        }
        let (Some(device_id), Some(keys)) = (device["device_id"].as_str(), device.get("keys"))
        else {
            continue;
        };
        if check_device_keys(user_id, device_id, keys).is_ok() {
            list.devices.insert(device_id.to_owned(), keys.clone());
        }
    }
    let of_user =
        |key: &Value| key.is_object() && key["user_id"].as_str() == Some(user_id.as_str());
    list.master_key = answer.get("master_key").filter(|key| of_user(key)).cloned();
    list.self_signing_key = answer
        .get("self_signing_key")
        .filter(|key| of_user(key))
        .cloned();
    Ok(list)
}

/// Device keys must be an object naming this user and device.
fn check_device_keys(user_id: &UserId, device_id: &str, keys: &Value) -> Result<(), Error> {
    if !keys.is_object()
        || keys["user_id"].as_str() != Some(user_id.as_str())
        || keys["device_id"].as_str() != Some(device_id)
    {
        return Err(bad("device keys for another user or device"));
    }
    Ok(())
}

// ---- the cache

/// `/keys/query` for other servers' users (user, device IDs asked: all when empty): from
/// the cache where a list is kept current, after fetching into it the lists not kept yet
/// of users sharing a room with ours; the rest (and the cross-signing keys the cache
/// lacks) asked of their servers at once ([`device_keys::query`]). A server that failed
/// is in `failures`.
pub(crate) async fn query_keys(
    fed: &Federation,
    wanted: Vec<(OwnedUserId, Vec<String>)>,
    timeout: Duration,
) -> Result<Fanout, StorageError> {
    let misses: Vec<OwnedUserId> = wanted
        .iter()
        .filter(|(user, _)| !matches!(cached_keys(fed, user, &[]), Ok(Some(_))))
        .map(|(user, _)| user.clone())
        .collect();
    let failed = fill_cache(fed, &misses, timeout).await;
    let mut answer = Fanout::default();
    let mut remote: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (user, devices) in wanted {
        if failed.contains(&user) {
            answer
                .failures
                .insert(user.server_name().to_string(), json!({}));
            continue;
        }
        let Some(cached) = cached_keys(fed, &user, &devices)? else {
            remote
                .entry(user.server_name().to_string())
                .or_default()
                .insert(user.to_string(), json!(devices));
            continue;
        };
        let mut add = |field: &str, value: Value| {
            answer
                .fields
                .entry(field.to_owned())
                .or_default()
                .insert(user.to_string(), value);
        };
        add("device_keys", Value::Object(cached.device_keys));
        if let Some(key) = cached.master_key {
            add("master_keys", key);
        }
        if let Some(key) = cached.self_signing_key {
            add("self_signing_keys", key);
        }
    }
    if !remote.is_empty() {
        let fanout = device_keys::query(fed, remote, timeout).await;
        for (field, by_user) in fanout.fields {
            answer.fields.entry(field).or_default().extend(by_user);
        }
        answer.failures.extend(fanout.failures);
    }
    Ok(answer)
}

/// What `/keys/query` answers for a remote user from the cache.
#[derive(Debug)]
pub(crate) struct CachedKeys {
    pub(crate) device_keys: Map<String, Value>,
    pub(crate) master_key: Option<Value>,
    pub(crate) self_signing_key: Option<Value>,
}

/// The user's device keys (those of `devices`, or all when empty) from the cache, when it
/// holds a list that is kept current (the user shares a room with one of ours).
pub(crate) fn cached_keys(
    fed: &Federation,
    user_id: &UserId,
    devices: &[String],
) -> Result<Option<CachedKeys>, StorageError> {
    let storage = &fed.storage;
    let Some(list) = storage
        .userid_remotedevices
        .get(&user_id.as_str().to_owned())?
    else {
        return Ok(None);
    };
    if !shares_a_room_with_us(storage, user_id)? {
        return Ok(None);
    }
    let device_keys = list
        .devices
        .into_iter()
        .filter(|(device_id, _)| devices.is_empty() || devices.contains(device_id))
        .collect();
    Ok(Some(CachedKeys {
        device_keys,
        master_key: list.master_key,
        self_signing_key: list.self_signing_key,
    }))
}

/// Drops the cached list of a remote user who no longer shares any room with ours (we
/// stop hearing their updates, so the list would go stale).
pub(crate) fn forget_if_unshared(storage: &Storage, user_id: &UserId) -> Result<(), StorageError> {
    let key = user_id.as_str().to_owned();
    if storage.userid_remotedevices.contains_key(&key)? && !shares_a_room_with_us(storage, user_id)?
    {
        storage.userid_remotedevices.remove(&key)?;
    }
    Ok(())
}

/// Whether a remote user is joined to any room we hold (our users are in it).
fn shares_a_room_with_us(storage: &Storage, user_id: &UserId) -> Result<bool, StorageError> {
    Ok(crate::rooms::memberships(storage, user_id)?
        .iter()
        .any(|(_, record)| record.membership == "join"))
}

fn remote_user(origin: &ServerName, value: &Value) -> Result<OwnedUserId, Error> {
    let user_id = value
        .as_str()
        .and_then(|id| OwnedUserId::try_from(id).ok())
        .ok_or_else(|| bad("invalid user_id"))?;
    if user_id.server_name() != origin {
        return Err(Error::new(ErrorKind::Forbidden, "not a user of the sender"));
    }
    Ok(user_id)
}

fn bad(message: &'static str) -> Error {
    Error::new(ErrorKind::BadJson, message)
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::*;

    #[test]
    fn one_fetch_per_user_at_a_time_and_none_soon_after_a_failure() {
        let resyncs = Resyncs::default();
        let bob = user_id!("@bob:there.test");
        let carol = user_id!("@carol:there.test");
        let running = resyncs.start(bob).expect("a first fetch");
        assert!(
            resyncs.start(bob).is_none(),
            "a second one waits for nothing"
        );
        assert!(resyncs.start(carol).is_some(), "others are not held up");
        resyncs.finished(bob, false);
        drop(running);
        assert!(
            resyncs.start(bob).is_none(),
            "not again right after a failure"
        );
        resyncs.finished(bob, true);
        assert!(resyncs.start(bob).is_some());
    }

    #[test]
    fn a_devices_answer_keeps_only_the_users_own_devices_and_keys() {
        let bob = user_id!("@bob:there.test");
        let answer = json!({
            "user_id": bob, "stream_id": 9,
            "devices": [
                { "device_id": "A", "keys": { "user_id": bob, "device_id": "A" } },
                { "device_id": "B", "keys": { "user_id": bob, "device_id": "X" } },
                { "device_id": "C", "keys": { "user_id": "@eve:there.test", "device_id": "C" } },
                { "device_id": "D" },
            ],
            "master_key": { "user_id": "@eve:there.test", "keys": {} },
            "self_signing_key": { "user_id": bob, "keys": {} },
        });
        let list = parse_devices_answer(bob, &answer).expect("parsed");
        assert_eq!(list.stream_id, 9);
        assert_eq!(list.devices.keys().collect::<Vec<_>>(), vec!["A"]);
        assert!(list.master_key.is_none());
        assert!(list.self_signing_key.is_some());
        let other = parse_devices_answer(user_id!("@carol:there.test"), &answer);
        assert!(other.is_err(), "an answer about someone else");
    }
}
