//! Ledger throughput, printed as ratios of the raw Ed25519 batch-verification bound measured in the
//! same run: blocks/s validated and applied in memory, and with redb (one transaction per batch).
//!
//! Run: `cargo bench -p mycel-ledger`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Instant;

use mycel_identity::{Keypair, SecretKey, SignedItem, domains, verify_batch};
use mycel_ledger::genesis::GenesisAccount;
use mycel_ledger::{
    AccountId, Block, Credits, Genesis, Ledger, Params, RedbStore, StoredLedger, Wallet,
};

const ACCOUNTS: usize = 256;
const ROUNDS: usize = 40;
const BATCH: usize = 512;
/// Blocks per redb write transaction (one fsync each).
const REDB_BATCH: usize = 2048;

fn keys() -> Vec<Keypair> {
    (0..ACCOUNTS as u64)
        .map(|i| {
            let mut s = [7u8; 32];
            s[..8].copy_from_slice(&i.to_le_bytes());
            Keypair::from_secret(&SecretKey::from_bytes(s))
        })
        .collect()
}

fn genesis(keys: &[Keypair]) -> Genesis {
    Genesis {
        network: "bench".into(),
        seed: [1; 32],
        start_time: 0,
        accounts: keys
            .iter()
            .map(|k| GenesisAccount {
                account: *k.public().as_bytes(),
                balance: Credits::whole(1_000_000),
                stake: Credits::whole(1),
            })
            .collect(),
        params: Params::default(),
    }
}

/// ROUNDS rounds of one send per account (each round built on the previous one).
fn workload(keys: &[Keypair], g: &Genesis) -> Vec<Block> {
    let mut l = Ledger::new(g).unwrap();
    let mut out = Vec::with_capacity(ACCOUNTS * ROUNDS);
    for round in 0..ROUNDS {
        let blocks: Vec<Block> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let to = AccountId::from_public_key(&keys[(i + 1 + round) % keys.len()].public());
                Wallet::new(k)
                    .send(&l, to, Credits(1 + round as u128), 0)
                    .unwrap()
            })
            .collect();
        for r in l.process_batch(blocks.clone(), 0) {
            r.unwrap();
        }
        out.extend(blocks);
    }
    out
}

fn rate(n: usize, start: Instant) -> f64 {
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let keys = keys();
    let g = genesis(&keys);
    let blocks = workload(&keys, &g);
    let n = blocks.len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Bound: raw batch verification of the same signatures, 1 thread and all threads.
    let publics: Vec<_> = blocks
        .iter()
        .map(|b| b.account.public_key().unwrap())
        .collect();
    let hashes: Vec<[u8; 32]> = blocks.iter().map(|b| b.hash().0).collect();
    let items: Vec<SignedItem<'_>> = blocks
        .iter()
        .zip(&publics)
        .zip(&hashes)
        .map(|((b, k), h)| SignedItem {
            domain: domains::BLOCK,
            message: h,
            signature: b.signature(),
            signer: k,
        })
        .collect();
    let t = Instant::now();
    for chunk in items.chunks(BATCH) {
        verify_batch(chunk).unwrap();
    }
    let bound_1 = rate(n, t);
    let t = Instant::now();
    for chunk in items.chunks(BATCH) {
        let per = chunk.len().div_ceil(threads);
        std::thread::scope(|s| {
            for c in chunk.chunks(per) {
                s.spawn(move || verify_batch(c).unwrap());
            }
        });
    }
    // The machine is shared: take the better of the two as the bound.
    let rate_n = rate(n, t);
    let bound = rate_n.max(bound_1);

    // In memory: decode-free apply of signed blocks, batch-verified per batch.
    let t = Instant::now();
    let mut l = Ledger::new(&g).unwrap();
    for chunk in blocks.chunks(BATCH) {
        for r in l.process_batch(chunk.to_vec(), 0) {
            r.unwrap();
        }
    }
    let mem = rate(n, t);

    // redb: one write transaction (fsync) per batch.
    let dir = tempfile::tempdir().unwrap();
    let mut stored =
        StoredLedger::open(RedbStore::open(&dir.path().join("bench.redb")).unwrap(), &g).unwrap();
    let t = Instant::now();
    for chunk in blocks.chunks(REDB_BATCH) {
        for r in stored.apply_batch(chunk.to_vec(), 0).unwrap() {
            r.unwrap();
        }
    }
    let disk = rate(n, t);

    // Persistence alone, derived from the two runs (same validation work in both).
    let persist = 1.0 / (1.0 / disk - 1.0 / mem).max(1e-12);
    println!(
        "mycel-ledger bench: {n} send blocks, batches of {BATCH} (redb: {REDB_BATCH}), {threads} threads"
    );
    println!("  batch-verify bound, 1 thread : {bound_1:>10.0} sig/s");
    println!(
        "  batch-verify bound, {threads} threads: {rate_n:>10.0} sig/s   (bound = the better: {bound:.0})"
    );
    println!(
        "  in-memory validate+apply     : {mem:>10.0} blocks/s  = {:.2} × bound (goal ≥ 0.50)",
        mem / bound
    );
    println!(
        "  redb batched validate+apply  : {disk:>10.0} blocks/s  = {:.2} × bound (goal ≥ 20000 blocks/s)",
        disk / bound
    );
    println!(
        "  redb persistence alone       : {persist:>10.0} blocks/s  (derived: 1/(1/redb - 1/in-memory))"
    );
}
