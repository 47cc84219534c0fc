//! `did:key` identifiers for Ed25519 keys and their DID documents.
//!
//! A mycel DID is `did:key:z` followed by base58btc(0xed 0x01 ‖ 32-byte public key): the multicodec
//! `ed25519-pub` prefix, multibase `z`. Resolution follows the W3C CCG did:key method: the document
//! is derived from the key alone, with no network access.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Value, json};

use crate::error::{IdentityError, Result};
use crate::key::{PUBLIC_KEY_LEN, PublicKey};

/// The DID method prefix.
pub const DID_KEY_PREFIX: &str = "did:key:";
/// Multicodec `ed25519-pub` (0xed) as an unsigned varint.
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];
/// Multicodec `x25519-pub` (0xec) as an unsigned varint.
const X25519_MULTICODEC: [u8; 2] = [0xec, 0x01];
/// Longest DID string we accept before even decoding (a real one is 56 characters).
const MAX_DID_LEN: usize = 128;

/// An Ed25519 `did:key` DID. Parsing checks the method, multibase, multicodec, length and key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Did(PublicKey);

impl Did {
    /// The DID of a public key.
    pub fn from_public_key(key: PublicKey) -> Self {
        Self(key)
    }

    /// The public key this DID names.
    pub fn public_key(&self) -> PublicKey {
        self.0
    }

    /// The method-specific identifier: `z6Mk…` (multibase base58btc of the multicodec key).
    pub fn multibase(&self) -> String {
        multibase_key(ED25519_MULTICODEC, self.0.as_bytes())
    }

    /// The id of the DID's Ed25519 verification method: `did:key:z6Mk…#z6Mk…`.
    pub fn key_id(&self) -> String {
        format!("{self}#{}", self.multibase())
    }

    /// Parses `did:key:z6Mk…`. Anything else is an [`IdentityError::InvalidDid`] saying why.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason| IdentityError::InvalidDid {
            did: text.chars().take(MAX_DID_LEN).collect(),
            reason,
        };
        if text.len() > MAX_DID_LEN {
            return Err(bad("too long for an Ed25519 did:key"));
        }
        let Some(rest) = text.strip_prefix("did:") else {
            return Err(bad("not a DID (must start with `did:`)"));
        };
        let Some(id) = rest.strip_prefix("key:") else {
            return Err(bad("unsupported DID method (only did:key is supported)"));
        };
        if id.contains(['#', '?', '/', ';']) {
            return Err(bad("a DID URL (path, query or fragment) is not a DID"));
        }
        let Some(encoded) = id.strip_prefix('z') else {
            return Err(bad(
                "unsupported multibase (did:key uses base58btc, prefix `z`)",
            ));
        };
        let bytes = bs58::decode(encoded)
            .into_vec()
            .map_err(|_| bad("invalid base58btc encoding"))?;
        if bytes.len() < 2 || bytes[..2] != ED25519_MULTICODEC {
            return Err(bad(
                "unsupported key type (only ed25519-pub, multicodec 0xed)",
            ));
        }
        let key: &[u8; PUBLIC_KEY_LEN] = bytes[2..]
            .try_into()
            .map_err(|_| bad("wrong key length (an Ed25519 key is 32 bytes)"))?;
        let key = PublicKey::from_bytes(key).map_err(|e| match e {
            IdentityError::WeakKey => bad("weak (small-order) Ed25519 key"),
            _ => bad("not a valid Ed25519 public key"),
        })?;
        Ok(Self(key))
    }

    /// The X25519 key-agreement key derived from this Ed25519 key (birational map), multibase form
    /// `z6LS…`, as the did:key method's encryption key derivation gives it.
    pub fn x25519_multibase(&self) -> String {
        let montgomery = self.0.verifying_key().to_montgomery();
        multibase_key(X25519_MULTICODEC, montgomery.as_bytes())
    }

    /// Resolves the DID into its DID document (W3C DID Core, did:key method), JSON-LD.
    pub fn document(&self, format: DocumentFormat) -> Value {
        let did = self.to_string();
        let ed_id = self.key_id();
        let x_id = format!("{did}#{}", self.x25519_multibase());
        let (context, ed_method, x_method) = match format {
            DocumentFormat::Multikey => (
                json!([
                    "https://www.w3.org/ns/did/v1",
                    "https://w3id.org/security/multikey/v1"
                ]),
                json!({
                    "id": ed_id, "type": "Multikey", "controller": did,
                    "publicKeyMultibase": self.multibase(),
                }),
                json!({
                    "id": x_id, "type": "Multikey", "controller": did,
                    "publicKeyMultibase": self.x25519_multibase(),
                }),
            ),
            DocumentFormat::Ed25519VerificationKey2018 => {
                let x_key = self.0.verifying_key().to_montgomery();
                (
                    json!([
                        "https://www.w3.org/ns/did/v1",
                        "https://w3id.org/security/suites/ed25519-2018/v1",
                        "https://w3id.org/security/suites/x25519-2019/v1"
                    ]),
                    json!({
                        "id": ed_id, "type": "Ed25519VerificationKey2018", "controller": did,
                        "publicKeyBase58": bs58::encode(self.0.as_bytes()).into_string(),
                    }),
                    json!({
                        "id": x_id, "type": "X25519KeyAgreementKey2019", "controller": did,
                        "publicKeyBase58": bs58::encode(x_key.as_bytes()).into_string(),
                    }),
                )
            }
        };
        json!({
            "@context": context,
            "id": did,
            "verificationMethod": [ed_method, x_method],
            "assertionMethod": [ed_id],
            "authentication": [ed_id],
            "capabilityInvocation": [ed_id],
            "capabilityDelegation": [ed_id],
            "keyAgreement": [x_id],
        })
    }
}

