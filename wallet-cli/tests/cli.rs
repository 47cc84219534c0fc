//! The `mycel` binary, driven as a user would: real processes, a real keystore in a temp dir.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery staple";
/// did:key test vector for the all-zero seed (W3C CCG did:key test vectors).
const ZERO_SEED_DID: &str = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";

fn mycel(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("mycel").expect("binary");
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MYCEL_PASSWORD", PASSWORD)
        .arg("--home")
        .arg(home);
    cmd
}

/// Runs with --json, checks the envelope and the exit code, returns `data` or `error`.
fn json(home: &Path, args: &[&str], stdin: Option<&str>, code: i32) -> Value {
    let mut cmd = mycel(home);
    cmd.arg("--json").args(args);
    if let Some(input) = stdin {
        cmd.write_stdin(input);
    }
    let out = cmd.output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let value: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    let name = value["command"].as_str().expect("command");
    assert!(args.join(" ").starts_with(name), "{name} vs {args:?}");
    if code == 0 {
        assert_eq!(value["ok"], true);
        value["data"].clone()
    } else {
        assert_eq!(value["ok"], false);
        assert_eq!(value["error"]["exit_code"], code);
        assert!(
            value["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        value["error"].clone()
    }
}

#[test]
fn key_lifecycle() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let created = json(h, &["key", "new"], None, 0);
    let did = created["did"].as_str().expect("did").to_owned();
    assert!(did.starts_with("did:key:z6Mk"));
    assert!(
        created["peer_id"]
            .as_str()
            .expect("peer")
            .starts_with("12D3KooW")
    );
    assert_eq!(created["public_key"].as_str().expect("pk").len(), 64);

    let err = json(h, &["key", "new"], None, 5);
    assert_eq!(err["code"], "already_exists");

    json(h, &["key", "new", "--name", "work"], None, 0);
    let listed = json(h, &["key", "list"], None, 0);
    let names: Vec<&str> = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["default", "work"]);

    assert_eq!(json(h, &["key", "show"], None, 0)["did"], did.as_str());
    assert_eq!(json(h, &["did", "show"], None, 0)["did"], did.as_str());
    assert_eq!(
        json(h, &["key", "show", "nope"], None, 4)["code"],
        "not_found"
    );
    assert_eq!(
        json(h, &["key", "new", "--name", "../evil"], None, 6)["code"],
        "invalid_input"
    );

    // Text mode prints the DID.
    mycel(h)
        .args(["key", "show", "work"])
        .assert()
        .success()
        .stdout(predicates::str::contains("did:key:z6Mk"));

    // Delete needs confirmation; without a terminal only --yes does it.
    json(h, &["key", "delete", "work"], None, 6);
    json(h, &["key", "delete", "work", "--yes"], None, 0);
    json(h, &["key", "show", "work"], None, 4);
}

#[test]
fn import_export_round_trips() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let seed = "00".repeat(32);
    let imported = json(
        h,
        &["key", "import", "--name", "zero", "--seed-file", "-"],
        Some(&seed),
        0,
    );
    assert_eq!(imported["did"], ZERO_SEED_DID);
    json(
        h,
        &["key", "import", "--name", "bad", "--seed-file", "-"],
        Some("abc"),
        6,
    );

    // Encrypted export → import under another name keeps the identity.
    let backup = h.join("backup.json");
    json(
        h,
        &[
            "key",
            "export",
            "zero",
            "--out",
            backup.to_str().expect("utf8"),
        ],
        None,
        0,
    );
    let again = json(
        h,
        &[
            "key",
            "import",
            "--name",
            "moved",
            "--encrypted",
            backup.to_str().expect("utf8"),
        ],
        None,
        0,
    );
    assert_eq!(again["did"], ZERO_SEED_DID);
    // Exporting to an existing file never overwrites it.
    json(
        h,
        &[
            "key",
            "export",
            "zero",
            "--out",
            backup.to_str().expect("utf8"),
        ],
        None,
        5,
    );

    // The raw secret only with the explicit flag, with a warning on stderr.
    let out = mycel(h)
        .args(["key", "export", "moved", "--raw-secret"])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), seed);
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING"));
    // The encrypted export does not contain the secret.
    let file = std::fs::read_to_string(&backup).expect("read");
    assert!(!file.contains(&seed));
}

