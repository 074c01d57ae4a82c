//! Secrets at rest: tenant role passwords sealed with ChaCha20-Poly1305 under a key that
//! never lives in the control plane (an environment variable or a key file).
//!
//! A sealed value reads `tmenc1:<key id>:<base64(nonce || ciphertext || tag)>`. The tenant's
//! slug is the associated data, so a sealed password copied onto another tenant's row does
//! not open. The key id names the key (a hash of it, not the key), so a wrong key is told
//! apart from a damaged value, and rotation knows which key opens which row.
//! Neither the key nor a plaintext ever appears in an error or a log line.

use std::path::{Path, PathBuf};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use ring::{
    aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN},
    hmac,
    rand::{SecureRandom, SystemRandom},
};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The prefix of every sealed value (format version 1).
const SEALED_PREFIX: &str = "tmenc1:";
const KEY_LEN: usize = 32;

/// One 256-bit key and its id.
#[derive(Clone)]
pub struct SecretKey {
    bytes: [u8; KEY_LEN],
    id: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

impl SecretKey {
    /// Parses the base64 text of a key; `source` names where it came from, for the error.
    pub fn parse(text: &str, source: &str) -> Result<SecretKey> {
        let invalid = || {
            Error::Invalid(format!(
                "the secret key in {source} is not valid: it must be 32 bytes in base64 (make one with `tenantctl key generate --file PATH`)"
            ))
        };
        let raw = B64.decode(text.trim()).map_err(|_| invalid())?;
        let bytes: [u8; KEY_LEN] = raw.try_into().map_err(|_| invalid())?;
        let digest = Sha256::new().chain_update(b"tenant-master key id\0").chain_update(bytes).finalize();
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(SecretKey { bytes, id })
    }

    /// Reads a key file.
    pub fn read(path: &Path) -> Result<SecretKey> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(format!(
                "cannot read the secret key file {}: {e} (make one with `tenantctl key generate --file {}`, or set TENANT_MASTER_SECRET_KEY_FILE)",
                path.display(),
                path.display()
            ))
        })?;
        SecretKey::parse(&text, &path.display().to_string())
    }

    /// A new random key as base64 text, from the operating system's CSPRNG.
    pub fn generate() -> String {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut bytes).expect("the OS random source works");
        B64.encode(bytes)
    }

    /// The key's id: 8 hex digits of a hash of it, safe to show.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.bytes).expect("a 32-byte key fits ChaCha20-Poly1305"))
    }

    /// Seals `plaintext`, bound to `context` (the tenant's slug).
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("the OS random source works");
        let mut data = plaintext.as_bytes().to_vec();
        self.aead()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut data)
            .expect("sealing a short value cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{SEALED_PREFIX}{}:{}", self.id, B64.encode(out))
    }

    fn open(&self, body: &str, context: &str) -> Option<String> {
        let raw = B64.decode(body).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let mut data = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self.aead().open_in_place(nonce, Aad::from(context.as_bytes()), &mut data).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    /// A password derived from the key for `purpose` (64 hex digits): the same on every
    /// worker, so nothing has to store it.
    pub fn derive_password(&self, purpose: &str) -> String {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.bytes), purpose.as_bytes());
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Where the keys come from: `TENANT_MASTER_SECRET_KEY` (the key itself) or
/// `secret_key_file`, plus an old key that still opens rows during a rotation.
#[derive(Clone, Default)]
pub struct KeySources {
    /// The key itself, from `TENANT_MASTER_SECRET_KEY`.
    pub inline: Option<String>,
    /// The key file (`secret_key_file`).
    pub file: Option<PathBuf>,
    /// The previous key's file while `tenantctl key rotate` re-seals: it only opens.
    pub old_file: Option<PathBuf>,
}

/// The current key (seals and opens) and an old one (opens only, while rotating).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    current: Option<SecretKey>,
    old: Option<SecretKey>,
}

impl Keyring {
    /// A keyring of one key.
    pub fn with_key(key: SecretKey) -> Keyring {
        Keyring { current: Some(key), old: None }
    }

    /// Loads the configured keys; no key at all is fine until one is needed.
    pub fn load(sources: &KeySources) -> Result<Keyring> {
        let current = match (&sources.inline, &sources.file) {
            (Some(text), _) => Some(SecretKey::parse(text, "TENANT_MASTER_SECRET_KEY")?),
            (None, Some(path)) => Some(SecretKey::read(path)?),
            (None, None) => None,
        };
        let old = sources.old_file.as_deref().map(SecretKey::read).transpose()?;
        Ok(Keyring { current, old })
    }

