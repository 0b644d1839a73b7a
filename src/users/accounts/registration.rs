//! Registration tokens: what a family member types to make an account when open
//! registration is off (`m.login.registration_token`). Made with `hearth token add`.

use super::AccountError;
use crate::storage::{Storage, StorageError};

pub(crate) use crate::storage::records::RegistrationTokenRecord;

impl RegistrationTokenRecord {
    pub(crate) fn is_usable(&self, now_ms: u64) -> bool {
        self.uses_allowed
            .is_none_or(|allowed| self.completed < allowed)
            && self.expiry_time.is_none_or(|expiry| now_ms < expiry)
    }
}

/// The spec's grammar for tokens: 1 to 64 of `A-Z a-z 0-9 . _ ~ -`.
pub(crate) fn is_valid_token(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// A random token of `length` characters (at most 64), of letters and digits that cannot be
/// mistaken for one another when read aloud or typed from paper.
pub(crate) fn random_token(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";
    crate::matrix::crypto::random_bytes::<64>()
        .iter()
        .take(length)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Creates a token (a random 16-character one when `token` is `None`).
pub(crate) fn create(
    storage: &Storage,
    token: Option<String>,
    uses_allowed: Option<u64>,
    expiry_time: Option<u64>,
) -> Result<String, AccountError> {
    let token = token.unwrap_or_else(|| random_token(16));
    if !is_valid_token(&token) {
        return Err(AccountError::InvalidUserId(
            "a token is 1 to 64 of A-Z a-z 0-9 . _ ~ -".to_owned(),
        ));
    }
    let record = RegistrationTokenRecord {
        uses_allowed,
        completed: 0,
        expiry_time,
    };
    if !storage.token_registration.insert_new(&token, &record)? {
        return Err(AccountError::InvalidUserId(format!(
            "the token {token} exists already"
        )));
    }
    Ok(token)
}

pub(crate) fn is_usable(storage: &Storage, token: &str, now_ms: u64) -> Result<bool, StorageError> {
    if !is_valid_token(token) {
        return Ok(false);
    }
    Ok(storage
        .token_registration
        .get(&token.to_owned())?
        .is_some_and(|record| record.is_usable(now_ms)))
}

/// Counts one use, atomically; `false` if the token was used up or expired meanwhile.
pub(crate) fn consume(storage: &Storage, token: &str, now_ms: u64) -> Result<bool, StorageError> {
    let mut consumed = false;
    storage
        .token_registration
        .update(&token.to_owned(), |record| {
            consumed = false;
            record.map(|mut record| {
                if record.is_usable(now_ms) {
                    record.completed += 1;
                    consumed = true;
                }
                record
            })
        })?;
    Ok(consumed)
}

/// Gives back a use taken by [`consume`] for an account that was then not made.
pub(crate) fn give_back(storage: &Storage, token: &str) -> Result<(), StorageError> {
    storage
        .token_registration
        .update(&token.to_owned(), |record| {
            record.map(|mut record| {
                record.completed = record.completed.saturating_sub(1);
                record
            })
        })?;
    Ok(())
}

pub(crate) fn list(
    storage: &Storage,
) -> Result<Vec<(String, RegistrationTokenRecord)>, StorageError> {
    storage.token_registration.iter().collect()
}

/// One token's record, if it exists.
pub(crate) fn get(
    storage: &Storage,
    token: &str,
) -> Result<Option<RegistrationTokenRecord>, StorageError> {
    if !is_valid_token(token) {
        return Ok(None);
    }
    storage.token_registration.get(&token.to_owned())
}

/// Changes a token's allowed uses and expiry (`None`: left as they are; `Some(None)`: no
/// limit), atomically with any registration using it; `None` if there is no such token.
pub(crate) fn update(
    storage: &Storage,
    token: &str,
    uses_allowed: Option<Option<u64>>,
    expiry_time: Option<Option<u64>>,
) -> Result<Option<RegistrationTokenRecord>, StorageError> {
    if !is_valid_token(token) {
        return Ok(None);
    }
    let mut updated = None;
    storage
        .token_registration
        .update(&token.to_owned(), |record| {
            let mut record = record?;
            if let Some(uses_allowed) = uses_allowed {
                record.uses_allowed = uses_allowed;
            }
            if let Some(expiry_time) = expiry_time {
                record.expiry_time = expiry_time;
            }
            updated = Some(record.clone());
            Some(record)
        })?;
    Ok(updated)
}

pub(crate) fn delete(storage: &Storage, token: &str) -> Result<bool, StorageError> {
    let key = token.to_owned();
    let existed = storage.token_registration.contains_key(&key)?;
    storage.token_registration.remove(&key)?;
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_run_out_and_expire() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let once = create(&storage, Some("family-2026".into()), Some(1), None).expect("create");
        assert!(is_usable(&storage, &once, 0).expect("check"));
        assert!(consume(&storage, &once, 0).expect("use"));
        assert!(!consume(&storage, &once, 0).expect("used up"));
        assert!(!is_usable(&storage, &once, 0).expect("check"));

        let expiring = create(&storage, None, None, Some(1000)).expect("create");
        assert_eq!(expiring.len(), 16);
        assert!(is_usable(&storage, &expiring, 999).expect("check"));
        assert!(!is_usable(&storage, &expiring, 1000).expect("check"));
        assert!(!consume(&storage, &expiring, 1000).expect("expired"));
    }

    #[test]
    fn invalid_and_unknown_tokens_are_unusable() {
        let (_dir, storage) = crate::storage::testing::temporary();
        assert!(create(&storage, Some("has space".into()), None, None).is_err());
        assert!(!is_usable(&storage, "nope", 0).expect("check"));
        assert!(!is_usable(&storage, &"x".repeat(65), 0).expect("check"));
        assert!(!consume(&storage, "nope", 0).expect("check"));
        assert!(create(&storage, Some("dup".into()), None, None).is_ok());
        assert!(create(&storage, Some("dup".into()), None, None).is_err());
        assert!(delete(&storage, "dup").expect("delete"));
        assert!(!delete(&storage, "dup").expect("gone"));
    }
}
