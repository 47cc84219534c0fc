//! Expert routing with the real embedding model (all-MiniLM-L6-v2) on the labelled set
//! node/tests/data/domains.json: ten simulated nodes learn the domain centroids from their own
//! shares of the training queries through signed, noised updates; node 0 routes the held-out
//! queries with the aggregate, first with every node honest, then with 20% of them poisoning.
//! Skipped, with a message, when the model is not cached: set MYCEL_TEST_MODELS_DIR to a models
//! cache (default `$HOME/.cache/mycel/dev-data/models`), e.g. after `mycel-node model pull
//! all-minilm-l6-v2`.
//!
//! Privacy: the labelled set gives each node 4 examples per domain, far too few for a useful
//! (ε, δ) — `local_update` refuses them and says how many it needs (printed). The updates of the
//! simulation therefore carry the noise that a node holding `PRODUCTION_EXAMPLES` examples per
//! domain adds at (ε, δ) = (1, 10⁻⁵) per round, on top of the 4-example means (whose own sampling
//! noise is larger than a 512-example mean's, so the simulation errs on the hard side).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use mycel_identity::{Keypair, PeerId};
use mycel_models::EmbeddingModel;
use mycel_models::registry::DEFAULT_EMBEDDING_MODEL;
use mycel_node::experts::privacy::add_gaussian_noise;
use mycel_node::experts::update::MAX_UPDATE_NORM;
use mycel_node::experts::{
    CentroidUpdate, DomainTag, DpParams, FederatedRouter, LocalData, MIN_SIMILARITY,
    PrivacyAccountant, RoutingTable, clipped_mean, local_update,
};
use mycel_node::models;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use serde::Deserialize;

/// Simulated nodes; node 0 is the one whose router is measured.
const NODES: usize = 10;
/// Nodes that poison their updates (20%).
const POISONED: usize = 2;
/// Held-out queries per domain (the last ones of each list).
const TEST_PER_DOMAIN: usize = 24;
/// Every node's reputation, honest or not.
const REPUTATION: f64 = 0.8;
/// Per-round ε.
const EPSILON: f64 = 1.0;
/// Per-round δ.
const DELTA: f64 = 1e-5;
/// Examples per domain of the node whose noise the simulation adds.
const PRODUCTION_EXAMPLES: usize = 512;
/// Seeds of the simulation (the noise and nothing else). With 4 examples per node and domain, one
/// draw of the noise moves accuracy by up to ±2.5 points (3 of 120 queries) when 20% of the data
/// goes missing, so the effect of poisoning is measured as the mean over the draws.
const SEEDS: std::ops::RangeInclusive<u64> = 1..=10;

#[derive(Deserialize)]
struct Dataset {
    domains: BTreeMap<String, Domain>,
    off_topic: Vec<String>,
}

#[derive(Deserialize)]
struct Domain {
    queries: Vec<String>,
}

/// The embedded labelled set.
struct Labelled {
    domains: Vec<DomainTag>,
    /// Per domain: the training queries, then the held-out ones.
    train: Vec<Vec<Vec<f32>>>,
    test: Vec<Vec<Vec<f32>>>,
    off_topic: Vec<Vec<f32>>,
    /// Per node: its share of the training queries.
    nodes: Vec<LocalData>,
}

fn models_dir() -> Option<PathBuf> {
    std::env::var_os("MYCEL_TEST_MODELS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mycel/dev-data/models"))
        })
}

fn embed(model: &EmbeddingModel, texts: &[String]) -> Vec<Vec<f32>> {
    texts
        .chunks(mycel_models::embed::MAX_EMBED_BATCH)
        .flat_map(|chunk| {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            model.embed(&refs).unwrap()
        })
        .collect()
}

fn load(model: &EmbeddingModel) -> Labelled {
    let data: Dataset = serde_json::from_str(include_str!("../data/domains.json")).unwrap();
    let off_topic = embed(model, &data.off_topic);
    let mut labelled = Labelled {
        domains: Vec::new(),
        train: Vec::new(),
        test: Vec::new(),
        nodes: (0..NODES)
            .map(|_| LocalData::new(off_topic[0].len()).unwrap())
            .collect(),
        off_topic,
    };
    for (name, domain) in &data.domains {
        let tag: DomainTag = name.parse().unwrap();
        let mut train = embed(model, &domain.queries);
        let test = train.split_off(train.len() - TEST_PER_DOMAIN);
        for (i, example) in train.iter().enumerate() {
            // Equal shares; the remainder, if any, stays unused.
            let node = i / (train.len() / NODES);
            if let Some(local) = labelled.nodes.get_mut(node) {
                local.add(&tag, example.clone()).unwrap();
            }
        }
        labelled.domains.push(tag);
        labelled.train.push(train);
        labelled.test.push(test);
    }
    labelled
}

/// Node `node`'s share of the training queries of domain `d`.
fn share(set: &Labelled, d: usize, node: usize) -> &[Vec<f32>] {
    set.nodes[node].examples(&set.domains[d])
}

