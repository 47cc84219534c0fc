//! Seeded simulation: a double spend (two blocks at one height) with < 1/3 byzantine stake among
//! 24 representatives, over a network with random delays and drops, never gets both branches
//! confirmed; honest nodes that confirm agree and end with the same ledger state.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use mycel_identity::Keypair;
use mycel_ledger::consensus::{Elections, Representative, VoteOutcome, settle};
use mycel_ledger::{Block, BlockHash, Credits, Ledger, LedgerError, Processed, Vote, Wallet};

use crate::common::*;

const REPS: usize = 24;
const DROP_PERCENT: u64 = 15;
const MAX_DELAY: u64 = 40;
const REBROADCAST_EVERY: u64 = 60;
const END: u64 = 3000;

#[derive(Clone)]
enum Msg {
    Block(Block),
    Vote(Vote),
}

struct Node {
    ledger: Ledger,
    elections: Elections,
    rep: Option<Representative>,
    byzantine: Option<Keypair>,
    seen: std::collections::HashSet<BlockHash>,
    confirmed: Option<BlockHash>,
}

struct Net {
    rng: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    msgs: HashMap<u64, Msg>,
    next: u64,
}

impl Net {
    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
    fn send(&mut self, now: u64, to: usize, m: Msg) {
        if self.rand() % 100 < DROP_PERCENT {
            return;
        }
        let at = now + 1 + self.rand() % MAX_DELAY;
        self.msgs.insert(self.next, m);
        self.queue.push(Reverse((at, self.next, to)));
        self.next += 1;
    }
    fn broadcast(&mut self, now: u64, n: usize, m: &Msg) {
        for to in 0..n {
            self.send(now, to, m.clone());
        }
    }
}

