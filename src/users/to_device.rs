//! Send-to-device messaging (spec: client-server API, "Send-to-Device messaging";
//! server-server API, "Send-to-device messaging"): messages from one device to others,
//! outside any room, mostly encrypted room keys.
//!
//! Each device has an inbox (`userdevice_todevice`), keyed by the stream position the
//! message was stored at. `/sync` hands a device the messages after its `since` token and
//! up to the position it answers with; it deletes them only when the device syncs again
//! with a token at or past them, which is how the spec has a client acknowledge them. When
//! more than [`MAX_PER_SYNC`] wait, the sync answers with an earlier position (the last
//! message it holds), so nothing is deleted unsent and the client comes straight back.
//!
//! An inbox holds at most [`MAX_INBOX`] messages: a device that never syncs must not fill
//! the disk. At the bound, a local sender gets `429 M_LIMIT_EXCEEDED` and nothing of its
//! request is stored; a message from another server (which cannot be told) is dropped with
//! a warning in the log.
//!
//! Messages for other servers' users are written, in the same batch, to
//! `stream_todeviceout` as one `m.direct_to_device` EDU per server; the outbound follower
//! queues them for sending like the events at that position.

use std::collections::BTreeMap;

use ruma::{OwnedUserId, ServerName, UserId};
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::storage::stream::Stream;
use crate::storage::{Batch, Storage, StorageError, pair_prefix};

/// Messages one device's inbox holds, at most.
pub(crate) const MAX_INBOX: usize = 1000;

/// Messages one `/sync` hands a device, at most (Synapse's figure too).
pub(crate) const MAX_PER_SYNC: usize = 100;

/// Devices one request may address (after `*` is expanded), at most.
pub(crate) const MAX_TARGETS: usize = 10_000;

/// The longest event type accepted.
const MAX_TYPE_BYTES: usize = 255;

/// The longest transaction or message ID kept for de-duplication.
const MAX_TXN_BYTES: usize = 255;

/// Transaction IDs remembered per device (and message IDs per other server), at most: the
/// newest, which is what a retry repeats. Bounds what a busy device or a hostile server
/// can make the server keep.
pub(crate) const MAX_TXNS_KEPT: usize = 1000;

/// Who sends: one of our devices, or another server.
pub(crate) enum Sender<'a> {
    /// Our user's device, with the request's transaction ID.
    Local { device_id: &'a str, txn_id: &'a str },
    /// Another server's user, with the EDU's `message_id`.
    Remote { message_id: &'a str },
}

/// One message to store: its recipient's inbox and its content.
struct Delivery {
    user: String,
    device: String,
    content: Value,
}

/// Sends `kind` messages from `sender`: `messages` maps user ID → device ID (or `*`) →
/// content. Local recipients get them in their inboxes; other servers' users through an
/// `m.direct_to_device` EDU to their server (only when the sender is ours). A repeated
/// transaction (or message) ID does nothing. Unknown users and devices are skipped, as the
/// spec has it.
pub(crate) async fn send(
    storage: &Storage,
    stream: &Stream,
    our_server: &ServerName,
    sender_user: &UserId,
    sender: Sender<'_>,
    kind: &str,
    messages: &Map<String, Value>,
) -> Result<(), Error> {
    if kind.is_empty() || kind.len() > MAX_TYPE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "The event type must be 1 to 255 bytes",
        ));
    }
    let (txn_id, txn_key) = match sender {
        Sender::Local { device_id, txn_id } => (
            txn_id,
            (
                sender_user.to_string(),
                device_id.to_owned(),
                txn_id.to_owned(),
            ),
        ),
        // Kept per server (the sender is `origin`'s), so [`MAX_TXNS_KEPT`] bounds what a
        // server that makes up users can store.
        Sender::Remote { message_id } => (
            message_id,
            (
                sender_user.server_name().to_string(),
                String::new(),
                format!("{sender_user}\u{0}{message_id}"),
            ),
        ),
    };
    if txn_id.len() > MAX_TXN_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "The transaction ID is longer than 255 bytes",
        ));
    }
    if storage.todevice_txn.contains_key(&txn_key)? {
        return Ok(());
    }
    let forgotten = oldest_txns(storage, &txn_key.0, &txn_key.1)?;
    let local_sender = matches!(sender, Sender::Local { .. });
    let (deliveries, remote) = split(storage, our_server, messages, local_sender)?;
    let deliveries = check_inboxes(storage, deliveries, local_sender)?;
    let sender_device = match sender {
        Sender::Local { device_id, .. } => Some(device_id),
        Sender::Remote { .. } => None,
    };
    stream
        .commit_at_next_position::<Error>(storage, |batch, position| {
            // Checked again under the stream's lock: two copies of one request at once
            // store one message.
            if storage.todevice_txn.contains_key(&txn_key)? {
                return Ok(());
            }
            storage
                .todevice_txn
                .batch_insert(batch, &txn_key, &position)?;
            for key in &forgotten {
                storage.todevice_txn.batch_remove(batch, key);
            }
            for delivery in &deliveries {
                let event = json!({
                    "sender": sender_user,
                    "type": kind,
                    "content": delivery.content,
                });
                storage.userdevice_todevice.batch_insert(
                    batch,
                    &(delivery.user.clone(), delivery.device.clone(), position),
                    &event,
                )?;
            }
            stage_remote(
                storage,
                batch,
                position,
                sender_user,
                sender_device,
                kind,
                remote,
            )
        })
        .await?;
    Ok(())
}