/// Share of held-out queries the table routes to their own domain.
fn accuracy(table: &RoutingTable, set: &Labelled) -> f64 {
    let (mut right, mut total) = (0, 0);
    for (d, queries) in set.test.iter().enumerate() {
        for q in queries {
            total += 1;
            if table.route(q).is_some_and(|c| c.domain == set.domains[d]) {
                right += 1;
            }
        }
    }
    f64::from(right) / f64::from(total)
}

/// The norm of a vector.
fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// What the poisoned nodes send for domain `d`: an update that pulls `d`'s traffic elsewhere.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// The attacker's own centroid of the next domain, noised like an honest update.
    Swap,
    /// The mean of the next domain's held-out queries, as long as the wire allows.
    Target,
    /// 45% of the way from the domain's centroid to the next one's: mostly still on the domain's
    /// own side, where no rule tells it from an honest update.
    Edge,
}

const ATTACKS: [Attack; 3] = [Attack::Swap, Attack::Target, Attack::Edge];

struct Network {
    keys: Vec<Keypair>,
    /// Node 0's router with its own centroids.
    router: FederatedRouter,
}

impl Network {
    /// Node 0 with its own centroids, and the honest round-1 updates of nodes 1 to `senders − 1`
    /// gossiped to it.
    fn honest(
        set: &Labelled,
        params: &DpParams,
        senders: usize,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Self {
        let dim = set.train[0][0].len();
        let mut router = FederatedRouter::new(dim).unwrap();
        let keys: Vec<Keypair> = (0..NODES).map(|_| Keypair::generate()).collect();
        for (d, domain) in set.domains.iter().enumerate() {
            let own = clipped_mean(share(set, d, 0), params.clip_norm()).unwrap();
            router.set_local(domain.clone(), own).unwrap();
        }
        let mut net = Self { keys, router };
        for node in 1..senders {
            for d in 0..set.domains.len() {
                let u = noised_update(set, d, node, params, rng);
                net.gossip(node, &u);
            }
        }
        net
    }

    /// Signs `update` as node `node`, verifies it as node 0 receives it and inserts it.
    fn gossip(&mut self, node: usize, update: &CentroidUpdate) {
        let source = self.keys[node].peer_id();
        let bytes = update.sign(&self.keys[node]);
        let received = CentroidUpdate::verify(&bytes, &source, self.router.dim()).unwrap();
        self.router.insert(source, received, REPUTATION).unwrap();
    }

    fn node_of(&self, peer: &PeerId) -> usize {
        self.keys.iter().position(|k| &k.peer_id() == peer).unwrap()
    }
}

/// Node `node`'s update of domain `d` in round 1: its clipped mean plus the noise of a node with
/// `PRODUCTION_EXAMPLES` examples.
fn noised_update(
    set: &Labelled,
    d: usize,
    node: usize,
    params: &DpParams,
    rng: &mut Xoshiro256PlusPlus,
) -> CentroidUpdate {
    let mut vector = clipped_mean(share(set, d, node), params.clip_norm()).unwrap();
    add_gaussian_noise(&mut vector, params.noise_sigma(PRODUCTION_EXAMPLES), rng);
    CentroidUpdate {
        domain: set.domains[d].clone(),
        round: 1,
        vector,
        examples: PRODUCTION_EXAMPLES as u32,
    }
}

fn poison(
    net: &mut Network,
    set: &Labelled,
    attack: Attack,
    params: &DpParams,
    rng: &mut Xoshiro256PlusPlus,
) {
    let k = set.domains.len();
    for node in NODES - POISONED..NODES {
        for d in 0..k {
            let next = (d + 1) % k;
            let vector = match attack {
                Attack::Swap => noised_update(set, next, node, params, rng).vector,
                Attack::Target => {
                    let target = clipped_mean(&set.test[next], 1.0).unwrap();
                    let scale = 0.99 * MAX_UPDATE_NORM / norm(&target);
                    target.iter().map(|x| x * scale).collect()
                }
                Attack::Edge => {
                    let own = clipped_mean(&set.train[d], 1.0).unwrap();
                    let other = clipped_mean(&set.train[next], 1.0).unwrap();
                    own.iter()
                        .zip(&other)
                        .map(|(a, b)| a + 0.45 * (b - a))
                        .collect()
                }
            };
            let u = CentroidUpdate {
                domain: set.domains[d].clone(),
                round: 2,
                vector,
                examples: PRODUCTION_EXAMPLES as u32,
            };
            net.gossip(node, &u);
        }
    }
}

#[test]
fn federated_routing_is_accurate_and_resists_poisoning() {
    let Some(dir) = models_dir().filter(|d| models::is_cached(DEFAULT_EMBEDDING_MODEL, d)) else {
        println!(
            "SKIPPED: {DEFAULT_EMBEDDING_MODEL} is not cached (set MYCEL_TEST_MODELS_DIR or run `mycel-node model pull {DEFAULT_EMBEDDING_MODEL}`)"
        );
        return;
    };
    let model =
        EmbeddingModel::load(&models::pull(DEFAULT_EMBEDDING_MODEL, &dir, None, |_| {}).unwrap())
            .unwrap();
    let set = load(&model);
    let tests: usize = set.test.iter().map(Vec::len).sum();
    assert!(set.domains.len() >= 5 && tests >= 100);
    let params = DpParams::new(EPSILON, DELTA).unwrap();
    println!(
        "{} domains, {tests} held-out queries, {NODES} nodes with {} training queries per domain each",
        set.domains.len(),
        share(&set, 0, 0).len()
    );

    // At the labelled set's real size, a private update is refused.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let refused = local_update(&set.domains[0], 1, share(&set, 0, 1), &params, &mut rng);
    println!(
        "local_update with the test's own shares: {}",
        refused.unwrap_err()
    );
    let sigma = params.noise_sigma(PRODUCTION_EXAMPLES);
    let mut accountant = PrivacyAccountant::new(params);
    accountant.record_round();
    let per_round = accountant.spent();
    println!(
        "noise σ = {sigma:.4} per coordinate (|noise| ≈ {:.2}): (ε, δ) = ({}, {:e}) per round for a node with {PRODUCTION_EXAMPLES} examples per domain",
        sigma * (set.train[0][0].len() as f64).sqrt(),
        per_round.epsilon,
        per_round.delta
    );
    for _ in 1..24 {
        accountant.record_round();
    }
    let day = accountant.spent();
    println!(
        "budget after 24 rounds: ε = {:.2}, δ = {:.1e} ({:?} composition)",
        day.epsilon, day.delta, day.composition
    );

    let mut clean = Vec::new();
    let mut shifts = vec![Vec::new(); ATTACKS.len()];
    let mut absent = Vec::new();
    for seed in SEEDS {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let honest = Network::honest(&set, &params, NODES, &mut rng)
            .router
            .aggregate();
        let clean_accuracy = accuracy(&honest.table, &set);
        assert_eq!(
            honest.rejected.len(),
            0,
            "seed {seed}: honest updates rejected"
        );
        assert!(
            clean_accuracy >= 0.9,
            "seed {seed}: clean accuracy {clean_accuracy}"
        );
        clean.push(clean_accuracy);
        if seed == *SEEDS.start() {
            let refused = |queries: &[Vec<f32>]| {
                queries
                    .iter()
                    .filter(|q| honest.table.route(q).is_none())
                    .count()
            };
            println!(
                "adequacy (raw cosine ≥ {MIN_SIMILARITY}): refused {}/{tests} held-out queries, {}/{} off-topic ones",
                set.test.iter().map(|t| refused(t)).sum::<usize>(),
                refused(&set.off_topic),
                set.off_topic.len()
            );
        }
        let mut line = format!("seed {seed}: clean {:.1}%", 100.0 * clean_accuracy);
        for (attack, shift) in ATTACKS.iter().zip(&mut shifts) {
            // The same honest noise as the clean run, then the attack.
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let mut net = Network::honest(&set, &params, NODES, &mut rng);
            poison(&mut net, &set, *attack, &params, &mut rng);
            let poisoned = net.router.aggregate();
            let poisoned_accuracy = accuracy(&poisoned.table, &set);
            assert!(
                poisoned_accuracy >= 0.9,
                "seed {seed}, {attack:?}: accuracy {poisoned_accuracy}"
            );
            shift.push(poisoned_accuracy - clean_accuracy);
            let rejected: BTreeSet<usize> = poisoned
                .rejected
                .iter()
                .map(|r| net.node_of(&r.peer))
                .collect();
            line += &format!(
                ", {attack:?} {:.1}% ({} updates rejected, from nodes {rejected:?})",
                100.0 * poisoned_accuracy,
                poisoned.rejected.len()
            );
        }
        // For comparison: the same network without the poisoners' data at all.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let without = Network::honest(&set, &params, NODES - POISONED, &mut rng);
        let without_accuracy = accuracy(&without.router.aggregate().table, &set);
        absent.push(without_accuracy - clean_accuracy);
        line += &format!(", without them {:.1}%", 100.0 * without_accuracy);
        println!("{line}");
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "clean accuracy: mean {:.1}%, worst {:.1}%",
        100.0 * mean(&clean),
        100.0 * clean.iter().copied().fold(1.0, f64::min)
    );
    let worst = |v: &[f64]| {
        v.iter()
            .copied()
            .fold(0.0, |w: f64, s| if s.abs() > w.abs() { s } else { w })
    };
    for (attack, shift) in ATTACKS.iter().zip(&shifts) {
        println!(
            "{attack:?} poisoning by {POISONED}/{NODES} nodes: accuracy moves {:+.2} points on average, {:+.1} at worst",
            100.0 * mean(shift),
            100.0 * worst(shift)
        );
        assert!(
            mean(shift).abs() < 0.02,
            "{attack:?} moves accuracy by {shift:?}"
        );
    }
    println!(
        "without the {POISONED} nodes' data at all: accuracy moves {:+.2} points on average, {:+.1} at worst",
        100.0 * mean(&absent),
        100.0 * worst(&absent)
    );
}
