//! CLI errors and their exit codes.

use std::fmt;

use mycel_identity::IdentityError;
use mycel_identity::credential::CredentialError;
use mycel_identity::keystore::KeystoreError;

/// What kind of failure; decides the exit code and the JSON `error.code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A bug or an unexpected condition.
    Internal,
    /// Wrong or missing password.
    Password,
    /// No such key or file.
    NotFound,
    /// The name is taken.
    AlreadyExists,
    /// Malformed input.
    Invalid,
    /// A signature or credential did not verify.
    Verification,
    /// The filesystem failed.
    Io,
    /// The node could not be reached, failed to answer, or keeps no ledger.
    Node,
    /// The ledger refused: insufficient funds, or a block the node rejected.
    Rejected,
    /// The node refused a state-changing call: not from its machine and without its bearer token.
    Unauthorized,
    /// A submitted block was not confirmed in time (it may still confirm).
    Timeout,
}

impl Kind {
    /// The documented exit code (see `mycel --help`).
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Internal => 1,
            Kind::Password => 3,
            Kind::NotFound => 4,
            Kind::AlreadyExists => 5,
            Kind::Invalid => 6,
            Kind::Verification => 7,
            Kind::Io => 8,
            Kind::Node => 9,
            Kind::Rejected => 10,
            Kind::Unauthorized => 11,
            Kind::Timeout => 12,
        }
    }

    /// Stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Kind::Internal => "internal",
            Kind::Password => "password",
            Kind::NotFound => "not_found",
            Kind::AlreadyExists => "already_exists",
            Kind::Invalid => "invalid_input",
            Kind::Verification => "verification_failed",
            Kind::Io => "io",
            Kind::Node => "node",
            Kind::Rejected => "rejected",
            Kind::Unauthorized => "unauthorized",
            Kind::Timeout => "timeout",
        }
    }
}

/// A failed command: a kind and a message for the user.
#[derive(Debug)]
pub struct CliError {
    /// The kind.
    pub kind: Kind,
    /// What happened and, where useful, what to do.
    pub message: String,
}

impl CliError {
    /// A new error.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<KeystoreError> for CliError {
    fn from(e: KeystoreError) -> Self {
        let kind = match &e {
            KeystoreError::Io { .. } => Kind::Io,
            KeystoreError::NotFound(_) => Kind::NotFound,
            KeystoreError::AlreadyExists(_) => Kind::AlreadyExists,
            KeystoreError::WrongPassword(_) | KeystoreError::EmptyPassword => Kind::Password,
            KeystoreError::InvalidName { .. }
            | KeystoreError::Malformed { .. }
            | KeystoreError::Tampered { .. }
            | KeystoreError::UnsupportedVersion { .. }
            | KeystoreError::UnsupportedParameters { .. } => Kind::Invalid,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<CredentialError> for CliError {
    fn from(e: CredentialError) -> Self {
        let kind = match &e {
            CredentialError::Malformed(_)
            | CredentialError::TooLong { .. }
            | CredentialError::InvalidInput(_) => Kind::Invalid,
            CredentialError::Signing(_) => Kind::Internal,
            _ => Kind::Verification,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<IdentityError> for CliError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Keystore(k) => k.into(),
            IdentityError::Credential(c) => c.into(),
            IdentityError::BadSignature | IdentityError::BadBatch => {
                Self::new(Kind::Verification, e.to_string())
            }
            other => Self::new(Kind::Invalid, other.to_string()),
        }
    }
}

/// Result alias for commands.
pub type CliResult<T> = Result<T, CliError>;

/// Maps an I/O error on `path` to a CLI error.
pub fn io_error(action: &str, path: &std::path::Path, e: std::io::Error) -> CliError {
    let kind = if e.kind() == std::io::ErrorKind::NotFound {
        Kind::NotFound
    } else {
        Kind::Io
    };
    CliError::new(kind, format!("{action} {}: {e}", path.display()))
}
