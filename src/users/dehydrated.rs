//! Dehydrated devices (MSC3814, `org.matrix.msc3814.v1`, as Element X uses it): a device a
//! client creates with keys and an encrypted blob (`device_data`) only a later client of
//! the same user can decrypt. It is a real device without an access token: other users'
//! clients see its keys, claim its one-time keys and send it to-device messages (room
//! keys) while the user has no device online; a new client fetches the blob, reads the
//! device's messages through `…/events`, and replaces it.
//!
//! This module alone writes `userid_dehydrated`; the device itself is a device record
//! (`accounts::sessions`) with keys (`keys`) and an inbox (`to_device`) like any other.

use ruma::UserId;
use serde_json::{Map, Value};

use super::accounts::sessions;
use super::{keys, to_device};
use crate::error::{Error, ErrorKind};
use crate::storage::records::DehydratedRecord;
use crate::storage::{Batch, Storage};

/// The largest `device_data` kept (serialized): the pickled account of a device with its
/// one-time keys, encrypted, is a few KiB.
const MAX_DEVICE_DATA_BYTES: usize = 64 * 1024;

/// The longest device ID accepted.
const MAX_DEVICE_ID_BYTES: usize = 255;

/// A dehydrated device to store: what `PUT …/dehydrated_device` carries.
#[derive(Debug)]
pub(crate) struct NewDehydrated {
    pub(crate) device_id: String,
    pub(crate) device_data: Map<String, Value>,
    pub(crate) display_name: Option<String>,
    pub(crate) keys: keys::Upload,
}

fn not_found() -> Error {
    Error::not_found("No dehydrated device")
}

/// The user's dehydrated device, if any: a record whose device was deleted meanwhile (by
/// `DELETE /devices/…`, or a password change logging out every device) counts as none.
pub(crate) fn get(storage: &Storage, user_id: &UserId) -> Result<Option<DehydratedRecord>, Error> {
    let Some(record) = storage.userid_dehydrated.get(&user_id.to_string())? else {
        return Ok(None);
    };
    let exists = sessions::get_device(storage, user_id, &record.device_id)?.is_some();
    Ok(exists.then_some(record))
}

/// # `PUT …/dehydrated_device`: replaces the user's dehydrated device (the old one is
/// deleted with its keys and messages) by a new one with its keys. The keys are checked
/// like any `/keys/upload` (signed by the device) first: if they fail, nothing changes.
pub(crate) fn put(
    storage: &Storage,
    user_id: &UserId,
    new: NewDehydrated,
    now_ms: u64,
) -> Result<String, Error> {
    let device_id = new.device_id;
    if device_id.is_empty() || device_id.len() > MAX_DEVICE_ID_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "device_id must be 1 to 255 bytes",
        ));
    }
    if serde_json::to_vec(&new.device_data).map_or(usize::MAX, |bytes| bytes.len())
        > MAX_DEVICE_DATA_BYTES
    {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("device_data is larger than {MAX_DEVICE_DATA_BYTES} bytes"),
        ));
    }
    let previous = get(storage, user_id)?;
    let replacing_itself = previous
        .as_ref()
        .is_some_and(|old| old.device_id == device_id);
    if !replacing_itself && sessions::get_device(storage, user_id, &device_id)?.is_some() {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "device_id names one of your devices that is not the dehydrated one",
        ));
    }
    // Everything is checked before the old device goes: a refused replacement keeps it.
    keys::check_new_device_upload(user_id, &device_id, &new.keys)?;
    if let Some(old) = &previous {
        sessions::remove_devices(storage, user_id, std::slice::from_ref(&old.device_id))?;
    }
    let mut batch = Batch::new();
    sessions::stage_tokenless_device(
        storage,
        &mut batch,
        user_id,
        &device_id,
        new.display_name,
        now_ms,
    )?;
    storage.apply(batch)?;
    if let Err(err) = keys::upload(storage, user_id, &device_id, &new.keys) {
        sessions::remove_devices(storage, user_id, &[device_id])?;
        forget(storage, user_id)?;
        return Err(err);
    }
    let record = DehydratedRecord {
        device_id: device_id.clone(),
        device_data: new.device_data,
    };
    storage
        .userid_dehydrated
        .insert(&user_id.to_string(), &record)?;
    Ok(device_id)
}

fn forget(storage: &Storage, user_id: &UserId) -> Result<(), Error> {
    storage.userid_dehydrated.remove(&user_id.to_string())?;
    Ok(())
}

/// # `DELETE …/dehydrated_device`: deletes the device, its keys and its messages; the
/// deleted device's ID, `404 M_NOT_FOUND` without one.
pub(crate) fn delete(storage: &Storage, user_id: &UserId) -> Result<String, Error> {
    let record = get(storage, user_id)?.ok_or_else(not_found)?;
    sessions::remove_devices(storage, user_id, std::slice::from_ref(&record.device_id))?;
    forget(storage, user_id)?;
    Ok(record.device_id)
}

/// # `POST …/dehydrated_device/{deviceId}/events`: the device's to-device messages after
/// `next_batch` (the position a previous call answered, whose messages are deleted now: a
/// client asking past them has them), and the position to ask from next. The device must
/// be the user's dehydrated device.
pub(crate) fn events(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
    next_batch: Option<&str>,
    upto: u64,
) -> Result<(Vec<Value>, u64), Error> {
    if get(storage, user_id)?.is_none_or(|record| record.device_id != device_id) {
        return Err(not_found());
    }
    let since = match next_batch {
        None => None,
        Some(token) => Some(token.parse::<u64>().map_err(|_| {
            Error::new(ErrorKind::InvalidParam, "next_batch is not a token we gave")
        })?),
    };
    if let Some(since) = since {
        to_device::acknowledge(storage, user_id, device_id, since)?;
    }
    Ok(to_device::pending(
        storage,
        user_id,
        device_id,
        since,
        upto.max(since.unwrap_or(0)),
    )?)
}
