//! The figures of a fuzz run, its goals, and their JSON, Markdown and SVG forms.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::FuzzConfig;
use super::tally::{Counts, Row};
use super::watch::{ProbeRecord, RssSample};
use crate::ledger::{BlocksCheck, RootsCheck};
use crate::plot::{Axis, Chart, Series};
use crate::report::verdict;
use crate::stats::Percentiles;

/// Stalled streams and connections: how many the node closed on its own.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StallFigures {
    /// Stalls started.
    pub started: u64,
    /// Of those, closed by the node before the attacker gave up.
    pub closed_by_node: u64,
    /// Answered (an error) by the node.
    pub answered: u64,
    /// Still open when the attacker gave up (its hold is at most `stall_hold_max`).
    pub held_to_the_end: u64,
    /// Longest a stall the node closed stayed open, seconds.
    pub longest_closed_s: f64,
}

/// Gossip verdicts of the nodes (every message they validated, the honest ones included).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GossipVerdicts {
    /// `mycel_gossip_messages_total{outcome="accepted"}` gained during the run, all nodes.
    pub accepted: u64,
    /// `mycel_gossip_messages_total{outcome="rejected"}` gained during the run, all nodes.
    pub rejected: u64,
}

/// The liveness probes.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeFigures {
    /// Probes made (one chat per node per round, plus the final round).
    pub asked: usize,
    /// Probes in which everything answered.
    pub ok: usize,
    /// Chats answered.
    pub answered: usize,
    /// Chat latency (including busy retries).
    pub latency: Percentiles,
    /// Probes that failed.
    pub failures: Vec<ProbeRecord>,
}

/// One node's ledger before and after its store was reopened.
#[derive(Clone, Debug, Serialize)]
pub struct Reopened {
    /// The node.
    pub node: usize,
    /// Confirmed blocks before it stopped.
    pub confirmed_before: u64,
    /// Applied blocks before it stopped.
    pub blocks_before: u64,
    /// State root before it stopped.
    pub root_before: String,
    /// Confirmed blocks once it ran again on the same `ledger.redb` (`None`: it did not start or
    /// answer).
    pub confirmed_after: Option<u64>,
    /// State root after the restart.
    pub root_after: Option<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The ledger figures.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerFigures {
    /// Wallet sends some node accepted during the run.
    pub submitted: usize,
    /// Of those, confirmed.
    pub confirmed: usize,
    /// State roots once the attack stopped.
    pub end: RootsCheck,
    /// Every confirmed wallet block held confirmed by every node once the attack stopped.
    pub blocks: BlocksCheck,
    /// Each node stopped and started again on its own store.
    pub reopened: Vec<Reopened>,
    /// State roots after the restarts.
    pub reopened_roots: RootsCheck,
    /// Confirmed wallet blocks after the restarts.
    pub reopened_blocks: BlocksCheck,
}

/// Whether each goal was met.
#[derive(Clone, Debug, Serialize)]
pub struct Goals {
    /// Every node answered every probe (chat, network actor, ledger).
    pub alive: bool,
    /// No RSS sample after warm-up above the limit.
    pub memory: bool,
    /// No panic in any thread.
    pub no_panics: bool,
    /// The ledgers agree (one state root) and hold every confirmed block, after the attack and
    /// after reopening their stores.
    pub ledger: bool,
    /// Every store reopened with at least the confirmed blocks it had.
    pub stores_reopen: bool,
    /// Every wallet send was confirmed.
    pub sends_confirmed: bool,
    /// Every protocol family was attacked.
    pub coverage: bool,
}

impl Goals {
    /// All of them.
    pub fn all(&self) -> bool {
        self.alive
            && self.memory
            && self.no_panics
            && self.ledger
            && self.stores_reopen
            && self.sends_confirmed
            && self.coverage
    }
}

/// A fuzz run's report.
#[derive(Clone, Debug, Serialize)]
pub struct FuzzReport {
    /// The parameters.
    pub config: FuzzConfig,
    /// Nodes attacked.
    pub targets: Vec<String>,
    /// Whether the shard node ran the expert router (so `mycel/centroids/1` had a subscriber).
    pub router: bool,
    /// Seconds from start to the first attack.
    pub setup_s: f64,
    /// Seconds of attack.
    pub duration_s: f64,
    /// Fresh gossip identities the attacker took.
    pub rotations: u32,
    /// Per protocol, topic, method or route.
    pub rows: Vec<Row>,
    /// Per family (`p2p`, `stall`, `request`, `gossip`, `rpc`, `http`, `ws`).
    pub families: Vec<Row>,
    /// All messages.
    pub totals: Counts,
    /// How often each mutation was used.
    pub mutations: BTreeMap<&'static str, u64>,
    /// Internal server errors and what provoked them.
    pub server_errors: Vec<String>,
    /// Stalled libp2p streams.
    pub p2p_stalls: StallFigures,
    /// Stalled HTTP connections.
    pub http_stalls: StallFigures,
    /// What the nodes made of the gossip.
    pub gossip_verdicts: GossipVerdicts,
    /// The liveness probes.
    pub probes: ProbeFigures,
    /// Memory over time.
    pub rss: Vec<RssSample>,
    /// Smallest sample, MiB.
    pub rss_min_mib: f64,
    /// Largest sample, MiB.
    pub rss_max_mib: f64,
    /// Largest sample during warm-up, MiB.
    pub rss_warmup_peak_mib: f64,
    /// The limit after warm-up, MiB.
    pub rss_limit_mib: f64,
    /// Least-squares slope after warm-up, MiB per minute (a leak shows as a steady climb).
    pub rss_slope_mib_per_min: f64,
    /// Panics in any thread.
    pub panics: u64,
    /// The first panic messages.
    pub panic_messages: Vec<String>,
    /// The ledger.
    pub ledger: LedgerFigures,
    /// The goals.
    pub goals: Goals,
}

/// Least-squares slope of `points` (per x unit); 0 with fewer than two.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

impl crate::report::Report for FuzzReport {
    /// Whether every goal was met.
    fn goals_met(&self) -> bool {
        self.goals.all()
    }