/// How verification methods are expressed in a resolved DID document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DocumentFormat {
    /// `Multikey` with `publicKeyMultibase` (the did:key method's current default).
    #[default]
    Multikey,
    /// `Ed25519VerificationKey2018` / `X25519KeyAgreementKey2019` with `publicKeyBase58`, the form of
    /// the did:key test vectors and of older tools.
    Ed25519VerificationKey2018,
}

fn multibase_key(codec: [u8; 2], key: &[u8; 32]) -> String {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&codec);
    bytes.extend_from_slice(key);
    format!("z{}", bs58::encode(bytes).into_string())
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DID_KEY_PREFIX}{}", self.multibase())
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Did({self})")
    }
}

impl FromStr for Did {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for Did {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Did {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Keypair, SecretKey};
    use proptest::prelude::*;

    /// (seed, DID, Ed25519 publicKeyBase58, X25519 key id, X25519 publicKeyBase58) from the W3C CCG
    /// did:key test vectors (test-vectors/ed25519-x25519.json).
    const VECTORS: [(&str, &str, &str, &str, &str); 5] = [
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
            "4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS",
            "z6LShs9GGnqk85isEBzzshkuVWrVKsRp24GnDuHk8QWkARMW",
            "7By6kV2t2d188odEM4ExAve1UithKT6dLva4dwsDT3ak",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000001",
            "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
            "6ASf5EcmmEHTgDJ4X4ZT5vT6iHVJBXPg5AN5YoTCpGWt",
            "z6LSrHyXiPBhUbvPUtyUCdf32sniiMGPTAesgHrtEa4FePtr",
            "FcoNC5NqP9CePWbhfz95iHaEsCjGkZUioK9Ck7Qiw286",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000002",
            "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf",
            "8pM1DN3RiT8vbom5u1sNryaNT1nyL8CTTW3b5PwWXRBH",
            "z6LSkkqoZRC34AEpbkhZCqLDcHQVAxuLpQ7kC8XCXMVUfvjE",
            "A5fe37PAxhX5WNKngBpGHhC1KpNE7nwbK9oX2tqwxYxU",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000003",
            "did:key:z6MkvqoYXQfDDJRv8L4wKzxYeuKyVZBfi9Qo6Ro8MiLH3kDQ",
            "HPYVwAQmskwT1qEEeRzhoomyfyupJGASQQtCXSNG8XS2",
            "z6LSiUo6AEDat8Ze4nQzDo67SGuHLLwsUGkxndHGUjsywHow",
            "7ocvdvQinfqtyQ3Dh9aA7ggoVCQkmfaoueZazHETDv3B",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000004",
            "did:key:z6MkwW6aqMnjgrhJXFUko3NnZPGzVpkNzhYK7yEhnsibmLwL",
            "J3qYF7YJMKCqQke47UQwiHizgFUXapHxRxKmxbkar89x",
            "z6LSrGb3qm4xMCEBjvwkLb2WEcXfTM94Tu1RyGCbT5wbg8i9",
            "FbQtKTG6FjWSeYZyowWYv2KBcCbwmHqH6HUuxdJ4xkwP",
        ),
    ];

