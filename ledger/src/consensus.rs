//! Elections: stake-weighted two-round votes per root, confirmation and fork resolution
//! (specs/ledger.md §6). Pure: the node delivers blocks and votes and acts on the outcomes.
//!
//! Safety argument: a representative casts at most one *final* vote per root and an election
//! counts at most one final vote per voter, so two candidates of one root can both reach 2/3 of the
//! final weight only if the voters counted for both (the byzantine ones) hold ≥ 1/3.

use std::collections::{BTreeMap, HashMap, VecDeque};

use mycel_identity::Keypair;

use crate::block::Block;
use crate::error::{LedgerError, Result};
use crate::ledger::{Ledger, Processed};
use crate::quorum::{EpochInfo, QuorumCert, Vote, verify_votes};
use crate::types::{AccountId, BlockHash, Credits};

/// Most candidates per election (a chain owner signing more forks is ignored beyond it).
pub const MAX_CANDIDATES: usize = 8;
/// Most concurrent elections; the oldest unconfirmed one is dropped beyond it.
pub const MAX_ELECTIONS: usize = 65_536;
/// Most votes buffered for blocks not seen yet.
pub const MAX_EARLY_VOTES: usize = 4096;

/// What an election decides: one block per `(account, height)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Root {
    /// The chain.
    pub account: AccountId,
    /// The height.
    pub height: u64,
}

impl Root {
    /// The root a block competes for.
    pub fn of(block: &Block) -> Root {
        Root {
            account: block.account,
            height: block.height,
        }
    }
}

/// The votes on one root.
#[derive(Clone, Debug)]
pub struct Election {
    /// The root.
    pub root: Root,
    candidates: BTreeMap<BlockHash, Block>,
    initial: HashMap<AccountId, Vote>,
    finals: HashMap<AccountId, Vote>,
    confirmed: Option<BlockHash>,
}

impl Election {
    fn new(root: Root) -> Self {
        Self {
            root,
            candidates: BTreeMap::new(),
            initial: HashMap::new(),
            finals: HashMap::new(),
            confirmed: None,
        }
    }

    /// The candidate blocks.
    pub fn candidates(&self) -> impl Iterator<Item = &Block> {
        self.candidates.values()
    }

    /// The confirmed winner, if any.
    pub fn confirmed(&self) -> Option<BlockHash> {
        self.confirmed
    }

    fn tally(votes: &HashMap<AccountId, Vote>, info: &EpochInfo) -> BTreeMap<BlockHash, Credits> {
        let mut t: BTreeMap<BlockHash, Credits> = BTreeMap::new();
        for v in votes.values() {
            let w = info.weight(&v.voter);
            let slot = t.entry(v.block).or_default();
            *slot = Credits(slot.0.saturating_add(w.0));
        }
        t
    }

    /// Initial-vote weight per candidate.
    pub fn initial_tally(&self, info: &EpochInfo) -> BTreeMap<BlockHash, Credits> {
        Self::tally(&self.initial, info)
    }

    /// Final-vote weight per candidate.
    pub fn final_tally(&self, info: &EpochInfo) -> BTreeMap<BlockHash, Credits> {
        Self::tally(&self.finals, info)
    }

    /// The candidate with the most initial weight (ties broken by the lower hash).
    pub fn leader(&self, info: &EpochInfo) -> Option<(BlockHash, Credits)> {
        self.initial_tally(info)
            .into_iter()
            .filter(|(h, _)| self.candidates.contains_key(h))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
    }

    /// The quorum certificate of the confirmed winner.
    pub fn qc(&self) -> Option<QuorumCert> {
        let block = self.confirmed?;
        let mut votes: Vec<Vote> = self
            .finals
            .values()
            .filter(|v| v.block == block)
            .copied()
            .collect();
        votes.sort_by_key(|v| v.voter);
        Some(QuorumCert { block, votes })
    }
}

/// Result of delivering a vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Not counted (unknown voter, stale sequence, second final vote, …).
    Ignored,
    /// Buffered until its block is seen.
    Early,
    /// Counted.
    Counted(Root),
    /// Counted, and the root is now confirmed.
    Confirmed {
        /// The root.
        root: Root,
        /// The winning block.
        winner: BlockHash,
    },
}

/// All elections of a node.
#[derive(Debug, Default)]
pub struct Elections {
    elections: HashMap<Root, Election>,
    roots: HashMap<BlockHash, Root>,
    age: VecDeque<Root>,
    early: HashMap<BlockHash, Vec<Vote>>,
    early_len: usize,
}

