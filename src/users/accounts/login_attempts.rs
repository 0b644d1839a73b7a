//! The account-wide bound on password guesses, made so that a stranger cannot use it to
//! lock the owner out.
//!
//! Guesses are bounded three ways. Per client address (the HTTP layer's limiter, all
//! logins from there) and per account *and* address (the same limiter keyed by both):
//! a stranger who guesses from one place is slowed there, and the owner elsewhere is not.
//! A stranger with many addresses is bounded here, per account: [`FAILURE_BURST`] wrong
//! passwords, then one every [`FAILURE_REFILL`] — about 600 an hour, which a good
//! password outlasts — and each refusal asks for a wait of at most that refill time (a
//! short backoff, not a lock). Addresses the account logged in from recently are not
//! held back by this bound (only by the two above), so the owner at home or on a known
//! phone always gets through, however hard strangers try.
//!
//! A guess takes a token before the password is checked, so that many guesses at once
//! cannot all slip through; a right password gives it back. All in memory (a restart
//! forgets, which only makes the bound start afresh), in a bounded table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords an account may take from unknown addresses before the backoff starts.
pub(crate) const FAILURE_BURST: f64 = 100.0;
/// One more wrong password allowed per this time once the burst is spent.
pub(crate) const FAILURE_REFILL: Duration = Duration::from_secs(6);
/// Addresses remembered per account as ones it logged in from.
const KNOWN_ADDRESSES: usize = 8;
/// How long an address stays known after a login from it.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Accounts tracked at once; past this, accounts with a full bucket and no known address
/// are forgotten first (they cost nothing to start again).
const MAX_ACCOUNTS: usize = 10_000;

struct AccountGuesses {
    tokens: f64,
    updated: Instant,
    /// Addresses with a recent successful login, and when.
    known: Vec<(IpAddr, Instant)>,
}

impl AccountGuesses {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed / FAILURE_REFILL.as_secs_f64()).min(FAILURE_BURST);
        self.updated = now;
        self.known
            .retain(|(_, at)| now.duration_since(*at) < KNOWN_FOR);
    }

    fn knows(&self, address: Option<IpAddr>) -> bool {
        address.is_some_and(|address| self.known.iter().any(|(known, _)| *known == address))
    }
}

/// What [`LoginAttempts::begin`] took, to give back on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// A known address: nothing taken.
    Known,
    /// One token taken from the account's bucket.
    Token,
}

#[derive(Default)]
pub(crate) struct LoginAttempts {
    accounts: Mutex<HashMap<String, AccountGuesses>>,
}

impl LoginAttempts {
    /// Before checking a password for `user_id` from `address` (already reduced to the
    /// key its address is limited by): a reservation, or how many milliseconds to wait.
    pub(crate) fn begin(&self, user_id: &str, address: Option<IpAddr>) -> Result<Reservation, u64> {
        self.begin_at(user_id, address, Instant::now())
    }

    /// The password was right: the token is given back and the address remembered.
    pub(crate) fn succeeded(&self, user_id: &str, address: Option<IpAddr>, taken: Reservation) {
        let now = Instant::now();
        let mut accounts = self.lock();
        let Some(account) = accounts.get_mut(user_id) else {
            return;
        };
        account.refill(now);
        if taken == Reservation::Token {
            account.tokens = (account.tokens + 1.0).min(FAILURE_BURST);
        }
        if let Some(address) = address {
            account.known.retain(|(known, _)| *known != address);
            if account.known.len() == KNOWN_ADDRESSES {
                account.known.remove(0);
            }
            account.known.push((address, now));
        }
    }

    fn begin_at(
        &self,
        user_id: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<Reservation, u64> {
        let mut accounts = self.lock();
        if accounts.len() >= MAX_ACCOUNTS && !accounts.contains_key(user_id) {
            accounts.retain(|_, account| {
                account.refill(now);
                account.tokens < FAILURE_BURST || !account.known.is_empty()
            });
            if accounts.len() >= MAX_ACCOUNTS {
                // Every entry is in use: forget those without known addresses.
                accounts.retain(|_, account| !account.known.is_empty());
            }
            if accounts.len() >= MAX_ACCOUNTS {
                accounts.clear();
            }
        }
        let account = accounts
            .entry(user_id.to_owned())
            .or_insert_with(|| AccountGuesses {
                tokens: FAILURE_BURST,
                updated: now,
                known: Vec::new(),
            });
        account.refill(now);
        if account.knows(address) {
            return Ok(Reservation::Known);
        }
        if account.tokens >= 1.0 {
            account.tokens -= 1.0;
            return Ok(Reservation::Token);
        }
        let missing = (1.0 - account.tokens) * FAILURE_REFILL.as_secs_f64() * 1000.0;
        // At most the refill time in milliseconds: a small positive number.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let wait_ms = missing.ceil().max(1.0) as u64;
        Err(wait_ms)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AccountGuesses>> {
        self.accounts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([203, 0, 113, last]))
    }

    #[test]
    fn strangers_spend_the_account_bound_but_a_known_address_gets_through() {
        let attempts = LoginAttempts::default();
        let now = Instant::now();
        let owner = address(1);
        let taken = attempts.begin_at("@a:x", owner, now).expect("first login");
        attempts.succeeded("@a:x", owner, taken);
        // 100 wrong guesses from 100 addresses spend the bound...
        for n in 0..100u8 {
            attempts
                .begin_at("@a:x", address(100 + n), now)
                .expect("within the bound");
        }
        let wait = attempts
            .begin_at("@a:x", address(250), now)
            .expect_err("spent");
        assert!(wait > 0 && wait <= 6000, "{wait}");
        // ...but not for the owner, nor for another account.
        assert_eq!(
            attempts.begin_at("@a:x", owner, now),
            Ok(Reservation::Known)
        );
        assert!(attempts.begin_at("@b:x", address(250), now).is_ok());
        // One guess more per refill time.
        let later = now + FAILURE_REFILL;
        assert!(attempts.begin_at("@a:x", address(250), later).is_ok());
        assert!(attempts.begin_at("@a:x", address(251), later).is_err());
    }

    #[test]
    fn a_right_password_gives_its_token_back() {
        let attempts = LoginAttempts::default();
        for _ in 0..500 {
            let taken = attempts.begin("@a:x", None).expect("never spent");
            attempts.succeeded("@a:x", None, taken);
        }
    }

    #[test]
    fn the_table_stays_bounded() {
        let attempts = LoginAttempts::default();
        let now = Instant::now();
        for n in 0..MAX_ACCOUNTS + 10 {
            let _ = attempts.begin_at(&format!("@{n}:x"), None, now);
        }
        assert!(attempts.lock().len() <= MAX_ACCOUNTS);
    }
}
