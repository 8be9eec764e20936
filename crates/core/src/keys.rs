//! WireGuard keys: base64 encoding exactly as `wg genkey` / `wg pubkey` use it.
//!
//! The private key type never prints its bytes: `Debug` is redacted so that a
//! stray `{:?}` in a log line cannot leak it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519::{PublicKey, StaticSecret};
use std::fmt;

/// A decoding failure, phrased for the person who pasted the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("is not valid base64")]
    Base64,
    #[error("decodes to {0} bytes, a WireGuard key has 32")]
    Length(usize),
}

/// Decodes a 32-byte key from base64 (leading and trailing whitespace ignored).
pub fn decode_key(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(text.trim().as_bytes())
        .map_err(|_| KeyError::Base64)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// Encodes a 32-byte key the way `wg` prints it.
pub fn encode_key(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

/// The gateway's static private key. Cloning is explicit; printing is redacted.
#[derive(Clone)]
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// A fresh key from the operating system's CSPRNG, clamped like `wg genkey`.
    pub fn generate() -> Self {
        let mut bytes = StaticSecret::random().to_bytes();
        clamp(&mut bytes);
        PrivateKey(StaticSecret::from(bytes))
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(PrivateKey(StaticSecret::from(decode_key(text)?)))
    }

    pub fn to_base64(&self) -> String {
        encode_key(&self.0.to_bytes())
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::from(&self.0)
    }

    pub fn secret(&self) -> &StaticSecret {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// Curve25519 clamping, as `wg genkey` applies to its output.
fn clamp(key: &mut [u8; 32]) {
    key[0] &= 248;
    key[31] &= 127;
    key[31] |= 64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_known_vector() {
        // Vector from the WireGuard documentation style: any 32 bytes roundtrip.
        let k = PrivateKey::generate();
        let again = PrivateKey::from_base64(&k.to_base64()).unwrap();
        assert_eq!(k.public_key().as_bytes(), again.public_key().as_bytes());
        assert_eq!(k.to_base64().len(), 44);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(decode_key("not base64!"), Err(KeyError::Base64));
        assert_eq!(decode_key("AAAA"), Err(KeyError::Length(3)));
    }

    #[test]
    fn debug_is_redacted() {
        let k = PrivateKey::generate();
        let shown = format!("{k:?}");
        assert!(!shown.contains(&k.to_base64()));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn generated_keys_are_clamped() {
        let k = PrivateKey::generate();
        let b = decode_key(&k.to_base64()).unwrap();
        assert_eq!(b[0] & 7, 0);
        assert_eq!(b[31] & 0xc0, 0x40);
    }
}
