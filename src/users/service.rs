//! [`Users`]: the users service the HTTP layer calls. It holds the database handle, our
//! server's name, the password hasher and the user-interactive auth sessions, so a handler
//! asks it and never reaches the trees itself. The rules stay in the modules beside it
//! (`accounts`, `profile`, `account_data`, `filter`, `push_rules`), as free functions over
//! `&Storage` that the CLI and the other services use too; each method here adds what a
//! request needs on top (the time, a flush before answering).

use std::sync::Arc;

use ruma::{OwnedServerName, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value};

use super::accounts::login_attempts::LoginAttempts;
use super::accounts::moderation::{self, Restriction};
use super::accounts::password_hasher::PasswordHasher;
use super::accounts::sessions::{self, Device, NewSession, Session};
use super::accounts::uia::UiaSessions;
use super::accounts::{self, AccountError, AccountRecord, registration};
use super::filter::{self, Filter};
use super::key_backup::KeyBackups;
use super::{account_data, device_lists, keys, openid, profile, tags, to_device};
use crate::error::{Error, ErrorKind};
use crate::matrix::time::now_ms;
use crate::storage::stream::Stream;
use crate::storage::{Storage, StorageError};

pub(crate) struct Users {
    storage: Arc<Storage>,
    server_name: OwnedServerName,
    /// Hashes and checks passwords, a bounded number at a time (each hash takes ~19 MiB).
    pub(crate) password_hasher: PasswordHasher,
    /// User-interactive auth sessions in progress (registration, password checks).
    pub(crate) uia: UiaSessions,
    /// The account-wide bound on wrong passwords, which spares addresses the account
    /// logged in from.
    pub(crate) login_attempts: LoginAttempts,
    /// Server-side key backups (end-to-end encryption).
    pub(crate) key_backups: KeyBackups,
}

impl Users {
    pub(crate) fn new(storage: Arc<Storage>, server_name: OwnedServerName) -> Users {
        Users {
            key_backups: KeyBackups::new(storage.clone()),
            storage,
            server_name,
            password_hasher: PasswordHasher::default(),
            uia: UiaSessions::default(),
            login_attempts: LoginAttempts::default(),
        }
    }

    /// Makes every write so far durable: callers answer a change only after it.
    pub(crate) async fn flush(&self) -> Result<(), StorageError> {
        self.storage.flush().await
    }

    // Accounts.

    pub(crate) fn account(&self, user_id: &UserId) -> Result<Option<AccountRecord>, AccountError> {
        accounts::get(&self.storage, user_id)
    }

    /// Whether an account (deactivated or not) holds this ID.
    pub(crate) fn exists(&self, user_id: &UserId) -> Result<bool, AccountError> {
        Ok(self.account(user_id)?.is_some())
    }

    /// Whether an account holds this ID and is not deactivated: who may be invited.
    pub(crate) fn is_active(&self, user_id: &UserId) -> Result<bool, Error> {
        Ok(self
            .account(user_id)
            .map_err(|err| Error::internal(err.to_string()))?
            .is_some_and(|account| !account.deactivated))
    }

    pub(crate) fn is_admin(&self, user_id: &UserId) -> Result<bool, Error> {
        Ok(self
            .account(user_id)
            .map_err(|err| Error::internal(err.to_string()))?
            .is_some_and(|account| account.admin))
    }

