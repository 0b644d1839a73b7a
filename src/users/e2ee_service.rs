//! The [`Users`] methods for cross-signing and dehydrated devices: each flushes before the
//! handler answers (the rules are in [`super::cross_signing`] and [`super::dehydrated`]).

use ruma::UserId;
use serde_json::{Map, Value};

use super::Users;
use super::cross_signing::{self, KeySet, signatures};
use super::dehydrated::{self, NewDehydrated};
use crate::error::Error;
use crate::matrix::time::now_ms;
use crate::storage::records::DehydratedRecord;
use crate::storage::stream::Stream;

impl Users {
    /// Whether uploading these cross-signing keys needs user-interactive auth.
    pub(crate) fn cross_signing_needs_auth(
        &self,
        user_id: &UserId,
        keys: &KeySet,
    ) -> Result<bool, Error> {
        Ok(cross_signing::upload_needs_auth(
            self.storage(),
            user_id,
            keys,
        )?)
    }

    /// Stores the user's cross-signing keys (checked, all or none) at the next position
    /// of `stream`, flushed.
    pub(crate) async fn upload_cross_signing_keys(
        &self,
        stream: &Stream,
        user_id: &UserId,
        keys: &KeySet,
        authenticated: bool,
    ) -> Result<(), Error> {
        cross_signing::upload(self.storage(), stream, user_id, keys, authenticated).await?;
        Ok(())
    }

    /// Stores the user's signatures that verify; the others' failures.
    pub(crate) async fn upload_signatures(
        &self,
        stream: &Stream,
        signer: &UserId,
        body: &Map<String, Value>,
    ) -> Result<Map<String, Value>, Error> {
        let failures = signatures::upload(self.storage(), stream, signer, body).await?;
        // The user's own devices newly signed (by their self-signing key) are news to
        // other servers, whose users see them verified only through a device-list update.
        let failed = failures.get(signer.as_str()).and_then(Value::as_object);
        let own_devices = self.device_ids_but(signer, None)?;
        let signed: Vec<String> = body
            .get(signer.as_str())
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|signed| signed.keys())
            .filter(|key| own_devices.contains(key))
            .filter(|key| failed.is_none_or(|failed| !failed.contains_key(key.as_str())))
            .cloned()
            .collect();
        if !signed.is_empty() {
            self.announce_devices(stream, signer, &signed).await?;
        }
        Ok(failures)
    }

    /// A user's master, self-signing and user-signing keys as `viewer` sees them.
    pub(crate) fn cross_signing_keys(
        &self,
        user_id: &UserId,
        viewer: &UserId,
    ) -> Result<[Option<Value>; 3], Error> {
        Ok(cross_signing::keys_for_query(
            self.storage(),
            user_id,
            Some(viewer),
        )?)
    }

    /// Keeps another server's user's master and self-signing keys from its answer, when
    /// they check out (a bad answer is logged and not kept), and adds `viewer`'s own
    /// signature of the master key, if any, to the answer's.
    pub(crate) fn remember_remote_cross_signing(
        &self,
        user_id: &UserId,
        master: &mut Value,
        self_signing: Option<&Value>,
        viewer: &UserId,
    ) -> Result<(), Error> {
        let storage = self.storage();
        let master_object = master.as_object().cloned();
        if let Err(err) = cross_signing::store_remote(
            storage,
            user_id,
            master_object.as_ref(),
            self_signing.and_then(Value::as_object),
        ) {
            tracing::info!(%user_id, "remote cross-signing keys not kept: {}", err.message);
        }
        if let Value::Object(master) = master
            && let Some(public) = cross_signing::public_key_of(master).map(str::to_owned)
        {
            signatures::merge(storage, user_id.as_str(), &public, master, Some(viewer))?;
        }
        Ok(())
    }

    /// The user's dehydrated device, if any.
    pub(crate) fn dehydrated_device(
        &self,
        user_id: &UserId,
    ) -> Result<Option<DehydratedRecord>, Error> {
        dehydrated::get(self.storage(), user_id)
    }

    /// Replaces the user's dehydrated device; its ID. Flushed.
    pub(crate) async fn put_dehydrated_device(
        &self,
        user_id: &UserId,
        new: NewDehydrated,
    ) -> Result<String, Error> {
        let device_id = dehydrated::put(self.storage(), user_id, new, now_ms())?;
        self.flush().await?;
        Ok(device_id)
    }

    /// Deletes the user's dehydrated device; its ID. Flushed.
    pub(crate) async fn delete_dehydrated_device(&self, user_id: &UserId) -> Result<String, Error> {
        let device_id = dehydrated::delete(self.storage(), user_id)?;
        self.flush().await?;
        Ok(device_id)
    }

    /// The dehydrated device's to-device messages after `next_batch`, up to `upto`.
    pub(crate) fn dehydrated_events(
        &self,
        user_id: &UserId,
        device_id: &str,
        next_batch: Option<&str>,
        upto: u64,
    ) -> Result<(Vec<Value>, u64), Error> {
        dehydrated::events(self.storage(), user_id, device_id, next_batch, upto)
    }
}
