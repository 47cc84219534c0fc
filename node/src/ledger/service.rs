//! The ledger actor: validation, voting, confirmation, fork settlement and checkpoints on one thread.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::gossipsub::MessageAcceptance;
use mycel_identity::domains;
use mycel_identity::{Keypair, Signature};
use mycel_ledger::block::{BlockBody, CheckpointBody, ClaimBody, MintBody, SignerSig, SlashBody};
use mycel_ledger::consensus::{Elections, Representative, Root, VoteOutcome};
use mycel_ledger::emission;
use mycel_ledger::quorum::EpochInfo;
use mycel_ledger::receipt::RECEIPT_LEN;
use mycel_ledger::receipt::verdict_message;
use mycel_ledger::state::EscrowStatus;
use mycel_ledger::{
    AccountId, Block, BlockHash, ChainView, Credits, Dependency, Genesis, JobId, LedgerError,
    Processed, QuorumCert, RedbStore, StoredLedger, Vote, Wallet, WorkReceipt,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::wire::{
    AuditVerdicts, BLOCKS_TOPIC, Frontier, MAX_FRONTIERS, MAX_SYNC_BLOCKS, MAX_VOTES_PER_MESSAGE,
    QuorumShare, SettledReceipt, ShareKind, SyncRequest, SyncResponse, SyncedBlock, VOTES_TOPIC,
    VotesMessage,
};
use super::{
    AccountInfo, BlockInfo, Command, Confirmation, Countersigned, JobFacts, LedgerInbound,
    LedgerOptions, LedgerStatus, Payment, Standing, Submitted, submitted,
};
use crate::error::{NodeError, Result};
use crate::network::NetworkHandle;
use crate::scoring::ReputationBook;

/// Confirmed winners waiting for a dependency before they can be applied.
const MAX_PENDING_CONFIRMS: usize = 4096;
/// Distinct checkpoint tables collected at once.
const MAX_SHARE_SETS: usize = 16;
/// Bytes of blocks in one sync response (well under the protocol limit).
const MAX_SYNC_RESPONSE_PAYLOAD: usize = 8 * 1024 * 1024;
/// Every this many ticks, candidates of open elections are asked of peers (with their certificates).
const STALE_ELECTION_TICKS: u64 = 5;
/// Candidates asked for per such round.
const MAX_STALE_FETCHES: usize = 32;
/// Epochs an escrow stays claimable after the epoch it was posted in (at least)…
const ESCROW_EPOCHS: u64 = 2;
/// … and at least this many seconds, so short devnet epochs still leave time for an audit.
const ESCROW_MIN_SECS: u64 = 120;
/// Receive blocks a node posts for itself per tick.
const MAX_RECEIVES_PER_TICK: usize = 8;
/// Every this many ticks the gossipsub application scores are refreshed.
const APP_SCORE_TICKS: u64 = 5;
/// Ticks the n-th member of a table (by account) waits, times n, before posting a ready Mint itself
/// (a second Mint of an epoch is invalid, so each backup waits long enough for the one before it
/// to be seen).
const MINT_BACKUP_TICKS: u32 = 30;
/// The same for a ready checkpoint (a duplicate checkpoint is a no-op).
const CHECKPOINT_BACKUP_TICKS: u32 = 3;
/// Every this many ticks, receipts and accepting verdicts whose escrow is still open are gossiped
/// again: the worker claims only once one reaches it, and a gossip publish can be lost (no peer in
/// the topic's mesh yet, or the worker had not seen the escrow yet).
const REGOSSIP_TICKS: u64 = 5;
/// Most such messages kept for re-gossip (the oldest is dropped first).
const MAX_REGOSSIP: usize = 256;

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct ShareSet {
    table: Vec<(AccountId, Credits)>,
    sigs: BTreeMap<AccountId, Signature>,
    ready_ticks: u32,
}

pub(super) struct Service {
    ledger: StoredLedger<RedbStore>,
    genesis: Genesis,
    key: Keypair,
    account: AccountId,
    rep: Representative,
    elections: Elections,
    table_epoch: u64,
    pending_confirms: HashMap<BlockHash, QuorumCert>,
    shares: BTreeMap<(ShareKind, u64, [u8; 32]), ShareSet>,
    /// Lowest epoch whose Mint this node may still have to sign.
    mint_floor: u64,
    /// The last Mint share signed, with its epoch and the confirmed block count it was computed at:
    /// re-sent each tick (gossip may have lost it) and recomputed only when more blocks confirm.
    mint_signed: Option<(u64, usize, QuorumShare)>,
    /// Workers' records from confirmed work and audits, for routing.
    reputations: ReputationBook,
    net: NetworkHandle,
    confirmations: broadcast::Sender<Confirmation>,
    fetch: mpsc::Sender<(Option<PeerId>, BlockHash)>,
    trigger: mpsc::Sender<Option<PeerId>>,
    outbox: VecDeque<(&'static str, Vec<u8>)>,
    score_updates: VecDeque<Vec<(PeerId, f64)>>,
    ticks: u64,
    /// As a requester: the latest receipt or verdicts message of each escrow, re-gossiped until
    /// the escrow is settled or expires ([`REGOSSIP_TICKS`], bounded by [`MAX_REGOSSIP`]).
    regossip: VecDeque<(BlockHash, Vec<u8>)>,
}

impl Service {
    pub(super) fn open(
        options: &LedgerOptions,
        key: Keypair,
        net: NetworkHandle,
        confirmations: broadcast::Sender<Confirmation>,
        fetch: mpsc::Sender<(Option<PeerId>, BlockHash)>,
        trigger: mpsc::Sender<Option<PeerId>>,
    ) -> Result<Self> {
        let err = |e: LedgerError| {
            NodeError::Ledger(format!("ledger file {}: {e}", options.path.display()))
        };
        let store = RedbStore::open(&options.path).map_err(err)?;
        let ledger = StoredLedger::open(store, &options.genesis).map_err(err)?;
        let table_epoch = ledger.ledger().latest_epoch().epoch;
        let account = AccountId::from_public_key(&key.public());
        let mut this = Self {
            ledger,
            genesis: options.genesis.clone(),
            rep: Representative::new(key.clone()),
            key,
            account,
            elections: Elections::new(),
            table_epoch,
            pending_confirms: HashMap::new(),
            shares: BTreeMap::new(),
            mint_floor: 0,
            mint_signed: None,
            reputations: ReputationBook::new(),
            net,
            confirmations,
            fetch,
            trigger,
            outbox: VecDeque::new(),
            score_updates: VecDeque::new(),
            ticks: 0,
            regossip: VecDeque::new(),
        };
        // Blocks applied but not confirmed before a restart are elected again.
        this.rebuild_elections();
        // Workers' records are derived from the confirmed history.
        let confirmed: Vec<Block> = {
            let l = this.ledger.ledger();
            l.order()
                .filter(|(_, b)| l.is_confirmed(&b.hash()))
                .map(|(_, b)| b.clone())
                .collect()
        };
        for b in &confirmed {
            this.reputations
                .record_block(this.ledger.ledger(), b, b.epoch);
        }
        Ok(this)
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbox: mpsc::Receiver<LedgerInbound>,
        mut stop: oneshot::Receiver<()>,
        tick: Duration,
    ) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                msg = inbox.recv() => match msg {
                    Some(msg) => self.on_inbound(msg).await,
                    None => break,
                },
                _ = ticker.tick() => self.on_tick(),
            }
            self.flush().await;
        }
        tracing::debug!("ledger service stopped");
    }

    fn now_epoch(&self) -> u64 {
        self.genesis.epoch_at(unix_now())
    }

    fn publish(&mut self, topic: &'static str, data: Vec<u8>) {
        self.outbox.push_back((topic, data));
    }

    /// Gossips a message the worker of `escrow` needs to claim, and keeps it (replacing an earlier
    /// one for the same escrow) for re-gossip.
    fn publish_for_worker(&mut self, escrow: BlockHash, message: Vec<u8>) {
        self.publish(VOTES_TOPIC, message.clone());
        self.regossip.retain(|(e, _)| *e != escrow);
        if self.regossip.len() >= MAX_REGOSSIP {
            self.regossip.pop_front();
        }
        self.regossip.push_back((escrow, message));
    }

    /// Re-gossips the kept messages whose escrow is still open and claimable; forgets the others.
    fn regossip_for_workers(&mut self) {
        let now = self.now_epoch();
        let ledger = self.ledger.ledger();
        self.regossip.retain(|(escrow, _)| {
            ledger
                .escrow(escrow)
                .is_some_and(|e| e.status == EscrowStatus::Open && e.expires_epoch >= now)
        });
        let messages: Vec<Vec<u8>> = self.regossip.iter().map(|(_, m)| m.clone()).collect();
        for m in messages {
            self.publish(VOTES_TOPIC, m);
        }
    }

    fn publish_votes(&mut self, votes: &[Vote]) {
        for chunk in votes.chunks(MAX_VOTES_PER_MESSAGE) {
            self.publish(VOTES_TOPIC, VotesMessage::Votes(chunk.to_vec()).encode());
        }
    }

    async fn flush(&mut self) {
        while let Some(scores) = self.score_updates.pop_front() {
            let _ = self.net.set_app_scores(scores).await;
        }
        while let Some((topic, data)) = self.outbox.pop_front() {
            if self.net.publish(topic, data).await.is_err() {
                self.outbox.clear();
            }
        }
    }

    // ------------------------------------------------------------------------------ commands

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Escrow {
                worker,
                max_tokens,
                private,
                reply,
            } => {
                let _ = reply.send(self.post_escrow(worker, max_tokens, private));
            }
            Command::SignReceipt {
                payment,
                facts,
                reply,
            } => {
                let _ = reply.send(self.sign_receipt(payment, &facts));
            }
            Command::Countersign {
                receipt,
                facts,
                reply,
            } => {
                let _ = reply.send(self.countersign(&receipt, &facts));
            }
            Command::Standing { accounts, reply } => {
                let _ = reply.send(self.standing(&accounts));
            }
            Command::AuditCheck { settled, reply } => {
                let _ = reply.send(self.audit_check(&settled));
            }
            Command::SignVerdict {
                settled,
                accept,
                reply,
            } => {
                let signature = self.key.sign(
                    domains::VERDICT,
                    &verdict_message(&settled.receipt.hash(), accept),
                );
                let _ = reply.send(SignerSig {
                    signer: self.account,
                    signature,
                });
            }
            Command::AuditOutcome { verdicts, reply } => {
                let _ = reply.send(self.audit_outcome(verdicts));
            }
            Command::Submit { block, reply } => {
                let hash = block.hash();
                let bytes = block.encode();
                let out = match self.ingest(block, None) {
                    Ok(p) => {
                        self.publish(BLOCKS_TOPIC, bytes);
                        Ok(submitted(&p, hash))
                    }
                    Err(LedgerError::AlreadyKnown(_)) => Ok(Submitted::Applied(hash)),
                    Err(LedgerError::Fork { existing, .. })
                        if !self.ledger.ledger().is_confirmed(&existing) =>
                    {
                        self.publish(BLOCKS_TOPIC, bytes);
                        Ok(Submitted::Contested(hash))
                    }
                    Err(e) => Err(NodeError::Ledger(e.to_string())),
                };
                let _ = reply.send(out);
            }
            Command::Account { account, reply } => {
                let l = self.ledger.ledger();
                let receivable = l.receivable(&account);
                let info = l.account(&account).cloned().map(|state| AccountInfo {
                    state,
                    balance: l.balance(&account),
                    receivable: receivable.clone(),
                });
                let info = info.or_else(|| {
                    (!receivable.is_empty()).then(|| AccountInfo {
                        state: Default::default(),
                        balance: l.balance(&account),
                        receivable,
                    })
                });
                let _ = reply.send(info);
            }
            Command::Block { hash, reply } => {
                let _ = reply.send(self.block_info(&hash));
            }
            Command::History {
                account,
                limit,
                reply,
            } => {
                let l = self.ledger.ledger();
                let top = l.account(&account).map_or(0, |a| a.height);
                let out = (0..=top)
                    .rev()
                    .filter_map(|h| l.block_at(&account, h))
                    .take(limit)
                    .map(|b| BlockInfo {
                        confirmed: l.is_confirmed(&b.hash()),
                        block: b.clone(),
                    })
                    .collect();
                let _ = reply.send(out);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Heights { accounts, reply } => {
                let l = self.ledger.ledger();
                let out = accounts
                    .iter()
                    .map(|a| l.account(a).map(|s| s.height))
                    .collect();
                let _ = reply.send(out);
            }
            Command::ApplySynced {
                blocks,
                from,
                reply,
            } => {
                let _ = reply.send(self.apply_synced(blocks, from));
            }
        }
    }

    fn block_info(&self, hash: &BlockHash) -> Option<BlockInfo> {
        let l = self.ledger.ledger();
        l.block(hash).map(|b| BlockInfo {
            block: b.clone(),
            confirmed: l.is_confirmed(hash),
        })
    }

    fn status(&self) -> LedgerStatus {
        let l = self.ledger.ledger();
        let confirmed = l.confirmed_count();
        LedgerStatus {
            network: self.genesis.network.clone(),
            genesis: l.genesis_hash(),
            epoch: self.now_epoch(),
            table_epoch: l.latest_epoch().epoch,
            blocks: l.block_count(),
            confirmed,
            unchecked: l.unchecked_len(),
            elections: self.elections.len(),
            state_root: l.state_root(),
            supply: l.state().supply,
            account: self.account,
            weight: l.latest_epoch().weight(&self.account),
        }
    }

    // ------------------------------------------------------------------------------ network input

    async fn on_inbound(&mut self, msg: LedgerInbound) {
        match msg {
            LedgerInbound::Block { data, id, source } => {
                let verdict = self.on_gossip_block(&data, source);
                let _ = self.net.validate(id, source, verdict).await;
            }
            LedgerInbound::Votes { data, id, source } => {
                let verdict = self.on_gossip_votes(&data);
                let _ = self.net.validate(id, source, verdict).await;
            }
            LedgerInbound::SyncRequest { id, request, .. } => {
                let response = self.answer_sync(request);
                let _ = self.net.respond_sync(id, response).await;
            }
            LedgerInbound::PeerConnected(peer) => {
                let _ = self.trigger.try_send(Some(peer));
            }
        }
    }

    fn on_gossip_block(&mut self, data: &[u8], source: PeerId) -> MessageAcceptance {
        let Ok(block) = Block::decode(data) else {
            return MessageAcceptance::Reject;
        };
        match self.ingest(block, Some(source)) {
            Ok(Processed::Applied { .. }) => MessageAcceptance::Accept,
            // Not forwarded until this node could check it; the dependency is being fetched.
            Ok(Processed::Queued(_)) => MessageAcceptance::Ignore,
            Err(LedgerError::AlreadyKnown(_)) => MessageAcceptance::Ignore,
            // A validly signed competitor at a contested root: everyone must see it to vote.
            Err(LedgerError::Fork { existing, .. })
                if !self.ledger.ledger().is_confirmed(&existing) =>
            {
                MessageAcceptance::Accept
            }
            Err(LedgerError::FromFuture { .. }) | Err(LedgerError::Fork { .. }) => {
                MessageAcceptance::Ignore
            }
            Err(e) => {
                tracing::debug!(%source, error = %e, "rejected a gossiped block");
                MessageAcceptance::Reject
            }
        }
    }

    fn on_gossip_votes(&mut self, data: &[u8]) -> MessageAcceptance {
        match VotesMessage::decode(data) {
            Err(_) => MessageAcceptance::Reject,
            Ok(VotesMessage::Votes(votes)) => {
                let info = self.ledger.ledger().latest_epoch();
                // Votes of accounts outside the table, or of an older table, carry no weight.
                if votes
                    .iter()
                    .any(|v| v.epoch > info.epoch || info.weight(&v.voter).is_zero())
                {
                    return MessageAcceptance::Ignore;
                }
                if mycel_ledger::quorum::verify_votes(&votes).is_err() {
                    return MessageAcceptance::Reject;
                }
                self.count_votes(votes);
                MessageAcceptance::Accept
            }
            Ok(VotesMessage::Receipt(settled)) => {
                if settled.verify().is_err() {
                    return MessageAcceptance::Reject;
                }
                if settled.receipt.worker == self.account {
                    self.claim(&settled, Vec::new());
                }
                MessageAcceptance::Accept
            }
            Ok(VotesMessage::Verdicts(v)) => {
                if v.verify().is_err() {
                    return MessageAcceptance::Reject;
                }
                if v.accept && v.settled.receipt.worker == self.account {
                    self.claim(&v.settled, v.verdicts);
                }
                MessageAcceptance::Accept
            }
            Ok(VotesMessage::Share(share)) => {
                let signs = self
                    .share_table(share.kind, share.epoch)
                    .is_some_and(|t| !t.weight(&share.signer).is_zero());
                if !signs {
                    return MessageAcceptance::Ignore;
                }
                if share.verify().is_err() {
                    return MessageAcceptance::Reject;
                }
                self.add_share(share);
                MessageAcceptance::Accept
            }
        }
    }

    // ------------------------------------------------------------------------------ blocks

    /// Validates and applies one block; on success it becomes a candidate and gets this node's vote.
    fn ingest(
        &mut self,
        block: Block,
        from: Option<PeerId>,
    ) -> std::result::Result<Processed, LedgerError> {
        let now = self.now_epoch();
        match self.ledger.process(block.clone(), now) {
            Ok(p) => {
                match &p {
                    Processed::Applied { released, .. } => {
                        self.on_applied(&block);
                        for h in released.clone() {
                            if let Some(b) = self.ledger.ledger().block(&h).cloned() {
                                self.on_applied(&b);
                            }
                        }
                        self.after_apply();
                    }
                    Processed::Queued(Dependency::Block(dep)) => {
                        let _ = self.fetch.try_send((from, *dep));
                    }
                    Processed::Queued(Dependency::Epoch(_)) => {
                        let _ = self.trigger.try_send(from);
                    }
                }
                Ok(p)
            }
            Err(LedgerError::Fork { existing, .. })
                if !self.ledger.ledger().is_confirmed(&existing) =>
            {
                // `process` checked the signature before it found the fork.
                if let Some(old) = self.ledger.ledger().block(&existing).cloned() {
                    self.candidate(&old);
                }
                self.candidate(&block);
                Err(LedgerError::Fork {
                    account: block.account,
                    height: block.height,
                    existing,
                })
            }
            Err(e) => Err(e),
        }
    }

    fn on_applied(&mut self, block: &Block) {
        if !self.ledger.ledger().is_confirmed(&block.hash()) {
            self.candidate(block);
        }
    }

    /// Housekeeping after blocks were applied: a new stake table, winners that were waiting.
    fn after_apply(&mut self) {
        if self.ledger.ledger().latest_epoch().epoch != self.table_epoch {
            self.rebuild_elections();
        }
        if !self.pending_confirms.is_empty() {
            let ready: Vec<BlockHash> = self
                .pending_confirms
                .keys()
                .filter(|h| self.ledger.ledger().contains(h))
                .copied()
                .collect();
            for h in ready {
                if let Some(qc) = self.pending_confirms.remove(&h) {
                    self.confirm(&h, &qc);
                }
            }
        }
    }

    /// Opens (or joins) the election of a block and casts this node's initial vote.
    fn candidate(&mut self, block: &Block) {
        let early = self.elections.add_candidate(block);
        let info = self.ledger.ledger().latest_epoch().clone();
        let mut votes = early;
        if !info.weight(&self.account).is_zero()
            && let Some(v) = self.rep.on_candidate(block, info.epoch)
        {
            self.publish_votes(&[v]);
            votes.push(v);
        }
        if !votes.is_empty() {
            self.count_votes(votes);
        }
    }

    /// Starts elections afresh for a new stake table: every applied, unconfirmed block is a candidate
    /// again and this node re-signs the votes it stands by for the new epoch.
    fn rebuild_elections(&mut self) {
        let info = self.ledger.ledger().latest_epoch().clone();
        self.table_epoch = info.epoch;
        self.elections = Elections::new();
        self.shares
            .retain(|(kind, e, _), _| *kind == ShareKind::Mint || *e > info.epoch);
        let open: Vec<Block> = {
            let l = self.ledger.ledger();
            l.order()
                .filter(|(_, b)| !l.is_confirmed(&b.hash()))
                .map(|(_, b)| b.clone())
                .collect()
        };
        let resigned = if info.weight(&self.account).is_zero() {
            Vec::new()
        } else {
            self.rep.resign(info.epoch)
        };
        for b in &open {
            self.elections.add_candidate(b);
        }
        if !resigned.is_empty() {
            self.publish_votes(&resigned);
            self.count_votes(resigned);
        }
        for b in &open {
            self.candidate(b);
        }
    }

    /// Counts votes (signatures are verified by the elections), reacts as a representative, and
    /// settles confirmed roots.
    fn count_votes(&mut self, votes: Vec<Vote>) {
        let mut queue = votes;
        let mut guard = 0;
        while !queue.is_empty() && guard < 8 {
            guard += 1;
            let info = self.ledger.ledger().latest_epoch().clone();
            let l = self.ledger.ledger();
            let votes: Vec<Vote> = std::mem::take(&mut queue)
                .into_iter()
                .filter(|v| !l.is_confirmed(&v.block))
                .collect();
            let mut touched = BTreeSet::new();
            for outcome in self.elections.add_votes(votes, &info) {
                match outcome {
                    VoteOutcome::Counted(root) => {
                        touched.insert(root);
                    }
                    VoteOutcome::Confirmed { root, winner } => self.settle(root, winner),
                    VoteOutcome::Ignored | VoteOutcome::Early => {}
                }
            }
            if info.weight(&self.account).is_zero() {
                continue;
            }
            for root in touched {
                if let Some(e) = self.elections.get(&root) {
                    let mine = self.rep.on_update(e, &info);
                    if !mine.is_empty() {
                        self.publish_votes(&mine);
                        queue.extend(mine);
                    }
                }
            }
        }
    }

    /// Makes the confirmed winner of `root` the block at that root and marks it confirmed.
    fn settle(&mut self, root: Root, winner: BlockHash) {
        let Some(election) = self.elections.get(&root) else {
            return;
        };
        let Some(qc) = election.qc() else {
            return;
        };
        let block = election.candidates().find(|b| b.hash() == winner).cloned();
        self.elections.forget(&root);
        self.rep.forget(&root);
        let Some(block) = block else {
            return;
        };
        if !self.ledger.ledger().contains(&winner) {
            let existing = self
                .ledger
                .ledger()
                .block_at(&block.account, block.height)
                .map(Block::hash);
            if let Some(existing) = existing {
                match self.ledger.rollback(&existing) {
                    Ok(rolled) => {
                        tracing::warn!(
                            account = %block.account, height = block.height, lost = %existing,
                            won = %winner, rolled_back = rolled.len(), "fork settled by votes"
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot roll back a fork loser");
                        return;
                    }
                }
            }
            match self.ledger.process(block, self.now_epoch()) {
                Ok(Processed::Applied { .. }) => {}
                Ok(Processed::Queued(_)) => {
                    if self.pending_confirms.len() < MAX_PENDING_CONFIRMS {
                        self.pending_confirms.insert(winner, qc);
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "a confirmed winner does not apply");
                    return;
                }
            }
        }
        self.confirm(&winner, &qc);
    }

    /// Marks `hash` (and the unconfirmed blocks below it on its chain) confirmed and tells subscribers.
    fn confirm(&mut self, hash: &BlockHash, qc: &QuorumCert) {
        let newly: Vec<Block> = {
            let l = self.ledger.ledger();
            let Some(b) = l.block(hash) else {
                return;
            };
            let mut out = Vec::new();
            let mut h = b.height;
            while let Some(x) = l.block_at(&b.account, h) {
                if l.is_confirmed(&x.hash()) {
                    break;
                }
                out.push(x.clone());
                let Some(next) = h.checked_sub(1) else {
                    break;
                };
                h = next;
            }
            out
        };
        if let Err(e) = self.ledger.confirm(hash, Some(qc)) {
            tracing::error!(error = %e, "cannot store a confirmation");
            return;
        }
        for b in newly.into_iter().rev() {
            self.reputations
                .record_block(self.ledger.ledger(), &b, b.epoch);
            let root = Root::of(&b);
            self.elections.forget(&root);
            self.rep.forget(&root);
            let _ = self.confirmations.send(Confirmation {
                hash: b.hash(),
                account: b.account,
                height: b.height,
                kind: b.body.kind(),
                epoch: b.epoch,
            });
        }
    }

    // ------------------------------------------------------------------------------ paid jobs

    /// Gossipsub P5 for every staked account's node: stake and audited work, never self-reported.
    fn app_scores(&mut self) {
        if !self.ticks.is_multiple_of(APP_SCORE_TICKS) {
            return;
        }
        let epoch = self.now_epoch();
        let params = crate::scoring::ScoringParams::default();
        let scores: Vec<(PeerId, f64)> = self
            .ledger
            .ledger()
            .latest_epoch()
            .table
            .iter()
            .filter_map(|(a, stake)| {
                let peer = a.public_key().ok()?.peer_id();
                let rep = self.reputations.get(a, epoch);
                Some((
                    peer,
                    crate::scoring::gossip_app_score(&rep, *stake, &params),
                ))
            })
            .collect();
        self.score_updates.push_back(scores);
    }

    fn standing(&self, accounts: &[AccountId]) -> Vec<Standing> {
        let l = self.ledger.ledger();
        let epoch = self.now_epoch();
        let info = l.latest_epoch();
        let typical = Credits(self.genesis.params.price_per_token.0.saturating_mul(1024));
        let genesis: std::collections::HashSet<[u8; 32]> =
            self.genesis.accounts.iter().map(|a| a.account).collect();
        accounts
            .iter()
            .map(|a| Standing {
                stake: info.weight(a),
                reputation: self.reputations.get(a, epoch),
                first_seen_epoch: if genesis.contains(&a.0) {
                    0
                } else {
                    l.block_at(a, 0).map_or(epoch, |b| b.epoch)
                },
                epoch,
                typical_bond: crate::scoring::required_bond(typical, &self.genesis.params),
            })
            .collect()
    }

    /// Builds, applies and gossips the next block of this node's own chain.
    fn post_own(&mut self, body: BlockBody) -> Result<BlockHash> {
        // A node whose account is not in the genesis and never received anything opens its chain
        // first, with the proof of work an Open without source needs (it can then claim, vote, …).
        if self.ledger.ledger().account(&self.account).is_none()
            && !matches!(body, BlockBody::Receive { .. })
        {
            let open = Wallet::new(&self.key)
                .open(self.ledger.ledger(), None, self.now_epoch())
                .map_err(|e| NodeError::Ledger(e.to_string()))?;
            let bytes = open.encode();
            self.ingest(open, None)
                .map_err(|e| NodeError::Ledger(format!("opening this node's account: {e}")))?;
            self.publish(BLOCKS_TOPIC, bytes);
        }
        let chain = self
            .ledger
            .ledger()
            .account(&self.account)
            .map(|a| ChainView {
                height: a.height,
                frontier: a.frontier,
                epoch: a.epoch,
            });
        let block = Wallet::new(&self.key)
            .build(chain.as_ref(), self.now_epoch(), body)
            .map_err(|e| NodeError::Ledger(e.to_string()))?;
        let hash = block.hash();
        let bytes = block.encode();
        self.ingest(block, None)
            .map_err(|e| NodeError::Ledger(e.to_string()))?;
        self.publish(BLOCKS_TOPIC, bytes);
        Ok(hash)
    }

    fn post_escrow(
        &mut self,
        worker: AccountId,
        max_tokens: u32,
        private: bool,
    ) -> Result<Payment> {
        let price = self.genesis.params.price_per_token;
        let amount = price
            .0
            .checked_mul(u128::from(max_tokens.max(1)))
            .map(Credits)
            .ok_or_else(|| NodeError::Ledger("escrow amount overflows".into()))?;
        let have = self.ledger.ledger().balance(&self.account).liquid;
        if have < amount {
            return Err(NodeError::Ledger(format!(
                "this node's account holds {have} credits, the job may cost {amount}"
            )));
        }
        let mut job_id = [0u8; 32];
        rand::fill(&mut job_id);
        let escrow = self.post_own(BlockBody::Escrow {
            job_id: JobId(job_id),
            worker,
            amount,
            expires_epoch: self.now_epoch() + self.escrow_epochs(),
            private,
        })?;
        Ok(Payment {
            escrow: escrow.0,
            job_id,
        })
    }

    /// How many epochs an escrow posted now stays claimable.
    fn escrow_epochs(&self) -> u64 {
        ESCROW_MIN_SECS
            .div_ceil(self.genesis.params.epoch_secs.max(1))
            .max(ESCROW_EPOCHS)
    }

    /// The price of a job: every token at the genesis price, at most the escrow.
    fn price(&self, facts: &JobFacts, cap: Credits) -> Credits {
        let tokens = u128::from(facts.prompt_tokens) + u128::from(facts.output_tokens);
        Credits(
            self.genesis
                .params
                .price_per_token
                .0
                .saturating_mul(tokens)
                .min(cap.0),
        )
    }

    fn sign_receipt(&mut self, payment: Payment, facts: &JobFacts) -> Result<String> {
        let hash = BlockHash(payment.escrow);
        let e =
            self.ledger.ledger().escrow(&hash).cloned().ok_or_else(|| {
                NodeError::Ledger(format!("escrow {hash} is not known here (yet)"))
            })?;
        if e.worker != self.account || e.job_id.0 != payment.job_id {
            return Err(NodeError::Ledger(format!(
                "escrow {hash} does not pay this node for this job"
            )));
        }
        let receipt = WorkReceipt {
            job_id: e.job_id,
            escrow: hash,
            worker: self.account,
            requester: e.requester,
            model: facts.model,
            weights: facts.weights,
            prompt_hash: facts.prompt_hash,
            output_hash: facts.output_hash,
            sampling: Some(facts.sampling),
            prompt_tokens: facts.prompt_tokens,
            output_tokens: facts.output_tokens,
            price: self.price(facts, e.amount),
        };
        let sig = receipt.sign_as_worker(&self.key);
        let mut bytes = receipt.encode();
        bytes.extend_from_slice(sig.as_bytes());
        Ok(hex::encode(bytes))
    }

    fn countersign(&mut self, text: &str, facts: &JobFacts) -> Result<Countersigned> {
        let bad = |m: &str| NodeError::Ledger(format!("worker receipt: {m}"));
        let bytes = hex::decode(text).map_err(|_| bad("not hex"))?;
        if bytes.len() != RECEIPT_LEN + 64 {
            return Err(bad("wrong length"));
        }
        let (r, sig) = bytes.split_at(RECEIPT_LEN);
        let receipt = WorkReceipt::decode(r).map_err(|e| bad(&e.to_string()))?;
        let sig: [u8; 64] = sig.try_into().map_err(|_| bad("signature"))?;
        let worker_sig = Signature::from_bytes(sig);
        let worker_key = receipt.worker.public_key().map_err(|_| bad("worker key"))?;
        receipt
            .verify_worker(&worker_key, &worker_sig)
            .map_err(|_| bad("bad worker signature"))?;
        let e = self
            .ledger
            .ledger()
            .escrow(&receipt.escrow)
            .cloned()
            .ok_or_else(|| bad("unknown escrow"))?;
        if receipt.requester != self.account
            || e.requester != self.account
            || e.worker != receipt.worker
            || e.job_id != receipt.job_id
        {
            return Err(bad("it names another escrow, job or party"));
        }
        if receipt.output_hash != facts.output_hash
            || receipt.sampling != Some(facts.sampling)
            || receipt.prompt_hash != facts.prompt_hash
            || receipt.prompt_tokens != facts.prompt_tokens
            || receipt.output_tokens != facts.output_tokens
        {
            return Err(bad("it does not describe the answer that was delivered"));
        }
        if receipt.price > self.price(facts, e.amount) {
            return Err(bad("it overcharges"));
        }
        let settled = SettledReceipt {
            requester_sig: receipt.countersign(&self.key),
            receipt,
            worker_sig,
        };
        self.publish_for_worker(
            settled.receipt.escrow,
            VotesMessage::Receipt(settled.clone()).encode(),
        );
        // The draw depends on the countersignature just made (specs/ledger.md §7): the worker could
        // not know it before it signed the receipt.
        let audit = self
            .ledger
            .ledger()
            .audit_draw(&settled.receipt.escrow, &settled.requester_sig)
            .filter(|d| d.audited);
        Ok(Countersigned { settled, audit })
    }

    fn audit_check(&self, settled: &SettledReceipt) -> Result<usize> {
        let bad = |m: &str| NodeError::Ledger(format!("audit: {m}"));
        settled.verify().map_err(|e| bad(&e.to_string()))?;
        let r = &settled.receipt;
        let e = self
            .ledger
            .ledger()
            .escrow(&r.escrow)
            .ok_or_else(|| bad("unknown escrow"))?;
        if e.worker != r.worker || e.requester != r.requester || e.job_id != r.job_id {
            return Err(bad("the receipt does not match its escrow"));
        }
        if e.private {
            return Err(bad("private jobs are never audited"));
        }
        if self.account == r.worker || self.account == r.requester {
            return Err(bad("a party to the job does not judge it"));
        }
        let draw = self
            .ledger
            .ledger()
            .audit_draw(&r.escrow, &settled.requester_sig)
            .ok_or_else(|| bad("the escrow's stake table is not known here"))?;
        let seats = draw.seats_of(&self.account);
        if !draw.audited || seats == 0 {
            return Err(bad("this node was not drawn for the job"));
        }
        Ok(seats)
    }

    fn audit_outcome(&mut self, v: AuditVerdicts) -> Result<()> {
        let bad = |m: &str| NodeError::Ledger(format!("audit outcome: {m}"));
        v.verify().map_err(|e| bad(&e.to_string()))?;
        let mut verdicts = v.verdicts.clone();
        verdicts.sort_by_key(|s| s.signer);
        if v.accept {
            // The worker claims with these; gossip reaches it wherever it is.
            let escrow = v.settled.receipt.escrow;
            self.publish_for_worker(
                escrow,
                VotesMessage::Verdicts(AuditVerdicts { verdicts, ..v }).encode(),
            );
            return Ok(());
        }
        let r = &v.settled;
        let hash = self.post_own(BlockBody::Slash(Box::new(SlashBody {
            escrow: r.receipt.escrow,
            receipt: r.receipt.clone(),
            worker_sig: r.worker_sig,
            requester_sig: r.requester_sig,
            verdicts,
        })))?;
        tracing::warn!(worker = %r.receipt.worker, slash = %hash, "audit failed: worker slashed");
        Ok(())
    }

    /// As the worker: claims the escrow of a countersigned receipt; a job drawn for audit is claimed
    /// once the requester gossips the validators' accepting verdicts.
    fn claim(&mut self, settled: &SettledReceipt, verdicts: Vec<SignerSig>) {
        let escrow = settled.receipt.escrow;
        // Requesters re-gossip until they see the claim: one already made (or too late) is done.
        let open = self.ledger.ledger().escrow(&escrow).map(|e| e.status);
        if open.is_some_and(|s| s != EscrowStatus::Open) {
            return;
        }
        let Some(draw) = self
            .ledger
            .ledger()
            .audit_draw(&escrow, &settled.requester_sig)
        else {
            tracing::debug!(%escrow, "receipt for an escrow not known here yet");
            return;
        };
        if draw.audited && verdicts.is_empty() {
            tracing::debug!(%escrow, "job drawn for audit: claiming once the verdicts arrive");
            return;
        }
        let mut verdicts = verdicts;
        verdicts.sort_by_key(|v| v.signer);
        let body = BlockBody::Claim(Box::new(ClaimBody {
            escrow,
            worker_sig: settled.receipt.sign_as_worker(&self.key),
            receipt: settled.receipt.clone(),
            requester_sig: settled.requester_sig,
            verdicts,
        }));
        match self.post_own(body) {
            Ok(_) => tracing::info!(%escrow, price = %settled.receipt.price, "claimed a paid job"),
            Err(e) => tracing::warn!(%escrow, error = %e, "claim refused"),
        }
    }

    /// Receives what is pending for this node's account (payments, refunds of claims and expired
    /// escrows), a few blocks per tick.
    fn receive_pending(&mut self) {
        let now = self.now_epoch();
        let l = self.ledger.ledger();
        let mut sources: Vec<BlockHash> = l
            .receivable(&self.account)
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        sources.extend(l.refundable(&self.account, now).into_iter().map(|(h, _)| h));
        for source in sources.into_iter().take(MAX_RECEIVES_PER_TICK) {
            if let Err(e) = self.post_own(BlockBody::Receive { source }) {
                tracing::debug!(%source, error = %e, "cannot receive");
                break;
            }
        }
    }

    // ------------------------------------------------------------------------------ sync

    fn answer_sync(&self, request: SyncRequest) -> SyncResponse {
        let l = self.ledger.ledger();
        match request {
            SyncRequest::Frontiers { after } => {
                let (entries, more) = frontier_page(&l.state().accounts, after, MAX_FRONTIERS);
                SyncResponse::Frontiers {
                    genesis: l.genesis_hash(),
                    entries,
                    more,
                }
            }
            SyncRequest::Chain {
                account,
                from_height,
            } => {
                let account = AccountId(account);
                let mut out = Vec::new();
                let mut bytes = 0;
                let mut h = from_height;
                while let Some(b) = l.block_at(&account, h) {
                    let item = self.synced(b);
                    bytes += item.block.len() + item.qc.as_ref().map_or(0, Vec::len);
                    out.push(item);
                    if out.len() >= MAX_SYNC_BLOCKS || bytes > MAX_SYNC_RESPONSE_PAYLOAD {
                        break;
                    }
                    h += 1;
                }
                SyncResponse::Blocks(out)
            }
            SyncRequest::Block { hash } => SyncResponse::Blocks(
                l.block(&BlockHash(hash))
                    .map(|b| self.synced(b))
                    .into_iter()
                    .collect(),
            ),
        }
    }

    fn synced(&self, b: &Block) -> SyncedBlock {
        let hash = b.hash();
        let qc = if self.ledger.ledger().is_confirmed(&hash) {
            self.ledger.qc(&hash).ok().flatten().map(|q| q.encode())
        } else {
            None
        };
        SyncedBlock {
            block: b.encode(),
            qc,
        }
    }

    /// Applies blocks pulled from a peer (one batch verification, one write transaction), confirms
    /// those that came with a valid certificate, and elects the rest. Returns how many were new.
    fn apply_synced(&mut self, items: Vec<SyncedBlock>, from: PeerId) -> usize {
        let mut blocks = Vec::with_capacity(items.len());
        let mut qcs = HashMap::new();
        for item in items {
            let Ok(block) = Block::decode(&item.block) else {
                tracing::debug!(%from, "sync peer sent an undecodable block");
                return 0;
            };
            if let Some(qc) = item.qc.and_then(|q| QuorumCert::decode(&q).ok())
                && qc.block == block.hash()
            {
                qcs.insert(qc.block, qc);
            }
            blocks.push(block);
        }
        let now = self.now_epoch();
        let results = match self.ledger.apply_batch(blocks.clone(), now) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "ledger store failed");
                return 0;
            }
        };
        let mut applied = Vec::new();
        for (block, r) in blocks.iter().zip(results) {
            match r {
                Ok(Processed::Applied { released, .. }) => {
                    applied.push(block.clone());
                    applied.extend(
                        released
                            .iter()
                            .filter_map(|h| self.ledger.ledger().block(h).cloned()),
                    );
                }
                Ok(Processed::Queued(dep)) => {
                    // Its certificate waits with it, so the block is confirmed once it applies.
                    if let Some(qc) = qcs.get(&block.hash())
                        && self.pending_confirms.len() < MAX_PENDING_CONFIRMS
                        && self.qc_valid(qc)
                    {
                        self.pending_confirms.insert(block.hash(), qc.clone());
                    }
                    if let Dependency::Block(dep) = dep {
                        let _ = self.fetch.try_send((Some(from), dep));
                    }
                }
                Err(_) => {}
            }
        }
        let n = applied.len();
        // Certificates first (a late joiner confirms history without re-electing it), then elections.
        for block in &blocks {
            let hash = block.hash();
            if let Some(qc) = qcs.get(&hash)
                && self.ledger.ledger().contains(&hash)
                && !self.ledger.ledger().is_confirmed(&hash)
                && self.qc_valid(qc)
            {
                self.confirm(&hash, qc);
            }
        }
        for block in &applied {
            self.on_applied(block);
        }
        self.after_apply();
        n
    }

    /// A certificate from sync: final votes of the table of its epoch reaching 2/3 of its stake.
    fn qc_valid(&self, qc: &QuorumCert) -> bool {
        let Some(epoch) = qc.votes.first().map(|v| v.epoch) else {
            return false;
        };
        let Some(info) = self.ledger.ledger().epoch_info(epoch) else {
            return false;
        };
        qc.verify(info).is_ok()
    }

    // ------------------------------------------------------------------------------ periodic duties

    fn on_tick(&mut self) {
        // Votes are rebroadcast until their roots settle: gossip is lossy and peers join late.
        let open: BTreeSet<Root> = self.elections.open_roots().into_iter().collect();
        let votes: Vec<Vote> = self
            .rep
            .current_votes()
            .into_iter()
            .filter(|v| {
                self.elections
                    .root_of(&v.block)
                    .is_some_and(|r| open.contains(&r))
            })
            .collect();
        if !votes.is_empty() {
            self.publish_votes(&votes);
        }
        self.checkpoint_duty();
        self.mint_duty();
        self.app_scores();
        self.receive_pending();
        let _ = self.trigger.try_send(None);
        self.ticks += 1;
        // Roots that stay open (their votes went by while this node was away) are asked of peers:
        // a peer holding the block confirmed answers with its certificate.
        if self.ticks.is_multiple_of(REGOSSIP_TICKS) {
            self.regossip_for_workers();
        }
        if self.ticks.is_multiple_of(STALE_ELECTION_TICKS) {
            let stale: Vec<BlockHash> = self
                .elections
                .open_roots()
                .iter()
                .filter_map(|r| self.elections.get(r))
                .flat_map(|e| e.candidates().map(Block::hash).collect::<Vec<_>>())
                .take(MAX_STALE_FETCHES)
                .collect();
            for h in stale {
                let _ = self.fetch.try_send((None, h));
            }
        }
    }

    /// The stake table this node sees: every account with bonded stake, the 256 largest, by account.
    fn stake_table(&self) -> Vec<(AccountId, Credits)> {
        let mut t: Vec<(AccountId, Credits)> = self
            .ledger
            .ledger()
            .state()
            .accounts
            .iter()
            .filter(|(_, s)| !s.bonded.is_zero())
            .map(|(a, s)| (*a, s.bonded))
            .collect();
        t.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        t.truncate(mycel_ledger::codec::MAX_LIST);
        t.sort_by_key(|(a, _)| *a);
        t
    }

    /// At an epoch boundary, members of the current table sign the next table; once 2/3 of the stake
    /// signed one table, the lowest signer posts the Checkpoint (others back it up a few ticks later;
    /// duplicates are no-ops).
    fn checkpoint_duty(&mut self) {
        let latest = self.ledger.ledger().latest_epoch().clone();
        if self.now_epoch() <= latest.epoch || latest.weight(&self.account).is_zero() {
            return;
        }
        let table = self.stake_table();
        if table.is_empty() {
            return;
        }
        self.sign_share(ShareKind::Checkpoint, latest.epoch + 1, table);
    }

    /// Once an epoch is over (and the next one too, so its last blocks are confirmed), members of its
    /// table sign its emission: `emission::allocate` over the confirmed audited work and validation
    /// of the epoch, which every node computes alike from its ledger. A quorum becomes a Mint.
    fn mint_duty(&mut self) {
        let now = self.now_epoch();
        let l = self.ledger.ledger();
        let mut epoch = self.mint_floor;
        let target = loop {
            if epoch + 2 > now {
                return;
            }
            let minted = l.state().minted.contains_key(&epoch);
            match l.epoch_info(epoch) {
                Some(info) if !minted && !info.weight(&self.account).is_zero() => break epoch,
                // Without a table there is nothing to mint yet; a table not signed by this node, or a
                // minted epoch, is done for this node.
                None => return,
                Some(_) => epoch += 1,
            }
        };
        // Confirmed blocks only grow: an unchanged count means an unchanged split, so the share
        // signed for it is re-sent instead of scanning the epoch's blocks again.
        let confirmed = l.confirmed_count();
        if let Some((e, n, share)) = &self.mint_signed
            && (*e, *n) == (target, confirmed)
        {
            let share = share.clone();
            self.spread_share(share);
            return;
        }
        let weights = emission::observe(l, target);
        let cap = self.genesis.params.epoch_emission;
        let recipients = match emission::allocate(&weights, cap) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(epoch = target, error = %e, "emission split failed");
                return;
            }
        };
        if recipients.is_empty() {
            // No audited work in that epoch: nothing to mint, ever.
            self.mint_floor = target + 1;
            return;
        }
        self.mint_floor = target;
        let share = self.sign_share(ShareKind::Mint, target, recipients);
        self.mint_signed = Some((target, confirmed, share));
    }

    fn sign_share(
        &mut self,
        kind: ShareKind,
        epoch: u64,
        list: Vec<(AccountId, Credits)>,
    ) -> QuorumShare {
        let share = QuorumShare::sign(&self.key, kind, epoch, list);
        self.spread_share(share.clone());
        share
    }

    /// Gossips this node's share, counts a tick towards the backup posters' delay, and posts every
    /// set that reached its quorum.
    fn spread_share(&mut self, share: QuorumShare) {
        self.publish(VOTES_TOPIC, VotesMessage::Share(share.clone()).encode());
        self.add_share(share);
        for set in self.shares.values_mut() {
            set.ready_ticks += 1;
        }
        self.try_post_shares();
    }

    /// The table whose members sign shares of this kind and epoch, if the share is still useful.
    fn share_table(&self, kind: ShareKind, epoch: u64) -> Option<EpochInfo> {
        let l = self.ledger.ledger();
        match kind {
            ShareKind::Checkpoint => {
                let latest = l.latest_epoch();
                (epoch == latest.epoch + 1).then(|| latest.clone())
            }
            ShareKind::Mint => {
                if l.state().minted.contains_key(&epoch) {
                    return None;
                }
                l.epoch_info(epoch).cloned()
            }
        }
    }

    fn add_share(&mut self, share: QuorumShare) {
        let key = (share.kind, share.epoch, list_hash(&share.list));
        if !self.shares.contains_key(&key) && self.shares.len() >= MAX_SHARE_SETS {
            return;
        }
        let set = self.shares.entry(key).or_insert_with(|| ShareSet {
            table: share.list.clone(),
            sigs: BTreeMap::new(),
            ready_ticks: 0,
        });
        set.sigs.insert(share.signer, share.signature);
        self.try_post_shares();
    }

    /// Posts the Checkpoint or Mint of every share set that reached 2/3 of its table's stake. The lowest
    /// signer posts at once; the others back it up after a delay (a Checkpoint copy is a no-op; a Mint
    /// copy would be invalid, so its backup waits much longer).
    fn try_post_shares(&mut self) {
        let mut ready = Vec::new();
        for (key, set) in &self.shares {
            let (kind, epoch, ..) = *key;
            let Some(info) = self.share_table(kind, epoch) else {
                continue;
            };
            let w = set.sigs.keys().fold(Credits::ZERO, |w, a| {
                Credits(w.0.saturating_add(info.weight(a).0))
            });
            let backup = match kind {
                ShareKind::Checkpoint => CHECKPOINT_BACKUP_TICKS,
                ShareKind::Mint => MINT_BACKUP_TICKS,
            };
            // The poster is fixed by the table, not by the signatures this node happens to hold
            // (two nodes each lowest among what they had both posted a Mint, and a second Mint of
            // an epoch is invalid): the first member posts at once, the n-th after n backup delays.
            let Some(rank) = info.table.iter().position(|(a, _)| *a == self.account) else {
                continue;
            };
            let wait = backup.saturating_mul(u32::try_from(rank).unwrap_or(u32::MAX));
            if EpochInfo::is_quorum(w, info.total) && set.ready_ticks >= wait {
                ready.push(*key);
            }
        }
        for key in ready {
            let Some(set) = self.shares.remove(&key) else {
                continue;
            };
            let (kind, epoch, ..) = key;
            let qc: Vec<SignerSig> = set
                .sigs
                .iter()
                .map(|(signer, signature)| SignerSig {
                    signer: *signer,
                    signature: *signature,
                })
                .collect();
            let body = match kind {
                ShareKind::Checkpoint => BlockBody::Checkpoint(Box::new(CheckpointBody {
                    new_epoch: epoch,
                    table: set.table,
                    qc,
                })),
                ShareKind::Mint => BlockBody::Mint(Box::new(MintBody {
                    mint_epoch: epoch,
                    recipients: set.table,
                    qc,
                })),
            };
            match self.post_own(body) {
                Ok(hash) => tracing::info!(?kind, epoch, %hash, "posted"),
                Err(e) => tracing::debug!(?kind, epoch, error = %e, "not posted"),
            }
        }
    }
}