    /// The figures for the terminal (and the issue note).
    fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let _ = writeln!(
            s,
            "fuzz: seed {:#x}, {:.0} s of attack on {} nodes ({}), set-up {:.1} s",
            c.seed,
            self.duration_s,
            self.targets.len(),
            self.targets.join(", "),
            self.setup_s
        );
        let _ = writeln!(
            s,
            "{:<8} {:<34} {:>6} {:>6} {:>6} {:>5} {:>6} {:>6} {:>6} {:>5} {:>5} {:>4}",
            "family",
            "protocol / method / topic",
            "sent",
            "accept",
            "refuse",
            "busy",
            "deliv",
            "closed",
            "tmout",
            "unsup",
            "fail",
            "5xx"
        );
        for r in self
            .rows
            .iter()
            .chain(self.families.iter())
            .chain(std::iter::once(&Row {
                family: "all",
                name: "(total)".into(),
                counts: self.totals.clone(),
            }))
        {
            let k = &r.counts;
            let _ = writeln!(
                s,
                "{:<8} {:<34} {:>6} {:>6} {:>6} {:>5} {:>6} {:>6} {:>6} {:>5} {:>5} {:>4}",
                r.family,
                clip(&r.name, 34),
                k.sent,
                k.accepted,
                k.refused,
                k.busy,
                k.delivered,
                k.closed,
                k.timeout,
                k.unsupported,
                k.failed,
                k.server_error
            );
        }
        let rate = self.totals.sent as f64 / self.duration_s.max(1e-9);
        let _ = writeln!(s, "messages: {} ({rate:.1}/s)", self.totals.sent);
        for (name, st) in [("p2p", &self.p2p_stalls), ("http", &self.http_stalls)] {
            let _ = writeln!(
                s,
                "{name} stalls: {} started, {} closed by the node (longest open {:.1} s), {} \
                 answered, {} held to the attacker's deadline",
                st.started, st.closed_by_node, st.longest_closed_s, st.answered, st.held_to_the_end
            );
        }
        let _ = writeln!(
            s,
            "gossip verdicts on all nodes: {} accepted, {} rejected; attacker identities: {}",
            self.gossip_verdicts.accepted,
            self.gossip_verdicts.rejected,
            self.rotations + 1
        );
        let p = &self.probes;
        let _ = writeln!(
            s,
            "probes: {}/{} ok, chats answered {} (p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms)",
            p.ok, p.asked, p.answered, p.latency.p50_ms, p.latency.p99_ms, p.latency.max_ms
        );
        for f in p.failures.iter().take(5) {
            let _ = writeln!(s, "  failed: {} at {:.1} s: {:?}", f.node, f.t_s, f.error);
        }
        let _ = writeln!(
            s,
            "RSS: min {:.0} MiB, max {:.0} MiB, warm-up peak {:.0} MiB, limit {:.0} MiB, slope \
             after warm-up {:+.1} MiB/min",
            self.rss_min_mib,
            self.rss_max_mib,
            self.rss_warmup_peak_mib,
            self.rss_limit_mib,
            self.rss_slope_mib_per_min
        );
        let l = &self.ledger;
        let _ = writeln!(
            s,
            "ledger: {} sends, {} confirmed; roots {} ({}/{} agree, confirmed {:?}); {} \
             confirmed blocks seen, {} lost",
            l.submitted,
            l.confirmed,
            if l.end.equal { "equal" } else { "DIFFER" },
            l.end.agreeing,
            l.end.nodes,
            l.end.confirmed_range,
            l.blocks.confirmed_seen,
            l.blocks.lost
        );
        for r in &l.reopened {
            let _ = writeln!(
                s,
                "  node {} reopened its store: confirmed {} -> {:?}{}",
                r.node,
                r.confirmed_before,
                r.confirmed_after,
                r.error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            s,
            "after reopening: roots {} ({}/{} agree), {} lost",
            if l.reopened_roots.equal {
                "equal"
            } else {
                "DIFFER"
            },
            l.reopened_roots.agreeing,
            l.reopened_roots.nodes,
            l.reopened_blocks.lost
        );
        let _ = writeln!(s, "panics: {}", self.panics);
        for m in &self.panic_messages {
            let _ = writeln!(s, "  {m}");
        }
        if !self.server_errors.is_empty() {
            let _ = writeln!(s, "internal server errors ({}):", self.server_errors.len());
            for e in &self.server_errors {
                let _ = writeln!(s, "  {e}");
            }
        }
        let g = &self.goals;
        let _ = writeln!(
            s,
            "goals: alive {}, memory {}, no panics {}, ledger {}, stores reopen {}, sends \
             confirmed {}, coverage {}",
            verdict(g.alive),
            verdict(g.memory),
            verdict(g.no_panics),
            verdict(g.ledger),
            verdict(g.stores_reopen),
            verdict(g.sends_confirmed),
            verdict(g.coverage)
        );
        s
    }

