//! Small value types: account ids, block hashes, job ids and amounts.

use std::fmt;

use mycel_identity::{Did, PublicKey};

use crate::error::{LedgerError, Result};

macro_rules! hash32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The all-zero value (means "none" where the spec allows it).
            pub const ZERO: Self = Self([0; 32]);

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// True for the all-zero value.
            pub fn is_zero(&self) -> bool {
                self.0 == [0; 32]
            }

            /// Parses 64 hex characters.
            pub fn from_hex(text: &str) -> Result<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut out)
                    .map_err(|_| LedgerError::Decode(concat!(stringify!($name), ": expected 64 hex characters")))?;
                Ok(Self(out))
            }

            /// Lower-case hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({}…)", stringify!($name), &hex::encode(&self.0[..6]))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }
    };
}

hash32!(
    /// An account: the 32 bytes of its Ed25519 public key.
    AccountId
);
hash32!(
    /// The hash of a block (specs/ledger.md §2.1).
    BlockHash
);
hash32!(
    /// A job identifier chosen by the requester.
    JobId
);

impl AccountId {
    /// The account of a public key.
    pub fn from_public_key(key: &PublicKey) -> Self {
        Self(*key.as_bytes())
    }

    /// Parses the key (rejects invalid and weak keys).
    pub fn public_key(&self) -> Result<PublicKey> {
        PublicKey::from_bytes(&self.0).map_err(|_| LedgerError::BadKey("account"))
    }

    /// The account's `did:key`.
    pub fn did(&self) -> Result<Did> {
        Ok(Did::from_public_key(self.public_key()?))
    }
}

/// An amount of micro-credits (1 credit = 10^6 µ). All arithmetic is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Credits(pub u128);

impl Credits {
    /// Zero credits.
    pub const ZERO: Self = Self(0);
    /// Micro-credits per credit.
    pub const MICROS_PER_CREDIT: u128 = 1_000_000;

    /// Whole credits.
    pub const fn whole(n: u128) -> Self {
        Self(n * Self::MICROS_PER_CREDIT)
    }

    /// Checked addition.
    pub fn checked_add(self, other: Credits) -> Result<Credits> {
        self.0
            .checked_add(other.0)
            .map(Credits)
            .ok_or(LedgerError::Overflow)
    }

    /// Checked subtraction; going below zero is [`LedgerError::InsufficientFunds`].
    pub fn checked_sub(self, other: Credits) -> Result<Credits> {
        self.0
            .checked_sub(other.0)
            .map(Credits)
            .ok_or(LedgerError::InsufficientFunds {
                need: other,
                have: self,
            })
    }

    /// `self × num / den`, floored, with checked intermediate arithmetic.
    pub fn mul_div(self, num: u128, den: u128) -> Result<Credits> {
        if den == 0 {
            return Err(LedgerError::Overflow);
        }
        self.0
            .checked_mul(num)
            .map(|x| Credits(x / den))
            .ok_or(LedgerError::Overflow)
    }

    /// True for zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Credits {
    /// Shown as credits with six decimals, e.g. `12.500000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::MICROS_PER_CREDIT;
        let frac = self.0 % Self::MICROS_PER_CREDIT;
        write!(f, "{whole}.{frac:06}")
    }
}

impl std::str::FromStr for Credits {
    type Err = LedgerError;

    /// Parses credits with up to six decimals (`"1.5"` = 1_500_000 µ).
    fn from_str(text: &str) -> Result<Self> {
        let bad = || LedgerError::Decode("amount: expected a decimal number of credits");
        let (whole, frac) = match text.trim().split_once('.') {
            Some((w, f)) => (w, f),
            None => (text.trim(), ""),
        };
        if whole.is_empty() || frac.len() > 6 || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let w: u128 = whole.parse().map_err(|_| bad())?;
        let f: u128 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<6}").parse().map_err(|_| bad())?
        };
        w.checked_mul(Self::MICROS_PER_CREDIT)
            .and_then(|x| x.checked_add(f))
            .map(Credits)
            .ok_or(LedgerError::Overflow)
    }
}

/// `blake3(domain ‖ 0x00 ‖ parts…)`: the crate's one way of hashing with a domain.
pub fn domain_hash(domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain.as_bytes());
    hasher.update(&[0]);
    for part in parts {
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_parse_and_show() {
        let c: Credits = "1.5".parse().expect("parse");
        assert_eq!(c, Credits(1_500_000));
        assert_eq!(c.to_string(), "1.500000");
        assert!("1.1234567".parse::<Credits>().is_err());
        assert!("-1".parse::<Credits>().is_err());
        assert!(Credits(1).checked_sub(Credits(2)).is_err());
        assert!(Credits(u128::MAX).checked_add(Credits(1)).is_err());
    }
}