    /// Creates an account, spending one use of `token` if registration needed it; the use
    /// is given back if the account cannot be made.
    pub(crate) fn create_account(
        &self,
        user_id: &UserId,
        password_hash: String,
        token: Option<&str>,
    ) -> Result<(), Error> {
        if let Some(token) = token
            && !registration::consume(&self.storage, token, now_ms())?
        {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "The registration token is used up or expired",
            ));
        }
        if let Err(err) = accounts::add_user_with_hash(&self.storage, user_id, password_hash, false)
        {
            if let Some(token) = token {
                registration::give_back(&self.storage, token)?;
            }
            return Err(err.into());
        }
        Ok(())
    }

    pub(crate) fn registration_token_usable(&self, token: &str) -> Result<bool, StorageError> {
        registration::is_usable(&self.storage, token, now_ms())
    }

    /// Stores a new password hash and, if `keep_device` says so, logs out every other
    /// device; flushed.
    pub(crate) async fn change_password(
        &self,
        stream: &Stream,
        user_id: &UserId,
        password_hash: String,
        logout_devices_but: Option<&str>,
    ) -> Result<(), Error> {
        accounts::set_password_hash(&self.storage, user_id, &password_hash)?;
        if let Some(keep) = logout_devices_but {
            let others = self.device_ids_but(user_id, Some(keep))?;
            sessions::remove_all_devices(&self.storage, user_id, Some(keep))?;
            self.announce_devices(stream, user_id, &others).await?;
        }
        Ok(self.flush().await?)
    }

    /// Deactivates the account for good and deletes its key backups; flushed.
    pub(crate) async fn deactivate(&self, stream: &Stream, user_id: &UserId) -> Result<(), Error> {
        let devices = self.device_ids_but(user_id, None)?;
        accounts::deactivate(&self.storage, user_id)?;
        self.finish_deactivation(stream, user_id, &devices).await
    }

    /// What follows [`accounts::deactivate`] (which ended the sessions of `devices`): the
    /// key backups deleted and the devices' removal announced; flushed. Apart for the CLI,
    /// which reports the account step's errors in its own words.
    pub(crate) async fn finish_deactivation(
        &self,
        stream: &Stream,
        user_id: &UserId,
        devices: &[String],
    ) -> Result<(), Error> {
        self.key_backups.delete_all(user_id)?;
        self.announce_devices(stream, user_id, devices).await?;
        Ok(self.flush().await?)
    }

    /// Ends every session of the user and announces the devices' removal; flushed. Returns
    /// how many sessions ended.
    pub(crate) async fn end_all_sessions(
        &self,
        stream: &Stream,
        user_id: &UserId,
    ) -> Result<usize, Error> {
        let devices = self.device_ids_but(user_id, None)?;
        let ended = sessions::remove_all_devices(&self.storage, user_id, None)?;
        self.announce_devices(stream, user_id, &devices).await?;
        self.flush().await?;
        Ok(ended)
    }

    // Sessions and devices.

    /// A new device (or a new token for `device_id`) for `user_id`; not flushed, so that
    /// registration flushes the account and its session together.
    pub(crate) fn start_session(
        &self,
        user_id: &UserId,
        device_id: Option<&str>,
        display_name: Option<String>,
        ip: Option<String>,
    ) -> Result<NewSession, AccountError> {
        sessions::start_session(
            &self.storage,
            user_id,
            device_id,
            display_name,
            ip,
            now_ms(),
        )
    }

    /// The session behind an access token, its device marked as seen from `ip` now.
    pub(crate) fn authenticate(
        &self,
        token: &str,
        ip: Option<&str>,
    ) -> Result<Option<Session>, Error> {
        let Some(session) = sessions::authenticate(&self.storage, token)? else {
            return Ok(None);
        };
        sessions::touch_device(
            &self.storage,
            &session.user_id,
            &session.device_id,
            ip,
            now_ms(),
        )?;
        Ok(Some(session))
    }

    /// Ends this session (`all`: and every other device of the user); flushed, and the
    /// devices' removal announced to those who track the user's devices.
    pub(crate) async fn logout(
        &self,
        stream: &Stream,
        session: &Session,
        all: bool,
    ) -> Result<(), Error> {
        let mut gone = vec![session.device_id.clone()];
        if all {
            gone = self.device_ids_but(&session.user_id, None)?;
            sessions::remove_all_devices(&self.storage, &session.user_id, None)?;
        }
        sessions::end_session(&self.storage, session)?;
        self.announce_devices(stream, &session.user_id, &gone)
            .await?;
        Ok(self.flush().await?)
    }

    /// Tells those who track the user's devices (their `/sync`, other servers) that
    /// `devices` changed (appeared, were renamed or removed); flushed with every write
    /// before it. Login calls it for the device it starts.
    pub(crate) async fn announce_devices(
        &self,
        stream: &Stream,
        user_id: &UserId,
        devices: &[String],
    ) -> Result<(), Error> {
        device_lists::note_change(&self.storage, stream, user_id, devices).await?;
        Ok(())
    }

    /// The user's device IDs, less `but`.
    pub(crate) fn device_ids_but(
        &self,
        user_id: &UserId,
        but: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        Ok(self
            .devices(user_id)?
            .into_iter()
            .map(|device| device.device_id)
            .filter(|device| Some(device.as_str()) != but)
            .collect())
    }

    pub(crate) fn devices(&self, user_id: &UserId) -> Result<Vec<Device>, StorageError> {
        sessions::list_devices(&self.storage, user_id)
    }

    pub(crate) fn device(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> Result<Option<Device>, StorageError> {
        sessions::get_device(&self.storage, user_id, device_id)
    }

    /// Renames a device (`None`: leaves it as it is); `false` if there is no such device.
    /// Flushed.
    pub(crate) async fn rename_device(
        &self,
        stream: &Stream,
        user_id: &UserId,
        device_id: &str,
        display_name: Option<String>,
    ) -> Result<bool, Error> {
        let exists = match display_name {
            Some(name) => sessions::rename_device(&self.storage, user_id, device_id, &name)?,
            None => self.device(user_id, device_id)?.is_some(),
        };
        if exists {
            self.announce_devices(stream, user_id, &[device_id.to_owned()])
                .await?;
        }
        Ok(exists)
    }

    /// Removes devices and their sessions (those already gone count as removed); flushed.
    pub(crate) async fn remove_devices(
        &self,
        stream: &Stream,
        user_id: &UserId,
        device_ids: &[String],
    ) -> Result<(), Error> {
        let existing = self.device_ids_but(user_id, None)?;
        let removed: Vec<String> = device_ids
            .iter()
            .filter(|device| existing.contains(device))
            .cloned()
            .collect();
        sessions::remove_devices(&self.storage, user_id, device_ids)?;
        if !removed.is_empty() {
            self.announce_devices(stream, user_id, &removed).await?;
        }
        Ok(self.flush().await?)
    }

    /// The devices `target` has sessions on, each with where and when it was last seen
    /// (spec: "Server administration", whois): one's own, or anyone's for a server
    /// administrator; `403` for anyone else.
    pub(crate) fn whois_devices(
        &self,
        requester: &UserId,
        target: &UserId,
    ) -> Result<Vec<Device>, Error> {
        let is_admin = self.is_admin(requester)?;
        if target != requester && !is_admin {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "Only server administrators may look at others",
            ));
        }
        Ok(self.devices(target)?)
    }

    /// A new OpenID token for the user (see [`openid::issue`]), flushed before it is handed
    /// out: the third party it is for may ask this server about it at once. Returns the
    /// token and how many seconds it is good for.
    pub(crate) async fn issue_openid_token(
        &self,
        user_id: &UserId,
    ) -> Result<(String, u64), Error> {
        let token = openid::issue(&self.storage, user_id, now_ms())?;
        self.flush().await?;
        Ok((token, openid::LIFETIME_SECS))
    }

    // Moderation (spec: "Server administration").

    /// Whether `restriction` is on `target`'s account, asked by the administrator
    /// `requester` (the checks of [`moderation::moderated_account`]).
    pub(crate) fn restriction(
        &self,
        requester: &UserId,
        target: &str,
        restriction: Restriction,
    ) -> Result<bool, Error> {
        let target = moderation::moderated_account(
            &self.storage,
            &self.server_name,
            requester,
            target,
            false,
        )?;
        moderation::is_restricted(&self.storage, &target, restriction)
    }

    /// Puts `restriction` on `target`'s account or lifts it, and flushes before answering:
    /// an administrator told "locked" can rely on it surviving a crash. Returns the
    /// account's ID.
    pub(crate) async fn set_restriction(
        &self,
        requester: &UserId,
        target: &str,
        restriction: Restriction,
        on: bool,
    ) -> Result<OwnedUserId, Error> {
        let target = moderation::moderated_account(
            &self.storage,
            &self.server_name,
            requester,
            target,
            true,
        )?;
        moderation::set_restricted_for_client(&self.storage, &target, restriction, on)?;
        self.flush().await?;
        Ok(target)
    }

    // Profiles, account data, filters.

    /// A local user's profile; `None` if there is no such account.
    pub(crate) fn profile(
        &self,
        user_id: &UserId,
    ) -> Result<Option<Map<String, Value>>, StorageError> {
        profile::get(&self.storage, user_id)
    }

    pub(crate) fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
    ) -> Result<Option<Map<String, Value>>, StorageError> {
        account_data::get(&self.storage, user_id, room_id, kind)
    }

    /// Stores a client's account data at the next position of `stream` (the room
    /// service's: account data reaches `/sync` in the same order as events).
    pub(crate) async fn set_account_data(
        &self,
        stream: &Stream,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: Map<String, Value>,
    ) -> Result<(), Error> {
        account_data::set(&self.storage, stream, user_id, room_id, kind, content).await
    }

    /// Sends to-device messages from one of our devices (see [`to_device::send`]): stored
    /// and flushed at the next position of `stream` before the answer.
    pub(crate) async fn send_to_device(
        &self,
        stream: &Stream,
        sender: &UserId,
        device_id: &str,
        txn_id: &str,
        kind: &str,
        messages: &Map<String, Value>,
    ) -> Result<(), Error> {
        let from = to_device::Sender::Local { device_id, txn_id };
        to_device::send(
            &self.storage,
            stream,
            &self.server_name,
            sender,
            from,
            kind,
            messages,
        )
        .await
    }

    /// Moves the user's `m.fully_read` marker of the room to `event_id`. The marker is
    /// account data the server manages (clients cannot set it as account data), stored at
    /// the next position of `stream` like theirs.
    pub(crate) async fn set_fully_read(
        &self,
        stream: &Stream,
        user_id: &UserId,
        room_id: &RoomId,
        event_id: &str,
    ) -> Result<(), Error> {
        let mut content = Map::new();
        content.insert("event_id".to_owned(), Value::from(event_id));
        account_data::set_managed(
            &self.storage,
            stream,
            user_id,
            Some(room_id),
            "m.fully_read",
            content,
        )
        .await
    }

    /// Whether the user has ever had a membership in the room (room account data is kept
    /// only for those). Reads the room service's membership index; the room service
    /// writes it, and sits above this module, so the read is made here directly.
    pub(crate) fn has_been_in_room(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<bool, Error> {
        Ok(self
            .storage
            .userroom_membership
            .get(&(user_id.to_string(), room_id.to_string()))?
            .is_some())
    }

    // Room tags (spec: "Room Tagging"), kept as the room's `m.tag` account data.

    /// The user's tags of the room: tag name → its content.
    pub(crate) fn tags(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Map<String, Value>, StorageError> {
        tags::get(&self.storage, user_id, room_id)
    }

    /// Tags a room the user has been in (like any room account data), `content` the tag's
    /// (its `order`, if any, a number); written at the next position of the room service's
    /// `stream`, as [`Users::set_account_data`] is.
    pub(crate) async fn put_tag(
        &self,
        stream: &Stream,
        user_id: &UserId,
        room_id: &RoomId,
        tag: String,
        content: Map<String, Value>,
    ) -> Result<(), Error> {
        if !self.has_been_in_room(user_id, room_id)? {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "You have never been in this room",
            ));
        }
        if tag.is_empty() || tag.len() > 255 {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "A tag is 1 to 255 bytes",
            ));
        }
        if content.get("order").is_some_and(|order| !order.is_number()) {
            return Err(Error::new(ErrorKind::BadJson, "order must be a number"));
        }
        tags::change(&self.storage, stream, user_id, room_id, |tags| {
            tags.insert(tag, Value::Object(content));
        })
        .await
    }

    /// Removes a tag from a room; removing one that is not there changes nothing (and
    /// writes nothing, so `/sync` has nothing new to tell).
    pub(crate) async fn remove_tag(
        &self,
        stream: &Stream,
        user_id: &UserId,
        room_id: &RoomId,
        tag: &str,
    ) -> Result<(), Error> {
        if self.tags(user_id, room_id)?.contains_key(tag) {
            tags::change(&self.storage, stream, user_id, room_id, |tags| {
                tags.remove(tag);
            })
            .await?;
        }
        Ok(())
    }

    /// Stores a filter (see [`filter::store`]) and returns its ID; flushed.
    pub(crate) async fn create_filter(
        &self,
        user_id: &UserId,
        text: &str,
    ) -> Result<String, Error> {
        let filter_id = filter::store(&self.storage, user_id.as_str(), text)?;
        self.flush().await?;
        Ok(filter_id)
    }

    /// A stored filter's text.
    pub(crate) fn filter(
        &self,
        user_id: &UserId,
        filter_id: &str,
    ) -> Result<Option<String>, StorageError> {
        filter::stored(&self.storage, user_id.as_str(), filter_id)
    }

    /// The filter a request names: inline JSON, a stored filter's ID, or none.
    pub(crate) fn resolve_filter(
        &self,
        user_id: &UserId,
        filter: Option<&str>,
    ) -> Result<Filter, Error> {
        Filter::resolve(&self.storage, user_id.as_str(), filter)
    }

    pub(super) fn storage(&self) -> &Storage {
        &self.storage
    }
}

