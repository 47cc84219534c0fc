//! Crash consistency: a child process applying batches to a redb file is killed with SIGKILL at
//! random moments; every reopen validates (full replay) and equals a prefix of the batches that
//! includes every acknowledged one.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mycel_identity::Keypair;
use mycel_ledger::{Block, Credits, Genesis, Ledger, RedbStore, Store, StoredLedger, Wallet};

use crate::common::*;

const ACCOUNTS: u64 = 32;
const KILLS: usize = 50;
const CHILD_ENV: &str = "MYCEL_LEDGER_CRASH_CHILD";

fn world() -> (Vec<Keypair>, Genesis) {
    let keys: Vec<Keypair> = (0..ACCOUNTS).map(|i| key(77, i)).collect();
    let accounts: Vec<(&Keypair, u128, u128)> = keys.iter().map(|k| (k, 1_000_000, 1)).collect();
    let g = genesis(&accounts, test_params());
    (keys, g)
}

/// Batch `n`: every account sends `n + 1` µ to the next one (built against the state before it).
fn batch(keys: &[Keypair], ledger: &Ledger, n: u64) -> Vec<Block> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let to = id(&keys[(i + 1) % keys.len()]);
            Wallet::new(k)
                .send(ledger, to, Credits(u128::from(n) + 1), n)
                .expect("funded")
        })
        .collect()
}

/// State roots after 0, 1, 2, … batches, computed in memory.
fn expected_roots(keys: &[Keypair], g: &Genesis, upto: u64) -> Vec<[u8; 32]> {
    let mut l = Ledger::new(g).expect("genesis");
    let mut roots = vec![l.state_root()];
    for n in 0..upto {
        let b = batch(keys, &l, n);
        for r in l.process_batch(b, n) {
            r.expect("valid");
        }
        roots.push(l.state_root());
    }
    roots
}

fn open(path: &std::path::Path, g: &Genesis) -> StoredLedger<RedbStore> {
    StoredLedger::open(RedbStore::open(path).expect("open redb"), g).expect("open ledger")
}

/// The child: resumes from the file and applies batches forever, printing `ACK n` after each commit.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (keys, g) = world();
    let mut stored = open(std::path::Path::new(&path), &g);
    let mut n = stored.ledger().block_count() as u64 / ACCOUNTS;
    loop {
        let b = batch(&keys, stored.ledger(), n);
        for r in stored.apply_batch(b, n).expect("commit") {
            r.expect("valid block");
        }
        n += 1;
        println!("ACK {n}");
    }
}

#[test]
fn sigkill_at_random_moments_keeps_an_acknowledged_prefix() {
    let (keys, g) = world();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut acked = 0u64;
    let mut roots = expected_roots(&keys, &g, 64);
    for round in 0..KILLS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut child = Command::new(&exe)
            .args([
                "crash::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line
                    .strip_prefix("ACK ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                {
                    last = Some(n);
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(20 + rng % 120));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        if let Some(n) = reader.join().expect("reader") {
            acked = acked.max(n);
        }
        let stored = open(&path, &g);
        stored
            .ledger()
            .verify_replay()
            .unwrap_or_else(|e| panic!("round {round}: replay failed: {e}"));
        let n = stored.ledger().block_count() as u64 / ACCOUNTS;
        assert_eq!(
            stored.ledger().block_count() as u64 % ACCOUNTS,
            0,
            "round {round}: partial batch on disk"
        );
        assert!(
            n >= acked,
            "round {round}: acknowledged {acked} batches, found {n}"
        );
        if n as usize >= roots.len() {
            roots = expected_roots(&keys, &g, n + 64);
        }
        assert_eq!(
            stored.ledger().state_root(),
            roots[n as usize],
            "round {round}: not the prefix of {n} batches"
        );
        let data = stored.store().load().expect("load");
        assert_eq!(data.blocks.len() as u64, n * ACCOUNTS);
    }
    assert!(acked > 0, "the child never acknowledged a batch");
}