impl Elections {
    /// No elections.
    pub fn new() -> Self {
        Self::default()
    }

    /// An election.
    pub fn get(&self, root: &Root) -> Option<&Election> {
        self.elections.get(root)
    }

    /// The root a known candidate competes for.
    pub fn root_of(&self, block: &BlockHash) -> Option<Root> {
        self.roots.get(block).copied()
    }

    /// Adds a candidate block (the first one opens the election). Returns buffered early votes for it,
    /// which the caller should deliver with [`Elections::add_vote`].
    pub fn add_candidate(&mut self, block: &Block) -> Vec<Vote> {
        let root = Root::of(block);
        if !self.elections.contains_key(&root) {
            if self.elections.len() >= MAX_ELECTIONS {
                self.evict_one();
            }
            self.elections.insert(root, Election::new(root));
            self.age.push_back(root);
        }
        let Some(e) = self.elections.get_mut(&root) else {
            return Vec::new();
        };
        if e.candidates.len() < MAX_CANDIDATES && !e.candidates.contains_key(&block.hash()) {
            e.candidates.insert(block.hash(), block.clone());
            self.roots.insert(block.hash(), root);
        }
        let early = self.early.remove(&block.hash()).unwrap_or_default();
        self.early_len -= early.len();
        early
    }

    /// Drops a settled election (its winner is confirmed in the ledger), keeping memory bounded.
    pub fn forget(&mut self, root: &Root) {
        if let Some(e) = self.elections.remove(root) {
            for h in e.candidates.keys() {
                self.roots.remove(h);
            }
        }
    }

    /// Number of elections held.
    pub fn len(&self) -> usize {
        self.elections.len()
    }

    /// True when no election is held.
    pub fn is_empty(&self) -> bool {
        self.elections.is_empty()
    }

    /// Roots of elections without a confirmed winner.
    pub fn open_roots(&self) -> Vec<Root> {
        self.elections
            .values()
            .filter(|e| e.confirmed.is_none())
            .map(|e| e.root)
            .collect()
    }

    fn evict_one(&mut self) {
        while let Some(r) = self.age.pop_front() {
            if let Some(e) = self.elections.get(&r)
                && e.confirmed.is_none()
            {
                if let Some(e) = self.elections.remove(&r) {
                    for h in e.candidates.keys() {
                        self.roots.remove(h);
                    }
                }
                return;
            }
        }
    }

    /// Counts a vote whose signature was already verified (see [`verify_votes`]). `info` is the table
    /// weighing it (confirmation at 2/3 of its whole stake, see [`EpochInfo::is_quorum`]).
    pub fn add_vote(&mut self, vote: Vote, info: &EpochInfo) -> VoteOutcome {
        if vote.epoch != info.epoch || info.weight(&vote.voter).is_zero() {
            return VoteOutcome::Ignored;
        }
        let Some(root) = self.roots.get(&vote.block).copied() else {
            if self.early_len < MAX_EARLY_VOTES {
                self.early.entry(vote.block).or_default().push(vote);
                self.early_len += 1;
                return VoteOutcome::Early;
            }
            return VoteOutcome::Ignored;
        };
        let Some(e) = self.elections.get_mut(&root) else {
            return VoteOutcome::Ignored;
        };
        if vote.is_final {
            if e.finals.contains_key(&vote.voter) {
                return VoteOutcome::Ignored;
            }
            e.finals.insert(vote.voter, vote);
        } else {
            match e.initial.get(&vote.voter) {
                Some(old) if old.sequence >= vote.sequence => return VoteOutcome::Ignored,
                _ => {
                    e.initial.insert(vote.voter, vote);
                }
            }
        }
        if e.confirmed.is_none() {
            let base = info.total;
            if let Some((winner, _)) = e
                .final_tally(info)
                .into_iter()
                .find(|(h, w)| e.candidates.contains_key(h) && EpochInfo::is_quorum(*w, base))
            {
                e.confirmed = Some(winner);
                return VoteOutcome::Confirmed { root, winner };
            }
        }
        VoteOutcome::Counted(root)
    }

