//! What the fuzzer sent and how the nodes reacted, per protocol (or method, route, topic) and per
//! mutation. Shared by every attacker task behind one lock, held only to add a count.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Examples of suspicious answers quoted in the report.
const MAX_EXAMPLES: usize = 20;
/// Longest quoted example.
const MAX_EXAMPLE_CHARS: usize = 300;

/// How one fuzz message ended, as far as the sender can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A normal answer (the message was taken as valid).
    Accepted,
    /// An error answer: the node refused the message and said so.
    Refused,
    /// Refused as busy (load shedding).
    Busy,
    /// Written on a one-way channel (gossip, a stream the node only reads): no answer expected.
    Delivered,
    /// The node closed the stream or connection without an answer.
    Closed,
    /// No answer before the sender's deadline (for stalls: the node kept the stream open).
    Timeout,
    /// The node does not speak the protocol (refused at negotiation).
    Unsupported,
    /// The sender could not even send (no connection, a local error).
    Failed,
    /// An internal server error (HTTP 500, JSON-RPC -32603): suspicious, quoted in the report.
    ServerError,
}

/// Counts of one row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Messages sent.
    pub sent: u64,
    /// Of those, per outcome.
    pub accepted: u64,
    /// Refused with an error answer.
    pub refused: u64,
    /// Refused as busy.
    pub busy: u64,
    /// One-way, no answer expected.
    pub delivered: u64,
    /// Closed without an answer.
    pub closed: u64,
    /// No answer in time.
    pub timeout: u64,
    /// Protocol not spoken.
    pub unsupported: u64,
    /// Not sent.
    pub failed: u64,
    /// Internal server errors.
    pub server_error: u64,
}

impl Counts {
    fn add(&mut self, o: Outcome) {
        self.sent += 1;
        match o {
            Outcome::Accepted => self.accepted += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::Busy => self.busy += 1,
            Outcome::Delivered => self.delivered += 1,
            Outcome::Closed => self.closed += 1,
            Outcome::Timeout => self.timeout += 1,
            Outcome::Unsupported => self.unsupported += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::ServerError => self.server_error += 1,
        }
    }

    /// Adds another row's counts.
    pub fn merge(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.accepted += o.accepted;
        self.refused += o.refused;
        self.busy += o.busy;
        self.delivered += o.delivered;
        self.closed += o.closed;
        self.timeout += o.timeout;
        self.unsupported += o.unsupported;
        self.failed += o.failed;
        self.server_error += o.server_error;
    }
}

/// One row of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Family: `p2p`, `stall`, `request`, `gossip`, `rpc`, `http`, `ws`.
    pub family: &'static str,
    /// Protocol id, topic, method or route.
    pub name: String,
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Default)]
struct Inner {
    rows: BTreeMap<(&'static str, String), Counts>,
    mutations: BTreeMap<&'static str, u64>,
    examples: Vec<String>,
    example_keys: std::collections::BTreeSet<String>,
}

/// The shared tally.
#[derive(Default)]
pub struct Tally {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally").finish_non_exhaustive()
    }
}

impl Tally {
    /// Counts one message of `family`/`name` sent after `mutation` (`valid`: unmutated).
    pub fn record(&self, family: &'static str, name: &str, mutation: &'static str, o: Outcome) {
        if let Ok(mut t) = self.inner.lock() {
            t.rows.entry((family, name.to_string())).or_default().add(o);
            *t.mutations.entry(mutation).or_default() += 1;
        }
    }

    /// Quotes a suspicious answer, the first of each `key` (kept up to a small bound).
    pub fn example(&self, key: String, text: String) {
        if let Ok(mut t) = self.inner.lock()
            && t.examples.len() < MAX_EXAMPLES
            && t.example_keys.insert(key)
        {
            let clipped: String = text.chars().take(MAX_EXAMPLE_CHARS).collect();
            t.examples.push(clipped);
        }
    }

    /// Every row, sorted by family and name.
    pub fn rows(&self) -> Vec<Row> {
        self.inner
            .lock()
            .map(|t| {
                t.rows
                    .iter()
                    .map(|((family, name), counts)| Row {
                        family,
                        name: name.clone(),
                        counts: counts.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How often each mutation was used.
    pub fn mutations(&self) -> BTreeMap<&'static str, u64> {
        self.inner
            .lock()
            .map(|t| t.mutations.clone())
            .unwrap_or_default()
    }

    /// The quoted examples.
    pub fn examples(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|t| t.examples.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_count_every_outcome_once() {
        let t = Tally::default();
        t.record("rpc", "ledger_info", "valid", Outcome::Accepted);
        t.record("rpc", "ledger_info", "wrong_type", Outcome::Refused);
        t.record("p2p", "/x", "bit_flip", Outcome::Closed);
        let rows = t.rows();
        assert_eq!(rows.len(), 2);
        let info = rows.iter().find(|r| r.name == "ledger_info").expect("row");
        assert_eq!(
            (info.counts.sent, info.counts.accepted, info.counts.refused),
            (2, 1, 1)
        );
        assert_eq!(t.mutations()["valid"], 1);
        t.example("a".into(), "first".into());
        t.example("a".into(), "second".into());
        assert_eq!(t.examples(), ["first"]);
        for i in 0..50 {
            t.example(format!("{i}"), format!("{i}"));
        }
        assert_eq!(t.examples().len(), MAX_EXAMPLES);
    }
}
