//! Local user accounts: creating them, changing passwords, deactivating, listing; their
//! sessions and devices ([`sessions`]), registration tokens ([`registration`]),
//! user-interactive authentication ([`uia`]), locks and suspensions ([`moderation`]). The
//! `hearth user …` commands and the client API (`/register`, `/login`, `/account/*`,
//! `/devices`) both use this.

pub(crate) mod login_attempts;
pub(crate) mod moderation;
pub(crate) mod password_hasher;
pub(crate) mod registration;
pub(crate) mod sessions;
pub(crate) mod uia;

use ruma::{OwnedServerName, OwnedUserId, UserId};

use crate::matrix::crypto::password;
use crate::storage::{Storage, StorageError};

pub(crate) use crate::storage::records::AccountRecord;

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRecord")
            .field("admin", &self.admin)
            .field("deactivated", &self.deactivated)
            .field("locked", &self.locked)
            .field("suspended", &self.suspended)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountError {
    #[error("{0}")]
    InvalidUserId(String),
    #[error("{0} already exists")]
    Exists(OwnedUserId),
    #[error("{0} does not exist")]
    NoSuchUser(OwnedUserId),
    #[error("{0} is deactivated")]
    Deactivated(OwnedUserId),
    #[error("{0}")]
    WeakPassword(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One account, as listed by `hearth user list`.
#[derive(Debug, Clone)]
pub(crate) struct AccountSummary {
    pub(crate) user_id: OwnedUserId,
    pub(crate) admin: bool,
    pub(crate) deactivated: bool,
    pub(crate) locked: bool,
    pub(crate) suspended: bool,
    /// When the account was made (shown by the administration API).
    pub(crate) created_at_ms: u64,
}

/// Turns `alice` or `@alice:server` into a user ID on our server. New accounts must use the
/// spec's current localpart grammar (`a-z 0-9 . _ = - / +`), within 255 bytes in all.
pub(crate) fn local_user_id(
    input: &str,
    server_name: &OwnedServerName,
) -> Result<OwnedUserId, AccountError> {
    let localpart = match input.strip_prefix('@') {
        Some(full) => {
            let (localpart, server) = full.split_once(':').ok_or_else(|| {
                AccountError::InvalidUserId(format!("`{input}` is not a user ID"))
            })?;
            if server != server_name.as_str() {
                return Err(AccountError::InvalidUserId(format!(
                    "`{input}` belongs to another server; this server is {server_name}"
                )));
            }
            localpart
        }
        None => input,
    };
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+');
    if localpart.is_empty() || !localpart.chars().all(allowed) {
        return Err(AccountError::InvalidUserId(format!(
            "`{localpart}` is not a valid user name: use lowercase letters, digits and . _ = - / +"
        )));
    }
    let user_id = UserId::parse_with_server_name(localpart, server_name)
        .map_err(|err| AccountError::InvalidUserId(format!("`{localpart}`: {err}")))?;
    if user_id.as_str().len() > 255 {
        return Err(AccountError::InvalidUserId(
            "user IDs are limited to 255 bytes".to_owned(),
        ));
    }
    Ok(user_id)
}

/// The user a login names, `alice` or `@alice:server`: user names are lowercase on Hearth,
/// so the localpart is lowercased (the server name is compared as configured).
pub(crate) fn login_user_id(
    input: &str,
    server_name: &OwnedServerName,
) -> Result<OwnedUserId, AccountError> {
    match input
        .strip_prefix('@')
        .and_then(|full| full.split_once(':'))
    {
        Some((localpart, server)) => local_user_id(
            &format!("@{}:{server}", localpart.to_lowercase()),
            server_name,
        ),
        None => local_user_id(&input.to_lowercase(), server_name),
    }
}

/// Refuses passwords too short to be safe or too long to hash cheaply.
pub(crate) fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < 8 {
        return Err(AccountError::WeakPassword(
            "the password must have at least 8 characters".to_owned(),
        ));
    }
    if password.len() > password::MAX_PASSWORD_BYTES {
        return Err(AccountError::WeakPassword(format!(
            "the password must have at most {} bytes",
            password::MAX_PASSWORD_BYTES
        )));
    }
    Ok(())
}

pub(crate) fn add_user(
    storage: &Storage,
    user_id: &UserId,
    password: &str,
    admin: bool,
) -> Result<(), AccountError> {
    check_password(password)?;
    let hash = password::hash(password).map_err(AccountError::WeakPassword)?;
    add_user_with_hash(storage, user_id, hash, admin)
}

/// Creates the account with an already computed hash (the server hashes off its workers).
pub(crate) fn add_user_with_hash(
    storage: &Storage,
    user_id: &UserId,
    password_hash: String,
    admin: bool,
) -> Result<(), AccountError> {
    let record = AccountRecord {
        password_hash,
        admin,
        deactivated: false,
        locked: false,
        suspended: false,
        created_at_ms: crate::matrix::time::now_ms(),
    };
    if !storage
        .userid_account
        .insert_new(&user_id.to_string(), &record)?
    {
        return Err(AccountError::Exists(user_id.to_owned()));
    }
    Ok(())
}

pub(crate) fn set_password(
    storage: &Storage,
    user_id: &UserId,
    password: &str,
) -> Result<(), AccountError> {
    check_password(password)?;
    let hash = password::hash(password).map_err(AccountError::WeakPassword)?;
    set_password_hash(storage, user_id, &hash)
}

pub(crate) fn set_password_hash(
    storage: &Storage,
    user_id: &UserId,
    password_hash: &str,
) -> Result<(), AccountError> {
    change_active_account(storage, user_id, |record| {
        record.password_hash = password_hash.to_owned()
    })
}

/// Marks the account deactivated and ends all its sessions. The user ID stays taken for
/// ever: the spec forbids giving it to someone else. The password's hash is kept, never to
/// log in again, only so that `/login` tells the account is deactivated to whoever knows
/// its password and to nobody else (a stranger gets the answer of any wrong password).
pub(crate) fn deactivate(storage: &Storage, user_id: &UserId) -> Result<(), AccountError> {
    change_active_account(storage, user_id, |record| {
        record.deactivated = true;
    })?;
    sessions::remove_all_devices(storage, user_id, None)?;
    Ok(())
}

/// Changes an active account in one atomic step, so a password change racing a
/// deactivation cannot bring the account back.
fn change_active_account(
    storage: &Storage,
    user_id: &UserId,
    change: impl Fn(&mut AccountRecord),
) -> Result<(), AccountError> {
    let mut outcome = Ok(());
    storage
        .userid_account
        .update(&user_id.to_string(), |record| {
            outcome = match &record {
                None => Err(AccountError::NoSuchUser(user_id.to_owned())),
                Some(record) if record.deactivated => {
                    Err(AccountError::Deactivated(user_id.to_owned()))
                }
                Some(_) => Ok(()),
            };
            record.map(|mut record| {
                if outcome.is_ok() {
                    change(&mut record);
                }
                record
            })
        })?;
    outcome
}

#[cfg(test)]
/// Whether `password` is the account's password. Deactivated and unknown accounts never match.
pub fn check_login(
    storage: &Storage,
    user_id: &UserId,
    password: &str,
) -> Result<bool, AccountError> {
    Ok(match storage.userid_account.get(&user_id.to_string())? {
        Some(record) if !record.deactivated => password::verify(password, &record.password_hash),
        _ => false,
    })
}

/// The stored account, if any.
pub(crate) fn get(
    storage: &Storage,
    user_id: &UserId,
) -> Result<Option<AccountRecord>, AccountError> {
    Ok(storage.userid_account.get(&user_id.to_string())?)
}

pub(crate) fn list(storage: &Storage) -> Result<Vec<AccountSummary>, AccountError> {
    storage
        .userid_account
        .iter()
        .map(|entry| {
            let (user_id, record) = entry?;
            let user_id = UserId::parse(user_id.as_str())
                .map_err(|err| StorageError::Corrupt(format!("stored user ID {user_id}: {err}")))?;
            Ok(AccountSummary {
                user_id,
                admin: record.admin,
                deactivated: record.deactivated,
                locked: record.locked,
                suspended: record.suspended,
                created_at_ms: record.created_at_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> OwnedServerName {
        OwnedServerName::try_from("example.org").expect("valid")
    }

    #[test]
    fn user_ids_accept_localparts_and_full_ids_of_this_server() {
        let id = local_user_id("alice", &server()).expect("valid");
        assert_eq!(id.as_str(), "@alice:example.org");
        let id = local_user_id("@bob.smith:example.org", &server()).expect("valid");
        assert_eq!(id.as_str(), "@bob.smith:example.org");
    }

    #[test]
    fn user_ids_refuse_other_servers_and_bad_characters() {
        assert!(local_user_id("@alice:other.org", &server()).is_err());
        assert!(local_user_id("Alice", &server()).is_err());
        assert!(local_user_id("al ice", &server()).is_err());
        assert!(local_user_id("", &server()).is_err());
        assert!(local_user_id(&"a".repeat(250), &server()).is_err());
    }

    #[test]
    fn account_lifecycle() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let alice = local_user_id("alice", &server()).expect("valid");

        add_user(&storage, &alice, "first password", true).expect("add");
        assert!(matches!(
            add_user(&storage, &alice, "other password", false),
            Err(AccountError::Exists(_))
        ));
        assert!(check_login(&storage, &alice, "first password").expect("check"));

        set_password(&storage, &alice, "second password").expect("passwd");
        assert!(!check_login(&storage, &alice, "first password").expect("check"));
        assert!(check_login(&storage, &alice, "second password").expect("check"));

        deactivate(&storage, &alice).expect("deactivate");
        assert!(!check_login(&storage, &alice, "second password").expect("check"));
        assert!(matches!(
            set_password(&storage, &alice, "third password"),
            Err(AccountError::Deactivated(_))
        ));
        assert!(matches!(
            add_user(&storage, &alice, "reuse the id", false),
            Err(AccountError::Exists(_))
        ));

        let accounts = list(&storage).expect("list");
        assert_eq!(accounts.len(), 1);
        assert!(accounts[0].admin && accounts[0].deactivated);
    }

    #[test]
    fn short_passwords_are_refused_before_anything_is_written() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let bob = local_user_id("bob", &server()).expect("valid");
        assert!(matches!(
            add_user(&storage, &bob, "short", false),
            Err(AccountError::WeakPassword(_))
        ));
        assert!(list(&storage).expect("list").is_empty());
    }
}
