//! The node key: an Ed25519 key stored unencrypted as a hex seed in `<data_dir>/node.key`
//! (file mode 0600), so a node restarts unattended. Its DID and libp2p PeerId name the node.
//!
//! It is not the account key: accounts stay in the password-protected keystore, and the ledger binds a
//! node key to an account (and can revoke it), so a stolen node key does not lose funds.

use std::io::Write;
use std::path::{Path, PathBuf};

use mycel_identity::{Keypair, SecretKey};

use crate::error::{NodeError, Result};

/// File name of the node key inside the data directory.
pub const NODE_KEY_FILE: &str = "node.key";

/// Path of the node key in a data directory.
pub fn node_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(NODE_KEY_FILE)
}

/// Loads the node key, creating it (mode 0600) when absent. Returns the key and whether it was created.
pub fn load_or_create(data_dir: &Path) -> Result<(Keypair, bool)> {
    let path = node_key_path(data_dir);
    if path.exists() {
        return load(&path).map(|k| (k, false));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| NodeError::io(data_dir, e))?;
    let kp = Keypair::generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path).map_err(|e| NodeError::io(&path, e))?;
    let hex = kp.secret().to_hex();
    f.write_all(hex.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|e| NodeError::io(&path, e))?;
    Ok((kp, true))
}

/// Loads an existing node key.
pub fn load(path: &Path) -> Result<Keypair> {
    let text = std::fs::read_to_string(path).map_err(|e| NodeError::io(path, e))?;
    let secret = SecretKey::from_hex(text.trim()).map_err(|e| {
        NodeError::Config(format!(
            "{} is not a node key ({e}); move it away to generate a new one",
            path.display()
        ))
    })?;
    Ok(Keypair::from_secret(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, created) = load_or_create(dir.path()).expect("create");
        assert!(created);
        let (b, created) = load_or_create(dir.path()).expect("reload");
        assert!(!created);
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(node_key_path(dir.path()))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
