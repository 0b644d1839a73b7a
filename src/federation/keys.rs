//! Other servers' signing keys (spec: "Retrieving server keys"). A key is looked up in
//! storage first; when missing or stale it is fetched from the server itself
//! (`/_matrix/key/v2/server`), then from the configured notaries (`/_matrix/key/v2/query`).
//! Every answer must be signed by each key it lists, for the server it names; a notary's
//! answer must also carry the notary's signature. Answers are kept until their
//! `valid_until_ts`, never trusted more than 7 days ahead, and what we keep is what we serve
//! as a notary ourselves.
//!
//! Strangers cannot make this cost disk or time: answers over 16 KiB are refused; only the
//! signed fields and the server's own signatures are kept; keys are stored only once a
//! request they signed verified ([`Transport::confirm_keys`]) and otherwise held in a
//! bounded memory cache ([`super::cache::KeyCache`]); and every fetch goes through
//! [`Transport::fetch_keys`]: one at a time per server, 10 s in all, failures remembered
//! for two minutes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::json_body;
use super::{FederationError, Transport};
use crate::matrix::crypto::{KeyId, decode_base64, verify_json};
use crate::storage::Storage;

/// The spec's cap on how far ahead a key answer is trusted.
const MAX_VALIDITY_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Keys remembered per server: a server that rotates keys wildly cannot grow our storage.
const MAX_KEYS_PER_SERVER: usize = 32;
/// A key answer is a few hundred bytes; anything over this is refused, so no server can
/// make us hold (or store) more than this for it.
pub(crate) const MAX_KEY_RESPONSE: usize = 16 * 1024;
/// A notary answer for one server may carry a few answers of it.
const MAX_NOTARY_RESPONSE: usize = 4 * MAX_KEY_RESPONSE;
/// How long fetching a server's keys may take in all, notaries included: a request waiting
/// for an origin's key holds its resources that long.
pub(crate) const FETCH_DEADLINE: Duration = Duration::from_secs(10);
/// How long the server itself is given, leaving the rest to the notaries.
const DIRECT_DEADLINE: Duration = Duration::from_secs(6);
/// The fields of a key answer we keep and serve again as a notary.
const SIGNED_FIELDS: [&str; 4] = [
    "server_name",
    "verify_keys",
    "old_verify_keys",
    "valid_until_ts",
];

pub(crate) use crate::storage::records::ServerKeys;

pub(crate) use crate::storage::records::KnownKey;

impl ServerKeys {
    /// The key `key_id` if it may sign a request at `now`.
    pub(crate) fn current_key(&self, key_id: &str, now: u64) -> Option<[u8; 32]> {
        let known = self.keys.get(key_id)?;
        if known.expired_ts.is_some() || self.valid_until_ts < now {
            return None;
        }
        decode_key(&known.key)
    }
}

/// Checks a key answer: it names `server`, lists at least one well-formed ed25519 key, is
/// signed by every key it lists, and says until when it is valid. Returns what to store,
/// with `valid_until_ts` capped at 7 days after `now`.
pub(crate) fn verify_response(
    response: &Value,
    server: &str,
    now: u64,
) -> Result<ServerKeys, String> {
    let object = response.as_object().ok_or("the answer is not an object")?;
    if object.get("server_name").and_then(Value::as_str) != Some(server) {
        return Err(format!("the answer is not for {server}"));
    }
    let valid_until_ts = object
        .get("valid_until_ts")
        .and_then(Value::as_u64)
        .ok_or("valid_until_ts is missing")?;
    let verify_keys = object
        .get("verify_keys")
        .and_then(Value::as_object)
        .filter(|keys| !keys.is_empty())
        .ok_or("verify_keys is missing or empty")?;
    let mut keys = BTreeMap::new();
    for (key_id, entry) in verify_keys {
        let key = entry.get("key").and_then(Value::as_str).unwrap_or_default();
        let public = decode_key(key).ok_or_else(|| format!("{key_id} is not a 32-byte key"))?;
        valid_key_id(key_id)?;
        verify_json(object, server, key_id, &public)
            .map_err(|err| format!("self-signature with {key_id}: {err}"))?;
        keys.insert(
            key_id.clone(),
            KnownKey {
                key: key.to_owned(),
                expired_ts: None,
            },
        );
    }
    let old = object.get("old_verify_keys").and_then(Value::as_object);
    for (key_id, entry) in old.into_iter().flatten() {
        let key = entry.get("key").and_then(Value::as_str).unwrap_or_default();
        let expired_ts = entry.get("expired_ts").and_then(Value::as_u64);
        if valid_key_id(key_id).is_ok() && decode_key(key).is_some() && !keys.contains_key(key_id) {
            keys.insert(
                key_id.clone(),
                KnownKey {
                    key: key.to_owned(),
                    expired_ts: Some(expired_ts.unwrap_or(0)),
                },
            );
        }
    }
    Ok(ServerKeys {
        response: servable(object, server, &keys),
        valid_until_ts: valid_until_ts.min(now.saturating_add(MAX_VALIDITY_MS)),
        keys,
    })
}

