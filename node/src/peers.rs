//! What the node knows about connected peers, and provider choice — pure state, time passed in.
//!
//! A peer is **up** while its last accepted heartbeat is younger than [`DOWN_AFTER_INTERVALS`]
//! heartbeat intervals; a peer whose heartbeats stopped is **down** and is not offered as a provider,
//! even if its connection lingers. Providers of a model are ordered by a cost: the ping round-trip
//! EWMA plus [`LOAD_PENALTY`] per job of queue depth reported in the heartbeat.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use crate::heartbeat::Heartbeat;
use crate::scoring::Subnet;

/// Heartbeat intervals of silence after which a peer is down.
pub const DOWN_AFTER_INTERVALS: u32 = 3;
/// Weight of a new ping sample in the round-trip EWMA (the rest stays with the old average).
pub const RTT_EWMA_ALPHA: f64 = 0.3;
/// Cost of one queued or running job at a provider, in round-trip time.
pub const LOAD_PENALTY: Duration = Duration::from_millis(50);
/// Round trip assumed for a peer that has not answered a ping yet.
pub const UNKNOWN_RTT: Duration = Duration::from_millis(250);
/// Addresses remembered per peer.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// Longest agent string kept.
const MAX_AGENT_CHARS: usize = 128;

/// State of one connected peer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerEntry {
    /// Addresses it is connected on (≤ [`MAX_ADDRS_PER_PEER`]).
    pub addrs: Vec<Multiaddr>,
    /// Models from its latest accepted heartbeat.
    pub models: Vec<String>,
    /// Layer ranges from its latest accepted heartbeat.
    pub shards: Vec<crate::heartbeat::ShardAd>,
    /// Recent tok/s, free memory (MiB) and version from its latest accepted heartbeat.
    pub health: (u32, u64, String),
    /// Queue depth from its latest accepted heartbeat.
    pub load: u32,
    /// Sequence number of its latest accepted heartbeat.
    pub heartbeat_seq: u64,
    /// When its latest heartbeat was accepted.
    pub last_heartbeat: Option<Instant>,
    /// Last ping round trip.
    pub rtt: Option<Duration>,
    /// EWMA of ping round trips.
    pub rtt_ewma: Option<Duration>,
    /// Identify agent string.
    pub agent: Option<String>,
    /// Ledger-gossip token bucket: tokens left and when it was last refilled.
    pub gossip_bucket: Option<(f64, Instant)>,
}

/// Most tracked peers from one /24 (IPv4) or /48 (IPv6) subnet, loopback excepted.
pub const MAX_PEERS_PER_SUBNET: usize = 8;
/// Ledger-gossip messages a peer may send in a burst.
pub const GOSSIP_BURST: f64 = 400.0;
/// Ledger-gossip messages per second a peer may sustain.
pub const GOSSIP_RATE: f64 = 100.0;

fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    })
}

/// Connected peers, bounded by the capacity given at construction.
#[derive(Clone, Debug)]
pub struct PeerTable {
    peers: HashMap<PeerId, PeerEntry>,
    capacity: usize,
    heartbeat_interval: Duration,
}

impl PeerTable {
    /// An empty table for at most `capacity` peers, heartbeats expected every `heartbeat_interval`.
    pub fn new(capacity: usize, heartbeat_interval: Duration) -> Self {
        Self {
            peers: HashMap::new(),
            capacity,
            heartbeat_interval,
        }
    }

    /// Records a connection; `false` when the table is full and the peer is new (refuse it).
    ///
    /// A new peer is refused when the table is full, or when [`MAX_PEERS_PER_SUBNET`] tracked peers
    /// already come from its /24 (IPv4) or /48 (IPv6): an attacker with one subnet cannot fill the
    /// table and eclipse the node. Loopback is exempt (local devnets and tests).
    pub fn connected(&mut self, peer: PeerId, addr: Multiaddr) -> bool {
        if self.peers.contains_key(&peer) {
            let entry = self.peers.entry(peer).or_default();
            if !entry.addrs.contains(&addr) && entry.addrs.len() < MAX_ADDRS_PER_PEER {
                entry.addrs.push(addr);
            }
            return true;
        }
        if self.peers.len() >= self.capacity {
            return false;
        }
        if let Some(ip) = ip_of(&addr).filter(|ip| !ip.is_loopback()) {
            let subnet = Subnet::of(ip);
            let same = self
                .peers
                .values()
                .filter(|e| {
                    e.addrs
                        .iter()
                        .filter_map(ip_of)
                        .any(|i| Subnet::of(i) == subnet)
                })
                .count();
            if same >= MAX_PEERS_PER_SUBNET {
                return false;
            }
        }
        let entry = self.peers.entry(peer).or_default();
        if !entry.addrs.contains(&addr) && entry.addrs.len() < MAX_ADDRS_PER_PEER {
            entry.addrs.push(addr);
        }
        true
    }