/// The transaction IDs of `first` 0xFF `second` to forget so that, with one more, at most
/// [`MAX_TXNS_KEPT`] remain: the oldest (lowest stream positions).
fn oldest_txns(
    storage: &Storage,
    first: &str,
    second: &str,
) -> Result<Vec<(String, String, String)>, StorageError> {
    let mut kept = Vec::new();
    for entry in storage.todevice_txn.scan_prefix(&txn_prefix(first, second)) {
        let (key, position) = entry?;
        kept.push((position, key));
    }
    let excess = (kept.len() + 1).saturating_sub(MAX_TXNS_KEPT);
    if excess == 0 {
        return Ok(Vec::new());
    }
    kept.sort_unstable_by_key(|(position, _)| *position);
    Ok(kept.into_iter().take(excess).map(|(_, key)| key).collect())
}

/// Messages for other servers, by server, then user.
type RemoteMessages = BTreeMap<String, Map<String, Value>>;

/// Checks the shape of `messages` and splits them into local deliveries (`*` expanded to
/// the user's devices, unknown users and devices left out) and messages for other servers.
fn split(
    storage: &Storage,
    our_server: &ServerName,
    messages: &Map<String, Value>,
    local_sender: bool,
) -> Result<(Vec<Delivery>, RemoteMessages), Error> {
    let mut deliveries = Vec::new();
    let mut remote = RemoteMessages::new();
    let mut targets = 0_usize;
    for (user, devices) in messages {
        let user_id = OwnedUserId::try_from(user.as_str())
            .map_err(|_| Error::new(ErrorKind::InvalidParam, format!("{user} is not a user ID")))?;
        let devices = devices.as_object().ok_or_else(|| {
            Error::new(ErrorKind::BadJson, "Each user's messages must be an object")
        })?;
        for content in devices.values() {
            if !content.is_object() {
                return Err(Error::new(
                    ErrorKind::BadJson,
                    "Each message's content must be an object",
                ));
            }
        }
        if user_id.server_name() != our_server {
            // Only our own users' messages go on to other servers.
            if local_sender {
                targets = targets.saturating_add(devices.len());
                remote
                    .entry(user_id.server_name().to_string())
                    .or_default()
                    .insert(user.clone(), Value::Object(devices.clone()));
            }
            continue;
        }
        // One message per device: a device named and reached by `*` gets the named one.
        let mut chosen: BTreeMap<String, &Value> = BTreeMap::new();
        if let Some(content) = devices.get("*") {
            for known in super::accounts::sessions::list_devices(storage, &user_id)? {
                chosen.insert(known.device_id, content);
            }
        }
        for (device, content) in devices {
            if device != "*"
                && storage
                    .userdevice_device
                    .contains_key(&(user.clone(), device.clone()))?
            {
                chosen.insert(device.clone(), content);
            }
        }
        targets = targets.saturating_add(chosen.len());
        deliveries.extend(chosen.into_iter().map(|(device, content)| Delivery {
            user: user.clone(),
            device,
            content: content.clone(),
        }));
    }
    if targets > MAX_TARGETS {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("At most {MAX_TARGETS} devices per request"),
        ));
    }
    Ok((deliveries, remote))
}