/// What we keep of a verified answer, to serve again as a notary: the signed fields and
/// the server's own signatures, nothing else (no padding, no other servers' signatures).
/// The server's signatures still cover it if it signed only those fields, as servers do;
/// if it signed more, the reduced answer would not verify and is not kept (`null`): the
/// keys are still used, we just do not vouch for them to others. At most the size of the
/// answer, which is at most [`MAX_KEY_RESPONSE`].
fn servable(
    object: &serde_json::Map<String, Value>,
    server: &str,
    keys: &BTreeMap<String, KnownKey>,
) -> Value {
    let mut reduced: serde_json::Map<String, Value> = SIGNED_FIELDS
        .iter()
        .filter_map(|field| Some(((*field).to_owned(), object.get(*field)?.clone())))
        .collect();
    let own_signatures = object
        .get("signatures")
        .and_then(|signatures| signatures.get(server))
        .cloned();
    let Some(own_signatures) = own_signatures else {
        return Value::Null;
    };
    reduced.insert("signatures".to_owned(), json!({ server: own_signatures }));
    let still_signed = keys
        .iter()
        .filter(|(_, known)| known.expired_ts.is_none())
        .all(|(key_id, known)| {
            decode_key(&known.key)
                .is_some_and(|public| verify_json(&reduced, server, key_id, &public).is_ok())
        });
    if still_signed {
        Value::Object(reduced)
    } else {
        Value::Null
    }
}

/// Checks that `notary` signed `response` with one of its current keys.
pub(crate) fn verify_notary_signature(
    response: &Value,
    notary: &str,
    notary_keys: &ServerKeys,
    now: u64,
) -> Result<(), String> {
    let object = response.as_object().ok_or("the answer is not an object")?;
    let signed_with: Vec<&String> = object
        .get("signatures")
        .and_then(|signatures| signatures.get(notary))
        .and_then(Value::as_object)
        .map(|by_key| by_key.keys().collect())
        .unwrap_or_default();
    for key_id in signed_with {
        if let Some(public) = notary_keys.current_key(key_id, now)
            && verify_json(object, notary, key_id, &public).is_ok()
        {
            return Ok(());
        }
    }
    Err(format!("no valid signature of the notary {notary}"))
}

/// Keeps keys seen before that the new answer no longer lists: they still verify old
/// events. They count as expired from now on, unless the answer said otherwise.
fn merge(previous: Option<ServerKeys>, mut fresh: ServerKeys, now: u64) -> ServerKeys {
    for (key_id, mut known) in previous.map(|p| p.keys).into_iter().flatten() {
        fresh.keys.entry(key_id).or_insert_with(|| {
            known.expired_ts.get_or_insert(now);
            known
        });
    }
    while fresh.keys.len() > MAX_KEYS_PER_SERVER {
        let oldest = fresh
            .keys
            .iter()
            .filter_map(|(id, known)| known.expired_ts.map(|ts| (ts, id.clone())))
            .min();
        match oldest {
            Some((_, id)) => fresh.keys.remove(&id),
            None => break,
        };
    }
    fresh
}

