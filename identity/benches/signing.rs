//! Signing benchmark: the identity API against raw ed25519-dalek in the same run.
//!
//! `cargo bench -p mycel-identity --bench signing [-- N]` signs and verifies N messages (default
//! 100,000) both ways, prints the throughput ratio (goal ≥ 0.95: the domain-separated wrapper costs
//! < 5%), then batch-verify throughput at several batch sizes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use mycel_identity::{Keypair, SecretKey, SignedItem, domains, verify_batch};

const MESSAGE_LEN: usize = 128;

fn messages(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut m = vec![0u8; MESSAGE_LEN];
            m[..8].copy_from_slice(&(i as u64).to_le_bytes());
            m
        })
        .collect()
}

fn per_sec(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let msgs = messages(n);
    let seed = [42u8; 32];
    let ours = Keypair::from_secret(&SecretKey::from_bytes(seed));
    let ours_pub = ours.public();
    let raw = SigningKey::from_bytes(&seed);
    let raw_pub = raw.verifying_key();

    // Warm up both paths.
    for m in msgs.iter().take(1000) {
        black_box(ours.sign(domains::BLOCK, m));
        black_box(raw.sign(m));
    }

    // Interleave rounds so drift in machine load hits both sides alike.
    let rounds = 4;
    let chunk = n / rounds;
    let (mut raw_sign, mut our_sign, mut raw_verify, mut our_verify) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut raw_sigs = Vec::with_capacity(n);
    let mut our_sigs = Vec::with_capacity(n);
    for r in 0..rounds {
        let part = &msgs[r * chunk..(r + 1) * chunk];
        let t = Instant::now();
        for m in part {
            raw_sigs.push(raw.sign(m));
        }
        raw_sign += t.elapsed();
        let t = Instant::now();
        for m in part {
            our_sigs.push(ours.sign(domains::BLOCK, m));
        }
        our_sign += t.elapsed();
        let t = Instant::now();
        for (m, s) in part.iter().zip(&raw_sigs[r * chunk..]) {
            raw_pub.verify_strict(m, s).expect("raw verify");
        }
        raw_verify += t.elapsed();
        let t = Instant::now();
        for (m, s) in part.iter().zip(&our_sigs[r * chunk..]) {
            ours_pub.verify(domains::BLOCK, m, s).expect("our verify");
        }
        our_verify += t.elapsed();
    }
    let done = chunk * rounds;
    let sign_ratio = raw_sign.as_secs_f64() / our_sign.as_secs_f64();
    let verify_ratio = raw_verify.as_secs_f64() / our_verify.as_secs_f64();
    let total_ratio = (raw_sign + raw_verify).as_secs_f64() / (our_sign + our_verify).as_secs_f64();
    println!("messages: {done} × {MESSAGE_LEN} bytes");
    println!(
        "sign    raw ed25519-dalek {:>9.0}/s   mycel-identity {:>9.0}/s   ratio {sign_ratio:.3}",
        per_sec(done, raw_sign),
        per_sec(done, our_sign)
    );
    println!(
        "verify  raw ed25519-dalek {:>9.0}/s   mycel-identity {:>9.0}/s   ratio {verify_ratio:.3}",
        per_sec(done, raw_verify),
        per_sec(done, our_verify)
    );
    println!(
        "sign+verify ratio (identity / raw): {total_ratio:.3} (goal ≥ 0.95) {}",
        if total_ratio >= 0.95 { "OK" } else { "MISSED" }
    );

    // Batch verification throughput.
    let pairs: Vec<Keypair> = (0..64).map(|_| Keypair::generate()).collect();
    let publics: Vec<_> = pairs.iter().map(Keypair::public).collect();
    let sigs: Vec<_> = msgs
        .iter()
        .take(4096)
        .enumerate()
        .map(|(i, m)| pairs[i % 64].sign(domains::VOTE, m))
        .collect();
    let single = {
        let t = Instant::now();
        for (i, s) in sigs.iter().enumerate() {
            publics[i % 64]
                .verify(domains::VOTE, &msgs[i], s)
                .expect("verify");
        }
        per_sec(sigs.len(), t.elapsed())
    };
    println!("single verify (64 signers): {single:.0}/s");
    for size in [16usize, 64, 256, 1024] {
        let t = Instant::now();
        let mut verified = 0;
        while verified + size <= sigs.len() {
            let items: Vec<SignedItem<'_>> = (verified..verified + size)
                .map(|i| SignedItem {
                    domain: domains::VOTE,
                    message: &msgs[i],
                    signature: &sigs[i],
                    signer: &publics[i % 64],
                })
                .collect();
            verify_batch(&items).expect("batch");
            verified += size;
        }
        let rate = per_sec(verified, t.elapsed());
        println!(
            "batch verify, batch {size:>4}: {rate:>9.0} signatures/s ({:.2}× single)",
            rate / single
        );
    }
}
