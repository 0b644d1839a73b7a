//! Password hashing with Argon2id.
//!
//! Parameters: 7 MiB of memory, 5 passes, 1 lane, one of OWASP's equivalent Argon2id
//! settings, chosen for its low memory: a Raspberry Pi server hashes on login, and a 19 MiB
//! block per hash (the crate's default) is what made other servers' memory grow for good.
//! Stored hashes are PHC strings, so the parameters can change later without breaking old
//! hashes: verification reads them from the string.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory per hash, in KiB.
pub(crate) const MEMORY_KIB: u32 = 7 * 1024;
const PASSES: u32 = 5;
const LANES: u32 = 1;

/// The longest password accepted, in bytes: hashing is expensive, input is not free.
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;

/// Makes the allocator give large blocks (such as each hash's Argon2 memory) back to the
/// system when freed. glibc otherwise raises its mmap threshold after the first large free
/// and keeps later blocks on the heap, so the process would grow by one block for good.
#[allow(unsafe_code)]
pub fn return_large_allocations_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it is called once, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with a fresh random salt, as a PHC string.
pub(crate) fn hash(password: &str) -> Result<String, String> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "passwords are limited to {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    let salt = SaltString::encode_b64(&super::random_bytes::<16>()).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| err.to_string())
}

/// Whether `password` matches the stored PHC hash. A malformed hash never matches.
pub(crate) fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(stored).is_ok_and(|parsed| {
        argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let stored = hash("correct horse").expect("hash");
        assert!(
            stored.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"),
            "{stored}"
        );
        assert!(verify("correct horse", &stored));
        assert!(!verify("wrong horse", &stored));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash("same").expect("hash"), hash("same").expect("hash"));
    }

    #[test]
    fn garbage_hashes_and_huge_passwords_never_match() {
        assert!(!verify("x", "not a phc string"));
        assert!(hash(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