fn valid_key_id(key_id: &str) -> Result<(), String> {
    key_id
        .strip_prefix("ed25519:")
        .and_then(KeyId::ed25519)
        .map(|_| ())
        .ok_or_else(|| format!("`{key_id}` is not an ed25519 key id"))
}

fn decode_key(key: &str) -> Option<[u8; 32]> {
    decode_base64(key)?.try_into().ok()
}

/// Key look-ups as methods of the federation service, which holds the database the keys
/// are stored in: the HTTP layer calls these.
impl super::Federation {
    /// [`Transport::request_key`] with the service's storage.
    pub(crate) async fn request_key(
        &self,
        server: &str,
        key_id: &str,
        now: u64,
    ) -> Result<[u8; 32], FederationError> {
        self.transport
            .request_key(&self.storage, server, key_id, now)
            .await
    }

    /// [`Transport::confirm_keys`] with the service's storage.
    // Called by `api::federation::origin` once a request's signature verified: that file is
    // being rewritten on another branch, which adds the call.
    pub(crate) fn confirm_keys(&self, server: &str, now: u64) -> Result<(), FederationError> {
        self.transport.confirm_keys(&self.storage, server, now)
    }

    /// Cuts the key answers stored whole by earlier versions (up to 256 KiB each, padding
    /// and all) down to what is kept now ([`servable`]). Run at start-up; rows already cut
    /// are read and left alone. Returns how many were rewritten.
    pub(crate) fn reduce_stored_key_answers(&self) -> Result<usize, FederationError> {
        let mut rewritten = 0;
        for entry in self.storage.servername_keys.iter() {
            let (server, keys) = entry?;
            let Value::Object(object) = &keys.response else {
                continue;
            };
            let reduced = servable(object, &server, &keys.keys);
            if reduced == keys.response {
                continue;
            }
            self.storage.servername_keys.update(&server, |current| {
                current.map(|mut current| {
                    current.response = reduced.clone();
                    current
                })
            })?;
            rewritten += 1;
        }
        Ok(rewritten)
    }

    /// [`Transport::notary_answer`] with the service's storage.
    pub(crate) async fn notary_answer(
        &self,
        server: &str,
        minimum_valid_until_ts: u64,
        now: u64,
    ) -> Result<Option<Value>, FederationError> {
        self.transport
            .notary_answer(&self.storage, server, minimum_valid_until_ts, now)
            .await
    }
}

impl Transport {
    /// The public key `key_id` of `server`, valid for signing requests now: from storage,
    /// from keys fetched recently, or fetched from the server or a notary. Our own key needs
    /// no fetching.
    ///
    /// Keys fetched here are held in memory only: call [`Transport::confirm_keys`] once a
    /// request's signature verified with the key, and they are stored. A stranger naming
    /// made-up origins thus costs a bounded cache, never disk.
    pub(crate) async fn request_key(
        &self,
        storage: &Storage,
        server: &str,
        key_id: &str,
        now: u64,
    ) -> Result<[u8; 32], FederationError> {
        if server == self.origin.as_str() {
            return (self.signing_key.key_id().as_str() == key_id)
                .then(|| self.signing_key.public_key())
                .ok_or_else(|| FederationError::keys(server, format!("{key_id} is not our key")));
        }
        let stored = storage.servername_keys.get(&server.to_owned())?;
        if let Some(key) = stored
            .as_ref()
            .and_then(|keys| keys.current_key(key_id, now))
        {
            return Ok(key);
        }
        let fetched = self.fetch_keys(storage, server, Some(key_id), now).await?;
        fetched
            .current_key(key_id, now)
            .ok_or_else(|| FederationError::keys(server, format!("no valid key {key_id}")))
    }

    /// Stores the keys of `server` fetched into memory by [`Transport::request_key`]: a
    /// request signed by `server` verified with them. Nothing to do when they are stored
    /// already (or were never fetched).
    pub(crate) fn confirm_keys(
        &self,
        storage: &Storage,
        server: &str,
        now: u64,
    ) -> Result<(), FederationError> {
        if let Some(keys) = self.keys.take(server) {
            self.store_keys(storage, server, &keys, now)?;
        }
        Ok(())
    }