    #[test]
    fn w3c_test_vectors() {
        for (seed, did, ed_b58, x_id, x_b58) in VECTORS {
            let pair = Keypair::from_secret(&SecretKey::from_hex(seed).expect("seed"));
            let ours = Did::from_public_key(pair.public());
            assert_eq!(ours.to_string(), did);
            assert_eq!(Did::parse(did).expect("parse"), ours);
            assert_eq!(ours.x25519_multibase(), x_id);

            let doc = ours.document(DocumentFormat::Ed25519VerificationKey2018);
            let methods = doc["verificationMethod"].as_array().expect("methods");
            assert_eq!(methods[0]["publicKeyBase58"], ed_b58);
            assert_eq!(methods[0]["id"], format!("{did}#{}", &did[8..]));
            assert_eq!(methods[1]["publicKeyBase58"], x_b58);
            assert_eq!(methods[1]["id"], format!("{did}#{x_id}"));
            assert_eq!(doc["keyAgreement"][0], format!("{did}#{x_id}"));
            for relation in [
                "authentication",
                "assertionMethod",
                "capabilityInvocation",
                "capabilityDelegation",
            ] {
                assert_eq!(doc[relation][0], methods[0]["id"], "{relation}");
            }
        }
    }

    #[test]
    fn multikey_document_names_the_key() {
        let did = Did::parse(VECTORS[0].1).expect("parse");
        let doc = did.document(DocumentFormat::Multikey);
        assert_eq!(doc["id"], VECTORS[0].1);
        assert_eq!(doc["verificationMethod"][0]["type"], "Multikey");
        assert_eq!(
            doc["verificationMethod"][0]["publicKeyMultibase"],
            &VECTORS[0].1[8..]
        );
        assert_eq!(
            doc["verificationMethod"][1]["publicKeyMultibase"],
            VECTORS[0].3
        );
    }

    #[test]
    fn malformed_dids_are_rejected_with_a_reason() {
        let valid = VECTORS[0].1;
        let p256 = "did:key:zDnaerDaTF5BXEavCrfRZEk316dpbLsfPDZ3WJ5hRTPFU2169";
        let x25519 = format!("did:key:{}", VECTORS[0].3);
        let short = format!(
            "did:key:z{}",
            bs58::encode([0xed, 0x01, 1, 2, 3]).into_string()
        );
        let mut weak = vec![0xed, 0x01, 1];
        weak.extend([0u8; 31]);
        let weak = format!("did:key:z{}", bs58::encode(weak).into_string());
        let mut long_key = vec![0xed, 0x01];
        long_key.extend([9u8; 33]);
        let long_key = format!("did:key:z{}", bs58::encode(long_key).into_string());
        let long_id = format!("{valid}{}", "1".repeat(200));
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "not a DID"),
            ("did:web:example.com".into(), "unsupported DID method"),
            ("did:key:".into(), "unsupported multibase"),
            (
                valid.replacen("did:key:z", "did:key:f", 1),
                "unsupported multibase",
            ),
            (valid.replacen('6', "0", 1), "invalid base58btc"),
            (valid.replacen("did:", "DID:", 1), "not a DID"),
            (p256.into(), "unsupported key type"),
            (x25519, "unsupported key type"),
            (short, "wrong key length"),
            (long_key, "wrong key length"),
            (weak, "weak"),
            (format!("{valid}#key-1"), "DID URL"),
            (long_id, "too long"),
        ];
        for (input, reason) in cases {
            match Did::parse(&input) {
                Err(IdentityError::InvalidDid { reason: got, .. }) => {
                    assert!(got.contains(reason), "{input}: {got} (wanted {reason})")
                }
                other => panic!("{input}: expected an error, got {other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn did_round_trips(seed in any::<[u8; 32]>()) {
            let pair = Keypair::from_secret(&SecretKey::from_bytes(seed));
            let did = Did::from_public_key(pair.public());
            let text = did.to_string();
            prop_assert!(text.starts_with("did:key:z6Mk"));
            prop_assert_eq!(Did::parse(&text).expect("parse"), did);
            let json = serde_json::to_string(&did).expect("json");
            prop_assert_eq!(serde_json::from_str::<Did>(&json).expect("json back"), did);
        }
    }
}