/// Runs one seeded simulation; returns the winner confirmed by each honest node (None = undecided).
fn simulate(seed: u64) -> (Vec<Option<BlockHash>>, [BlockHash; 2], Vec<[u8; 32]>) {
    let keys: Vec<Keypair> = (0..REPS as u64).map(|i| key(seed, i)).collect();
    let mut net = Net {
        rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        queue: BinaryHeap::new(),
        msgs: HashMap::new(),
        next: 0,
    };
    let stakes: Vec<u128> = (0..REPS)
        .map(|_| 1 + u128::from(net.rand() % 100))
        .collect();
    let total: u128 = stakes.iter().sum();
    // Byzantine set: greedily, staying strictly below 1/3 of the stake.
    let mut byz = [false; REPS];
    let mut byz_stake = 0;
    for i in 0..REPS {
        if (byz_stake + stakes[i]) * 3 < total && net.rand().is_multiple_of(2) {
            byz[i] = true;
            byz_stake += stakes[i];
        }
    }
    let attacker = key(seed, 1000);
    let mut accounts: Vec<(&Keypair, u128, u128)> =
        keys.iter().zip(&stakes).map(|(k, s)| (k, 0, *s)).collect();
    accounts.push((&attacker, 100, 0));
    let g = genesis(&accounts, test_params());
    let base = Ledger::new(&g).expect("genesis");
    let a = Wallet::new(&attacker)
        .send(&base, id(&keys[0]), Credits::whole(100), 0)
        .expect("send a");
    let b = Wallet::new(&attacker)
        .send(&base, id(&keys[1]), Credits::whole(100), 0)
        .expect("send b");
    let mut nodes: Vec<Node> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Node {
            ledger: Ledger::new(&g).expect("genesis"),
            elections: Elections::new(),
            rep: (!byz[i]).then(|| Representative::new(k.clone())),
            byzantine: byz[i].then(|| k.clone()),
            seen: Default::default(),
            confirmed: None,
        })
        .collect();
    // The attacker shows each branch to a different half.
    for i in 0..REPS {
        let m = if i % 2 == 0 { &a } else { &b };
        net.send(0, i, Msg::Block(m.clone()));
    }
    let info = base.latest_epoch().clone();
    let mut now = 0;
    let mut next_rebroadcast = REBROADCAST_EVERY;
    while now < END {
        let Some(Reverse((at, id_, to))) = net.queue.pop() else {
            break;
        };
        now = at;
        while now >= next_rebroadcast {
            for node in &nodes {
                if let Some(rep) = &node.rep {
                    for v in rep.current_votes() {
                        for t in 0..REPS {
                            net.send(next_rebroadcast, t, Msg::Vote(v));
                        }
                    }
                }
            }
            next_rebroadcast += REBROADCAST_EVERY;
        }
        let Some(msg) = net.msgs.remove(&id_) else {
            continue;
        };
        let node = &mut nodes[to];
        let mut out: Vec<Msg> = Vec::new();
        let mut votes: Vec<Vote> = Vec::new();
        match msg {
            Msg::Block(block) => {
                if !node.seen.insert(block.hash()) {
                    continue;
                }
                out.push(Msg::Block(block.clone()));
                match node.ledger.process(block.clone(), 0) {
                    Ok(Processed::Applied { .. }) | Err(LedgerError::Fork { .. }) => {}
                    other => panic!("unexpected {other:?}"),
                }
                votes.extend(node.elections.add_candidate(&block));
                if let Some(rep) = &mut node.rep
                    && let Some(v) = rep.on_candidate(&block, info.epoch)
                {
                    out.push(Msg::Vote(v));
                    votes.push(v);
                }
                if let Some(k) = &node.byzantine {
                    // Equivocate: initial and final votes for every branch it sees, to everyone.
                    for f in [false, true] {
                        let v = Vote::sign(k, block.hash(), info.epoch, f, 0);
                        out.push(Msg::Vote(v));
                        votes.push(v);
                    }
                }
            }
            Msg::Vote(v) => votes.push(v),
        }
        let mut i = 0;
        while i < votes.len() {
            let v = votes[i];
            i += 1;
            let outcome = node.elections.add_votes(vec![v], &info).pop();
            let root = match outcome {
                Some(VoteOutcome::Counted(r)) => r,
                Some(VoteOutcome::Confirmed { root, winner }) => {
                    assert!(node.confirmed.is_none(), "a node confirmed a root twice");
                    node.confirmed = Some(winner);
                    let block = node
                        .elections
                        .get(&root)
                        .and_then(|e| e.candidates().find(|c| c.hash() == winner).cloned());
                    settle(&mut node.ledger, &block.expect("winner is a candidate"), 0)
                        .expect("settle");
                    root
                }
                _ => continue,
            };
            if let (Some(rep), Some(e)) = (&mut node.rep, node.elections.get(&root)) {
                for nv in rep.on_update(e, &info) {
                    out.push(Msg::Vote(nv));
                    votes.push(nv);
                }
            }
        }
        for m in out {
            net.broadcast(now, REPS, &m);
        }
    }
    let winners = nodes
        .iter()
        .filter(|n| n.rep.is_some())
        .map(|n| n.confirmed)
        .collect();
    let roots = nodes
        .iter()
        .filter(|n| n.rep.is_some() && n.confirmed.is_some())
        .map(|n| n.ledger.state_root())
        .collect();
    (winners, [a.hash(), b.hash()], roots)
}

#[test]
fn double_spend_never_confirms_both_branches() {
    let mut decided_runs = 0;
    for seed in 1..=12u64 {
        let (winners, branches, roots) = simulate(seed);
        let decided: std::collections::HashSet<BlockHash> =
            winners.iter().flatten().copied().collect();
        assert!(decided.len() <= 1, "seed {seed}: both branches confirmed");
        assert!(decided.iter().all(|w| branches.contains(w)));
        assert!(
            roots.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: confirmed nodes disagree on state"
        );
        if winners.iter().filter(|w| w.is_some()).count() * 3 >= winners.len() * 2 {
            decided_runs += 1;
        }
    }
    // Liveness is not guaranteed under equivocation, but most runs should settle.
    assert!(decided_runs >= 6, "only {decided_runs}/12 runs settled");
}