/// Leaves out deliveries to full inboxes: for a local sender that fails the whole request
/// (nothing is stored); another server's message is dropped and logged.
fn check_inboxes(
    storage: &Storage,
    deliveries: Vec<Delivery>,
    local_sender: bool,
) -> Result<Vec<Delivery>, Error> {
    let mut kept = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        if inbox_size(storage, &delivery.user, &delivery.device)? < MAX_INBOX {
            kept.push(delivery);
            continue;
        }
        if local_sender {
            return Err(Error::new(
                ErrorKind::LimitExceeded {
                    retry_after_ms: 60_000,
                },
                format!(
                    "The to-device inbox of {}'s device {} is full ({MAX_INBOX} messages): it must sync first",
                    delivery.user, delivery.device
                ),
            ));
        }
        tracing::warn!(
            user = %delivery.user,
            device = %delivery.device,
            "to-device: inbox full ({MAX_INBOX} messages), a message from another server is dropped"
        );
    }
    Ok(kept)
}

/// Messages waiting in a device's inbox, counted up to [`MAX_INBOX`].
fn inbox_size(storage: &Storage, user: &str, device: &str) -> Result<usize, StorageError> {
    let mut count = 0;
    for entry in storage.userdevice_todevice.range(
        &(user.to_owned(), device.to_owned(), 0),
        &(user.to_owned(), device.to_owned(), u64::MAX),
    ) {
        entry?;
        count += 1;
        if count >= MAX_INBOX {
            break;
        }
    }
    Ok(count)
}

/// Stages one `m.direct_to_device` EDU per server, for the outbound follower.
fn stage_remote(
    storage: &Storage,
    batch: &mut Batch,
    position: u64,
    sender_user: &UserId,
    sender_device: Option<&str>,
    kind: &str,
    remote: RemoteMessages,
) -> Result<(), Error> {
    if remote.is_empty() {
        return Ok(());
    }
    // Unique among everything this server sends: one request is one stream position.
    let message_id = format!("{}{position}", sender_device.unwrap_or_default());
    let edus: Vec<(String, Value)> = remote
        .into_iter()
        .map(|(server, messages)| {
            let edu = json!({
                "edu_type": "m.direct_to_device",
                "content": {
                    "sender": sender_user,
                    "type": kind,
                    "message_id": message_id,
                    "messages": messages,
                },
            });
            (server, edu)
        })
        .collect();
    storage
        .stream_todeviceout
        .batch_insert(batch, &position, &edus)?;
    Ok(())
}

/// The messages waiting for a device after `since`, up to `upto`: at most
/// [`MAX_PER_SYNC`], with the position to answer with (`upto`, or earlier when more wait).
pub(crate) fn pending(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
    since: Option<u64>,
    upto: u64,
) -> Result<(Vec<Value>, u64), StorageError> {
    let user = user_id.to_string();
    let from = since.map_or(0, |since| since.saturating_add(1));
    let mut events = Vec::new();
    for entry in storage.userdevice_todevice.range(
        &(user.clone(), device_id.to_owned(), from),
        &(user, device_id.to_owned(), upto),
    ) {
        let ((_, _, position), event) = entry?;
        events.push(event);
        if events.len() == MAX_PER_SYNC {
            return Ok((events, position));
        }
    }
    Ok((events, upto))
}

/// Deletes the messages a device acknowledged by syncing with `since`: every one stored at
/// or before it was handed out by the sync that gave that token.
pub(crate) fn acknowledge(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
    since: u64,
) -> Result<(), StorageError> {
    let user = user_id.to_string();
    let mut batch = Batch::new();
    let mut any = false;
    for entry in storage.userdevice_todevice.range(
        &(user.clone(), device_id.to_owned(), 0),
        &(user, device_id.to_owned(), since),
    ) {
        let (key, _) = entry?;
        storage.userdevice_todevice.batch_remove(&mut batch, &key);
        any = true;
    }
    if any {
        // Not flushed: a crash before the disk has it hands the messages out again, which
        // clients tolerate (they drop what they cannot decrypt twice).
        storage.apply(batch)?;
    }
    Ok(())
}

