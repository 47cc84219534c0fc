//! What every command needs: the wallet home, the keystore, passwords and output settings.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use mycel_identity::Keypair;
use mycel_identity::keystore::{Keystore, Password};

use crate::error::{CliError, CliResult, Kind, io_error};

/// Environment variable that may hold the password (for scripts).
pub const PASSWORD_ENV: &str = "MYCEL_PASSWORD";
/// Largest file `sign`/`verify`/`credential verify` read into memory.
pub const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

/// Settings shared by all commands.
pub struct Context {
    /// Wallet home.
    pub home: PathBuf,
    /// `--password-file`.
    pub password_file: Option<PathBuf>,
    /// 0 = quiet, 1 = normal, 2+ = verbose.
    pub verbosity: u8,
    /// `--json`: machine output only.
    pub json: bool,
}

impl Context {
    /// The keystore under `<home>/keys`.
    pub fn keystore(&self) -> CliResult<Keystore> {
        Ok(Keystore::open(self.home.join("keys"))?)
    }

    /// A note for humans on stderr (suppressed by -q and in JSON mode it still goes to stderr).
    pub fn note(&self, message: impl AsRef<str>) {
        if self.verbosity >= 1 {
            eprintln!("{}", message.as_ref());
        }
    }

    /// Detail shown with -v.
    pub fn detail(&self, message: impl AsRef<str>) {
        if self.verbosity >= 2 {
            eprintln!("{}", message.as_ref());
        }
    }

    /// A password to unlock an existing key: --password-file, MYCEL_PASSWORD, or a hidden prompt.
    pub fn password(&self, prompt: &str) -> CliResult<Password> {
        self.password_inner(prompt, false)
    }

    /// A password for a new key; an interactive prompt asks twice.
    pub fn new_password(&self, prompt: &str) -> CliResult<Password> {
        self.password_inner(prompt, true)
    }

    fn password_inner(&self, prompt: &str, confirm: bool) -> CliResult<Password> {
        if let Some(path) = &self.password_file {
            let bytes = zeroize::Zeroizing::new(
                std::fs::read(path).map_err(|e| io_error("reading password file", path, e))?,
            );
            let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
            return Ok(Password::new(first_line.to_vec()));
        }
        if let Ok(value) = std::env::var(PASSWORD_ENV) {
            return Ok(Password::new(value.into_bytes()));
        }
        if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
            return Err(CliError::new(
                Kind::Password,
                format!(
                    "a password is needed but there is no terminal to ask on: \
                     use --password-file <file> or set {PASSWORD_ENV}"
                ),
            ));
        }
        let first = zeroize::Zeroizing::new(
            rpassword::prompt_password(prompt)
                .map_err(|e| CliError::new(Kind::Password, format!("reading password: {e}")))?,
        );
        if confirm {
            let again = zeroize::Zeroizing::new(
                rpassword::prompt_password("Repeat password: ")
                    .map_err(|e| CliError::new(Kind::Password, format!("reading password: {e}")))?,
            );
            if *first != *again {
                return Err(CliError::new(Kind::Password, "the passwords do not match"));
            }
        }
        Ok(Password::new(first.as_bytes().to_vec()))
    }

    /// Loads and decrypts a key.
    pub fn unlock(&self, name: &str) -> CliResult<Keypair> {
        let keystore = self.keystore()?;
        // Fail on a missing or broken file before asking for a password.
        keystore.info(name)?;
        let password = self.password(&format!("Password for key `{name}`: "))?;
        Ok(keystore.load(name, &password)?)
    }
}

/// Reads a whole file, or stdin for `-`, bounded by [`MAX_INPUT_BYTES`].
pub fn read_input(path: &Path) -> CliResult<Vec<u8>> {
    let mut bytes = Vec::new();
    let result = if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes))
    };
    result.map_err(|e| io_error("reading", path, e))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(CliError::new(
            Kind::Invalid,
            format!(
                "{} is larger than {} MiB",
                path.display(),
                MAX_INPUT_BYTES >> 20
            ),
        ));
    }
    Ok(bytes)
}

/// The default wallet home: the per-user data directory.
pub fn default_home() -> CliResult<PathBuf> {
    directories::ProjectDirs::from("", "", "mycel")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .ok_or_else(|| {
            CliError::new(
                Kind::Io,
                "cannot find a home directory: pass --home or set MYCEL_HOME",
            )
        })
}