    /// Forgets a peer whose last connection closed.
    pub fn disconnected(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Takes one ledger-gossip token from `peer`'s bucket ([`GOSSIP_BURST`] tokens, refilled at
    /// [`GOSSIP_RATE`] per second); false when it is empty or the peer is not tracked, so a flooding
    /// peer's messages are dropped before any signature is checked.
    pub fn allow_gossip(&mut self, peer: &PeerId, now: Instant) -> bool {
        let Some(e) = self.peers.get_mut(peer) else {
            return false;
        };
        let (tokens, last) = e.gossip_bucket.unwrap_or((GOSSIP_BURST, now));
        let refilled =
            (tokens + now.duration_since(last).as_secs_f64() * GOSSIP_RATE).min(GOSSIP_BURST);
        if refilled < 1.0 {
            e.gossip_bucket = Some((refilled, now));
            return false;
        }
        e.gossip_bucket = Some((refilled - 1.0, now));
        true
    }

    /// Whether the table tracks `peer`.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Whether no more peers fit.
    pub fn is_full(&self) -> bool {
        self.peers.len() >= self.capacity
    }

    /// Number of tracked peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Applies a verified heartbeat received at `now`; `false` when the peer is unknown or the
    /// heartbeat is a replay (its `seq` is not above the last accepted one).
    pub fn heartbeat(&mut self, peer: &PeerId, hb: Heartbeat, now: Instant) -> bool {
        let Some(entry) = self.peers.get_mut(peer) else {
            return false;
        };
        if hb.seq <= entry.heartbeat_seq {
            return false;
        }
        entry.heartbeat_seq = hb.seq;
        entry.models = hb.models;
        entry.shards = hb.shards;
        entry.health = (hb.tok_s, hb.free_mem_mib, hb.version);
        entry.load = hb.load;
        entry.last_heartbeat = Some(now);
        true
    }

    /// Records a ping round trip.
    pub fn rtt(&mut self, peer: &PeerId, rtt: Duration) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.rtt = Some(rtt);
            entry.rtt_ewma = Some(match entry.rtt_ewma {
                None => rtt,
                Some(old) => old.mul_f64(1.0 - RTT_EWMA_ALPHA) + rtt.mul_f64(RTT_EWMA_ALPHA),
            });
        }
    }

    /// Records the identify agent string.
    pub fn agent(&mut self, peer: &PeerId, agent: &str) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.agent = Some(agent.chars().take(MAX_AGENT_CHARS).collect());
        }
    }

    /// Whether `peer` sent a heartbeat within the last [`DOWN_AFTER_INTERVALS`] intervals at `now`.
    pub fn is_up(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers
            .get(peer)
            .and_then(|e| e.last_heartbeat)
            .is_some_and(|t| now.saturating_duration_since(t) < self.down_after())
    }

    /// Whether `peer` is connected but its heartbeats stopped (it did send some before).
    pub fn is_down(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|e| e.last_heartbeat.is_some())
            && !self.is_up(peer, now)
    }

    fn down_after(&self) -> Duration {
        self.heartbeat_interval * DOWN_AFTER_INTERVALS
    }

    /// Cost of asking `entry`: round-trip EWMA plus [`LOAD_PENALTY`] per queued job.
    pub fn cost(entry: &PeerEntry) -> Duration {
        entry.rtt_ewma.unwrap_or(UNKNOWN_RTT) + LOAD_PENALTY * entry.load
    }

    /// Up peers whose heartbeat lists `model`, cheapest first, at most `max`.
    pub fn providers(&self, model: &str, now: Instant, max: usize) -> Vec<PeerId> {
        let mut found: Vec<(Duration, PeerId)> = self
            .peers
            .iter()
            .filter(|(p, e)| e.models.iter().any(|m| m == model) && self.is_up(p, now))
            .map(|(p, e)| (Self::cost(e), *p))
            .collect();
        found.sort();
        found.into_iter().take(max).map(|(_, p)| p).collect()
    }

    /// The peers to disconnect so that at most `shortlist + random` stay: the `shortlist` best
    /// (up before down, then cheapest by [`Self::cost`]) are kept, then `random` of the others drawn
    /// uniformly by `rng` — a pool no one can buy into by being fast, so a node is never surrounded
    /// by only the peers that look best (an eclipse). `protected` peers (bootstrap, relays) are kept
    /// and count towards neither part.
    pub fn excess<R: rand::Rng + ?Sized>(
        &self,
        now: Instant,
        shortlist: usize,
        random: usize,
        protected: &[PeerId],
        rng: &mut R,
    ) -> Vec<PeerId> {
        let mut ranked: Vec<(bool, Duration, PeerId)> = self
            .peers
            .iter()
            .filter(|(p, _)| !protected.contains(p))
            .map(|(p, e)| (!self.is_up(p, now), Self::cost(e), *p))
            .collect();
        if ranked.len() <= shortlist + random {
            return Vec::new();
        }
        ranked.sort();
        let mut rest: Vec<PeerId> = ranked
            .split_off(shortlist.min(ranked.len()))
            .into_iter()
            .map(|(.., p)| p)
            .collect();
        // A partial Fisher–Yates shuffle: the first `random` entries are the pool.
        for i in 0..random.min(rest.len()) {
            let j = i + (rng.next_u64() % (rest.len() - i) as u64) as usize;
            rest.swap(i, j);
        }
        rest.split_off(random.min(rest.len()))
    }

    /// Every tracked peer with its state.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &PeerEntry)> {
        self.peers.iter()
    }

    /// Number of peers that are up at `now`.
    pub fn up_count(&self, now: Instant) -> usize {
        self.peers.keys().filter(|p| self.is_up(p, now)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(5);

    fn hb(seq: u64, load: u32) -> Heartbeat {
        Heartbeat {
            peer_id: String::new(),
            models: vec!["tiny".into()],
            load,
            seq,
            shards: Vec::new(),
            tok_s: 0,
            free_mem_mib: 0,
            version: String::new(),
        }
    }

    fn addr() -> Multiaddr {
        "/ip4/127.0.0.1/tcp/1".parse().expect("addr")
    }

    #[test]
    fn excess_keeps_the_best_a_random_pool_and_the_protected() {
        let t0 = Instant::now();
        let mut table = PeerTable::new(64, INTERVAL);
        // 20 up peers with round trips 1..=20 ms, 4 down ones (never heard from).
        let up: Vec<PeerId> = (1..=20u64)
            .map(|ms| {
                let p = PeerId::random();
                assert!(table.connected(p, addr()));
                assert!(table.heartbeat(&p, hb(1, 0), t0));
                table.rtt(&p, Duration::from_millis(ms));
                p
            })
            .collect();
        let silent: Vec<PeerId> = (0..4)
            .map(|_| {
                let p = PeerId::random();
                assert!(table.connected(p, addr()));
                p
            })
            .collect();
        let boot = silent[0];
        let mut rng = <rand::rngs::Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(7);
        assert!(
            table.excess(t0, 20, 4, &[], &mut rng).is_empty(),
            "at the target"
        );
        let mut pools = std::collections::HashSet::new();
        for _ in 0..20 {
            let cut = table.excess(t0, 5, 3, &[boot], &mut rng);
            // 24 peers, one protected, 5 + 3 kept: 15 go.
            assert_eq!(cut.len(), 15);
            assert!(!cut.contains(&boot), "protected");
            for best in &up[..5] {
                assert!(!cut.contains(best), "the fastest five stay");
            }
            let kept: Vec<PeerId> = up[5..]
                .iter()
                .chain(&silent[1..])
                .filter(|p| !cut.contains(p))
                .copied()
                .collect();
            assert_eq!(kept.len(), 3, "a pool of three");
            pools.insert(kept);
        }
        assert!(
            pools.len() > 10,
            "the pool is drawn at random: {}",
            pools.len()
        );
    }

    #[test]
    fn silent_peer_is_down_after_three_intervals_even_if_connected() {
        let t0 = Instant::now();
        let mut table = PeerTable::new(4, INTERVAL);
        let p = PeerId::random();
        assert!(table.connected(p, addr()));
        assert!(!table.is_up(&p, t0), "no heartbeat yet");
        assert!(!table.is_down(&p, t0), "never heard from is not down");
        assert!(table.providers("tiny", t0, 8).is_empty());
        assert!(table.heartbeat(&p, hb(1, 0), t0));
        assert_eq!(table.providers("tiny", t0, 8), vec![p]);
        let almost = t0 + INTERVAL * 3 - Duration::from_millis(1);
        assert!(table.is_up(&p, almost));
        let late = t0 + INTERVAL * 3;
        assert!(!table.is_up(&p, late));
        assert!(table.is_down(&p, late));
        assert!(table.providers("tiny", late, 8).is_empty());
        assert!(table.contains(&p), "the connection lingers");
        // A fresh heartbeat brings it back; a replay does not.
        assert!(!table.heartbeat(&p, hb(1, 0), late));
        assert!(table.providers("tiny", late, 8).is_empty());
        assert!(table.heartbeat(&p, hb(2, 0), late));
        assert_eq!(table.providers("tiny", late, 8), vec![p]);
        table.disconnected(&p);
        assert!(table.providers("tiny", late, 8).is_empty());
    }

    #[test]
    fn providers_prefer_low_latency_and_low_load() {
        let now = Instant::now();
        let mut table = PeerTable::new(8, INTERVAL);
        let (fast, slow, busy, other) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        for p in [fast, slow, busy, other] {
            table.connected(p, addr());
        }
        table.heartbeat(&fast, hb(1, 0), now);
        table.heartbeat(&slow, hb(1, 0), now);
        table.heartbeat(&busy, hb(1, 10), now);
        let mut other_hb = hb(1, 0);
        other_hb.models = vec!["big".into()];
        table.heartbeat(&other, other_hb, now);
        table.rtt(&fast, Duration::from_millis(2));
        table.rtt(&slow, Duration::from_millis(100));
        table.rtt(&busy, Duration::from_millis(1));
        assert_eq!(table.providers("tiny", now, 8), vec![fast, slow, busy]);
        assert_eq!(table.providers("tiny", now, 1), vec![fast]);
        // The EWMA smooths one bad sample: `fast` stays ahead of `slow`.
        table.rtt(&fast, Duration::from_millis(200));
        let ewma = table
            .iter()
            .find(|(p, _)| **p == fast)
            .and_then(|(_, e)| e.rtt_ewma);
        let ewma = ewma.expect("ewma").as_micros();
        assert!((61_300..=61_500).contains(&ewma), "ewma {ewma}µs");
        assert_eq!(table.providers("tiny", now, 8)[0], fast);
        // Queue depth counts: `slow` grows a queue and falls behind `busy` once it drains.
        table.heartbeat(&slow, hb(2, 5), now);
        table.heartbeat(&busy, hb(2, 0), now);
        assert_eq!(table.providers("tiny", now, 8), vec![busy, fast, slow]);
    }

    #[test]
    fn table_is_bounded() {
        let mut table = PeerTable::new(1, INTERVAL);
        let (a, b) = (PeerId::random(), PeerId::random());
        assert!(table.connected(a, addr()));
        assert!(!table.connected(b, addr()));
        assert!(table.connected(a, "/ip4/127.0.0.1/tcp/2".parse().expect("addr")));
        assert_eq!(table.len(), 1);
        assert!(table.is_full());
    }

    #[test]
    fn one_subnet_cannot_fill_the_table_but_loopback_can() {
        let mut t = PeerTable::new(64, INTERVAL);
        let addr = |a: &str| -> Multiaddr { a.parse().expect("addr") };
        for i in 0..MAX_PEERS_PER_SUBNET {
            assert!(t.connected(PeerId::random(), addr(&format!("/ip4/10.1.2.{i}/tcp/1"))));
        }
        assert!(!t.connected(PeerId::random(), addr("/ip4/10.1.2.200/tcp/1")));
        // Another /24 and an already tracked peer are fine.
        assert!(t.connected(PeerId::random(), addr("/ip4/10.1.3.1/tcp/1")));
        for _ in 0..(MAX_PEERS_PER_SUBNET * 2) {
            assert!(t.connected(PeerId::random(), addr("/ip4/127.0.0.1/tcp/1")));
        }
    }

    #[test]
    fn gossip_bucket_limits_a_flooding_peer_and_refills() {
        let mut t = PeerTable::new(8, INTERVAL);
        let p = PeerId::random();
        let start = Instant::now();
        assert!(!t.allow_gossip(&p, start), "untracked peers get nothing");
        t.connected(p, addr());
        let allowed = (0..1000).filter(|_| t.allow_gossip(&p, start)).count();
        assert_eq!(allowed, GOSSIP_BURST as usize);
        let later = start + Duration::from_secs(1);
        let refilled = (0..1000).filter(|_| t.allow_gossip(&p, later)).count();
        assert_eq!(refilled, GOSSIP_RATE as usize);
    }
}
