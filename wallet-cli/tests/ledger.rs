//! `mycel balance`, `send`, `receive`, `stake`, `unstake` and `history` against real nodes: three
//! nodes in this process on loopback share a genesis that stakes their keys and funds a wallet key;
//! the wallet is the real binary with a real keystore in a temp dir, building and signing blocks
//! itself and submitting them over JSON-RPC.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use mycel_identity::{Did, Keypair, SecretKey};
use mycel_ledger::{Credits, Genesis, GenesisAccount, Params};
use mycel_node::config::Config;
use mycel_node::ledger::LedgerOptions;
use mycel_node::{RunningNode, StartOptions};
use serde_json::Value;

const PASSWORD: &str = "ledger test password";
/// The funded wallet key (imported as `default`).
const ALICE_SEED: &str = "0707070707070707070707070707070707070707070707070707070707070707";
/// The recipient (imported as `bob`).
const BOB_SEED: &str = "0808080808080808080808080808080808080808080808080808080808080808";

fn keypair(seed: &str) -> Keypair {
    Keypair::from_secret(&SecretKey::from_hex(seed).unwrap())
}

fn did(seed: &str) -> String {
    Did::from_public_key(keypair(seed).public()).to_string()
}

/// Runs the wallet binary off the async runtime; returns (exit code, stdout, stderr).
async fn mycel(home: &Path, rpc: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut full = vec![
        "--home".to_string(),
        home.to_str().unwrap().to_string(),
        "--rpc".to_string(),
        rpc.to_string(),
    ];
    full.extend(args.iter().map(|s| s.to_string()));
    let stdin = stdin.to_string();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let out = assert_cmd::Command::cargo_bin("mycel")
            .unwrap()
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MYCEL_PASSWORD", PASSWORD)
            .args(&full)
            .write_stdin(stdin)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(
        !out.contains(PASSWORD) && !err.contains(PASSWORD),
        "the password leaked: {args:?}"
    );
    (code, out, err)
}

/// Runs with `--json`, checks the exit code and the envelope; returns `data` or `error`.
async fn json(home: &Path, rpc: &str, args: &[&str], code: i32) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let (got, out, err) = mycel(home, rpc, &full, "").await;
    assert_eq!(got, code, "{args:?}: stdout {out} stderr {err}");
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{args:?}: not one JSON object ({e}): {out}"));
    assert_eq!(v["command"], args[0], "{out}");
    if code == 0 {
        assert_eq!(v["ok"], true, "{out}");
        v["data"].clone()
    } else {
        assert_eq!(v["ok"], false, "{out}");
        assert_eq!(v["error"]["exit_code"], code, "{out}");
        v["error"].clone()
    }
}

async fn import(home: &Path, name: &str, seed: &str) {
    let (code, _, err) = mycel(
        home,
        "http://127.0.0.1:1",
        &["key", "import", "--name", name, "--seed-file", "-"],
        seed,
    )
    .await;
    assert_eq!(code, 0, "{err}");
}

fn genesis(nodes: &[Keypair]) -> Genesis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut accounts: Vec<GenesisAccount> = nodes
        .iter()
        .map(|k| GenesisAccount {
            account: *k.public().as_bytes(),
            balance: Credits::whole(100),
            stake: Credits::whole(1000),
        })
        .collect();
    accounts.push(GenesisAccount {
        account: *keypair(ALICE_SEED).public().as_bytes(),
        balance: Credits::whole(1000),
        stake: Credits::ZERO,
    });
    Genesis {
        network: "mycel-wallet-it".into(),
        seed: [9; 32],
        start_time: now.saturating_sub(1),
        accounts,
        params: Params {
            open_work_bits: 8,
            ..Params::default()
        },
    }
}

async fn start(key: &Keypair, ledger: Option<(&Genesis, &Path)>, boot: Vec<String>) -> RunningNode {
    RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: None,
        key: key.clone(),
        config: Config::loopback(boot),
        models: BTreeMap::new(),
        info_file: None,
        ledger: ledger.map(|(genesis, dir)| LedgerOptions {
            genesis: genesis.clone(),
            path: dir.join("ledger.redb"),
            tick: Duration::from_millis(300),
        }),
    })
    .await
    .unwrap()
}

