//! Gossip attacks: the attacker node publishes on every topic the nodes subscribe to — signed
//! heartbeats (honest, lying, replayed, with mutated bodies signed afterwards so the signature
//! holds, or mutated after signing so it does not), ledger blocks and votes signed by the
//! attacker's own key, centroid updates — and random bytes. The envelope is always a valid
//! gossipsub message signed by the attacker's libp2p key, so every payload reaches the node's
//! validator. Whether a node accepted or rejected it shows in its `mycel_gossip_messages_total`.

use mycel_identity::Keypair;
use mycel_node::experts::CENTROID_TOPIC;
use mycel_node::ledger::wire::{BLOCKS_TOPIC, VOTES_TOPIC};
use mycel_node::network::NetworkHandle;
use mycel_node::wire::HEALTH_TOPIC;
use serde_json::Value;

use super::mutate::{self, Mutated};
use super::seeds::{self, SeedContext};
use super::tally::{Outcome, Tally};
use crate::rng::SimRng;

/// Every topic attacked.
pub const TOPICS: [&str; 4] = [HEALTH_TOPIC, BLOCKS_TOPIC, VOTES_TOPIC, CENTROID_TOPIC];

/// The attacker's identity as gossip payloads need it.
pub struct Publisher<'a> {
    /// Its network.
    pub net: &'a NetworkHandle,
    /// Its key (signs heartbeats, blocks, votes, updates).
    pub key: &'a Keypair,
    /// Next heartbeat sequence number (well above the node's own counter, so a fuzzed heartbeat
    /// is fresh).
    pub seq: &'a mut u64,
    /// The last valid heartbeat published (replayed later: stale).
    pub last_valid: &'a mut Option<Vec<u8>>,
}

/// Publishes one payload on `topic`; records and returns the outcome (the node's verdict is not
/// visible here).
pub async fn attack(
    rng: &mut SimRng,
    p: &mut Publisher<'_>,
    ctx: &SeedContext,
    tally: &Tally,
    topic: &'static str,
) -> Outcome {
    let (data, mutation) = match topic {
        HEALTH_TOPIC => heartbeat(rng, p, ctx),
        BLOCKS_TOPIC => block(rng, p.key, ctx),
        VOTES_TOPIC => {
            let valid = seeds::votes(rng, ctx, p.key).encode();
            binary(rng, valid)
        }
        _ => centroid(rng, p),
    };
    let outcome = match p.net.publish(topic, data).await {
        Ok(()) => Outcome::Delivered,
        Err(_) => Outcome::Failed,
    };
    tally.record("gossip", topic, mutation, outcome);
    outcome
}

/// Binary payloads: valid (signed by the attacker), byte-mutated, or random.
fn binary(rng: &mut SimRng, valid: Vec<u8>) -> (Vec<u8>, &'static str) {
    match rng.below(10) {
        0..=3 => (valid, "valid_signed_by_attacker"),
        4..=8 => mutate::bytes(rng, &valid),
        _ => (mutate::random_bytes(rng, 2048), "random"),
    }
}

fn block(rng: &mut SimRng, key: &Keypair, ctx: &SeedContext) -> (Vec<u8>, &'static str) {
    if rng.below(10) == 0 {
        // Signed by the attacker for an account that is not its own (the wallet).
        let b = seeds::attacker_block(rng, ctx, key);
        let mut data = b.data().clone();
        data.account = ctx.wallet;
        let signature = key.sign(mycel_identity::domains::BLOCK, &data.hash().0);
        return (
            mycel_ledger::Block::from_parts(data, signature).encode(),
            "signed_for_another_account",
        );
    }
    let valid = seeds::attacker_block(rng, ctx, key).encode();
    binary(rng, valid)
}

/// A JSON body mutated *before* signing keeps a valid signature, so its content reaches the
/// checks behind it.
fn signed_json(
    rng: &mut SimRng,
    valid: &Value,
    sign: impl Fn(&[u8]) -> Vec<u8>,
) -> (Vec<u8>, &'static str) {
    match rng.below(10) {
        0..=1 => (sign(valid.to_string().as_bytes()), "valid"),
        2..=5 => {
            let (m, name) = mutate::json(rng, valid);
            let body = match m {
                Mutated::Value(v) => v.to_string().into_bytes(),
                Mutated::Raw(b) => b,
            };
            (sign(&body), name)
        }
        6..=8 => mutate::bytes(rng, &sign(valid.to_string().as_bytes())),
        _ => (mutate::random_bytes(rng, 2048), "random"),
    }
}

fn heartbeat(
    rng: &mut SimRng,
    p: &mut Publisher<'_>,
    ctx: &SeedContext,
) -> (Vec<u8>, &'static str) {
    *p.seq += 1;
    let seq = *p.seq;
    let key = p.key;
    let sign = |body: &[u8]| seeds::sign_heartbeat(key, body);
    match rng.below(20) {
        0 => {
            let body = seeds::lying_heartbeat_body(key, seq, ctx.n_layers).to_string();
            (sign(body.as_bytes()), "lying_heartbeat")
        }
        1 => match p.last_valid.clone() {
            Some(old) => (old, "replayed_heartbeat"),
            None => (
                sign(seeds::heartbeat_body(key, seq).to_string().as_bytes()),
                "valid",
            ),
        },
        _ => {
            let (data, name) = signed_json(rng, &seeds::heartbeat_body(key, seq), sign);
            if name == "valid" {
                *p.last_valid = Some(data.clone());
            }
            (data, name)
        }
    }
}

fn centroid(rng: &mut SimRng, p: &mut Publisher<'_>) -> (Vec<u8>, &'static str) {
    *p.seq += 1;
    let key = p.key;
    let body = seeds::centroid_body(rng, *p.seq);
    signed_json(rng, &body, |b| seeds::sign_centroid(key, b))
}
