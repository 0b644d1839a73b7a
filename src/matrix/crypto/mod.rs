//! Cryptography of the pure core: our ed25519 signing key, signing and verifying JSON as the
//! spec's appendix "Signing JSON" describes, and password hashing. No I/O besides reading and
//! writing the key file.

pub mod password;
pub mod rotation;
pub mod signing;

pub use signing::{KeyId, SigningKey, VerifyError, sign_json, verify_json};

use base64::Engine as _;

/// Unpadded standard base64, the encoding the spec uses for keys, signatures and hashes.
pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Decodes standard base64, padded or not. Lenient about trailing bits, as other servers'
/// encoders are (the spec's own test seed has them set).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(text).ok()
}

/// `len` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source must work");
    bytes
}