fn credits(v: &Value) -> &str {
    v["credits"]
        .as_str()
        .unwrap_or_else(|| panic!("not an amount: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_commands_move_credits_between_imported_keys() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    import(h, "default", ALICE_SEED).await;
    import(h, "bob", BOB_SEED).await;
    let (alice, bob) = (did(ALICE_SEED), did(BOB_SEED));

    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate()).collect();
    let g = genesis(&keys);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(&keys[0], Some((&g, dirs[0].path())), vec![]).await;
    let boot = vec![a.node.listen_addrs()[0].to_string()];
    let b = start(&keys[1], Some((&g, dirs[1].path())), boot.clone()).await;
    let c = start(&keys[2], Some((&g, dirs[2].path())), boot).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.node.peers().await.unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "peers never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rpc = format!("http://{}", a.http_addr);
    let rpc = rpc.as_str();

    // The genesis amount, for people and for scripts.
    let (code, out, err) = mycel(h, rpc, &["balance"], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("account:    {alice}")), "{out}");
    assert!(out.contains("liquid:     1000.000000"), "{out}");
    let bal = json(h, rpc, &["balance"], 0).await;
    assert_eq!(bal["account"], alice.as_str());
    assert_eq!(bal["liquid"]["micro"], "1000000000");
    assert_eq!(credits(&bal["receivable"]), "0.000000");

    // Send 10 to bob: signed here, submitted, and waited for until confirmed.
    let (code, out, err) = mycel(h, rpc, &["send", &bob, "10"], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("sent 10.000000 credits to {bob}")),
        "{out}"
    );
    assert!(out.contains("status:  confirmed"), "{out}");
    assert!(out.contains("liquid:  990.000000"), "{out}");
    assert!(
        err.contains("waiting for the network to confirm send"),
        "{err}"
    );
    let send_hash = out
        .lines()
        .find_map(|l| l.strip_prefix("block:   "))
        .unwrap()
        .to_string();

    // Bob sees 10 receivable (any node agrees once it is confirmed), by key or by account.
    let bob_bal = json(h, rpc, &["balance", "--key", "bob"], 0).await;
    assert_eq!(credits(&bob_bal["receivable"]), "10.000000");
    assert_eq!(credits(&bob_bal["liquid"]), "0.000000");
    let rpc_c = format!("http://{}", c.http_addr);
    let via_c = json(h, &rpc_c, &["balance", &bob], 0).await;
    assert_eq!(credits(&via_c["receivable"]), "10.000000");

    // A second, tiny send without waiting: reported as applied, not confirmed.
    let sent = json(h, rpc, &["send", "--no-wait", &bob, "0.000001"], 0).await;
    assert_eq!(sent["amount"]["micro"], "1");
    assert_eq!(sent["block"]["status"], "applied");
    assert_eq!(sent["block"]["confirmed"], false);
    let tiny_hash = sent["block"]["hash"].as_str().unwrap().to_string();

    // Receive takes both: an Open, then a Receive, one per source.
    let (code, out, err) = mycel(h, rpc, &["receive", "--key", "bob"], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("received 10.000001 credits in 2 block(s)"),
        "{out}"
    );
    assert!(out.contains("status:  confirmed"), "{out}");
    let bob_bal = json(h, rpc, &["balance", "--key", "bob"], 0).await;
    assert_eq!(credits(&bob_bal["liquid"]), "10.000001");
    assert_eq!(credits(&bob_bal["receivable"]), "0.000000");
    let nothing = json(h, rpc, &["receive", "--key", "bob"], 0).await;
    assert_eq!(credits(&nothing["received"]), "0.000000");
    assert_eq!(nothing["blocks"].as_array().unwrap().len(), 0);

    // Stake 2, unstake 1: bonded and unbonding follow, with a release epoch in the future.
    let staked = json(h, rpc, &["stake", "2"], 0).await;
    assert_eq!(staked["block"]["status"], "confirmed");
    assert_eq!(credits(&staked["balance"]["bonded"]), "2.000000");
    assert_eq!(credits(&staked["balance"]["liquid"]), "987.999999");
    let (code, out, err) = mycel(h, rpc, &["unstake", "1"], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("started unbonding 1.000000 credits"), "{out}");
    assert!(out.contains("bonded:     1.000000"), "{out}");
    let bal = json(h, rpc, &["balance"], 0).await;
    assert_eq!(credits(&bal["bonded"]), "1.000000");
    let unbonding = bal["unbonding"].as_array().unwrap();
    assert_eq!(unbonding.len(), 1, "{bal}");
    assert_eq!(credits(&unbonding[0]["amount"]), "1.000000");
    assert!(
        unbonding[0]["release_epoch"].as_u64().unwrap() > bal["epoch"].as_u64().unwrap(),
        "{bal}"
    );
    let (code, out, _) = mycel(h, rpc, &["balance"], "").await;
    assert_eq!(code, 0);
    assert!(out.contains("1.000000 (liquid at epoch"), "{out}");

    // History, newest first, every block confirmed.
    let hist = json(h, rpc, &["history", "--limit", "10"], 0).await;
    let blocks = hist["blocks"].as_array().unwrap();
    let kinds: Vec<&str> = blocks.iter().map(|b| b["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["unstake", "stake", "send", "send"], "{hist}");
    let heights: Vec<u64> = blocks
        .iter()
        .map(|b| b["height"].as_u64().unwrap())
        .collect();
    assert!(heights.windows(2).all(|w| w[0] == w[1] + 1), "{heights:?}");
    assert_eq!(blocks[2]["hash"], tiny_hash.as_str());
    assert_eq!(blocks[3]["hash"], send_hash.as_str());
    assert_eq!(blocks[3]["peer"], bob.as_str());
    assert_eq!(blocks[3]["direction"], "out");
    assert_eq!(credits(&blocks[3]["amount"]), "10.000000");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The --no-wait send confirms in its own time.
        let hist = json(h, rpc, &["history", "--limit", "10"], 0).await;
        if hist["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["confirmed"] == true)
        {
            break;
        }
        assert!(Instant::now() < deadline, "never all confirmed: {hist}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hist = json(h, rpc, &["history", &bob], 0).await;
    let blocks = hist["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2, "{hist}");
    assert_eq!(blocks[0]["kind"], "receive");
    assert_eq!(blocks[1]["kind"], "open");
    // The node lists receivables by source hash, so either send may be the one that opened.
    let mut seen: Vec<(&str, &str)> = blocks
        .iter()
        .map(|b| {
            assert_eq!(b["peer"], alice.as_str(), "{b}");
            assert_eq!(b["direction"], "in", "{b}");
            (b["source"].as_str().unwrap(), credits(&b["amount"]))
        })
        .collect();
    seen.sort();
    let mut want = vec![
        (send_hash.as_str(), "10.000000"),
        (tiny_hash.as_str(), "0.000001"),
    ];
    want.sort();
    assert_eq!(seen, want);
    let (code, out, _) = mycel(h, rpc, &["history", "--key", "bob"], "").await;
    assert_eq!(code, 0);
    assert!(out.trim_start().starts_with("HEIGHT"), "{out}");
    assert!(out.contains("+10.000000") && out.contains(&alice), "{out}");

    // Bad amounts are invalid input (6) and say why; nothing is submitted.
    for (amount, why) in [
        ("1.0000001", "at most 6 decimals"),
        ("-1", "negative"),
        ("0", "more than zero"),
        ("abc", "decimal number"),
        ("340282366920938463463374607431768211456", "too large"),
    ] {
        let e = json(h, rpc, &["send", &bob, amount], 6).await;
        assert_eq!(e["code"], "invalid_input");
        assert!(
            e["message"].as_str().unwrap().contains(why),
            "{amount}: {e}"
        );
    }
    let e = json(h, rpc, &["send", "did:key:nope", "1"], 6).await;
    assert!(
        e["message"].as_str().unwrap().contains("did:key:nope"),
        "{e}"
    );
    // More than the balance: refused before signing (10), with the shortfall.
    let e = json(h, rpc, &["send", "--key", "bob", &alice, "11"], 10).await;
    assert_eq!(e["code"], "rejected");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("insufficient funds") && m.contains("10.000001"),
        "{m}"
    );
    let e = json(h, rpc, &["unstake", "5"], 10).await;
    assert!(e["message"].as_str().unwrap().contains("bonded"), "{e}");
    let hist = json(h, rpc, &["history"], 0).await;
    assert_eq!(hist["blocks"].as_array().unwrap().len(), 4, "{hist}");

    // With two of three stakers gone no quorum forms: the send is applied but the wait times out
    // (12) naming the block, which the node still holds unconfirmed.
    c.shutdown().await;
    b.shutdown().await;
    let e = json(h, rpc, &["send", "--timeout", "2", &bob, "1"], 12).await;
    assert_eq!(e["code"], "timeout");
    let m = e["message"].as_str().unwrap().to_string();
    assert!(
        m.contains("not confirmed within 2 s") && m.contains("may still confirm"),
        "{m}"
    );
    let hist = json(h, rpc, &["history", "--limit", "1"], 0).await;
    let newest = &hist["blocks"][0];
    assert_eq!(newest["kind"], "send");
    assert_eq!(newest["confirmed"], false);
    assert!(m.contains(newest["hash"].as_str().unwrap()), "{m}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_ledger_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    import(h, "default", ALICE_SEED).await;
    let node = start(&Keypair::generate(), None, vec![]).await;
    let rpc = format!("http://{}", node.http_addr);
    let bob = did(BOB_SEED);
    for args in [
        vec!["balance"],
        vec!["history"],
        vec!["send", &bob, "1"],
        vec!["receive"],
        vec!["stake", "1"],
    ] {
        let e = json(h, &rpc, &args, 9).await;
        assert_eq!(e["code"], "node");
        let m = e["message"].as_str().unwrap();
        assert!(
            m.contains("keeps no ledger") && m.contains("genesis"),
            "{args:?}: {m}"
        );
    }
    let (code, _, err) = mycel(h, &rpc, &["balance"], "").await;
    assert_eq!(code, 9);
    assert!(err.starts_with("error: the node at"), "{err}");
    node.shutdown().await;

    // Nobody listening at all is the same exit code with another message.
    let e = json(h, &rpc, &["balance"], 9).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach the node"),
        "{e}"
    );
}

#[test]
fn ledger_commands_have_help_with_examples() {
    for cmd in ["balance", "send", "receive", "stake", "unstake", "history"] {
        let out = assert_cmd::Command::cargo_bin("mycel")
            .unwrap()
            .args([cmd, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{cmd}: {text}");
        assert!(text.contains(&format!("mycel {cmd}")), "{cmd}: {text}");
    }
    let out = assert_cmd::Command::cargo_bin("mycel")
        .unwrap()
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for code in [
        "10  the ledger refused",
        "11  the node accepts",
        "12  a submitted block",
    ] {
        assert!(text.contains(code), "{code}: {text}");
    }
}
