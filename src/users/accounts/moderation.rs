//! Account moderation (spec: client-server API, "Account locking", "Account suspension",
//! and the `/admin/lock` and `/admin/suspend` endpoints): server administrators may lock an
//! account (every request but logout answers `M_USER_LOCKED`) or suspend it (it may read,
//! sync and leave, but not act). Both are flags on the [`AccountRecord`], reversible, and
//! unlike deactivation they keep the account's sessions.

use ruma::{OwnedServerName, OwnedUserId, UserId};

use super::{AccountError, AccountRecord, change_active_account};
use crate::error::{Error, ErrorKind};
use crate::storage::Storage;

/// What an administrator may put on an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restriction {
    Lock,
    Suspension,
}

impl Restriction {
    fn of(self, record: &AccountRecord) -> bool {
        match self {
            Restriction::Lock => record.locked,
            Restriction::Suspension => record.suspended,
        }
    }

    fn set(self, record: &mut AccountRecord, on: bool) {
        match self {
            Restriction::Lock => record.locked = on,
            Restriction::Suspension => record.suspended = on,
        }
    }
}

/// The account `target` names, once `requester` has been found to be an administrator
/// allowed to moderate it. The checks run in the spec's order: authorization first, so
/// that a non-administrator learns nothing about which accounts exist; then the ID (ours,
/// valid: `400 M_INVALID_PARAM`), then the account (unknown or deactivated: `404`;
/// another administrator, or oneself when `changing`: `403`).
pub(crate) fn moderated_account(
    storage: &Storage,
    server_name: &OwnedServerName,
    requester: &UserId,
    target: &str,
    changing: bool,
) -> Result<OwnedUserId, Error> {
    let requester_is_admin = super::get(storage, requester)
        .map_err(account_error)?
        .is_some_and(|account| account.admin && !account.deactivated);
    if !requester_is_admin {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "Only server administrators may moderate accounts",
        ));
    }
    let target = UserId::parse(target)
        .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid user ID"))?;
    if target.server_name() != server_name {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "User does not belong to the local server",
        ));
    }
    let account = super::get(storage, &target)
        .map_err(account_error)?
        .filter(|account| !account.deactivated)
        .ok_or_else(|| Error::not_found("User not found"))?;
    if target == requester {
        if changing {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "You cannot moderate your own account",
            ));
        }
    } else if account.admin {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "Other server administrators cannot be moderated",
        ));
    }
    Ok(target)
}

/// Whether `restriction` is on `user_id`'s account. An unknown or deactivated account is
/// `404`.
pub(crate) fn is_restricted(
    storage: &Storage,
    user_id: &UserId,
    restriction: Restriction,
) -> Result<bool, Error> {
    super::get(storage, user_id)
        .map_err(account_error)?
        .filter(|account| !account.deactivated)
        .map(|account| restriction.of(&account))
        .ok_or_else(|| Error::not_found("User not found"))
}

/// Puts `restriction` on `user_id`'s account or lifts it, in one atomic update (a
/// deactivation racing it wins). Callers flush before answering.
pub(crate) fn set_restricted(
    storage: &Storage,
    user_id: &UserId,
    restriction: Restriction,
    on: bool,
) -> Result<(), AccountError> {
    change_active_account(storage, user_id, |record| restriction.set(record, on))
}

/// Unknown and deactivated accounts are both "not found" here, as the spec says.
fn account_error(err: AccountError) -> Error {
    match err {
        AccountError::NoSuchUser(_) | AccountError::Deactivated(_) => {
            Error::not_found("User not found")
        }
        AccountError::Storage(err) => Error::internal(err),
        other => Error::internal(other),
    }
}

/// [`set_restricted`] for the client API: errors as the spec's.
pub(crate) fn set_restricted_for_client(
    storage: &Storage,
    user_id: &UserId,
    restriction: Restriction,
    on: bool,
) -> Result<(), Error> {
    set_restricted(storage, user_id, restriction, on).map_err(account_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> OwnedServerName {
        OwnedServerName::try_from("example.org").expect("valid")
    }

    fn user(name: &str) -> OwnedUserId {
        super::super::local_user_id(name, &server()).expect("valid")
    }

    #[test]
    fn only_admins_moderate_and_only_other_local_non_admins() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let (root, boss, bob) = (user("root"), user("boss"), user("bob"));
        super::super::add_user_with_hash(&storage, &root, "x".into(), true).expect("add");
        super::super::add_user_with_hash(&storage, &boss, "x".into(), true).expect("add");
        super::super::add_user_with_hash(&storage, &bob, "x".into(), false).expect("add");
        let code = |requester: &UserId, target: &str, changing: bool| {
            moderated_account(&storage, &server(), requester, target, changing)
                .map(|_| "ok")
                .unwrap_or_else(|err| err.kind.errcode())
        };
        // Authorization comes before anything is looked up.
        assert_eq!(code(&bob, "not a user id", false), "M_FORBIDDEN");
        assert_eq!(code(&bob, "@nobody:example.org", false), "M_FORBIDDEN");
        assert_eq!(code(&root, "not a user id", false), "M_INVALID_PARAM");
        assert_eq!(code(&root, "@bob:elsewhere.org", false), "M_INVALID_PARAM");
        assert_eq!(code(&root, "@nobody:example.org", false), "M_NOT_FOUND");
        assert_eq!(code(&root, "@boss:example.org", false), "M_FORBIDDEN");
        assert_eq!(code(&root, "@root:example.org", false), "ok");
        assert_eq!(code(&root, "@root:example.org", true), "M_FORBIDDEN");
        assert_eq!(code(&root, "@bob:example.org", true), "ok");
    }

    #[test]
    fn restrictions_are_independent_and_reversible() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let bob = user("bob");
        super::super::add_user_with_hash(&storage, &bob, "x".into(), false).expect("add");
        set_restricted(&storage, &bob, Restriction::Lock, true).expect("lock");
        assert!(is_restricted(&storage, &bob, Restriction::Lock).expect("get"));
        assert!(!is_restricted(&storage, &bob, Restriction::Suspension).expect("get"));
        set_restricted(&storage, &bob, Restriction::Lock, false).expect("unlock");
        assert!(!is_restricted(&storage, &bob, Restriction::Lock).expect("get"));
        super::super::deactivate(&storage, &bob).expect("deactivate");
        assert!(matches!(
            set_restricted(&storage, &bob, Restriction::Suspension, true),
            Err(AccountError::Deactivated(_))
        ));
        assert_eq!(
            is_restricted(&storage, &bob, Restriction::Lock)
                .expect_err("gone")
                .kind,
            ErrorKind::NotFound
        );
    }
}