/// One page of frontiers: those of the `max` lowest accounts above `after`, in account order, and
/// whether more follow. Linear in the number of accounts (a full sort per page would make paging
/// through a large ledger quadratic-log).
fn frontier_page(
    accounts: &HashMap<AccountId, mycel_ledger::state::AccountState>,
    after: Option<[u8; 32]>,
    max: usize,
) -> (Vec<Frontier>, bool) {
    let mut page: Vec<(&AccountId, &mycel_ledger::state::AccountState)> = accounts
        .iter()
        .filter(|(a, _)| after.is_none_or(|x| a.0 > x))
        .collect();
    let more = page.len() > max;
    if more {
        page.select_nth_unstable_by_key(max, |(a, _)| **a);
        page.truncate(max);
    }
    page.sort_by_key(|(a, _)| **a);
    let entries = page
        .into_iter()
        .map(|(a, s)| Frontier {
            account: a.0,
            height: s.height,
            head: s.frontier.0,
        })
        .collect();
    (entries, more)
}

fn list_hash(list: &[(AccountId, Credits)]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for (a, c) in list {
        h.update(&a.0);
        h.update(&c.0.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontier_pages_walk_every_account_once_in_order() {
        let accounts: HashMap<AccountId, mycel_ledger::state::AccountState> = (0..2500u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
                let state = mycel_ledger::state::AccountState {
                    height: u64::from(i),
                    ..Default::default()
                };
                (AccountId(id), state)
            })
            .collect();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (page, more) = frontier_page(&accounts, after, 1000);
            assert!(page.len() <= 1000);
            assert!(
                page.windows(2).all(|w| w[0].account < w[1].account),
                "in order"
            );
            after = page.last().map(|f| f.account);
            seen.extend(page);
            if !more {
                break;
            }
        }
        assert_eq!(seen.len(), accounts.len(), "every account once");
        assert!(seen.windows(2).all(|w| w[0].account < w[1].account));
        for f in &seen {
            assert_eq!(accounts[&AccountId(f.account)].height, f.height);
        }
    }
}