/// Stages, in `batch`, the removal of everything kept for a device that is going: its
/// inbox and the transaction IDs it sent (a new device never reuses its ID's history).
pub(crate) fn stage_forget_device(
    storage: &Storage,
    batch: &mut Batch,
    user: &str,
    device: &str,
) -> Result<(), StorageError> {
    for entry in storage.userdevice_todevice.range(
        &(user.to_owned(), device.to_owned(), 0),
        &(user.to_owned(), device.to_owned(), u64::MAX),
    ) {
        let (key, _) = entry?;
        storage.userdevice_todevice.batch_remove(batch, &key);
    }
    for entry in storage.todevice_txn.scan_prefix(&txn_prefix(user, device)) {
        let (key, _) = entry?;
        storage.todevice_txn.batch_remove(batch, &key);
    }
    Ok(())
}

/// The encoded prefix of the `todevice_txn` keys of one device (or one other server).
fn txn_prefix(first: &str, second: &str) -> Vec<u8> {
    let mut prefix = pair_prefix(first);
    prefix.extend_from_slice(second.as_bytes());
    prefix.push(0xFF);
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::records::DeviceRecord;

    const BOB: &str = "@bob:here.test";

    fn with_device(storage: &Storage, user: &str, device: &str) {
        let record = DeviceRecord {
            display_name: None,
            token_hash: String::new(),
            created_at_ms: 0,
            last_seen_ts: None,
            last_seen_ip: None,
        };
        storage
            .userdevice_device
            .insert(&(user.to_owned(), device.to_owned()), &record)
            .expect("device");
    }

    fn messages() -> Map<String, Value> {
        json!({ BOB: { "PHONE": { "k": 1 } } })
            .as_object()
            .cloned()
            .expect("object")
    }

    fn waiting(storage: &Storage) -> usize {
        storage
            .userdevice_todevice
            .scan_prefix(&pair_prefix(BOB))
            .count()
    }

    #[actix_web::test]
    async fn only_the_newest_transaction_ids_are_remembered() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let stream = Stream::new(0);
        let here: &ServerName = "here.test".try_into().expect("name");
        let alice = UserId::parse("@alice:here.test").expect("user");
        with_device(&storage, BOB, "PHONE");
        let send = |txn: String| {
            let (storage, stream, alice) = (&storage, &stream, &alice);
            async move {
                let from = Sender::Local {
                    device_id: "LAPTOP",
                    txn_id: &txn,
                };
                send(storage, stream, here, alice, from, "m.dummy", &messages())
                    .await
                    .expect("sent");
            }
        };
        for n in 0..=MAX_TXNS_KEPT {
            send(format!("t{n}")).await;
            // Acknowledged at once, so the inbox never fills.
            acknowledge(
                &storage,
                &UserId::parse(BOB).expect("bob"),
                "PHONE",
                u64::MAX,
            )
            .expect("ack");
        }
        assert_eq!(
            storage
                .todevice_txn
                .scan_prefix(&txn_prefix(alice.as_str(), "LAPTOP"))
                .count(),
            MAX_TXNS_KEPT
        );
        // The newest is still a repeat; the oldest is forgotten, so new again.
        send(format!("t{MAX_TXNS_KEPT}")).await;
        assert_eq!(waiting(&storage), 0);
        send("t0".to_owned()).await;
        assert_eq!(waiting(&storage), 1);
    }

    #[actix_web::test]
    async fn another_servers_message_is_stored_once_and_dropped_at_a_full_inbox() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let stream = Stream::new(0);
        let here: &ServerName = "here.test".try_into().expect("name");
        let carol = UserId::parse("@carol:there.test").expect("user");
        with_device(&storage, BOB, "PHONE");
        for _ in 0..2 {
            let from = Sender::Remote { message_id: "m1" };
            send(
                &storage,
                &stream,
                here,
                &carol,
                from,
                "m.dummy",
                &messages(),
            )
            .await
            .expect("stored");
        }
        assert_eq!(waiting(&storage), 1);
        for n in 1..MAX_INBOX {
            let id = format!("fill{n}");
            let from = Sender::Remote { message_id: &id };
            send(
                &storage,
                &stream,
                here,
                &carol,
                from,
                "m.dummy",
                &messages(),
            )
            .await
            .expect("stored");
        }
        assert_eq!(waiting(&storage), MAX_INBOX);
        // Full: dropped (logged), not an error the other server could do anything about.
        let from = Sender::Remote { message_id: "late" };
        send(
            &storage,
            &stream,
            here,
            &carol,
            from,
            "m.dummy",
            &messages(),
        )
        .await
        .expect("accepted");
        assert_eq!(waiting(&storage), MAX_INBOX);
        // Remote senders never make us send on to a third server.
        assert_eq!(storage.stream_todeviceout.iter().count(), 0);
    }
}
