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

    /// Parses credits with up to six decimals (`"10"`, `"1.5"` = 1_500_000 µ, `"0.000001"` = 1 µ).
    /// Surrounding whitespace is ignored; signs, exponents, separators and a seventh decimal are
    /// refused with a [`LedgerError::Decode`] that says which rule failed. Zero parses: whether it
    /// is allowed is the caller's rule.
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Err(LedgerError::Decode("amount: empty"));
        }
        if text.starts_with('-') {
            return Err(LedgerError::Decode("amount: must not be negative"));
        }
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) {
            return Err(LedgerError::Decode(
                "amount: expected a decimal number of credits, like 10 or 0.5",
            ));
        }
        if frac.len() > 6 {
            return Err(LedgerError::Decode(
                "amount: at most 6 decimals (the smallest amount is 0.000001)",
            ));
        }
        let too_large = || LedgerError::Decode("amount: too large");
        // Only ASCII digits remain, so a failed parse is an overflow.
        let w: u128 = whole.parse().map_err(|_| too_large())?;
        let f: u128 = format!("{frac:0<6}").parse().map_err(|_| too_large())?;
        w.checked_mul(Self::MICROS_PER_CREDIT)
            .and_then(|x| x.checked_add(f))
            .map(Credits)
            .ok_or_else(too_large)
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

    fn parse(text: &str) -> std::result::Result<u128, String> {
        text.parse::<Credits>()
            .map(|c| c.0)
            .map_err(|e| e.to_string())
    }

    fn err_of(text: &str) -> String {
        parse(text).expect_err(text)
    }

    #[test]
    fn credits_parse_accepts_up_to_six_decimals() {
        assert_eq!(parse("10"), Ok(10_000_000));
        assert_eq!(parse("0.5"), Ok(500_000));
        assert_eq!(parse("0.000001"), Ok(1));
        assert_eq!(parse("1."), Ok(1_000_000));
        assert_eq!(parse(" 2.25 "), Ok(2_250_000));
        assert_eq!(parse("007.100"), Ok(7_100_000));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("0.000000"), Ok(0));
    }

    #[test]
    fn credits_parse_says_which_rule_failed() {
        let err = err_of;
        assert!(err("1.0000001").contains("at most 6 decimals"));
        assert!(err("0.0000001").contains("at most 6 decimals"));
        assert!(err("-1").contains("negative"));
        assert!(err("-0.5").contains("negative"));
        assert!(err("").contains("empty"));
        assert!(err("   ").contains("empty"));
        for bad in [
            "abc", "+1", ".5", "1e3", "1,5", "1.2.3", "1 000", "0x10", "١",
        ] {
            assert!(err(bad).contains("decimal number"), "{bad}: {}", err(bad));
        }
    }

    #[test]
    fn credits_parse_refuses_overflow() {
        let max_whole = u128::MAX / Credits::MICROS_PER_CREDIT;
        assert_eq!(
            parse(&max_whole.to_string()),
            Ok(max_whole * Credits::MICROS_PER_CREDIT)
        );
        assert!(err_of(&(max_whole + 1).to_string()).contains("too large"));
        assert!(err_of(&format!("{max_whole}.999999")).contains("too large"));
        assert!(err_of(&"9".repeat(60)).contains("too large"));
    }

    #[test]
    fn credits_display_round_trips_through_parse_at_the_edges() {
        for micros in [0, 1, 999_999, 1_000_000, 123_456_789, u128::MAX] {
            let shown = Credits(micros).to_string();
            assert_eq!(parse(&shown), Ok(micros), "{shown}");
        }
    }

    proptest::proptest! {
        #[test]
        fn credits_display_round_trips_through_parse(micros: u128) {
            proptest::prop_assert_eq!(parse(&Credits(micros).to_string()), Ok(micros));
        }
    }
}