    /// `server`'s keys, for checking event signatures: the stored ones if any, otherwise
    /// fetched (at most once a minute per server; in memory unless the server's keys are
    /// stored already).
    pub(crate) async fn refresh_keys(
        &self,
        storage: &Storage,
        server: &str,
        now: u64,
    ) -> Result<ServerKeys, FederationError> {
        self.fetch_keys(storage, server, None, now).await
    }

    /// The one way keys are fetched. One fetch per server at a time (others asking wait for
    /// it and take its result); a server that answered less than a minute ago is not asked
    /// again, nor one that failed in the last two minutes; a fetch has [`FETCH_DEADLINE`] in
    /// all. The result goes to memory, and to storage only if the server's keys are stored
    /// already (it was confirmed before). `wanted`: the key the caller needs; keys fetched
    /// in the last minute that lack it are not fetched again either.
    async fn fetch_keys(
        &self,
        storage: &Storage,
        server: &str,
        wanted: Option<&str>,
        now: u64,
    ) -> Result<ServerKeys, FederationError> {
        let held = |fetched: &super::cache::Fetched| {
            wanted.is_none_or(|key_id| fetched.keys.current_key(key_id, now).is_some())
                || fetched.is_recent(Instant::now())
        };
        if let Some(fetched) = self.keys.fetched(server).filter(held) {
            return Ok(fetched.keys);
        }
        if self.keys.failed_recently(server) {
            return Err(FederationError::keys(server, "fetching failed recently"));
        }
        let _turn = self
            .keys
            .turn(server)
            .await
            .ok_or_else(|| FederationError::keys(server, "too many key fetches under way"))?;
        // A fetch we waited for may have answered already.
        if let Some(fetched) = self.keys.fetched(server).filter(held) {
            return Ok(fetched.keys);
        }
        if self.keys.failed_recently(server) {
            return Err(FederationError::keys(server, "fetching failed recently"));
        }
        let fetched =
            tokio::time::timeout(FETCH_DEADLINE, self.fetch_anywhere(storage, server, now))
                .await
                .unwrap_or_else(|_| Err(FederationError::Timeout(format!("{server} (keys)"))));
        let fresh = match fetched {
            Ok(fresh) => fresh,
            Err(err) => {
                tracing::info!(server, "cannot fetch the server's keys: {err}");
                self.keys.fail(server);
                return Err(err);
            }
        };
        // Remembered in memory either way: that is what spaces fetches a minute apart.
        let fresh = if storage.servername_keys.get(&server.to_owned())?.is_some() {
            self.store_keys(storage, server, &fresh, now)?
        } else {
            fresh
        };
        self.keys.remember(server, fresh.clone());
        Ok(fresh)
    }

    /// Directly (within [`DIRECT_DEADLINE`], so a hanging server leaves time for the
    /// notaries), then through the notaries.
    async fn fetch_anywhere(
        &self,
        storage: &Storage,
        server: &str,
        now: u64,
    ) -> Result<ServerKeys, FederationError> {
        let direct = tokio::time::timeout(DIRECT_DEADLINE, self.fetch_direct(server, now))
            .await
            .unwrap_or_else(|_| Err(FederationError::Timeout(server.to_owned())));
        match direct {
            Ok(fresh) => Ok(fresh),
            Err(err) => {
                tracing::debug!(server, "direct key fetch failed: {err}; asking notaries");
                self.fetch_from_notaries(storage, server, now)
                    .await
                    .ok_or(err)
            }
        }
    }

    /// Stores a verified answer unless we already hold a newer one.
    fn store_keys(
        &self,
        storage: &Storage,
        server: &str,
        fresh: &ServerKeys,
        now: u64,
    ) -> Result<ServerKeys, FederationError> {
        let key = server.to_owned();
        let stored = storage.servername_keys.update(&key, |previous| {
            let newer_held = previous
                .as_ref()
                .is_some_and(|p| p.valid_until_ts > fresh.valid_until_ts);
            if newer_held {
                previous.map(|p| merge(Some(fresh.clone()), p, now))
            } else {
                Some(merge(previous, fresh.clone(), now))
            }
        })?;
        stored.ok_or_else(|| FederationError::keys(server, "not stored"))
    }

