//! Ed25519 account and node keys.
//!
//! [`Keypair`] holds a secret that is zeroized on drop and never shown by `Debug`. [`PublicKey`] is
//! checked once at construction: it is a valid point and not of small order, so every later
//! verification can rely on it.

use std::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{IdentityError, Result};

/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 secret seed in bytes.
pub const SECRET_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 secret seed (32 bytes). Zeroized on drop; `Debug` prints a placeholder.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; SECRET_KEY_LEN]);

impl SecretKey {
    /// Wraps 32 secret bytes.
    pub fn from_bytes(bytes: [u8; SECRET_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses a secret from a slice that must be exactly 32 bytes.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self> {
        let array: [u8; SECRET_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| IdentityError::InvalidSecretKey("a seed must be exactly 32 bytes"))?;
        Ok(Self(array))
    }

    /// Parses a secret from 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        hex::decode_to_slice(text.trim(), bytes.as_mut_slice()).map_err(|_| {
            IdentityError::InvalidSecretKey("expected 64 hex characters (a 32-byte seed)")
        })?;
        Ok(Self(*bytes))
    }

    /// The raw secret bytes. Handle with care: copies must be zeroized too.
    pub fn expose(&self) -> &[u8; SECRET_KEY_LEN] {
        &self.0
    }

    /// Hex encoding of the secret, zeroized when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// An Ed25519 key pair: an account key or a node key.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    /// Generates a fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        rand::fill(seed.as_mut_slice());
        Self::from_secret(&SecretKey(*seed))
    }

    /// Rebuilds a key pair from its secret seed.
    pub fn from_secret(secret: &SecretKey) -> Self {
        Self {
            signing: SigningKey::from_bytes(&secret.0),
        }
    }

    /// The secret seed (zeroized on drop).
    pub fn secret(&self) -> SecretKey {
        SecretKey(self.signing.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A validated Ed25519 public key: a canonical, decompressible point that is not of small order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses and validates 32 bytes. Small-order ("weak") keys are refused.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self> {
        let key = VerifyingKey::from_bytes(bytes)
            .map_err(|_| IdentityError::InvalidPublicKey("not a point on the Ed25519 curve"))?;
        if key.is_weak() {
            return Err(IdentityError::WeakKey);
        }
        Ok(Self(key))
    }

    /// Parses a slice that must be exactly 32 bytes.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self> {
        let array: &[u8; PUBLIC_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| IdentityError::InvalidPublicKey("a public key is exactly 32 bytes"))?;
        Self::from_bytes(array)
    }

    /// The 32-byte compressed point.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The 32-byte compressed point, borrowed.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.0.as_bytes()
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.as_bytes()))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}

/// An Ed25519 signature (64 bytes). Only its length is checked here; validity is checked on verify.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// Wraps 64 bytes.
    pub fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses a slice that must be exactly 64 bytes.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self> {
        let array: [u8; SIGNATURE_LEN] = bytes
            .try_into()
            .map_err(|_| IdentityError::MalformedSignature("a signature is exactly 64 bytes"))?;
        Ok(Self(array))
    }

    /// Parses 128 hex characters.
    pub fn from_hex(text: &str) -> Result<Self> {
        let mut bytes = [0u8; SIGNATURE_LEN];
        hex::decode_to_slice(text.trim(), &mut bytes)
            .map_err(|_| IdentityError::MalformedSignature("expected 128 hex characters"))?;
        Ok(Self(bytes))
    }

    /// The raw 64 bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }

    /// The raw 64 bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub(crate) fn to_dalek(self) -> ed25519_dalek::Signature {
        ed25519_dalek::Signature::from_bytes(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Public keys and signatures travel in JSON as lower-case hex.
mod hex_serde {
    use super::*;
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    impl Serialize for PublicKey {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.collect_str(self)
        }
    }

    impl<'de> Deserialize<'de> for PublicKey {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            let text = String::deserialize(d)?;
            let mut bytes = [0u8; PUBLIC_KEY_LEN];
            hex::decode_to_slice(&text, &mut bytes).map_err(D::Error::custom)?;
            PublicKey::from_bytes(&bytes).map_err(D::Error::custom)
        }
    }

    impl Serialize for Signature {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.collect_str(self)
        }
    }

    impl<'de> Deserialize<'de> for Signature {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            Signature::from_hex(&String::deserialize(d)?).map_err(D::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = SecretKey::from_bytes([0xAB; 32]);
        let pair = Keypair::from_secret(&secret);
        let shown = format!("{secret:?} {pair:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn secret_round_trips_through_hex() {
        let pair = Keypair::generate();
        let again =
            Keypair::from_secret(&SecretKey::from_hex(&pair.secret().to_hex()).expect("hex"));
        assert_eq!(pair.public(), again.public());
    }

    #[test]
    fn bad_secret_hex_is_refused() {
        assert!(SecretKey::from_hex("zz").is_err());
        assert!(SecretKey::from_hex(&"00".repeat(31)).is_err());
    }
}