impl From<AccountError> for Error {
    /// The spec's error codes for account errors.
    fn from(err: AccountError) -> Error {
        match err {
            AccountError::InvalidUserId(message) => Error::new(ErrorKind::InvalidUsername, message),
            AccountError::Exists(_) => Error::new(ErrorKind::UserInUse, "The user name is taken"),
            AccountError::NoSuchUser(_) => Error::not_found("No such user"),
            AccountError::Deactivated(_) => Error::new(
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ),
            AccountError::WeakPassword(message) => Error::new(ErrorKind::WeakPassword, message),
            AccountError::Storage(err) => Error::internal(err),
        }
    }
}

impl Users {
    // End-to-end encryption keys (rules in `keys`).

    /// Stores a device's uploaded keys (all or nothing), flushed; its one-time key counts.
    /// New or changed identity keys are announced to those who track the user's devices.
    pub(crate) async fn upload_keys(
        &self,
        stream: &Stream,
        user_id: &UserId,
        device_id: &str,
        upload: &keys::Upload,
    ) -> Result<std::collections::BTreeMap<String, u64>, Error> {
        let (counts, identity_changed) = keys::upload(&self.storage, user_id, device_id, upload)?;
        if identity_changed {
            self.announce_devices(stream, user_id, &[device_id.to_owned()])
                .await?;
        } else {
            self.storage.flush().await?;
        }
        Ok(counts)
    }

    /// Our user's devices' identity keys, with their names (for our own clients) and the
    /// cross-signing signatures `viewer` may see.
    pub(crate) fn device_keys(
        &self,
        user_id: &UserId,
        devices: &[String],
        viewer: &UserId,
    ) -> Result<Map<String, Value>, Error> {
        let mut found = keys::device_keys(&self.storage, user_id, devices, true)?;
        super::cross_signing::signatures::merge_into_devices(
            &self.storage,
            user_id.as_str(),
            &mut found,
            Some(viewer),
        )?;
        Ok(found)
    }

    /// Claims one key per device of our users, flushed before the keys are handed out so a
    /// restart cannot hand them out again.
    pub(crate) async fn claim_keys(
        &self,
        wanted: &std::collections::BTreeMap<
            OwnedUserId,
            std::collections::BTreeMap<String, String>,
        >,
    ) -> Result<Map<String, Value>, Error> {
        let claimed = keys::claim(&self.storage, wanted)?;
        self.storage.flush().await?;
        Ok(claimed)
    }
}