    /// The key that seals, or one sentence saying how to configure it.
    pub fn current(&self) -> Result<&SecretKey> {
        self.current.as_ref().ok_or_else(|| {
            Error::Invalid(
                "no secret key is configured: set TENANT_MASTER_SECRET_KEY_FILE (or secret_key_file) to a key file made with `tenantctl key generate --file PATH`"
                    .into(),
            )
        })
    }

    /// Seals a tenant password under the current key.
    pub fn seal(&self, plaintext: &str, slug: &str) -> Result<String> {
        Ok(self.current()?.seal(plaintext, slug))
    }

    /// Whether a stored value is sealed (else it is a plaintext left from before encryption).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_PREFIX)
    }

    /// The key id a sealed value names.
    pub fn key_id_of(stored: &str) -> Option<&str> {
        stored.strip_prefix(SEALED_PREFIX)?.split_once(':').map(|(id, _)| id)
    }

    /// Opens tenant `slug`'s sealed password with whichever configured key sealed it.
    pub fn open(&self, stored: &str, slug: &str) -> Result<String> {
        self.open_as(stored, slug, &format!("the password of tenant '{slug}'"))
    }

    /// Opens a value sealed for `context` (a tenant's slug, or `host:<name>`); `what` names
    /// it in errors ("the admin URL of host 'eu2'").
    pub fn open_as(&self, stored: &str, context: &str, what: &str) -> Result<String> {
        let Some((id, body)) = stored.strip_prefix(SEALED_PREFIX).and_then(|rest| rest.split_once(':')) else {
            return Err(Error::fatal(format!("{what} is stored unencrypted: run `tenantctl migrate` with the secret key configured")));
        };
        let key = [self.current.as_ref(), self.old.as_ref()].into_iter().flatten().find(|k| k.id == id);
        let Some(key) = key else {
            let configured = self.current.as_ref().map_or("none".to_owned(), |k| k.id.clone());
            return Err(Error::fatal(format!(
                "{what} was sealed with key {id}, but the configured key is {configured}: configure key {id} (or pass it as TENANT_MASTER_OLD_SECRET_KEY_FILE and run `tenantctl key rotate`)"
            )));
        };
        key.open(body, context).ok_or_else(|| {
            Error::fatal(format!("{what} does not open with key {id}: the stored value was altered or copied from elsewhere"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::parse(&SecretKey::generate(), "test").unwrap()
    }

    #[test]
    fn sealed_values_open_only_for_their_tenant_and_key() {
        let (a, b) = (key(), key());
        let ring = Keyring::with_key(a.clone());
        let sealed = ring.seal("s3cret-password", "acme").unwrap();
        assert!(Keyring::is_sealed(&sealed) && !sealed.contains("s3cret"));
        assert_eq!(Keyring::key_id_of(&sealed), Some(a.id()));
        assert_eq!(ring.open(&sealed, "acme").unwrap(), "s3cret-password");
        // Bound to the slug: moved onto another tenant's row it does not open.
        assert!(ring.open(&sealed, "other").unwrap_err().to_string().contains("altered or copied"));
        // Another key says which key is needed, without showing any key.
        let err = Keyring::with_key(b.clone()).open(&sealed, "acme").unwrap_err().to_string();
        assert!(err.contains(a.id()) && err.contains(b.id()), "{err}");
        // A rotation keyring opens rows of the old key.
        let rotating = Keyring { current: Some(b), old: Some(a) };
        assert_eq!(rotating.open(&sealed, "acme").unwrap(), "s3cret-password");
        // Plaintext left from before encryption is refused, not passed through.
        assert!(ring.open("plain", "acme").unwrap_err().to_string().contains("unencrypted"));
    }

    #[test]
    fn bad_keys_are_one_sentence_without_the_key() {
        let err = SecretKey::parse("c2hvcnQ=", "key.txt").unwrap_err();
        assert!(err.is_usage() && err.to_string().contains("32 bytes") && !err.to_string().contains("c2hvcnQ"));
        assert!(Keyring::default().current().unwrap_err().to_string().contains("TENANT_MASTER_SECRET_KEY_FILE"));
    }

    #[test]
    fn derived_passwords_are_stable_per_key_and_purpose() {
        let a = key();
        assert_eq!(a.derive_password("op:t_acme"), a.derive_password("op:t_acme"));
        assert_ne!(a.derive_password("op:t_acme"), a.derive_password("op:t_other"));
        assert_ne!(a.derive_password("op:t_acme"), key().derive_password("op:t_acme"));
        assert_eq!(a.derive_password("x").len(), 64);
    }
}
