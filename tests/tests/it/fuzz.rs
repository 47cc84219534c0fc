//! The robustness fuzz run in its test-suite form (`--quick`: 40 s of attack), run as the `fuzz`
//! binary in a child process: the same code as the long form, a clean process for the memory and
//! panic measurements, and the single-threaded compute the simulations need (see
//! `mycel_tests::process`). The goals are asserted on the JSON report.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest the quick run may take (about 70 s on two cores).
const RUN_LIMIT: Duration = Duration::from_secs(150);

fn logs(dir: &Path) -> String {
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    format!(
        "--- stdout\n{}--- stderr (tail)\n{}",
        read("stdout"),
        tail(&read("stderr"), 80)
    )
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn fuzz_quick_every_protocol_no_crash_no_leak_no_panic_ledgers_intact() {
    // One simulation at a time across test processes (see simulations.rs).
    let lock = File::create(std::env::temp_dir().join("mycel-tests-simulations.lock")).unwrap();
    lock.lock().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = |name: &str| File::create(dir.path().join(name)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fuzz"))
        .args(["--quick", "--out"])
        .arg(dir.path())
        .env(mycel_tests::process::COMPUTE_THREADS_ENV, "1")
        .stdout(std::process::Stdio::from(log("stdout")))
        .stderr(Stdio::from(log("stderr")))
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("fuzz ran longer than {RUN_LIMIT:?}:\n{}", logs(dir.path()));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(dir.path().join("fuzz.json"))
        .unwrap_or_else(|e| panic!("no fuzz.json ({e}), exit {status}:\n{}", logs(dir.path())));
    let r: Value = serde_json::from_str(&report).unwrap();
    eprintln!("{}", logs(dir.path()));
    assert!(
        status.success(),
        "fuzz exited with {status} (a goal was missed):\n{}",
        logs(dir.path())
    );
    for ext in ["md", "svg"] {
        assert!(
            dir.path().join(format!("fuzz.{ext}")).exists(),
            "fuzz.{ext}"
        );
    }

    // Every family of attack ran, at a bounded rate, and the nodes answered some of each.
    let total = r["totals"]["sent"].as_u64().unwrap();
    let secs = r["duration_s"].as_f64().unwrap();
    assert!(secs >= 38.0, "{secs} s of attack");
    assert!(total >= 600, "only {total} messages");
    assert!(
        total as f64 / secs < 100.0,
        "{total} in {secs} s: not a bounded rate"
    );
    let families: Vec<&str> = r["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["family"].as_str().unwrap())
        .collect();
    for f in ["p2p", "stall", "request", "gossip", "rpc", "http", "ws"] {
        assert!(families.contains(&f), "no {f} attacks: {families:?}");
    }
    let rows = r["rows"].as_array().unwrap();
    let row = |family: &str, name: &str| {
        rows.iter()
            .find(|x| x["family"] == family && x["name"] == name)
            .unwrap_or_else(|| panic!("no {family} {name} row"))
    };
    for p in [
        "/mycel/infer-stream/1.0.0",
        "/mycel/shard/1.0.0",
        "/mycel/infer/1.0.0",
        "/mycel/ledger-sync/1.0.0",
        "/mycel/audit/1.0.0",
        "/meshsub/1.1.0",
        "/mycel/kad/1.0.0",
    ] {
        let x = row("p2p", p);
        assert!(x["sent"].as_u64().unwrap() > 0, "{x}");
    }
    // Valid seeds get through: the attacks reach past the first parser.
    for p in ["/mycel/infer-stream/1.0.0", "/mycel/shard/1.0.0"] {
        let x = row("p2p", p);
        assert!(x["accepted"].as_u64().unwrap() > 0, "{x}");
        assert!(
            x["refused"].as_u64().unwrap() + x["closed"].as_u64().unwrap() > 0,
            "{x}"
        );
    }
    let membership = row("p2p", "/mycel/membership/1.0.0");
    assert_eq!(
        membership["unsupported"], membership["sent"],
        "an open net does not speak the membership protocol: {membership}"
    );
    for m in mycel_rpc_api::openrpc::METHODS
        .iter()
        .copied()
        .chain(["rpc.discover"])
    {
        assert!(row("rpc", m)["sent"].as_u64().unwrap() > 0, "{m}");
    }
    for topic in ["mycel/health/1", "mycel/blocks/1", "mycel/votes/1"] {
        assert!(
            row("gossip", topic)["sent"].as_u64().unwrap() > 0,
            "{topic}"
        );
    }
    assert!(
        r["gossip_verdicts"]["rejected"].as_u64().unwrap() > 0,
        "the nodes rejected no fuzzed gossip: {}",
        r["gossip_verdicts"]
    );

    // The checks: alive, bounded, no panic, one readable ledger before and after reopening.
    let g = &r["goals"];
    for goal in [
        "alive",
        "memory",
        "no_panics",
        "ledger",
        "stores_reopen",
        "sends_confirmed",
        "coverage",
    ] {
        assert_eq!(g[goal], true, "goal {goal}: {g}");
    }
    assert_eq!(r["panics"], 0, "{}", r["panic_messages"]);
    let probes = &r["probes"];
    assert!(probes["asked"].as_u64().unwrap() >= 4 * 8, "{probes}");
    assert_eq!(probes["ok"], probes["asked"], "{probes}");
    assert!(
        r["rss"].as_array().unwrap().len() >= 30,
        "memory was sampled every second"
    );
    let l = &r["ledger"];
    assert!(l["submitted"].as_u64().unwrap() >= 10, "{l}");
    assert_eq!(l["confirmed"], l["submitted"], "{l}");
    assert_eq!(l["end"]["equal"], true, "{l}");
    assert_eq!(l["blocks"]["lost"], 0, "{l}");
    for n in l["reopened"].as_array().unwrap() {
        assert!(n["error"].is_null(), "{n}");
        assert!(
            n["confirmed_after"].as_u64().unwrap() >= n["confirmed_before"].as_u64().unwrap(),
            "{n}"
        );
        assert!(n["confirmed_before"].as_u64().unwrap() >= l["submitted"].as_u64().unwrap());
    }
    assert_eq!(l["reopened_roots"]["equal"], true, "{l}");
    assert_eq!(l["reopened_blocks"]["lost"], 0, "{l}");
}
