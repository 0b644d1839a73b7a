//! What the server administration API (Synapse's `/_synapse/admin`, which existing tools
//! such as synapse-admin speak) asks of accounts: every account with its profile, and the
//! changes only an administrator makes (the admin flag, reactivation, a password reset that
//! ends every session). Who may ask is the HTTP layer's check; the rules are here.

use ruma::UserId;
use serde_json::{Map, Value};

use super::Users;
use super::accounts::registration::{self, RegistrationTokenRecord};
use super::accounts::{self, AccountError, AccountRecord, AccountSummary};
use crate::error::{Error, ErrorKind};
use crate::storage::StorageError;
use crate::storage::stream::Stream;

/// An account's stored record and its profile.
pub(crate) type AccountWithProfile = (AccountRecord, Map<String, Value>);

/// An account as the administration API lists it: its flags and its profile.
#[derive(Debug, Clone)]
pub(crate) struct AdminAccount {
    pub(crate) summary: AccountSummary,
    pub(crate) displayname: Option<String>,
    pub(crate) avatar_url: Option<String>,
}

impl Users {
    /// Every local account (deactivated ones too) with its display name and avatar, by
    /// user ID. A family server has tens of accounts: the caller filters and pages.
    pub(crate) fn admin_accounts(&self) -> Result<Vec<AdminAccount>, AccountError> {
        accounts::list(self.storage())?
            .into_iter()
            .map(|summary| {
                let profile = self
                    .storage()
                    .userid_profile
                    .get(&summary.user_id.to_string())?
                    .unwrap_or_default();
                Ok(AdminAccount {
                    displayname: text_field(&profile, "displayname"),
                    avatar_url: text_field(&profile, "avatar_url"),
                    summary,
                })
            })
            .collect()
    }

    /// One account with its profile; `None` if there is no such account.
    pub(crate) fn admin_account(
        &self,
        user_id: &UserId,
    ) -> Result<Option<AccountWithProfile>, AccountError> {
        let Some(record) = accounts::get(self.storage(), user_id)? else {
            return Ok(None);
        };
        let profile = self
            .storage()
            .userid_profile
            .get(&user_id.to_string())?
            .unwrap_or_default();
        Ok(Some((record, profile)))
    }

    /// Creates an account for an administrator: with a password hash, or none (an account
    /// nobody can log in to until a password is set), and the admin flag. Flushed.
    pub(crate) async fn create_account_as_admin(
        &self,
        user_id: &UserId,
        password_hash: Option<String>,
        admin: bool,
    ) -> Result<(), Error> {
        accounts::add_user_with_hash(
            self.storage(),
            user_id,
            password_hash.unwrap_or_default(),
            admin,
        )?;
        Ok(self.flush().await?)
    }

    /// Makes an account a server administrator or not. Not flushed: the caller's last step
    /// flushes.
    pub(crate) fn set_admin(&self, user_id: &UserId, admin: bool) -> Result<(), AccountError> {
        let mut found = false;
        self.storage()
            .userid_account
            .update(&user_id.to_string(), |record| {
                let mut record = record?;
                found = true;
                record.admin = admin;
                Some(record)
            })?;
        if found {
            Ok(())
        } else {
            Err(AccountError::NoSuchUser(user_id.to_owned()))
        }
    }

    /// Brings a deactivated account back with a new password (its sessions ended when it
    /// was deactivated). Not flushed.
    pub(crate) fn reactivate(
        &self,
        user_id: &UserId,
        password_hash: &str,
    ) -> Result<(), AccountError> {
        let mut found = false;
        self.storage()
            .userid_account
            .update(&user_id.to_string(), |record| {
                let mut record = record?;
                found = true;
                record.deactivated = false;
                record.password_hash = password_hash.to_owned();
                Some(record)
            })?;
        if found {
            Ok(())
        } else {
            Err(AccountError::NoSuchUser(user_id.to_owned()))
        }
    }

    /// Sets a new password chosen by an administrator; with `logout_devices`, every
    /// session of the account ends (the usual reason is a lost or stolen device). Flushed.
    /// The devices' removal is announced to those who track them.
    pub(crate) async fn reset_password(
        &self,
        stream: &Stream,
        user_id: &UserId,
        password_hash: String,
        logout_devices: bool,
    ) -> Result<(), Error> {
        accounts::set_password_hash(self.storage(), user_id, &password_hash)?;
        if logout_devices {
            self.end_all_sessions(stream, user_id).await?;
        }
        Ok(self.flush().await?)
    }

    /// Makes every write so far durable (the end of a change made in several steps).
    pub(crate) async fn flush_changes(&self) -> Result<(), StorageError> {
        self.flush().await
    }
}

fn text_field(profile: &Map<String, Value>, field: &str) -> Option<String> {
    profile
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl Users {
    // Registration tokens, for the administration API (`hearth token …` uses the same
    // functions of `registration` directly).

    pub(crate) fn registration_tokens(
        &self,
    ) -> Result<Vec<(String, RegistrationTokenRecord)>, StorageError> {
        registration::list(self.storage())
    }

    pub(crate) fn registration_token(
        &self,
        token: &str,
    ) -> Result<Option<RegistrationTokenRecord>, StorageError> {
        registration::get(self.storage(), token)
    }

    /// Creates a token (`400 M_INVALID_PARAM` if it exists); flushed.
    pub(crate) async fn create_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<u64>,
        expiry_time: Option<u64>,
    ) -> Result<RegistrationTokenRecord, Error> {
        registration::create(
            self.storage(),
            Some(token.to_owned()),
            uses_allowed,
            expiry_time,
        )
        .map_err(|err| match err {
            AccountError::Storage(err) => Error::internal(err),
            other => Error::new(ErrorKind::InvalidParam, other.to_string()),
        })?;
        self.flush().await?;
        Ok(RegistrationTokenRecord {
            uses_allowed,
            completed: 0,
            expiry_time,
        })
    }

    /// Changes a token's limits (see [`registration::update`]); flushed.
    pub(crate) async fn update_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<Option<u64>>,
        expiry_time: Option<Option<u64>>,
    ) -> Result<Option<RegistrationTokenRecord>, Error> {
        let updated = registration::update(self.storage(), token, uses_allowed, expiry_time)?;
        self.flush().await?;
        Ok(updated)
    }

    /// Deletes a token; `false` if there was none. Flushed.
    pub(crate) async fn delete_registration_token(&self, token: &str) -> Result<bool, Error> {
        let existed =
            registration::is_valid_token(token) && registration::delete(self.storage(), token)?;
        self.flush().await?;
        Ok(existed)
    }
}