    /// `GET /_matrix/key/v2/server` on the server itself.
    async fn fetch_direct(&self, server: &str, now: u64) -> Result<ServerKeys, FederationError> {
        let response = self
            .unsigned_request(server, "GET", "/_matrix/key/v2/server", MAX_KEY_RESPONSE)
            .await?;
        let answer: Value = json_body(server, &response)?;
        verify_response(&answer, server, now)
            .map_err(|reason| FederationError::keys(server, reason))
    }

    /// Asks each notary in turn; the first that vouches for a valid answer wins.
    async fn fetch_from_notaries(
        &self,
        storage: &Storage,
        server: &str,
        now: u64,
    ) -> Option<ServerKeys> {
        for notary in &self.notaries {
            if notary == server {
                continue;
            }
            match self.fetch_from_notary(storage, notary, server, now).await {
                Ok(keys) => return Some(keys),
                Err(err) => tracing::debug!(server, notary, "notary key query failed: {err}"),
            }
        }
        None
    }

    async fn fetch_from_notary(
        &self,
        storage: &Storage,
        notary: &str,
        server: &str,
        now: u64,
    ) -> Result<ServerKeys, FederationError> {
        let notary_keys = self.notary_keys(storage, notary, now).await?;
        let query = json!({ "server_keys": { server: {} } });
        let response = self
            .signed_request(
                notary,
                "POST",
                "/_matrix/key/v2/query",
                Some(&query),
                MAX_NOTARY_RESPONSE,
            )
            .await?;
        let answer: Value = json_body(notary, &response)?;
        let candidates = answer["server_keys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut best: Option<ServerKeys> = None;
        for candidate in candidates.iter().filter(|c| c["server_name"] == server) {
            if serde_json::to_vec(candidate).map_or(usize::MAX, |bytes| bytes.len())
                > MAX_KEY_RESPONSE
            {
                return Err(FederationError::keys(server, "a key answer over 16 KiB"));
            }
            verify_notary_signature(candidate, notary, &notary_keys, now)
                .map_err(|reason| FederationError::keys(server, reason))?;
            let keys = verify_response(candidate, server, now)
                .map_err(|reason| FederationError::keys(server, reason))?;
            if best
                .as_ref()
                .is_none_or(|b| b.valid_until_ts < keys.valid_until_ts)
            {
                best = Some(keys);
            }
        }
        best.ok_or_else(|| FederationError::keys(server, format!("{notary} has no keys for it")))
    }

    /// A notary's own keys: stored, or fetched from the notary directly (never through
    /// another notary, so trust does not go round in circles). Stored: notaries are the
    /// configured few.
    async fn notary_keys(
        &self,
        storage: &Storage,
        notary: &str,
        now: u64,
    ) -> Result<ServerKeys, FederationError> {
        if let Some(keys) = storage.servername_keys.get(&notary.to_owned())?
            && keys.valid_until_ts >= now
        {
            return Ok(keys);
        }
        let fresh = self.fetch_direct(notary, now).await?;
        self.store_keys(storage, notary, &fresh, now)
    }

    /// What we answer as a notary for `server`: its latest answer we hold, stored or in
    /// memory (fetched again if it expires before `minimum_valid_until_ts`, within the
    /// limits of [`Transport::fetch_keys`]), with our signature added. `None` when we have
    /// nothing and cannot reach it. What is fetched for a stranger's query stays in memory.
    pub(crate) async fn notary_answer(
        &self,
        storage: &Storage,
        server: &str,
        minimum_valid_until_ts: u64,
        now: u64,
    ) -> Result<Option<Value>, FederationError> {
        let fresh_enough = |keys: &ServerKeys| keys.valid_until_ts >= minimum_valid_until_ts;
        let mut held = storage.servername_keys.get(&server.to_owned())?;
        if held.as_ref().is_none_or(|keys| !fresh_enough(keys)) {
            match self.keys.fetched(server) {
                Some(fetched) if fresh_enough(&fetched.keys) => held = Some(fetched.keys),
                _ => match self.fetch_keys(storage, server, None, now).await {
                    Ok(fresh) => held = Some(fresh),
                    Err(err) => tracing::debug!(server, "notary: cannot refresh keys: {err}"),
                },
            }
        }
        let Some(keys) = held else { return Ok(None) };
        let Value::Object(mut object) = keys.response else {
            return Ok(None);
        };
        crate::matrix::crypto::sign_json(&mut object, self.origin.as_str(), &self.signing_key)
            .map_err(|err| FederationError::Signing(err.to_string()))?;
        Ok(Some(Value::Object(object)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::crypto::{SigningKey, sign_json};

    const NOW: u64 = 1_700_000_000_000;

    fn key(version: &str, seed: u8) -> SigningKey {
        SigningKey::from_seed(KeyId::ed25519(version).expect("id"), [seed; 32])
    }

    fn answer(server: &str, signing: &[&SigningKey], valid_until_ts: u64) -> Value {
        let mut verify_keys = serde_json::Map::new();
        for key in signing {
            verify_keys.insert(
                key.key_id().to_string(),
                json!({ "key": key.public_key_base64() }),
            );
        }
        let mut object = json!({
            "server_name": server,
            "verify_keys": verify_keys,
            "old_verify_keys": { "ed25519:old": { "key": key("old", 9).public_key_base64(), "expired_ts": 5 } },
            "valid_until_ts": valid_until_ts,
        });
        for key in signing {
            sign_json(object.as_object_mut().expect("object"), server, key).expect("sign");
        }
        object
    }

    #[test]
    fn a_self_signed_answer_verifies() {
        let k = key("a", 1);
        let keys =
            verify_response(&answer("b.org", &[&k], NOW + 1000), "b.org", NOW).expect("valid");
        assert_eq!(keys.valid_until_ts, NOW + 1000);
        assert_eq!(keys.current_key("ed25519:a", NOW), Some(k.public_key()));
        assert_eq!(keys.current_key("ed25519:a", NOW + 1001), None, "expired");
        assert_eq!(
            keys.current_key("ed25519:old", NOW),
            None,
            "old keys sign no requests"
        );
        assert_eq!(keys.keys["ed25519:old"].expired_ts, Some(5));
    }

    #[test]
    fn validity_is_capped_at_seven_days() {
        let k = key("a", 1);
        let keys = verify_response(
            &answer("b.org", &[&k], NOW + 100 * MAX_VALIDITY_MS),
            "b.org",
            NOW,
        )
        .expect("valid");
        assert_eq!(keys.valid_until_ts, NOW + MAX_VALIDITY_MS);
    }

    #[test]
    fn forged_or_misnamed_answers_are_refused() {
        let k = key("a", 1);
        let good = answer("b.org", &[&k], NOW + 1000);
        assert!(
            verify_response(&good, "c.org", NOW).is_err(),
            "names another server"
        );
        let mut tampered = good.clone();
        tampered["valid_until_ts"] = json!(NOW + 999_999);
        assert!(verify_response(&tampered, "b.org", NOW).is_err());
        // A key listed but not signing the answer.
        let mut extra = good.clone();
        extra["verify_keys"]["ed25519:z"] = json!({ "key": key("z", 3).public_key_base64() });
        assert!(verify_response(&extra, "b.org", NOW).is_err());
        let mut empty = good;
        empty["verify_keys"] = json!({});
        assert!(verify_response(&empty, "b.org", NOW).is_err());
        assert!(verify_response(&json!([]), "b.org", NOW).is_err());
    }

    #[test]
    fn notary_signatures_are_checked() {
        let server_key = key("a", 1);
        let notary_key = key("n", 2);
        let notary = verify_response(
            &answer("notary.org", &[&notary_key], NOW + 1000),
            "notary.org",
            NOW,
        )
        .expect("notary");
        let mut vouched = answer("b.org", &[&server_key], NOW + 1000);
        assert!(
            verify_notary_signature(&vouched, "notary.org", &notary, NOW).is_err(),
            "unsigned"
        );
        sign_json(
            vouched.as_object_mut().expect("object"),
            "notary.org",
            &notary_key,
        )
        .expect("sign");
        verify_notary_signature(&vouched, "notary.org", &notary, NOW).expect("signed");
        // Still a valid self-signed answer with the notary's signature added.
        verify_response(&vouched, "b.org", NOW).expect("valid");
        let impostor = key("n", 3);
        let mut forged = answer("b.org", &[&server_key], NOW + 1000);
        sign_json(
            forged.as_object_mut().expect("object"),
            "notary.org",
            &impostor,
        )
        .expect("sign");
        assert!(verify_notary_signature(&forged, "notary.org", &notary, NOW).is_err());
    }

    #[test]
    fn rotated_keys_are_kept_as_expired() {
        let first = verify_response(&answer("b.org", &[&key("a", 1)], NOW + 10), "b.org", NOW)
            .expect("first");
        let second = verify_response(&answer("b.org", &[&key("b", 2)], NOW + 20), "b.org", NOW)
            .expect("second");
        let merged = merge(Some(first), second, NOW + 5);
        assert_eq!(merged.keys["ed25519:a"].expired_ts, Some(NOW + 5));
        assert!(merged.current_key("ed25519:b", NOW).is_some());
        assert!(merged.current_key("ed25519:a", NOW).is_none());
    }

    #[test]
    fn answers_stored_whole_are_cut_at_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fed = crate::federation::test_state::test_state(dir.path(), "");
        let k = key("a", 1);
        let mut full = answer("b.org", &[&k], NOW + 1000);
        sign_json(full.as_object_mut().expect("object"), "n.org", &key("n", 2)).expect("sign");
        let mut stored = verify_response(&full, "b.org", NOW).expect("valid");
        let cut = stored.response.clone();
        stored.response = full;
        fed.storage
            .servername_keys
            .insert(&"b.org".to_owned(), &stored)
            .expect("store");
        assert_eq!(fed.reduce_stored_key_answers().expect("reduced"), 1);
        let now_stored = fed
            .storage
            .servername_keys
            .get(&"b.org".to_owned())
            .expect("read")
            .expect("kept");
        assert_eq!(now_stored.response, cut);
        assert!(now_stored.response["signatures"].get("n.org").is_none());
        verify_response(&now_stored.response, "b.org", NOW).expect("still self-signed");
        assert_eq!(
            fed.reduce_stored_key_answers().expect("again"),
            0,
            "left alone"
        );
    }

    fn federation() -> Transport {
        let config = crate::config::FederationConfig {
            enabled: true,
            trusted_key_servers: Vec::new(),
            ..Default::default()
        };
        let name = ruma::OwnedServerName::try_from("us.example").expect("name");
        Transport::new(name, key("us", 5), &config).expect("federation")
    }

    #[actix_web::test]
    async fn stored_keys_serve_until_they_expire() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let federation = federation();
        // A server nothing answers for: fetching again can only fail.
        let server = "127.0.0.1:1";
        let k = key("a", 1);
        let now = crate::matrix::time::now_ms();
        let stored =
            verify_response(&answer(server, &[&k], now + 60_000), server, now).expect("valid");
        storage
            .servername_keys
            .insert(&server.to_owned(), &stored)
            .expect("store");
        let found = federation
            .request_key(&storage, server, "ed25519:a", now)
            .await;
        assert_eq!(found.expect("stored key"), k.public_key());
        let later = now + 120_000;
        let expired = federation
            .request_key(&storage, server, "ed25519:a", later)
            .await;
        assert!(
            expired.is_err(),
            "an expired key is not used, and cannot be refreshed"
        );
        let unknown = federation
            .request_key(&storage, server, "ed25519:zz", now)
            .await;
        assert!(unknown.is_err(), "asked too recently: no second fetch");
        // Our own key needs no storage.
        let ours = federation
            .request_key(&storage, "us.example", "ed25519:us", now)
            .await;
        assert_eq!(ours.expect("ours"), key("us", 5).public_key());
    }
}