#[test]
fn passwords_are_checked_and_never_echoed() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    json(h, &["key", "new"], None, 0);
    let file = h.join("msg.txt");
    std::fs::write(&file, b"hello").expect("write");
    let out = mycel(h)
        .env("MYCEL_PASSWORD", "wrong")
        .args(["--json", "sign", file.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("wrong\"") && !all.contains(PASSWORD), "{all}");

    // A password file works (first line only).
    let pw = h.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\nignored\n")).expect("write");
    mycel(h)
        .env_remove("MYCEL_PASSWORD")
        .args([
            "--password-file",
            pw.to_str().expect("utf8"),
            "sign",
            file.to_str().expect("utf8"),
        ])
        .assert()
        .success();

    // No password source and no terminal: a clear error, not a hang.
    let out = mycel(h)
        .env_remove("MYCEL_PASSWORD")
        .args(["--json", "sign", file.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MYCEL_PASSWORD"));
}

#[test]
fn sign_and_verify_detached() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let did = json(h, &["key", "new"], None, 0)["did"]
        .as_str()
        .expect("did")
        .to_owned();
    let file = h.join("doc.txt");
    std::fs::write(&file, b"the quick brown fox").expect("write");
    let path = file.to_str().expect("utf8");
    let signed = json(h, &["sign", path], None, 0);
    let sig = signed["signature"].as_str().expect("sig").to_owned();
    assert_eq!(sig.len(), 128);
    assert_eq!(
        json(h, &["verify", "--did", &did, "--sig", &sig, path], None, 0)["valid"],
        true
    );
    // Same bytes through stdin.
    json(
        h,
        &["verify", "--did", &did, "--sig", &sig, "-"],
        Some("the quick brown fox"),
        0,
    );

    std::fs::write(&file, b"the quick brown fix").expect("write");
    assert_eq!(
        json(h, &["verify", "--did", &did, "--sig", &sig, path], None, 7)["code"],
        "verification_failed"
    );
    json(
        h,
        &["verify", "--did", &did, "--sig", "abcd", path],
        None,
        6,
    );
    json(
        h,
        &[
            "verify",
            "--did",
            "did:web:example.com",
            "--sig",
            &sig,
            path,
        ],
        None,
        6,
    );
    json(h, &["sign", "/nonexistent/file"], None, 4);
}

#[test]
fn did_resolve_prints_a_document() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let doc = json(h, &["did", "resolve", ZERO_SEED_DID], None, 0);
    assert_eq!(doc["id"], ZERO_SEED_DID);
    assert_eq!(doc["verificationMethod"][0]["type"], "Multikey");
    let doc = json(
        h,
        &["did", "resolve", ZERO_SEED_DID, "--format", "ed25519-2018"],
        None,
        0,
    );
    assert_eq!(
        doc["verificationMethod"][0]["publicKeyBase58"],
        "4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS"
    );
    let err = json(h, &["did", "resolve", "did:key:zNotBase58!"], None, 6);
    assert!(
        err["message"]
            .as_str()
            .expect("msg")
            .contains("invalid DID")
    );
}