    /// Verifies a batch of votes with one batch verification (falling back to one by one) and counts
    /// the valid ones.
    pub fn add_votes(&mut self, votes: Vec<Vote>, info: &EpochInfo) -> Vec<VoteOutcome> {
        let valid: Vec<bool> = if verify_votes(&votes).is_ok() {
            vec![true; votes.len()]
        } else {
            votes.iter().map(|v| v.verify().is_ok()).collect()
        };
        votes
            .into_iter()
            .zip(valid)
            .map(|(v, ok)| {
                if ok {
                    self.add_vote(v, info)
                } else {
                    VoteOutcome::Ignored
                }
            })
            .collect()
    }
}

/// An honest representative's voting rule.
#[derive(Debug)]
pub struct Representative {
    key: Keypair,
    account: AccountId,
    initial: HashMap<Root, Vote>,
    finals: HashMap<Root, Vote>,
}

impl Representative {
    /// A representative voting with `key`.
    pub fn new(key: Keypair) -> Self {
        let account = AccountId::from_public_key(&key.public());
        Self {
            key,
            account,
            initial: HashMap::new(),
            finals: HashMap::new(),
        }
    }

    /// The voting account.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// Called when a candidate is seen: the first candidate of a root gets the initial vote.
    pub fn on_candidate(&mut self, block: &Block, epoch: u64) -> Option<Vote> {
        let root = Root::of(block);
        if self.initial.contains_key(&root) {
            return None;
        }
        let v = Vote::sign(&self.key, block.hash(), epoch, false, 0);
        self.initial.insert(root, v);
        Some(v)
    }

    /// Called after votes changed an election: switch the initial vote to the leading
    /// candidate, and cast the one final vote once a candidate holds 2/3 of initial weight.
    pub fn on_update(&mut self, election: &Election, info: &EpochInfo) -> Vec<Vote> {
        let root = election.root;
        let mut out = Vec::new();
        if self.finals.contains_key(&root) {
            return out;
        }
        let tally = election.initial_tally(info);
        if let (Some(mine), Some((leader, lead_w))) =
            (self.initial.get(&root).copied(), election.leader(info))
        {
            let my_w = tally.get(&mine.block).copied().unwrap_or_default();
            // A tie goes to the leader too (the lower hash, as `leader` breaks ties), so equal splits
            // converge instead of stalling.
            if leader != mine.block && lead_w >= my_w {
                let v = Vote::sign(&self.key, leader, info.epoch, false, mine.sequence + 1);
                self.initial.insert(root, v);
                out.push(v);
            }
        }
        let base = info.total;
        if let Some((winner, _)) = tally
            .iter()
            .find(|(h, w)| election.candidates.contains_key(h) && EpochInfo::is_quorum(**w, base))
        {
            let v = Vote::sign(&self.key, *winner, info.epoch, true, 0);
            self.finals.insert(root, v);
            out.push(v);
        }
        out
    }

    /// Forgets a settled root.
    pub fn forget(&mut self, root: &Root) {
        self.initial.remove(root);
        self.finals.remove(root);
    }

    /// Re-signs every vote it stands by for a new stake table `epoch`, for the same blocks (a final
    /// vote stays final for the same block: the one-final-vote-per-root rule holds across epochs).
    pub fn resign(&mut self, epoch: u64) -> Vec<Vote> {
        let mut out = Vec::new();
        for v in self.initial.values_mut().chain(self.finals.values_mut()) {
            if v.epoch != epoch {
                *v = Vote::sign(&self.key, v.block, epoch, v.is_final, v.sequence);
                out.push(*v);
            }
        }
        out
    }

    /// The votes this representative currently stands by (for periodic rebroadcast).
    pub fn current_votes(&self) -> Vec<Vote> {
        self.initial
            .values()
            .chain(self.finals.values())
            .copied()
            .collect()
    }
}

/// Makes `winner` the block of its root in `ledger`: rolls back the applied competitor (and its
/// dependents) if needed, applies the winner and marks it confirmed. Returns rolled-back blocks.
pub fn settle(ledger: &mut Ledger, winner: &Block, now: u64) -> Result<Vec<Block>> {
    let hash = winner.hash();
    let mut rolled = Vec::new();
    if !ledger.contains(&hash) {
        if let Some(existing) = ledger
            .block_at(&winner.account, winner.height)
            .map(Block::hash)
        {
            rolled = ledger.rollback(&existing)?;
        }
        match ledger.process(winner.clone(), now)? {
            Processed::Applied { .. } => {}
            Processed::Queued(dep) => return Err(LedgerError::Gap(dep)),
        }
    }
    ledger.confirm(&hash)?;
    Ok(rolled)
}
