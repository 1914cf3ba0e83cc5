//! Encryption of personal data at rest: AES-256-GCM under a key ring, and an HMAC-SHA256
//! blind index for uniqueness and look-up of encrypted values (e-mail, phone).
//!
//! A ciphertext is stored as `{key_id}:{base64(nonce || ciphertext || tag)}`, so the key that
//! wrote it is known and keys can rotate: new writes use the current (first) key, reads use
//! whichever key the value names, and `openrun keys rotate` re-encrypts everything under the
//! current key. The field name is bound to the ciphertext as associated data, so a value
//! cannot be moved to another column and still decrypt.

pub mod keyfile;

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

/// Bytes of an AES-256 key and of the blind-index key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// Why a value cannot be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The stored value is not `{key_id}:{base64}`.
    #[error("malformed ciphertext")]
    Malformed,
    /// The value names a key that is not in the ring.
    #[error("unknown data key id {0:?}")]
    UnknownKey(String),
    /// Wrong key, wrong field or tampered value.
    #[error("ciphertext does not authenticate")]
    Forged,
}

/// The data keys (the first is current) and the blind-index key.
#[derive(Clone)]
pub struct KeyRing {
    current: String,
    ciphers: HashMap<String, Aes256Gcm>,
    /// HMAC-SHA256 keyed with the blind-index key, cloned for each value.
    blind_index: Hmac<Sha256>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyRing(current: {}, keys: {})",
            self.current,
            self.ciphers.len()
        )
    }
}

/// A parsed data key: its id and 32 secret bytes (`Debug` shows the id only).
#[derive(Clone, Debug)]
pub struct DataKey {
    /// Stored beside every ciphertext the key writes.
    pub id: String,
    /// The AES-256 key.
    pub secret: SecretSlice<u8>,
}

impl DataKey {
    /// A fresh random key with the given id.
    pub fn generate(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: random_bytes(KEY_LEN).into(),
        }
    }

    /// `id:base64key`.
    pub fn to_setting(&self) -> String {
        format!(
            "{}:{}",
            self.id,
            STANDARD.encode(self.secret.expose_secret())
        )
    }
}

/// Parses `id:base64key,id:base64key,...` (the first is current). The error never repeats a key.
pub fn parse_data_keys(setting: &str) -> Result<Vec<DataKey>, String> {
    let mut keys: Vec<DataKey> = Vec::new();
    for (n, item) in setting.split(',').map(str::trim).enumerate() {
        let (id, key) = item
            .split_once(':')
            .ok_or_else(|| format!("entry {} is not id:base64key", n + 1))?;
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "entry {}: the key id must be letters, digits, - or _",
                n + 1
            ));
        }
        if keys.iter().any(|k| k.id == id) {
            return Err(format!("key id {id:?} appears twice"));
        }
        keys.push(DataKey {
            id: id.to_owned(),
            secret: decode_key(key)
                .map_err(|e| format!("key {id:?}: {e}"))?
                .into(),
        });
    }
    Ok(keys)
}

/// Decodes a base64 key of exactly 32 bytes.
pub fn decode_key(base64: &str) -> Result<Vec<u8>, String> {
    let bytes = STANDARD
        .decode(base64.trim())
        .map_err(|_| "not valid base64".to_string())?;
    if bytes.len() != KEY_LEN {
        return Err(format!("must be {KEY_LEN} bytes, got {}", bytes.len()));
    }
    Ok(bytes)
}

/// `n` bytes from the operating system's generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A random URL-safe token of 32 bytes (256 bits).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(32))
}

