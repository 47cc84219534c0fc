//! Password-encrypted key files.
//!
//! One JSON file per key in a keystore directory, `<name>.json`, mode 0600 (format in
//! `specs/identity.md`). The 32-byte secret seed is encrypted with XChaCha20-Poly1305 under a key
//! derived from the password by argon2id; the KDF parameters and salt are stored in the file, and the
//! file's public header is bound to the ciphertext as associated data. A blake3 checksum over the
//! whole file tells a damaged or edited file apart from a wrong password.
//!
//! Files are written to a temporary file, synced, then hard-linked into place: the link fails if the
//! name exists, so a key is never silently overwritten, even by two concurrent writers.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::did::Did;
use crate::key::{Keypair, PublicKey, SECRET_KEY_LEN, SecretKey};

/// Current key file format version.
pub const KEYFILE_VERSION: u32 = 1;
/// Longest key file we read; a real one is under 1 KiB.
pub const MAX_KEYFILE_BYTES: u64 = 16 * 1024;
/// Longest key name.
pub const MAX_NAME_LEN: usize = 64;
/// Most memory (KiB) a key file may ask argon2id for: a crafted file must not exhaust the machine.
pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
/// Most argon2id passes a key file may ask for.
pub const MAX_T_COST: u32 = 64;
/// Most argon2id lanes a key file may ask for.
pub const MAX_P_COST: u32 = 16;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AAD_PREFIX: &str = "mycel/v1/keystore";

/// Why a keystore operation failed. Each cause is its own variant so callers (and users) can act.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No key of that name.
    #[error("no key named `{0}` in the keystore")]
    NotFound(String),
    /// A key of that name exists; it is never overwritten.
    #[error("a key named `{0}` already exists (delete it first or choose another name)")]
    AlreadyExists(String),
    /// The key name is not allowed.
    #[error("invalid key name `{name}`: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The password does not open this key file.
    #[error("wrong password for key `{0}`")]
    WrongPassword(String),
    /// The file is not a key file: truncated, not JSON, or missing fields.
    #[error("key file {path} is unreadable (truncated or not a mycel key file): {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The file parses but its content was changed after it was written.
    #[error("key file {path} was modified or damaged: {reason}")]
    Tampered {
        /// The file.
        path: PathBuf,
        /// Which check failed.
        reason: &'static str,
    },
    /// A key file version this build does not know.
    #[error(
        "key file {path} has format version {found}; this build reads version {KEYFILE_VERSION}"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// KDF or cipher parameters outside what we accept.
    #[error("key file {path} asks for unsupported parameters: {reason}")]
    UnsupportedParameters {
        /// The file.
        path: PathBuf,
        /// Which parameter.
        reason: String,
    },
    /// An empty password was given for a new key.
    #[error("refusing an empty password")]
    EmptyPassword,
}

type Result<T> = std::result::Result<T, KeystoreError>;