#[test]
fn credentials_issue_and_verify() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let admin = json(h, &["key", "new", "--name", "admin"], None, 0)["did"]
        .as_str()
        .expect("did")
        .to_owned();
    let member = json(h, &["key", "new", "--name", "member"], None, 0)["did"]
        .as_str()
        .expect("did")
        .to_owned();
    let out = h.join("member.jwt");
    let out_s = out.to_str().expect("utf8");
    json(
        h,
        &[
            "credential",
            "issue",
            "--key",
            "admin",
            "--subject",
            &member,
            "--consortium",
            "acme",
            "--expires",
            "2099-01-01T00:00:00Z",
            "--out",
            out_s,
        ],
        None,
        0,
    );
    let ok = json(
        h,
        &[
            "credential",
            "verify",
            out_s,
            "--issuer",
            &admin,
            "--consortium",
            "acme",
        ],
        None,
        0,
    );
    assert_eq!(ok["subject"], member.as_str());
    assert_eq!(ok["consortium"], "acme");
    json(
        h,
        &["credential", "verify", out_s, "--issuer", &member],
        None,
        7,
    );
    json(
        h,
        &["credential", "verify", out_s, "--consortium", "other"],
        None,
        7,
    );
    json(
        h,
        &["credential", "verify", out_s, "--subject", &admin],
        None,
        7,
    );

    // Tampering: the payload of another (valid) credential under this one's signature.
    let other = h.join("other.jwt");
    let other_s = other.to_str().expect("utf8");
    json(
        h,
        &[
            "credential",
            "issue",
            "--key",
            "admin",
            "--subject",
            &admin,
            "--consortium",
            "acme",
            "--expires",
            "2099-01-01T00:00:00Z",
            "--out",
            other_s,
        ],
        None,
        0,
    );
    let jwt = std::fs::read_to_string(&out).expect("read");
    let theirs = std::fs::read_to_string(&other).expect("read");
    let ours: Vec<&str> = jwt.trim().split('.').collect();
    let theirs: Vec<&str> = theirs.trim().split('.').collect();
    let forged = format!("{}.{}.{}", ours[0], theirs[1], ours[2]);
    std::fs::write(&out, forged).expect("write");
    let err = json(h, &["credential", "verify", out_s], None, 7);
    assert_eq!(err["code"], "verification_failed");
    std::fs::write(&out, "garbage").expect("write");
    json(h, &["credential", "verify", out_s], None, 6);

    // Bad input is refused before asking for a password.
    json(
        h,
        &[
            "credential",
            "issue",
            "--key",
            "admin",
            "--subject",
            &member,
            "--consortium",
            "acme",
            "--expires",
            "2001-01-01T00:00:00Z",
        ],
        None,
        6,
    );
    json(
        h,
        &[
            "credential",
            "issue",
            "--key",
            "admin",
            "--subject",
            "did:key:zzz",
            "--consortium",
            "acme",
            "--expires",
            "2099-01-01T00:00:00Z",
        ],
        None,
        6,
    );
    json(
        h,
        &[
            "credential",
            "issue",
            "--key",
            "admin",
            "--subject",
            &member,
            "--consortium",
            "acme",
            "--expires",
            "tomorrow",
        ],
        None,
        6,
    );
}

#[test]
fn help_and_usage_errors() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    for args in [
        vec!["--help"],
        vec!["key", "--help"],
        vec!["key", "new", "--help"],
        vec!["key", "import", "--help"],
        vec!["key", "export", "--help"],
        vec!["key", "delete", "--help"],
        vec!["did", "resolve", "--help"],
        vec!["sign", "--help"],
        vec!["verify", "--help"],
        vec!["credential", "issue", "--help"],
        vec!["credential", "verify", "--help"],
        vec!["job", "--help"],
    ] {
        mycel(h)
            .args(&args)
            .assert()
            .success()
            .stdout(predicates::str::contains("Usage"));
    }
    mycel(h).args(["key", "frobnicate"]).assert().code(2);
    mycel(h).args(["key", "import"]).assert().code(2);
    mycel(h).args(["job"]).assert().code(2);
}

#[test]
fn concurrent_key_new_with_one_name_does_not_clobber() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("mycel"))
                .env("MYCEL_PASSWORD", PASSWORD)
                .args(["--json", "--home"])
                .arg(h)
                .args(["key", "new", "--name", "shared"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let winners: Vec<Value> = outputs
        .iter()
        .filter(|o| o.status.success())
        .map(|o| serde_json::from_slice(&o.stdout).expect("json"))
        .collect();
    // All four run at once; exactly one wins and the stored key is the winner's.
    assert_eq!(winners.len(), 1);
    assert!(
        outputs
            .iter()
            .filter(|o| !o.status.success())
            .all(|o| o.status.code() == Some(5))
    );
    let stored = json(h, &["key", "show", "shared"], None, 0);
    assert_eq!(stored["did"], winners[0]["data"]["did"]);
}
