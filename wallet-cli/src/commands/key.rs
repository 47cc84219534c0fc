//! `mycel key …`: the encrypted keystore.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use mycel_identity::keystore::KeyInfo;
use mycel_identity::{Keypair, SecretKey};
use serde_json::{Value, json};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::Report;
use crate::cli::KeyCommand;
use crate::context::{Context, read_input};
use crate::error::{CliError, CliResult, Kind, io_error};

/// Runs a `key` subcommand.
pub fn run(cmd: KeyCommand, ctx: &Context) -> CliResult<Report> {
    match cmd {
        KeyCommand::New { name } => new(&name, ctx),
        KeyCommand::List => list(ctx),
        KeyCommand::Show { name } => show(&name, ctx),
        KeyCommand::Import { name, source } => match (source.seed_file, source.encrypted) {
            (Some(seed), _) => import_seed(&name, &seed, ctx),
            (None, Some(file)) => import_encrypted(&name, &file, ctx),
            (None, None) => Err(CliError::new(
                Kind::Invalid,
                "give --seed-file or --encrypted",
            )),
        },
        KeyCommand::Export {
            name,
            out,
            raw_secret,
        } => export(&name, out.as_deref(), raw_secret, ctx),
        KeyCommand::Delete { name, yes } => delete(&name, yes, ctx),
    }
}

/// JSON and text for a key's public facts.
pub fn describe(info: &KeyInfo) -> (String, Value) {
    let peer = info.did.peer_id();
    let text = format!(
        "name:       {}\ndid:        {}\npublic key: {}\npeer id:    {}\ncreated:    {}",
        info.name, info.did, info.public_key, peer, info.created_at
    );
    let data = json!({
        "name": info.name,
        "did": info.did,
        "public_key": info.public_key,
        "peer_id": peer.to_string(),
        "created_at": info.created_at,
        "path": info.path,
    });
    (text, data)
}

fn store_new(name: &str, pair: &Keypair, ctx: &Context) -> CliResult<KeyInfo> {
    let keystore = ctx.keystore()?;
    // Refuse a taken or bad name before asking for a password.
    let path = keystore.path_of(name)?;
    if path.exists() {
        return Err(mycel_identity::keystore::KeystoreError::AlreadyExists(name.to_owned()).into());
    }
    let password = ctx.new_password(&format!("New password for key `{name}`: "))?;
    Ok(keystore.insert(name, pair, &password, OffsetDateTime::now_utc())?)
}

fn new(name: &str, ctx: &Context) -> CliResult<Report> {
    let info = store_new(name, &Keypair::generate(), ctx)?;
    ctx.note(format!("key `{name}` saved to {}", info.path.display()));
    let (text, data) = describe(&info);
    Ok(Report::new(text, data))
}

fn list(ctx: &Context) -> CliResult<Report> {
    let keystore = ctx.keystore()?;
    let mut text = String::new();
    let mut keys = Vec::new();
    for entry in keystore.list()? {
        match entry {
            Ok(info) => {
                text.push_str(&format!("{:<20} {}\n", info.name, info.did));
                keys.push(describe(&info).1);
            }
            Err(e) => {
                text.push_str(&format!("(unreadable) {e}\n"));
                keys.push(json!({ "error": e.to_string() }));
            }
        }
    }
    if keys.is_empty() {
        ctx.note(format!(
            "no keys in {} — create one with `mycel key new`",
            keystore.dir().display()
        ));
    }
    Ok(Report::new(text, json!({ "keys": keys })))
}

fn show(name: &str, ctx: &Context) -> CliResult<Report> {
    let info = ctx.keystore()?.info(name)?;
    let (text, data) = describe(&info);
    Ok(Report::new(text, data))
}

fn import_seed(name: &str, source: &Path, ctx: &Context) -> CliResult<Report> {
    let bytes = Zeroizing::new(read_input(source)?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CliError::new(Kind::Invalid, "the seed must be 64 hex characters"))?;
    let secret = SecretKey::from_hex(text)?;
    let info = store_new(name, &Keypair::from_secret(&secret), ctx)?;
    ctx.note(format!("key `{name}` imported to {}", info.path.display()));
    let (text, data) = describe(&info);
    Ok(Report::new(text, data))
}

fn import_encrypted(name: &str, file: &Path, ctx: &Context) -> CliResult<Report> {
    let bytes = read_input(file)?;
    let info = ctx.keystore()?.insert_encrypted(name, &bytes)?;
    ctx.note(format!("key `{name}` imported to {}", info.path.display()));
    let (text, data) = describe(&info);
    Ok(Report::new(text, data))
}

fn write_private(path: &Path, bytes: &[u8]) -> CliResult<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CliError::new(
                    Kind::AlreadyExists,
                    format!("{} exists; not overwriting it", path.display()),
                )
            } else {
                io_error("creating", path, e)
            }
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("writing", path, e))
}

fn export(name: &str, out: Option<&Path>, raw_secret: bool, ctx: &Context) -> CliResult<Report> {
    if raw_secret {
        let pair = ctx.unlock(name)?;
        let secret = pair.secret().to_hex();
        // The warning goes to stderr even with -q: this is the one place a secret leaves the wallet.
        eprintln!(
            "WARNING: this is the unencrypted secret of key `{name}`. Anyone who sees it controls \
             the identity {}. Do not paste it anywhere you do not trust.",
            mycel_identity::Did::from_public_key(pair.public())
        );
        return match out {
            Some(path) => {
                let mut line = Zeroizing::new(secret.as_bytes().to_vec());
                line.push(b'\n');
                write_private(path, &line)?;
                Ok(Report::new(
                    format!("secret written to {}", path.display()),
                    json!({ "name": name, "out": path, "format": "raw-seed-hex" }),
                ))
            }
            None => Ok(Report::new(
                secret.as_str(),
                json!({ "name": name, "secret_seed_hex": secret.as_str() }),
            )),
        };
    }
    let bytes = ctx.keystore()?.export(name)?;
    match out {
        Some(path) => {
            write_private(path, &bytes)?;
            Ok(Report::new(
                format!("encrypted key `{name}` written to {}", path.display()),
                json!({ "name": name, "out": path, "format": "mycel-keystore-v1" }),
            ))
        }
        None => {
            let file: Value = serde_json::from_slice(&bytes)
                .map_err(|e| CliError::new(Kind::Internal, e.to_string()))?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            Ok(Report::new(
                text,
                json!({ "name": name, "format": "mycel-keystore-v1", "keyfile": file }),
            ))
        }
    }
}

fn delete(name: &str, yes: bool, ctx: &Context) -> CliResult<Report> {
    let keystore = ctx.keystore()?;
    let info = keystore.info(name)?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::new(
                Kind::Invalid,
                "refusing to delete without confirmation: pass --yes (no terminal to ask on)",
            ));
        }
        eprint!(
            "Delete key `{name}` ({})? This cannot be undone without a backup.\nType the key name to confirm: ",
            info.did
        );
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .map_err(|e| CliError::new(Kind::Io, format!("reading confirmation: {e}")))?;
        if answer.trim() != name {
            return Err(CliError::new(
                Kind::Invalid,
                "not confirmed; nothing deleted",
            ));
        }
    }
    keystore.delete(name)?;
    Ok(Report::new(
        format!("deleted key `{name}` ({})", info.did),
        json!({ "name": name, "did": info.did, "deleted": true }),
    ))
}
