//! The churn and load simulations in their test-suite form (`--short`), run as the `churn` and
//! `load` binaries in a child process each: the same code as the long forms, a clean process for
//! the memory measurement, and the single-threaded compute the simulations need (see
//! `mycel_tests::process`). The goals are asserted on the JSON reports.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a short simulation may run (they take about a minute on two cores).
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// Runs a simulation binary with `--short`, one at a time across test processes (two
/// simulations at once on two cores would measure each other); returns its JSON report.
fn run_short(exe: &str, stem: &str) -> Value {
    let lock = File::create(std::env::temp_dir().join("mycel-tests-simulations.lock")).unwrap();
    lock.lock().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = |name: &str| File::create(dir.path().join(name)).unwrap();
    let mut child = Command::new(exe)
        .args(["--short", "--out"])
        .arg(dir.path())
        .env(mycel_tests::process::COMPUTE_THREADS_ENV, "1")
        .stdout(Stdio::from(log("stdout")))
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
            panic!(
                "{stem} ran longer than {RUN_LIMIT:?}:\n{}",
                logs(dir.path())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(dir.path().join(format!("{stem}.json")))
        .unwrap_or_else(|e| panic!("no {stem}.json ({e}), exit {status}:\n{}", logs(dir.path())));
    for ext in ["md", "svg"] {
        assert!(
            dir.path().join(format!("{stem}.{ext}")).exists(),
            "{stem}.{ext}"
        );
    }
    let report: Value = serde_json::from_str(&report).unwrap();
    eprintln!("{}", logs(dir.path()));
    assert!(
        status.success(),
        "{stem} exited with {status} (a goal was missed):\n{}",
        logs(dir.path())
    );
    report
}

fn logs(dir: &Path) -> String {
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    format!(
        "--- stdout\n{}--- stderr\n{}",
        read("stdout"),
        read("stderr")
    )
}

#[test]
fn churn_short_answers_99_percent_recovers_within_15_s_and_loses_no_confirmed_block() {
    let r = run_short(env!("CARGO_BIN_EXE_churn"), "churn");
    let nodes = r["config"]["nodes"].as_u64().unwrap();
    assert!(nodes >= 10, "{nodes} replicas");
    let clients = r["config"]["clients"].as_u64().unwrap();
    let waves = r["waves"].as_array().unwrap();
    assert_eq!(waves.len() as u64, r["config"]["waves"].as_u64().unwrap());
    let mut rejoined = 0;
    for w in waves {
        let left = w["killed"].as_array().unwrap().len() + w["stopped"].as_array().unwrap().len();
        let joined =
            w["joined_fresh"].as_array().unwrap().len() + w["restarted"].as_array().unwrap().len();
        // 30% of the replicas leave (some killed, some stopped) and as many join.
        assert_eq!(left as u64, (nodes as f64 * 0.3).round() as u64, "{w}");
        assert_eq!(joined, left, "{w}");
        rejoined += joined;
        assert!(
            w["coverage_broke"].as_bool().unwrap(),
            "a wave must break full coverage: {w}"
        );
        // Joins are scheduled within 10 s; starting the last one takes a moment more.
        assert!(w["joins_done_after_s"].as_f64().unwrap() <= 11.0, "{w}");
    }
    let asked = r["queries"]["total"].as_u64().unwrap();
    assert!(asked >= 100, "only {asked} queries were asked");
    let rate = r["success_rate"].as_f64().unwrap();
    assert!(rate >= 0.99, "answered {rate}: {}", r["errors"]);
    let recovery = r["recovery_max_s"].as_f64().expect("every wave recovered");
    assert!(recovery <= 15.0, "recovery {recovery} s");

    // The ledger: the wallet's sends (one every 3 s) all confirmed; every live node, the
    // restarted and fresh replicas among them, on one state root at every check and holding every
    // block some node reported confirmed.
    let l = &r["ledger"];
    assert_eq!(l["status"], "measured", "{l}");
    let submitted = l["submitted"].as_u64().unwrap();
    assert!(submitted >= 8, "only {submitted} sends: {l}");
    assert_eq!(l["confirmed"], submitted, "{l}");
    assert!(
        l["confirm_latency"]["p99_ms"].as_f64().unwrap() > 0.0,
        "{l}"
    );
    assert_eq!(l["stakers"].as_array().unwrap().len() as u64, clients);
    assert!(l["agreement"].as_bool().unwrap(), "{l}");
    let probes = l["probes"].as_array().unwrap();
    assert_eq!(
        probes.len(),
        waves.len() - 1,
        "a probe before each next wave"
    );
    for p in probes.iter().chain([&l["end"]]) {
        assert_eq!(p["nodes"], nodes + clients, "{p}");
        assert_eq!(p["agreeing"], p["nodes"], "{p}");
    }
    let blocks = &l["blocks"];
    assert_eq!(blocks["lost"], 0, "{blocks}");
    assert_eq!(blocks["nodes"], nodes + clients, "{blocks}");
    assert!(
        blocks["confirmed_seen"].as_u64().unwrap() >= submitted,
        "{blocks}"
    );
    // Every confirmed send is on every node at the end, so the end's confirmed count covers them.
    assert!(
        l["end"]["confirmed_range"][0].as_u64().unwrap() >= submitted,
        "{l}"
    );
    assert!(rejoined > 0);
    assert_eq!(l["goal_met"], true);
}

#[test]
fn load_short_streams_to_hundreds_of_clients_without_errors_or_memory_growth() {
    let r = run_short(env!("CARGO_BIN_EXE_load"), "load");
    let clients =
        r["config"]["sse_clients"].as_u64().unwrap() + r["config"]["ws_clients"].as_u64().unwrap();
    assert!(clients >= 200, "{clients} clients");
    assert_eq!(r["errors"], 0, "{}", r["error_messages"]);
    let answered = r["answered"].as_u64().unwrap();
    assert!(
        answered >= clients,
        "only {answered} answers for {clients} clients"
    );
    for api in r["by_api"].as_array().unwrap() {
        assert!(api["answered"].as_u64().unwrap() > 0, "{api}");
        let ttft = &api["ttft"];
        assert!(ttft["p50_ms"].as_f64().unwrap() > 0.0, "{api}");
        assert!(ttft["p99_ms"].as_f64().unwrap() >= ttft["p50_ms"].as_f64().unwrap());
    }
    assert!(
        r["memory_goal_met"].as_bool().unwrap(),
        "RSS over time: {}",
        r["rss"]
    );
    assert_eq!(r["unhealthy_after"].as_array().unwrap().len(), 0);
    assert!(
        r["rss"].as_array().unwrap().len() >= 10,
        "memory was sampled every second"
    );
}