/// A password, zeroized on drop and never shown by `Debug`.
#[derive(Clone)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Wraps password bytes. A trailing newline (from a password file or a pipe) is removed.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        let mut bytes = Zeroizing::new(bytes.into());
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Self(bytes)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// argon2id parameters, stored in each file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about a quarter second here, costly for a guesser.
    fn default() -> Self {
        Self {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// The public facts about a stored key (no password needed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key's name in the keystore.
    pub name: String,
    /// Its DID.
    pub did: Did,
    /// Its public key.
    pub public_key: PublicKey,
    /// When it was created or imported (RFC 3339).
    pub created_at: String,
    /// Where the file is.
    pub path: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kdf {
    algorithm: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cipher {
    algorithm: String,
    nonce: String,
}

/// The on-disk JSON layout (version 1).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    did: String,
    public_key: String,
    created_at: String,
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
    checksum: String,
}

impl KeyFile {
    /// Associated data binding the public header to the ciphertext.
    fn aad(&self) -> Vec<u8> {
        format!(
            "{AAD_PREFIX}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
            self.version,
            self.did,
            self.public_key,
            self.kdf.algorithm,
            self.kdf.params.m_cost,
            self.kdf.params.t_cost,
            self.kdf.params.p_cost,
            self.kdf.salt,
        )
        .into_bytes()
    }

    /// blake3 over every field but the checksum itself.
    fn compute_checksum(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.aad());
        for part in [
            &self.created_at,
            &self.cipher.algorithm,
            &self.cipher.nonce,
            &self.ciphertext,
        ] {
            hasher.update(b"\0");
            hasher.update(part.as_bytes());
        }
        hasher.finalize().to_hex().to_string()
    }
}

fn derive_key(
    password: &Password,
    salt: &[u8],
    params: KdfParams,
) -> std::result::Result<Zeroizing<[u8; 32]>, argon2::Error> {
    let params = argon2::Params::new(params.m_cost, params.t_cost, params.p_cost, Some(32))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(password.as_bytes(), salt, key.as_mut_slice())?;
    Ok(key)
}

fn encrypt(
    keypair: &Keypair,
    password: &Password,
    params: KdfParams,
    created_at: OffsetDateTime,
) -> std::result::Result<KeyFile, String> {
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut salt);
    rand::fill(&mut nonce);
    let public = keypair.public();
    let mut file = KeyFile {
        version: KEYFILE_VERSION,
        did: Did::from_public_key(public).to_string(),
        public_key: hex::encode(public.as_bytes()),
        created_at: created_at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| e.to_string())?,
        kdf: Kdf {
            algorithm: "argon2id".into(),
            params,
            salt: hex::encode(salt),
        },
        cipher: Cipher {
            algorithm: "xchacha20poly1305".into(),
            nonce: hex::encode(nonce),
        },
        ciphertext: String::new(),
        checksum: String::new(),
    };
    let key = derive_key(password, &salt, params).map_err(|e| e.to_string())?;
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    let secret = keypair.secret();
    let aad = file.aad();
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: secret.expose(),
                aad: &aad,
            },
        )
        .map_err(|_| "encryption failed".to_string())?;
    file.ciphertext = hex::encode(sealed);
    file.checksum = file.compute_checksum();
    Ok(file)
}

fn decode_hex<const N: usize>(text: &str, path: &Path, what: &'static str) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| KeystoreError::Tampered {
        path: path.to_owned(),
        reason: what,
    })?;
    Ok(out)
}

/// Parses and checks a key file's bytes, then decrypts it.
fn decrypt(bytes: &[u8], path: &Path, name: &str, password: &Password) -> Result<Keypair> {
    let file = parse(bytes, path)?;
    let params = file.kdf.params;
    let salt: [u8; SALT_LEN] = decode_hex(&file.kdf.salt, path, "salt is not 16 hex bytes")?;
    let nonce: [u8; NONCE_LEN] = decode_hex(&file.cipher.nonce, path, "nonce is not 24 hex bytes")?;
    let sealed: [u8; SECRET_KEY_LEN + TAG_LEN] =
        decode_hex(&file.ciphertext, path, "ciphertext has the wrong length")?;
    let key =
        derive_key(password, &salt, params).map_err(|e| KeystoreError::UnsupportedParameters {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    let aad = file.aad();
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| KeystoreError::WrongPassword(name.to_owned()))?,
    );
    let secret = SecretKey::try_from_slice(&plain).map_err(|_| KeystoreError::Tampered {
        path: path.to_owned(),
        reason: "decrypted secret has the wrong length",
    })?;
    let keypair = Keypair::from_secret(&secret);
    if hex::encode(keypair.public().as_bytes()) != file.public_key {
        return Err(KeystoreError::Tampered {
            path: path.to_owned(),
            reason: "secret does not match the stored public key",
        });
    }
    Ok(keypair)
}

