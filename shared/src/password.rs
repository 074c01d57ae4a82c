//! Tenant role passwords: generated from the OS CSPRNG and sent to PostgreSQL only as a
//! SCRAM-SHA-256 verifier, so the plaintext never appears in a statement or a server log.

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, Rng, TryRngCore};
use sha2::{Digest, Sha256};

/// Characters of generated passwords: URL-safe without escaping, unambiguous in a URL.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// 40 characters of a 62-letter alphabet: about 238 bits.
pub const PASSWORD_LEN: usize = 40;
/// PostgreSQL's own default iteration count for SCRAM.
const SCRAM_ITERATIONS: u32 = 4096;

/// A new random password from the operating system's CSPRNG.
pub fn generate() -> String {
    let mut rng = OsRng.unwrap_err();
    (0..PASSWORD_LEN).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// The `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` verifier PostgreSQL stores.
pub fn scram_verifier(password: &str) -> String {
    let mut salt = [0u8; 16];
    OsRng.unwrap_err().fill(&mut salt);
    scram_verifier_with_salt(password, &salt, SCRAM_ITERATIONS)
}

fn scram_verifier_with_salt(password: &str, salt: &[u8], iterations: u32) -> String {
    let salted = pbkdf2_sha256(password.as_bytes(), salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!("SCRAM-SHA-256${iterations}:{}${}:{}", B64.encode(salt), B64.encode(stored_key), B64.encode(server_key))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256 for one 32-byte block, which is all SCRAM-SHA-256 needs.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        out.iter_mut().zip(u.iter()).for_each(|(o, b)| *o ^= b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_and_distinct() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn pbkdf2_matches_rfc7914_vector() {
        // RFC 7914 §11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1, first 32 bytes.
        let out = pbkdf2_sha256(b"passwd", b"salt", 1);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc");
    }

    #[test]
    fn verifier_has_postgres_shape() {
        let v = scram_verifier("secret");
        assert!(v.starts_with("SCRAM-SHA-256$4096:"));
        assert_eq!(v.matches('$').count(), 2);
        assert!(!v.contains("secret"));
    }
}
