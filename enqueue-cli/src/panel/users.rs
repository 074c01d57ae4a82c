//! The panel's users (managed by `tenantctl admin user ...`). Passwords come from stdin or
//! `TENANT_MASTER_ADMIN_PASSWORD`, never argv, and are kept only as argon2id hashes.

use argon2::{
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
    Argon2,
};
use tenant_master::{Error, Result};

/// What a user may do: `viewer` sees everything and changes nothing.
pub const ROLES: &[&str] = &["admin", "viewer"];

/// The variable a script sets instead of typing the password.
pub const PASSWORD_ENV: &str = "TENANT_MASTER_ADMIN_PASSWORD";

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Refuses a user name the table would refuse, in one sentence.
pub fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if ok {
        return Ok(());
    }
    Err(Error::Invalid(format!("'{name}' is not a user name: start with a-z, then a-z, 0-9, '_', '.' or '-', at most 63 characters")))
}

/// The argon2id hash (a PHC string with its own salt) of `password`.
pub fn hash(password: &str) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes make a valid salt");
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 hashes any password").to_string()
}

/// Whether `password` matches `stored` (a PHC string); a malformed hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash of a password nobody has, checked when the user does not exist, so a wrong
/// name takes as long to refuse as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&base64::Engine::encode(&base64::engine::general_purpose::STANDARD, rand::random::<[u8; 24]>())))
}

/// Refuses a role that is not one of [`ROLES`], in one sentence naming them.
pub fn check_role(role: &str) -> Result<()> {
    if ROLES.contains(&role) {
        return Ok(());
    }
    Err(tenant_master::error::unknown_value("role", role, ROLES, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let stored = hash("correct horse battery");
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &stored));
        assert!(!verify("correct horse batterY", &stored));
        assert!(!verify("correct horse battery", "not a hash"));
        assert_ne!(stored, hash("correct horse battery"), "each hash has its own salt");
    }

    #[test]
    fn user_names() {
        assert!(check_name("alice").is_ok() && check_name("ops.bob-2").is_ok());
        for bad in ["", "Alice", "1bob", "a b", "a'b", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