/// Parses a key file and checks everything that needs no password.
fn parse(bytes: &[u8], path: &Path) -> Result<KeyFile> {
    let malformed = |reason: String| KeystoreError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    let version = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| malformed("no `version` field".into()))?;
    if version != u64::from(KEYFILE_VERSION) {
        return Err(KeystoreError::UnsupportedVersion {
            path: path.to_owned(),
            found: u32::try_from(version).unwrap_or(u32::MAX),
        });
    }
    let file: KeyFile = serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
    if file.checksum != file.compute_checksum() {
        return Err(KeystoreError::Tampered {
            path: path.to_owned(),
            reason: "checksum does not match the content",
        });
    }
    let unsupported = |reason: String| KeystoreError::UnsupportedParameters {
        path: path.to_owned(),
        reason,
    };
    if file.kdf.algorithm != "argon2id" {
        return Err(unsupported(format!("KDF `{}`", file.kdf.algorithm)));
    }
    if file.cipher.algorithm != "xchacha20poly1305" {
        return Err(unsupported(format!("cipher `{}`", file.cipher.algorithm)));
    }
    let p = file.kdf.params;
    if p.m_cost > MAX_M_COST_KIB || p.t_cost > MAX_T_COST || p.p_cost > MAX_P_COST {
        return Err(unsupported(format!(
            "argon2id m={} KiB t={} p={} exceeds m≤{MAX_M_COST_KIB} t≤{MAX_T_COST} p≤{MAX_P_COST}",
            p.m_cost, p.t_cost, p.p_cost
        )));
    }
    let public: [u8; 32] = decode_hex(&file.public_key, path, "public key is not 32 hex bytes")?;
    let public = PublicKey::from_bytes(&public).map_err(|_| KeystoreError::Tampered {
        path: path.to_owned(),
        reason: "public key is not a valid Ed25519 key",
    })?;
    if Did::from_public_key(public).to_string() != file.did {
        return Err(KeystoreError::Tampered {
            path: path.to_owned(),
            reason: "DID does not match the public key",
        });
    }
    Ok(file)
}

fn info_of(file: &KeyFile, name: &str, path: &Path) -> Result<KeyInfo> {
    let did = Did::parse(&file.did).map_err(|_| KeystoreError::Tampered {
        path: path.to_owned(),
        reason: "DID is not a valid did:key",
    })?;
    Ok(KeyInfo {
        name: name.to_owned(),
        did,
        public_key: did.public_key(),
        created_at: file.created_at.clone(),
        path: path.to_owned(),
    })
}

/// Checks a key name: 1–64 characters of `A-Z a-z 0-9 - _ .`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| KeystoreError::InvalidName {
        name: name.chars().take(MAX_NAME_LEN + 8).collect(),
        reason,
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(bad("must be 1 to 64 characters"));
    }
    if name.starts_with('.') {
        return Err(bad("must not start with `.`"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad("only letters, digits, `-`, `_` and `.` are allowed"));
    }
    Ok(())
}

/// A directory of encrypted key files.
#[derive(Clone, Debug)]
pub struct Keystore {
    dir: PathBuf,
    params: KdfParams,
}