/// SHA-256 of a high-entropy token (lower-case hex), for storing tokens so a database read
/// cannot replay them.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl KeyRing {
    /// A ring over `keys` (the first is current). Needs at least one key.
    pub fn new(keys: &[DataKey], blind_index_key: SecretSlice<u8>) -> Result<Self, String> {
        let current = keys
            .first()
            .ok_or("at least one data key is needed")?
            .id
            .clone();
        let ciphers = keys
            .iter()
            .map(|k| {
                Aes256Gcm::new_from_slice(k.secret.expose_secret())
                    .map(|c| (k.id.clone(), c))
                    .map_err(|_| format!("key {:?} must be {KEY_LEN} bytes", k.id))
            })
            .collect::<Result<_, _>>()?;
        let blind_index = <Hmac<Sha256> as Mac>::new_from_slice(blind_index_key.expose_secret())
            .map_err(|_| "the blind-index key is not a valid HMAC key".to_string())?;
        Ok(Self {
            current,
            ciphers,
            blind_index,
        })
    }

    /// A ring of fresh random keys, for tests and tools.
    pub fn generate() -> Self {
        #[allow(clippy::expect_used)] // a generated key always has the right length
        Self::new(&[DataKey::generate("k1")], random_bytes(KEY_LEN).into())
            .expect("a generated key is valid")
    }

    /// The id of the key new values are written with.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Encrypts `plaintext` for the column `field` under the current key.
    pub fn encrypt(&self, field: &str, plaintext: &str) -> String {
        let cipher = &self.ciphers[&self.current];
        let nonce_bytes = random_bytes(NONCE_LEN);
        let nonce = Nonce::from_slice(&nonce_bytes);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: field.as_bytes(),
        };
        #[allow(clippy::expect_used)] // inputs are validated to a few hundred bytes
        let ciphertext = cipher
            .encrypt(nonce, payload)
            .expect("AES-GCM encrypts any input below 64 GiB");
        let mut sealed = nonce_bytes.clone();
        sealed.extend(ciphertext);
        format!("{}:{}", self.current, STANDARD.encode(sealed))
    }

    /// Decrypts a value written by [`encrypt`](Self::encrypt) for the same `field`.
    pub fn decrypt(&self, field: &str, stored: &str) -> Result<String, CryptoError> {
        let (key_id, data) = stored.split_once(':').ok_or(CryptoError::Malformed)?;
        let cipher = self
            .ciphers
            .get(key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_owned()))?;
        let sealed = STANDARD.decode(data).map_err(|_| CryptoError::Malformed)?;
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Malformed);
        }
        let (nonce, msg) = sealed.split_at(NONCE_LEN);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg,
                    aad: field.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Forged)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Forged)
    }

    /// Whether `stored` was written under an older key than the current one.
    pub fn is_stale(&self, stored: &str) -> bool {
        stored
            .split_once(':')
            .is_none_or(|(id, _)| id != self.current)
    }

    /// Re-encrypts `stored` under the current key.
    pub fn reencrypt(&self, field: &str, stored: &str) -> Result<String, CryptoError> {
        Ok(self.encrypt(field, &self.decrypt(field, stored)?))
    }

    /// The deterministic blind index of a normalised value: HMAC-SHA256 under the blind-index
    /// key (lower-case hex), with the kind mixed in so an e-mail and a phone never share one.
    pub fn blind_index(&self, kind: &str, normalised: &str) -> String {
        let mut mac = self.blind_index.clone();
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(normalised.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_including_korean_text_and_a_fresh_nonce_each_time() {
        let ring = KeyRing::generate();
        let a = ring.encrypt("member.name", "홍길동");
        let b = ring.encrypt("member.name", "홍길동");
        assert_ne!(a, b);
        assert!(a.starts_with("k1:"));
        assert_eq!(ring.decrypt("member.name", &a).unwrap(), "홍길동");
        assert!(matches!(
            ring.decrypt("member.email", &a),
            Err(CryptoError::Forged)
        ));
    }

    #[test]
    fn old_keys_still_decrypt_after_rotation() {
        let bidx: SecretSlice<u8> = random_bytes(KEY_LEN).into();
        let old = DataKey::generate("k1");
        let ring1 = KeyRing::new(std::slice::from_ref(&old), bidx.clone()).unwrap();
        let stored = ring1.encrypt("f", "x@example.com");
        let ring2 = KeyRing::new(&[DataKey::generate("k2"), old], bidx).unwrap();
        assert!(ring2.is_stale(&stored));
        let again = ring2.reencrypt("f", &stored).unwrap();
        assert!(again.starts_with("k2:") && !ring2.is_stale(&again));
        assert_eq!(ring2.decrypt("f", &again).unwrap(), "x@example.com");
        assert_eq!(ring1.blind_index("e", "a"), ring2.blind_index("e", "a"));
    }

    #[test]
    fn key_settings_are_checked_without_echoing_keys() {
        let k = DataKey::generate("main").to_setting();
        assert_eq!(parse_data_keys(&k).unwrap()[0].id, "main");
        assert!(
            parse_data_keys("main:c2hvcnQ=")
                .unwrap_err()
                .contains("32 bytes")
        );
        assert!(parse_data_keys("nokey").is_err());
        assert!(
            parse_data_keys(&format!("{k},{k}"))
                .unwrap_err()
                .contains("twice")
        );
    }
}
