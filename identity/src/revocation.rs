//! Revocation of consortium memberships: a consortium admin (a credential issuer) signs "`subject`
//! is no longer a member of `consortium`", and nodes that trust that issuer refuse every credential
//! of the subject from then on (specs/identity.md, "Revocations").
//!
//! A revocation names the member's DID, not one credential id: revoking a member revokes every
//! credential it holds in that consortium, including ones issued to it later by the same or another
//! trusted issuer. The signature is a mycel domain-separated signature in
//! [`domains::REVOCATION`](crate::domains::REVOCATION) over [`Revocation::signed_bytes`].

use serde::{Deserialize, Serialize};

use crate::credential::{CredentialError, MAX_CONSORTIUM_LEN};
use crate::{Did, Keypair, Signature, domains};

/// Version of the revocation format; the only one there is.
pub const REVOCATION_VERSION: u8 = 1;

/// Longest serialized revocation (JSON) [`Revocation::from_json`] looks at, in bytes.
pub const MAX_REVOCATION_LEN: usize = 2048;

/// A signed membership revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// Format version, [`REVOCATION_VERSION`].
    pub version: u8,
    /// The consortium the member is removed from.
    pub consortium: String,
    /// The member whose credentials are revoked.
    pub subject: Did,
    /// The admin who signed the revocation (must be a trusted issuer for nodes to accept it).
    pub issuer: Did,
    /// When it was signed, Unix seconds (informational: a revocation never expires).
    pub issued_at: i64,
    /// Ed25519 signature by `issuer` in the `mycel/v1/revocation` domain.
    pub signature: Signature,
}

fn check_consortium(consortium: &str) -> Result<(), CredentialError> {
    if consortium.is_empty() || consortium.len() > MAX_CONSORTIUM_LEN || consortium.contains('\0') {
        return Err(CredentialError::InvalidInput(format!(
            "consortium name must be 1..={MAX_CONSORTIUM_LEN} bytes without NUL"
        )));
    }
    Ok(())
}

impl Revocation {
    /// Signs a revocation of `subject`'s membership in `consortium` with the issuer's key.
    pub fn sign(
        issuer: &Keypair,
        subject: &Did,
        consortium: &str,
        issued_at: i64,
    ) -> Result<Self, CredentialError> {
        check_consortium(consortium)?;
        let issuer_did = Did::from_public_key(issuer.public());
        let message = Self::signed_bytes(consortium, subject, &issuer_did, issued_at);
        Ok(Self {
            version: REVOCATION_VERSION,
            consortium: consortium.to_owned(),
            subject: *subject,
            issuer: issuer_did,
            issued_at,
            signature: issuer.sign(domains::REVOCATION, &message),
        })
    }

    /// The signed message: `"mycel-revocation" 0x00 version 0x00 consortium 0x00 subject 0x00
    /// issuer 0x00 issued_at` (numbers in decimal, DIDs as strings). Consortium names hold no NUL,
    /// so the split is unambiguous.
    pub fn signed_bytes(consortium: &str, subject: &Did, issuer: &Did, issued_at: i64) -> Vec<u8> {
        format!(
            "mycel-revocation\0{REVOCATION_VERSION}\0{consortium}\0{subject}\0{issuer}\0{issued_at}"
        )
        .into_bytes()
    }

    /// Checks the version, the consortium name and the issuer's signature (not whether the issuer
    /// is trusted: that is the caller's decision).
    pub fn verify(&self) -> Result<(), CredentialError> {
        if self.version != REVOCATION_VERSION {
            return Err(CredentialError::Malformed(format!(
                "unsupported revocation version {}",
                self.version
            )));
        }
        check_consortium(&self.consortium)
            .map_err(|_| CredentialError::Malformed("bad consortium name".into()))?;
        let message = Self::signed_bytes(
            &self.consortium,
            &self.subject,
            &self.issuer,
            self.issued_at,
        );
        self.issuer
            .public_key()
            .verify(domains::REVOCATION, &message, &self.signature)
            .map_err(|_| CredentialError::BadSignature)
    }

    /// Parses the JSON form (refusing input over [`MAX_REVOCATION_LEN`]) and verifies the signature.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CredentialError> {
        if bytes.len() > MAX_REVOCATION_LEN {
            return Err(CredentialError::TooLong {
                len: bytes.len(),
                max: MAX_REVOCATION_LEN,
            });
        }
        let revocation: Self = serde_json::from_slice(bytes)
            .map_err(|e| CredentialError::Malformed(format!("revocation: {e}")))?;
        revocation.verify()?;
        Ok(revocation)
    }

    /// The JSON form (one object).
    pub fn to_json(&self) -> String {
        // Serializing strings, integers and hex cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_revocation_round_trips_and_verifies() {
        let admin = Keypair::generate();
        let member = Did::from_public_key(Keypair::generate().public());
        let r = Revocation::sign(&admin, &member, "acme", 1_700_000_000).expect("sign");
        let back = Revocation::from_json(r.to_json().as_bytes()).expect("verifies");
        assert_eq!(back, r);
        assert_eq!(back.issuer, Did::from_public_key(admin.public()));
    }

    #[test]
    fn tampering_or_forgery_is_refused() {
        let admin = Keypair::generate();
        let member = Did::from_public_key(Keypair::generate().public());
        let other = Did::from_public_key(Keypair::generate().public());
        let r = Revocation::sign(&admin, &member, "acme", 5).expect("sign");
        for tampered in [
            Revocation {
                subject: other,
                ..r.clone()
            },
            Revocation {
                consortium: "acme2".into(),
                ..r.clone()
            },
            Revocation {
                issued_at: 6,
                ..r.clone()
            },
            // Someone else claims to be the issuer of a genuine signature.
            Revocation {
                issuer: other,
                ..r.clone()
            },
        ] {
            assert!(matches!(
                tampered.verify(),
                Err(CredentialError::BadSignature)
            ));
        }
        assert!(matches!(
            Revocation {
                version: 2,
                ..r.clone()
            }
            .verify(),
            Err(CredentialError::Malformed(_))
        ));
        // The same signature in another domain does not verify as a revocation.
        let message = Revocation::signed_bytes("acme", &member, &r.issuer, 5);
        let forged = Revocation {
            signature: admin.sign(domains::DETACHED, &message),
            ..r
        };
        assert!(matches!(
            forged.verify(),
            Err(CredentialError::BadSignature)
        ));
    }

    #[test]
    fn bad_input_is_refused() {
        let admin = Keypair::generate();
        let member = Did::from_public_key(Keypair::generate().public());
        assert!(Revocation::sign(&admin, &member, "", 0).is_err());
        assert!(Revocation::sign(&admin, &member, "a\0b", 0).is_err());
        assert!(matches!(
            Revocation::from_json(&vec![b' '; MAX_REVOCATION_LEN + 1]),
            Err(CredentialError::TooLong { .. })
        ));
        assert!(matches!(
            Revocation::from_json(b"{\"version\":1}"),
            Err(CredentialError::Malformed(_))
        ));
    }
}