impl Keystore {
    /// Opens (and creates, mode 0700) a keystore directory, with the default KDF parameters for new keys.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| KeystoreError::Io {
            action: "creating keystore directory",
            path: dir.clone(),
            source,
        })?;
        // Best effort: tighten a directory we own; an existing shared directory is left alone.
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        Ok(Self {
            dir,
            params: KdfParams::default(),
        })
    }

    /// Uses other KDF parameters for keys written from now on (existing files keep theirs).
    pub fn with_kdf_params(mut self, params: KdfParams) -> Self {
        self.params = params;
        self
    }

    /// The keystore directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the key called `name` lives.
    pub fn path_of(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Encrypts and stores a key under `name`. Fails if the name is taken.
    pub fn insert(
        &self,
        name: &str,
        keypair: &Keypair,
        password: &Password,
        now: OffsetDateTime,
    ) -> Result<KeyInfo> {
        let path = self.path_of(name)?;
        if password.as_bytes().is_empty() {
            return Err(KeystoreError::EmptyPassword);
        }
        if path.exists() {
            return Err(KeystoreError::AlreadyExists(name.to_owned()));
        }
        let file = encrypt(keypair, password, self.params, now).map_err(|reason| {
            KeystoreError::UnsupportedParameters {
                path: path.clone(),
                reason,
            }
        })?;
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| KeystoreError::Malformed {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        self.write_new(name, &path, &bytes)?;
        info_of(&file, name, &path)
    }

    /// Stores an already-encrypted key file (from `export`) under `name` after checking it.
    pub fn insert_encrypted(&self, name: &str, bytes: &[u8]) -> Result<KeyInfo> {
        let path = self.path_of(name)?;
        let file = parse(bytes, &path)?;
        if path.exists() {
            return Err(KeystoreError::AlreadyExists(name.to_owned()));
        }
        self.write_new(name, &path, bytes)?;
        info_of(&file, name, &path)
    }

    /// Temp file (0600, synced) hard-linked into place: atomic, and never replaces an existing key.
    fn write_new(&self, name: &str, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut nonce = [0u8; 8];
        rand::fill(&mut nonce);
        let tmp = self.dir.join(format!(".{name}.{}.tmp", hex::encode(nonce)));
        let io = |action| {
            let path = path.to_owned();
            move |source| KeystoreError::Io {
                action,
                path,
                source,
            }
        };
        let result = (|| {
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("creating temporary key file for"))?;
            out.write_all(bytes).map_err(io("writing"))?;
            out.sync_all().map_err(io("syncing"))?;
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(KeystoreError::AlreadyExists(name.to_owned()))
                }
                Err(e) => Err(io("linking")(e)),
            }
        })();
        let _ = fs::remove_file(&tmp);
        result?;
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn read(&self, name: &str) -> Result<(PathBuf, Vec<u8>)> {
        let path = self.path_of(name)?;
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeystoreError::NotFound(name.to_owned()));
            }
            Err(source) => {
                return Err(KeystoreError::Io {
                    action: "reading",
                    path,
                    source,
                });
            }
        };
        if meta.len() > MAX_KEYFILE_BYTES {
            return Err(KeystoreError::Malformed {
                path,
                reason: format!("{} bytes is larger than any key file", meta.len()),
            });
        }
        let bytes = fs::read(&path).map_err(|source| KeystoreError::Io {
            action: "reading",
            path: path.clone(),
            source,
        })?;
        Ok((path, bytes))
    }

    /// Decrypts the key called `name`.
    pub fn load(&self, name: &str, password: &Password) -> Result<Keypair> {
        let (path, bytes) = self.read(name)?;
        decrypt(&bytes, &path, name, password)
    }

    /// The public facts about `name`, checked but not decrypted.
    pub fn info(&self, name: &str) -> Result<KeyInfo> {
        let (path, bytes) = self.read(name)?;
        let file = parse(&bytes, &path)?;
        info_of(&file, name, &path)
    }

    /// The encrypted file's bytes, for `key export`.
    pub fn export(&self, name: &str) -> Result<Vec<u8>> {
        let (path, bytes) = self.read(name)?;
        parse(&bytes, &path)?;
        Ok(bytes)
    }

    /// Every key in the keystore, sorted by name. Unreadable files are reported, not skipped.
    pub fn list(&self) -> Result<Vec<std::result::Result<KeyInfo, KeystoreError>>> {
        let entries = fs::read_dir(&self.dir).map_err(|source| KeystoreError::Io {
            action: "listing",
            path: self.dir.clone(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let file_name = entry.file_name().into_string().ok()?;
                let name = file_name.strip_suffix(".json")?;
                validate_name(name).ok()?;
                Some(name.to_owned())
            })
            .collect();
        names.sort();
        Ok(names.iter().map(|name| self.info(name)).collect())
    }

    /// Deletes the key file for `name`.
    pub fn delete(&self, name: &str) -> Result<()> {
        let path = self.path_of(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(KeystoreError::NotFound(name.to_owned()))
            }
            Err(source) => Err(KeystoreError::Io {
                action: "deleting",
                path,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap KDF for tests (argon2id's minimum memory); the format and code paths are the same.
    const FAST: KdfParams = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn store() -> (tempfile::TempDir, Keystore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = Keystore::open(dir.path().join("keys"))
            .expect("open")
            .with_kdf_params(FAST);
        (dir, ks)
    }

    fn pw(s: &str) -> Password {
        Password::new(s.as_bytes().to_vec())
    }

    #[test]
    fn round_trip_and_permissions() {
        let (_d, ks) = store();
        let pair = Keypair::generate();
        let info = ks
            .insert("alice", &pair, &pw("hunter2"), OffsetDateTime::UNIX_EPOCH)
            .expect("insert");
        assert_eq!(info.did, Did::from_public_key(pair.public()));
        let back = ks.load("alice", &pw("hunter2")).expect("load");
        assert_eq!(back.public(), pair.public());
        let mode = fs::metadata(&info.path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = fs::read_to_string(&info.path).expect("read");
        assert!(!text.contains(&*pair.secret().to_hex()), "secret in clear");
        assert_eq!(ks.list().expect("list").len(), 1);
    }

    #[test]
    fn default_parameters_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = Keystore::open(dir.path()).expect("open");
        let pair = Keypair::generate();
        ks.insert("k", &pair, &pw("pw"), OffsetDateTime::UNIX_EPOCH)
            .expect("insert");
        assert_eq!(
            ks.load("k", &pw("pw")).expect("load").public(),
            pair.public()
        );
    }

    #[test]
    fn wrong_password_is_its_own_error() {
        let (_d, ks) = store();
        ks.insert(
            "a",
            &Keypair::generate(),
            &pw("right"),
            OffsetDateTime::UNIX_EPOCH,
        )
        .expect("insert");
        assert!(matches!(
            ks.load("a", &pw("wrong")),
            Err(KeystoreError::WrongPassword(_))
        ));
    }

    #[test]
    fn never_overwrites() {
        let (_d, ks) = store();
        let first = Keypair::generate();
        ks.insert("a", &first, &pw("p"), OffsetDateTime::UNIX_EPOCH)
            .expect("insert");
        assert!(matches!(
            ks.insert(
                "a",
                &Keypair::generate(),
                &pw("p"),
                OffsetDateTime::UNIX_EPOCH
            ),
            Err(KeystoreError::AlreadyExists(_))
        ));
        assert_eq!(
            ks.load("a", &pw("p")).expect("load").public(),
            first.public()
        );
    }

    #[test]
    fn concurrent_inserts_of_one_name_leave_exactly_one_winner() {
        let (_d, ks) = store();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let ks = ks.clone();
                    s.spawn(move || {
                        let pair = Keypair::generate();
                        ks.insert("race", &pair, &pw("p"), OffsetDateTime::UNIX_EPOCH)
                            .map(|_| pair.public())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(
            results
                .iter()
                .all(|r| r.is_ok() || matches!(r, Err(KeystoreError::AlreadyExists(_))))
        );
        assert_eq!(
            &ks.load("race", &pw("p")).expect("load").public(),
            winners[0]
        );
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(ks.dir()).expect("dir").count(), 1);
    }

    fn corrupt(ks: &Keystore, edit: impl FnOnce(&mut Vec<u8>)) -> KeystoreError {
        let pair = Keypair::generate();
        let info = ks
            .insert("x", &pair, &pw("p"), OffsetDateTime::UNIX_EPOCH)
            .expect("insert");
        let mut bytes = fs::read(&info.path).expect("read");
        edit(&mut bytes);
        fs::write(&info.path, &bytes).expect("write");
        let err = ks.load("x", &pw("p")).expect_err("must fail");
        ks.delete("x").expect("delete");
        err
    }

    fn replace(bytes: &mut Vec<u8>, field: &str, f: impl FnOnce(&str) -> String) {
        let mut value: serde_json::Value = serde_json::from_slice(bytes).expect("json");
        let old = value[field].as_str().map(str::to_owned);
        value[field] = match old {
            Some(s) => serde_json::Value::String(f(&s)),
            None => serde_json::json!(2),
        };
        *bytes = serde_json::to_vec(&value).expect("json");
    }

    #[test]
    fn truncated_tampered_and_unknown_version_files_are_distinct_errors() {
        let (_d, ks) = store();
        let err = corrupt(&ks, |b| b.truncate(b.len() / 2));
        assert!(matches!(err, KeystoreError::Malformed { .. }), "{err:?}");
        let err = corrupt(&ks, |b| b.clear());
        assert!(matches!(err, KeystoreError::Malformed { .. }), "{err:?}");
        let err = corrupt(&ks, |b| {
            replace(b, "ciphertext", |s| {
                let mut c: Vec<char> = s.chars().collect();
                c[3] = if c[3] == '0' { '1' } else { '0' };
                c.into_iter().collect()
            })
        });
        assert!(matches!(err, KeystoreError::Tampered { .. }), "{err:?}");
        let other = Did::from_public_key(Keypair::generate().public()).to_string();
        let err = corrupt(&ks, |b| replace(b, "did", |_| other));
        assert!(matches!(err, KeystoreError::Tampered { .. }), "{err:?}");
        let err = corrupt(&ks, |b| replace(b, "version", |_| String::new()));
        assert!(
            matches!(err, KeystoreError::UnsupportedVersion { found: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn failed_operations_change_nothing_on_disk() {
        let (_d, ks) = store();
        let pair = Keypair::generate();
        let info = ks
            .insert("a", &pair, &pw("p"), OffsetDateTime::UNIX_EPOCH)
            .expect("insert");
        let before = fs::read(&info.path).expect("read");
        let _ = ks.load("a", &pw("nope"));
        let _ = ks.insert(
            "a",
            &Keypair::generate(),
            &pw("p"),
            OffsetDateTime::UNIX_EPOCH,
        );
        let _ = ks.insert_encrypted("a", b"{}");
        assert_eq!(fs::read(&info.path).expect("read"), before);
    }

    #[test]
    fn export_import_round_trip() {
        let (_d, ks) = store();
        let pair = Keypair::generate();
        ks.insert("a", &pair, &pw("p"), OffsetDateTime::UNIX_EPOCH)
            .expect("insert");
        let bytes = ks.export("a").expect("export");
        ks.insert_encrypted("b", &bytes).expect("import");
        assert_eq!(
            ks.load("b", &pw("p")).expect("load").public(),
            pair.public()
        );
        assert!(matches!(
            ks.insert_encrypted("c", &bytes[..bytes.len() - 20]),
            Err(KeystoreError::Malformed { .. })
        ));
    }

    #[test]
    fn hostile_parameters_are_refused_before_any_work() {
        let (_d, ks) = store();
        // An edit without a matching checksum is caught as tampering…
        let err = corrupt(&ks, |b| {
            let mut v: serde_json::Value = serde_json::from_slice(b).expect("json");
            v["kdf"]["m_cost"] = serde_json::json!(u32::MAX);
            *b = serde_json::to_vec(&v).expect("json");
        });
        assert!(matches!(err, KeystoreError::Tampered { .. }), "{err:?}");
        // …and one whose checksum was recomputed is refused on the parameter bound, without
        // allocating 4 TiB for argon2id.
        let err = corrupt(&ks, |b| {
            let mut file: KeyFile = serde_json::from_slice(b).expect("json");
            file.kdf.params.m_cost = u32::MAX;
            file.checksum = file.compute_checksum();
            *b = serde_json::to_vec(&file).expect("json");
        });
        assert!(
            matches!(err, KeystoreError::UnsupportedParameters { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", ".hidden", "a/b", "../x", "spaced name", &"n".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        for good in ["default", "node-1", "a.b_c"] {
            validate_name(good).expect(good);
        }
    }

    #[test]
    fn password_debug_is_redacted_and_newline_trimmed() {
        let p = Password::new(b"secret\n".to_vec());
        assert_eq!(p.as_bytes(), b"secret");
        assert!(!format!("{p:?}").contains("secret"));
    }
}