    /// The report as Markdown.
    fn to_markdown(&self) -> String {
        let mut s = String::from("# Fuzz run\n\n```text\n");
        s.push_str(&self.summary());
        s.push_str("```\n\n## Mutations used\n\n| mutation | times |\n|---|---:|\n");
        for (m, n) in &self.mutations {
            let _ = writeln!(s, "| {m} | {n} |");
        }
        s.push_str("\n![memory and attack rate](fuzz.svg)\n");
        s
    }

    /// RSS and the attack rate over time.
    fn to_svg(&self) -> String {
        let rate: Vec<(f64, f64)> = self
            .rss
            .windows(2)
            .filter(|w| w[1].t_s > w[0].t_s)
            .map(|w| {
                (
                    w[1].t_s,
                    w[1].sent.saturating_sub(w[0].sent) as f64 / (w[1].t_s - w[0].t_s),
                )
            })
            .collect();
        let warmup = self.config.warmup().as_secs_f64().min(self.duration_s);
        Chart {
            title: format!(
                "Fuzz: {} messages on {} nodes (seed {:#x})",
                self.totals.sent,
                self.targets.len(),
                self.config.seed
            ),
            x_label: "time (s)".into(),
            y_label: "RSS (MiB)".into(),
            y2_label: "messages/s".into(),
            x_max: self.duration_s.max(1.0),
            y_max: self.rss_max_mib.max(self.rss_limit_mib) * 1.1,
            y2_max: rate.iter().map(|r| r.1).fold(1.0, f64::max) * 1.2,
            series: vec![
                Series {
                    name: "RSS".into(),
                    color: "#d95f02".into(),
                    dashed: false,
                    axis: Axis::Left,
                    points: self.rss.iter().map(|r| (r.t_s, r.rss_mib)).collect(),
                },
                Series {
                    name: "RSS limit after warm-up".into(),
                    color: "#d95f02".into(),
                    dashed: true,
                    axis: Axis::Left,
                    points: vec![
                        (warmup, self.rss_limit_mib),
                        (self.duration_s, self.rss_limit_mib),
                    ],
                },
                Series {
                    name: "fuzz messages/s".into(),
                    color: "#1b9e77".into(),
                    dashed: false,
                    axis: Axis::Right,
                    points: rate,
                },
            ],
            markers: self
                .probes
                .failures
                .iter()
                .map(|f| (f.t_s, format!("{} failed", f.node)))
                .collect(),
            spans: vec![(0.0, warmup)],
            span_label: "warm-up".into(),
        }
        .to_svg()
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let head: String = s.chars().take(n - 1).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        assert!((slope(&pts) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&pts[..1]), 0.0);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 5.0)]), 0.0);
    }
}
