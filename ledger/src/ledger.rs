//! The ledger state machine: validation and state transition of every block kind
//! (specs/ledger.md §5), batches, the unchecked pool, confirmation marks and rollback.
//!
//! Pure: no clock, no I/O. The caller passes its current epoch; persistence goes through
//! [`Ledger::take_changes`] and a [`crate::store::Store`].

use std::collections::{BTreeMap, HashMap, HashSet};

use mycel_identity::{PublicKey, Signature, SignedItem, domains, verify_batch};

use crate::block::{
    Block, BlockBody, CheckpointBody, ClaimBody, MintBody, NODE_BIND, SignerSig, SlashBody,
};
use crate::error::{Dependency, LedgerError, Result};
use crate::genesis::Genesis;
use crate::params::{BPS, MAX_UNBONDING, Params};
use crate::quorum::{CHECKPOINT, EpochInfo, MINT, check_stake_qc};
use crate::receipt::{RECEIPT_COUNTERSIGN, WorkReceipt, verdict_message};
use crate::sortition::{AuditDraw, draw};
use crate::state::{AccountState, EscrowState, EscrowStatus, PendingKey, State, next_seed};
use crate::store::{ChangeSet, StoredData, Table};
use crate::types::{AccountId, BlockHash, Credits, domain_hash};

/// Most parsed public keys cached; the cache is cleared beyond it.
const MAX_KEY_CACHE: usize = 1 << 20;
/// Batches at least this long are verified on several threads.
const PARALLEL_VERIFY_MIN: usize = 128;

/// What happened to a processed block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Processed {
    /// Applied; `released` lists blocks from the unchecked pool applied after it.
    Applied {
        /// The block's hash.
        hash: BlockHash,
        /// Blocks that were waiting for it (transitively) and are now applied.
        released: Vec<BlockHash>,
    },
    /// Parked in the unchecked pool until the dependency arrives.
    Queued(Dependency),
}

/// Balances of one account, for wallets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    /// Liquid credits.
    pub liquid: Credits,
    /// Bonded stake.
    pub bonded: Credits,
    /// Unbonding entries `(amount, release_epoch)`.
    pub unbonding: Vec<(Credits, u64)>,
    /// Σ of amounts waiting to be received.
    pub receivable: Credits,
}

struct Effects {
    account: AccountState,
    worker: Option<(AccountId, AccountState)>,
    pending_add: Vec<(PendingKey, Credits)>,
    pending_remove: Option<PendingKey>,
    escrow: Option<(BlockHash, EscrowState)>,
    epoch: Option<EpochInfo>,
    minted: Option<u64>,
    mint: Credits,
    burn: Credits,
}

#[derive(Default)]
struct Changes {
    added: Vec<BlockHash>,
    removed: Vec<(BlockHash, u64)>,
    accounts: HashSet<AccountId>,
    pending: HashSet<PendingKey>,
    escrows: HashSet<BlockHash>,
    epochs: HashSet<u64>,
    minted: HashSet<u64>,
    confirmed: Vec<BlockHash>,
    rewrite: bool,
}

/// The in-memory ledger.
pub struct Ledger {
    genesis: Genesis,
    genesis_hash: [u8; 32],
    state: State,
    blocks: HashMap<BlockHash, (u64, Block)>,
    by_height: HashMap<(AccountId, u64), BlockHash>,
    order: BTreeMap<u64, BlockHash>,
    next_seq: u64,
    confirmed: HashSet<BlockHash>,
    keys: HashMap<AccountId, PublicKey>,
    unchecked: crate::unchecked::Unchecked,
    changes: Changes,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("network", &self.genesis.network)
            .field("blocks", &self.blocks.len())
            .field("accounts", &self.state.accounts.len())
            .finish()
    }
}

/// Meta keys written by [`Ledger::take_changes`].
pub(crate) mod meta {
    pub const GENESIS: &[u8] = b"genesis";
    pub const SUPPLY: &[u8] = b"supply";
    pub const NEXT_SEQ: &[u8] = b"next_seq";
}

impl Ledger {
    /// A ledger holding only the genesis state.
    pub fn new(genesis: &Genesis) -> Result<Self> {
        genesis.validate()?;
        let genesis_hash = genesis.hash();
        let mut state = State::default();
        let mut table = Vec::new();
        for a in genesis.sorted_accounts() {
            let id = AccountId(a.account);
            state.accounts.insert(
                id,
                AccountState {
                    frontier: Genesis::account_root(&genesis_hash, &id),
                    balance: a.balance,
                    bonded: a.stake,
                    ..AccountState::default()
                },
            );
            state.supply = state.supply.checked_add(a.balance)?.checked_add(a.stake)?;
            if !a.stake.is_zero() {
                table.push((id, a.stake));
            }
        }
        state
            .epochs
            .insert(0, EpochInfo::new(0, genesis.seed, table)?);
        let mut ledger = Self {
            genesis: genesis.clone(),
            genesis_hash,
            state,
            blocks: HashMap::new(),
            by_height: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            confirmed: HashSet::new(),
            keys: HashMap::new(),
            unchecked: crate::unchecked::Unchecked::default(),
            changes: Changes::default(),
        };
        ledger.changes.rewrite = true;
        Ok(ledger)
    }

    /// Rebuilds a ledger from what a store holds (fast path: state tables are trusted; see
    /// [`Ledger::verify_replay`] for a full check).
    pub fn from_stored(genesis: &Genesis, data: StoredData) -> Result<Self> {
        let mut ledger = Self::new(genesis)?;
        ledger.changes = Changes::default();
        let stored_genesis = data.table(Table::Meta).get(meta::GENESIS).cloned();
        if stored_genesis.as_deref() != Some(ledger.genesis_hash.as_slice()) {
            return Err(LedgerError::Corrupt(
                "the store belongs to another genesis".into(),
            ));
        }
        let supply = data
            .table(Table::Meta)
            .get(meta::SUPPLY)
            .and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
            .map(|b| Credits(u128::from_le_bytes(b)))
            .ok_or_else(|| LedgerError::Corrupt("missing supply".into()))?;
        let mut entries = Vec::new();
        for (table, tag) in Table::STATE {
            for (k, v) in data.table(table) {
                entries.push((tag, k.clone(), v.clone()));
            }
        }
        ledger.state = State::from_entries(entries, supply)?;
        for (seq, bytes) in &data.blocks {
            let block = Block::decode(bytes)?;
            let hash = block.hash();
            ledger.by_height.insert((block.account, block.height), hash);
            ledger.order.insert(*seq, hash);
            ledger.blocks.insert(hash, (*seq, block));
        }
        ledger.next_seq = data.blocks.last().map_or(0, |(s, _)| s + 1);
        for k in data.table(Table::Confirmed).keys() {
            if let Ok(h) = <[u8; 32]>::try_from(k.as_slice()) {
                ledger.confirmed.insert(BlockHash(h));
            }
        }
        Ok(ledger)
    }

    /// Replays every block from genesis with full validation (signatures included) and checks that
    /// the result equals the current state. Used after reopening a store.
    pub fn verify_replay(&self) -> Result<()> {
        let mut fresh = Ledger::new(&self.genesis)?;
        for hash in self.order.values() {
            let (_, block) = &self.blocks[hash];
            let key = block.account.public_key()?;
            block.verify_signature(&key)?;
            fresh.apply_verified(block.clone(), None)?;
        }
        if fresh.state.root() != self.state.root() {
            return Err(LedgerError::Corrupt(
                "state tables differ from a replay of the blocks".into(),
            ));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- queries

    /// Consensus parameters.
    pub fn params(&self) -> &Params {
        &self.genesis.params
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The genesis hash.
    pub fn genesis_hash(&self) -> [u8; 32] {
        self.genesis_hash
    }

    /// The derived state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The state root (specs/ledger.md §3).
    pub fn state_root(&self) -> [u8; 32] {
        self.state.root()
    }

    /// An account's chain state.
    pub fn account(&self, id: &AccountId) -> Option<&AccountState> {
        self.state.accounts.get(id)
    }

    /// A block by hash.
    pub fn block(&self, hash: &BlockHash) -> Option<&Block> {
        self.blocks.get(hash).map(|(_, b)| b)
    }

    /// True when the block is applied.
    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.blocks.contains_key(hash)
    }

    /// Number of applied blocks.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The block at `(account, height)`.
    pub fn block_at(&self, account: &AccountId, height: u64) -> Option<&Block> {
        self.by_height
            .get(&(*account, height))
            .and_then(|h| self.block(h))
    }

    /// An account's blocks, lowest height first.
    pub fn history(&self, account: &AccountId) -> Vec<&Block> {
        let Some(a) = self.account(account) else {
            return Vec::new();
        };
        (0..=a.height)
            .filter_map(|h| self.block_at(account, h))
            .collect()
    }

    /// Amounts waiting for `account` to receive, with their source blocks (sorted by source).
    pub fn receivable(&self, account: &AccountId) -> Vec<(BlockHash, Credits)> {
        let mut out: Vec<_> = self
            .state
            .pending
            .iter()
            .filter(|((to, _), _)| to == account)
            .map(|((_, src), amount)| (*src, *amount))
            .collect();
        out.sort();
        out
    }

    /// Expired, unsettled escrows of `account` that it can refund with a Receive at `epoch`.
    pub fn refundable(&self, account: &AccountId, epoch: u64) -> Vec<(BlockHash, Credits)> {
        let mut out: Vec<_> = self
            .state
            .escrows
            .iter()
            .filter(|(_, e)| {
                e.requester == *account && e.status == EscrowStatus::Open && epoch > e.expires_epoch
            })
            .map(|(h, e)| (*h, e.amount))
            .collect();
        out.sort();
        out
    }

    /// Balances of an account (zero for unknown accounts).
    pub fn balance(&self, account: &AccountId) -> Balance {
        let receivable = self
            .receivable(account)
            .iter()
            .fold(Credits::ZERO, |acc, (_, a)| {
                Credits(acc.0.saturating_add(a.0))
            });
        match self.account(account) {
            Some(a) => Balance {
                liquid: a.balance,
                bonded: a.bonded,
                unbonding: a.unbonding.clone(),
                receivable,
            },
            None => Balance {
                receivable,
                ..Balance::default()
            },
        }
    }

    /// An escrow.
    pub fn escrow(&self, hash: &BlockHash) -> Option<&EscrowState> {
        self.state.escrows.get(hash)
    }

    /// The stake table of an epoch.
    pub fn epoch_info(&self, epoch: u64) -> Option<&EpochInfo> {
        self.state.epochs.get(&epoch)
    }

    /// The most recent stake table (used to weigh votes).
    pub fn latest_epoch(&self) -> &EpochInfo {
        // Epoch 0 always exists (created from genesis and never removed).
        self.state
            .epochs
            .values()
            .next_back()
            .unwrap_or_else(|| unreachable_epoch())
    }

    /// The audit draw of the job of `escrow` whose receipt the requester countersigned with
    /// `requester_sig` (specs/ledger.md §7). None when the escrow or its epoch table is unknown.
    ///
    /// The signature is not verified here: the draw is meaningful only for a countersignature that
    /// verifies, as the ledger requires of every Claim and Slash.
    pub fn audit_draw(&self, escrow: &BlockHash, requester_sig: &Signature) -> Option<AuditDraw> {
        let e = self.escrow(escrow)?;
        let info = self.epoch_info(e.epoch)?;
        Some(Self::draw_for(e, info, requester_sig, self.params()))
    }

    /// The draw of an escrow's job: never audited when private.
    fn draw_for(
        e: &EscrowState,
        info: &EpochInfo,
        requester_sig: &Signature,
        params: &Params,
    ) -> AuditDraw {
        if e.private {
            AuditDraw {
                audited: false,
                seats: Vec::new(),
            }
        } else {
            draw(info, &e.job_id, requester_sig, params)
        }
    }

    /// Number of confirmed blocks.
    pub fn confirmed_count(&self) -> usize {
        self.confirmed.len()
    }

    /// True when the block is marked confirmed.
    pub fn is_confirmed(&self, hash: &BlockHash) -> bool {
        self.confirmed.contains(hash)
    }

    /// Blocks waiting in the unchecked pool.
    pub fn unchecked_len(&self) -> usize {
        self.unchecked.len()
    }

    /// Application order (sequence number → block), the order a replay uses.
    pub fn order(&self) -> impl Iterator<Item = (u64, &Block)> {
        self.order
            .iter()
            .filter_map(|(s, h)| self.block(h).map(|b| (*s, b)))
    }

    // ---------------------------------------------------------------- processing

    fn key(&mut self, account: &AccountId) -> Result<PublicKey> {
        if let Some(k) = self.keys.get(account) {
            return Ok(*k);
        }
        let k = account.public_key()?;
        if self.keys.len() >= MAX_KEY_CACHE {
            self.keys.clear();
        }
        self.keys.insert(*account, k);
        Ok(k)
    }

    /// Validates and applies one block (its signature is verified singly). `now` is the caller's
    /// current epoch; blocks stating a later epoch than `now + 1` are refused.
    pub fn process(&mut self, block: Block, now: u64) -> Result<Processed> {
        let key = self.key(&block.account)?;
        block.verify_signature(&key)?;
        self.process_verified(block, Some(now))
    }

    /// Validates and applies a batch: one batch signature verification for all blocks, then each block
    /// in order. Each block succeeds or fails on its own.
    pub fn process_batch(&mut self, blocks: Vec<Block>, now: u64) -> Vec<Result<Processed>> {
        let keys: Vec<Result<PublicKey>> = blocks.iter().map(|b| self.key(&b.account)).collect();
        let sig_ok = verify_block_signatures(&blocks, &keys);
        blocks
            .into_iter()
            .zip(keys)
            .zip(sig_ok)
            .map(|((block, key), ok)| {
                key?;
                if !ok {
                    return Err(LedgerError::BadSignature("block"));
                }
                self.process_verified(block, Some(now))
            })
            .collect()
    }

    fn process_verified(&mut self, block: Block, now: Option<u64>) -> Result<Processed> {
        if let Some(now) = now
            && block.epoch > now.saturating_add(1)
        {
            return Err(LedgerError::FromFuture {
                block: block.epoch,
                now,
            });
        }
        let hash = block.hash();
        match self.apply_verified(block.clone(), None) {
            Ok(()) => {}
            Err(LedgerError::Gap(dep)) => {
                self.unchecked.insert(dep, block);
                return Ok(Processed::Queued(dep));
            }
            Err(e) => return Err(e),
        }
        let mut released = Vec::new();
        let mut work = self.released_by(&hash);
        while let Some(b) = work.pop() {
            let h = b.hash();
            match self.apply_verified(b.clone(), None) {
                Ok(()) => {
                    released.push(h);
                    work.extend(self.released_by(&h));
                }
                Err(LedgerError::Gap(dep)) => self.unchecked.insert(dep, b),
                Err(_) => {}
            }
        }
        Ok(Processed::Applied { hash, released })
    }

    fn released_by(&mut self, hash: &BlockHash) -> Vec<Block> {
        let mut out = self.unchecked.take(&Dependency::Block(*hash));
        if let Some((_, b)) = self.blocks.get(hash)
            && let BlockBody::Checkpoint(c) = &b.body
        {
            out.extend(self.unchecked.take(&Dependency::Epoch(c.new_epoch)));
        }
        out
    }

    /// Validates (signature already checked) and applies, with an explicit sequence number on replay.
    fn apply_verified(&mut self, block: Block, seq: Option<u64>) -> Result<()> {
        let hash = block.hash();
        if self.blocks.contains_key(&hash) {
            return Err(LedgerError::AlreadyKnown(hash));
        }
        let effects = self.validate(&block, hash)?;
        self.apply_effects(block, hash, effects, seq)
    }

    fn linkage(&self, b: &Block) -> Result<AccountState> {
        let is_open = matches!(b.body, BlockBody::Open { .. });
        let Some(a) = self.state.accounts.get(&b.account) else {
            if is_open {
                if b.height != 0 || !b.previous.is_zero() {
                    return Err(LedgerError::Invalid(
                        "an Open block has height 0 and a zero previous",
                    ));
                }
                return Ok(AccountState {
                    epoch: b.epoch,
                    ..AccountState::default()
                });
            }
            if !self.blocks.contains_key(&b.previous) {
                return Err(LedgerError::Gap(Dependency::Block(b.previous)));
            }
            return Err(LedgerError::Invalid(
                "previous is not a block of this account",
            ));
        };
        if let Some(existing) = self.by_height.get(&(b.account, b.height)) {
            let below_ok = match b.height.checked_sub(1) {
                None => b.previous.is_zero(),
                Some(h) => {
                    self.by_height.get(&(b.account, h)) == Some(&b.previous)
                        || (h == 0
                            && !self.by_height.contains_key(&(b.account, 0))
                            && b.previous == a_root(self, &b.account))
                }
            };
            if below_ok {
                return Err(LedgerError::Fork {
                    account: b.account,
                    height: b.height,
                    existing: *existing,
                });
            }
            return Err(LedgerError::Invalid("previous does not match the chain"));
        }
        if is_open {
            return Err(LedgerError::Invalid("account is already open"));
        }
        if b.height != a.height + 1 || b.previous != a.frontier {
            if b.height > a.height + 1 && !self.blocks.contains_key(&b.previous) {
                return Err(LedgerError::Gap(Dependency::Block(b.previous)));
            }
            return Err(LedgerError::Invalid("previous does not match the chain"));
        }
        if b.epoch < a.epoch {
            return Err(LedgerError::Invalid("epoch goes backwards on the chain"));
        }
        Ok(a.clone())
    }

    fn gap_or(&self, hash: &BlockHash, msg: &'static str) -> LedgerError {
        if self.blocks.contains_key(hash) {
            LedgerError::Invalid(msg)
        } else {
            LedgerError::Gap(Dependency::Block(*hash))
        }
    }

    fn validate(&self, b: &Block, hash: BlockHash) -> Result<Effects> {
        let mut acct = self.linkage(b)?;
        acct.mature(b.epoch)?;
        let params = self.params();
        let mut fx = Effects {
            account: AccountState::default(),
            worker: None,
            pending_add: Vec::new(),
            pending_remove: None,
            escrow: None,
            epoch: None,
            minted: None,
            mint: Credits::ZERO,
            burn: Credits::ZERO,
        };
        match &b.body {
            BlockBody::Open { source, work } => {
                if source.is_zero() {
                    if !work_ok(&b.account, *work, params.open_work_bits) {
                        return Err(LedgerError::Invalid(
                            "insufficient proof of work for an Open without source",
                        ));
                    }
                } else {
                    self.receive(b, hash, *source, &mut acct, &mut fx)?;
                }
            }
            BlockBody::Receive { source } => self.receive(b, hash, *source, &mut acct, &mut fx)?,
            BlockBody::Send {
                destination,
                amount,
            } => {
                positive(*amount)?;
                // Known accounts were checked when opened; parse only new destinations.
                if !self.state.accounts.contains_key(destination) {
                    destination.public_key()?;
                }
                acct.balance = acct.balance.checked_sub(*amount)?;
                fx.pending_add.push(((*destination, hash), *amount));
            }
            BlockBody::Stake { amount } => {
                positive(*amount)?;
                acct.balance = acct.balance.checked_sub(*amount)?;
                acct.bonded = acct.bonded.checked_add(*amount)?;
            }
            BlockBody::Unstake { amount } => {
                positive(*amount)?;
                if acct.unbonding.len() >= MAX_UNBONDING {
                    return Err(LedgerError::Invalid(
                        "too many unbonding entries; wait for some to mature",
                    ));
                }
                acct.bonded = acct.bonded.checked_sub(*amount)?;
                let release = b
                    .epoch
                    .checked_add(params.unbonding_epochs)
                    .ok_or(LedgerError::Overflow)?;
                acct.unbonding.push((*amount, release));
            }
            BlockBody::Bind { node_key, proof } | BlockBody::Rotate { node_key, proof } => {
                let rotate = matches!(b.body, BlockBody::Rotate { .. });
                match (rotate, acct.node_key) {
                    (false, Some(_)) => {
                        return Err(LedgerError::Invalid(
                            "a node key is already bound; use Rotate",
                        ));
                    }
                    (true, None) => {
                        return Err(LedgerError::Invalid("no node key bound yet; use Bind"));
                    }
                    (true, Some(old)) if old == *node_key => {
                        return Err(LedgerError::Invalid("Rotate to the key already bound"));
                    }
                    _ => {}
                }
                let key =
                    PublicKey::from_bytes(node_key).map_err(|_| LedgerError::BadKey("node key"))?;
                key.verify(NODE_BIND, &bind_message(&b.account, node_key), proof)
                    .map_err(|_| LedgerError::BadSignature("node key proof"))?;
                acct.node_key = Some(*node_key);
            }
            BlockBody::Escrow {
                job_id,
                worker,
                amount,
                expires_epoch,
                private,
            } => {
                positive(*amount)?;
                if *worker == b.account {
                    return Err(LedgerError::Invalid(
                        "an escrow's worker must be another account",
                    ));
                }
                if *expires_epoch < b.epoch {
                    return Err(LedgerError::Invalid("escrow expires before its own epoch"));
                }
                if self.state.jobs.contains(&(b.account, *job_id)) {
                    return Err(LedgerError::Invalid(
                        "job id already used by this requester",
                    ));
                }
                if !self.state.accounts.contains_key(worker) {
                    worker.public_key()?;
                }
                acct.balance = acct.balance.checked_sub(*amount)?;
                fx.escrow = Some((
                    hash,
                    EscrowState {
                        requester: b.account,
                        worker: *worker,
                        job_id: *job_id,
                        amount: *amount,
                        expires_epoch: *expires_epoch,
                        epoch: b.epoch,
                        private: *private,
                        status: EscrowStatus::Open,
                        slashed: false,
                    },
                ));
            }
            BlockBody::Claim(c) => self.claim(b, hash, c, &mut acct, &mut fx)?,
            BlockBody::Slash(s) => self.slash(b, s, &mut acct, &mut fx)?,
            BlockBody::Mint(m) => self.mint(b, hash, m, &mut fx)?,
            BlockBody::Checkpoint(c) => self.checkpoint(c, &mut fx)?,
        }
        acct.height = b.height;
        acct.frontier = hash;
        acct.epoch = b.epoch;
        fx.account = acct;
        Ok(fx)
    }

    fn receive(
        &self,
        b: &Block,
        hash: BlockHash,
        source: BlockHash,
        acct: &mut AccountState,
        fx: &mut Effects,
    ) -> Result<()> {
        let key = (b.account, source);
        if let Some(amount) = self.state.pending.get(&key) {
            acct.balance = acct.balance.checked_add(*amount)?;
            fx.pending_remove = Some(key);
            return Ok(());
        }
        if let Some(e) = self.state.escrows.get(&source)
            && e.requester == b.account
        {
            match e.status {
                EscrowStatus::Open => {}
                EscrowStatus::Claimed(existing) | EscrowStatus::Refunded(existing) => {
                    return Err(LedgerError::EscrowConflict {
                        escrow: source,
                        existing,
                    });
                }
            }
            if b.epoch <= e.expires_epoch {
                return Err(LedgerError::Invalid("escrow has not expired yet"));
            }
            acct.balance = acct.balance.checked_add(e.amount)?;
            let mut e = e.clone();
            e.status = EscrowStatus::Refunded(hash);
            fx.escrow = Some((source, e));
            return Ok(());
        }
        Err(self.gap_or(&source, "nothing to receive from this source"))
    }

    fn escrow_for(
        &self,
        escrow: &BlockHash,
        receipt: &WorkReceipt,
    ) -> Result<(&EscrowState, &EpochInfo)> {
        let e = self
            .state
            .escrows
            .get(escrow)
            .ok_or_else(|| self.gap_or(escrow, "not an escrow"))?;
        if receipt.escrow != *escrow
            || receipt.job_id != e.job_id
            || receipt.worker != e.worker
            || receipt.requester != e.requester
        {
            return Err(LedgerError::Invalid("receipt does not match the escrow"));
        }
        let info = self
            .state
            .epochs
            .get(&e.epoch)
            .ok_or(LedgerError::Gap(Dependency::Epoch(e.epoch)))?;
        Ok((e, info))
    }

    /// Checks verdicts against the draw: signers hold seats, are distinct, reach 2/3 of the seats.
    /// Returns `(signer, seats)` and the total signed seats.
    fn verdict_seats(
        draw: &AuditDraw,
        verdicts: &[SignerSig],
    ) -> Result<(Vec<(AccountId, usize)>, usize)> {
        let mut out = Vec::with_capacity(verdicts.len());
        let mut total = 0;
        for (i, v) in verdicts.iter().enumerate() {
            if i > 0 && verdicts[i - 1].signer >= v.signer {
                return Err(LedgerError::Quorum(
                    "verdict signers must be distinct and sorted",
                ));
            }
            let seats = draw.seats_of(&v.signer);
            if seats == 0 {
                return Err(LedgerError::Quorum(
                    "verdict signer was not drawn for this job",
                ));
            }
            total += seats;
            out.push((v.signer, seats));
        }
        if !draw.is_quorum(total) {
            return Err(LedgerError::Quorum(
                "verdicts hold less than 2/3 of the drawn seats",
            ));
        }
        Ok((out, total))
    }

    fn claim(
        &self,
        b: &Block,
        hash: BlockHash,
        c: &ClaimBody,
        acct: &mut AccountState,
        fx: &mut Effects,
    ) -> Result<()> {
        let (e, info) = self.escrow_for(&c.escrow, &c.receipt)?;
        match e.status {
            EscrowStatus::Open => {}
            EscrowStatus::Claimed(existing) | EscrowStatus::Refunded(existing) => {
                return Err(LedgerError::EscrowConflict {
                    escrow: c.escrow,
                    existing,
                });
            }
        }
        if e.worker != b.account {
            return Err(LedgerError::Invalid(
                "only the escrow's worker can claim it",
            ));
        }
        if e.slashed {
            return Err(LedgerError::Invalid(
                "the job failed its audit and was slashed",
            ));
        }
        let price = c.receipt.price;
        if price > e.amount {
            return Err(LedgerError::Invalid("price above the escrowed amount"));
        }
        if b.epoch > e.expires_epoch {
            return Err(LedgerError::Invalid("escrow expired"));
        }
        let params = self.params();
        // The countersignature verified below decides the draw (§7).
        let audit = Self::draw_for(e, info, &c.requester_sig, params);
        let receipt_bytes = c.receipt.encode();
        let worker_key = b.account.public_key()?;
        let requester_key = e.requester.public_key()?;
        let mut items = vec![
            SignedItem {
                domain: domains::RECEIPT,
                message: &receipt_bytes,
                signature: &c.worker_sig,
                signer: &worker_key,
            },
            SignedItem {
                domain: RECEIPT_COUNTERSIGN,
                message: &receipt_bytes,
                signature: &c.requester_sig,
                signer: &requester_key,
            },
        ];
        let verdict = verdict_message(&c.receipt.hash(), true);
        let (signers, signed_seats) = if audit.audited {
            Self::verdict_seats(&audit, &c.verdicts)?
        } else {
            if !c.verdicts.is_empty() {
                return Err(LedgerError::Invalid(
                    "verdicts on a job that was not drawn for audit",
                ));
            }
            (Vec::new(), 0)
        };
        let vkeys = verdict_keys(&c.verdicts)?;
        push_verdicts(&mut items, &c.verdicts, &vkeys, &verdict);
        verify_batch(&items).map_err(|_| LedgerError::BadSignature("receipt or verdicts"))?;

        let v_cut = price.mul_div(u128::from(params.validator_share_bps), BPS)?;
        let worker_pay = price.checked_sub(v_cut)?;
        let mut paid = worker_pay;
        if audit.audited {
            for (signer, seats) in &signers {
                let share = v_cut.mul_div(*seats as u128, signed_seats as u128)?;
                if !share.is_zero() {
                    fx.pending_add.push(((*signer, hash), share));
                    paid = paid.checked_add(share)?;
                }
            }
        }
        let refund = e.amount.checked_sub(paid)?;
        if !refund.is_zero() {
            fx.pending_add.push(((e.requester, hash), refund));
        }
        acct.balance = acct.balance.checked_add(worker_pay)?;
        let mut e = e.clone();
        e.status = EscrowStatus::Claimed(hash);
        fx.escrow = Some((c.escrow, e));
        Ok(())
    }

    fn slash(
        &self,
        b: &Block,
        s: &SlashBody,
        acct: &mut AccountState,
        fx: &mut Effects,
    ) -> Result<()> {
        let (e, info) = self.escrow_for(&s.escrow, &s.receipt)?;
        if e.slashed {
            return Err(LedgerError::Invalid("this job was already slashed"));
        }
        if e.private {
            return Err(LedgerError::Invalid("private jobs are never audited"));
        }
        let params = self.params();
        // As for a Claim, the requester's countersignature (verified below) decides the draw; it
        // also proves the receipt was delivered and accepted for payment.
        let audit = draw(info, &e.job_id, &s.requester_sig, params);
        if !audit.audited {
            return Err(LedgerError::Invalid("the job was not drawn for audit"));
        }
        Self::verdict_seats(&audit, &s.verdicts)?;
        let receipt_bytes = s.receipt.encode();
        let worker_key = e.worker.public_key()?;
        let requester_key = e.requester.public_key()?;
        let verdict = verdict_message(&s.receipt.hash(), false);
        let vkeys = verdict_keys(&s.verdicts)?;
        let mut items = vec![
            SignedItem {
                domain: domains::RECEIPT,
                message: &receipt_bytes,
                signature: &s.worker_sig,
                signer: &worker_key,
            },
            SignedItem {
                domain: RECEIPT_COUNTERSIGN,
                message: &receipt_bytes,
                signature: &s.requester_sig,
                signer: &requester_key,
            },
        ];
        push_verdicts(&mut items, &s.verdicts, &vkeys, &verdict);
        verify_batch(&items).map_err(|_| LedgerError::BadSignature("receipt or verdicts"))?;

        let self_slash = e.worker == b.account;
        let mut worker = if self_slash {
            acct.clone()
        } else {
            self.state
                .accounts
                .get(&e.worker)
                .cloned()
                .ok_or(LedgerError::Invalid("worker account does not exist"))?
        };
        let target = s.receipt.price.mul_div(BPS, u128::from(params.audit_bps))?;
        let cut = target.min(worker.slashable()?);
        let mut left = cut;
        let from_bond = left.min(worker.bonded);
        worker.bonded = worker.bonded.checked_sub(from_bond)?;
        left = left.checked_sub(from_bond)?;
        worker
            .unbonding
            .sort_by_key(|(_, release)| std::cmp::Reverse(*release));
        for (amount, _) in worker.unbonding.iter_mut() {
            let take = left.min(*amount);
            *amount = amount.checked_sub(take)?;
            left = left.checked_sub(take)?;
        }
        worker.unbonding.retain(|(a, _)| !a.is_zero());
        worker.unbonding.sort_by_key(|(_, release)| *release);
        let share = cut.mul_div(u128::from(params.reporter_share_bps), BPS)?;
        fx.burn = cut.checked_sub(share)?;
        if self_slash {
            *acct = worker;
        } else {
            fx.worker = Some((e.worker, worker));
        }
        acct.balance = acct.balance.checked_add(share)?;
        let mut e = e.clone();
        e.slashed = true;
        fx.escrow = Some((s.escrow, e));
        Ok(())
    }

    fn mint(&self, b: &Block, hash: BlockHash, m: &MintBody, fx: &mut Effects) -> Result<()> {
        let info = self
            .state
            .epochs
            .get(&m.mint_epoch)
            .ok_or(LedgerError::Gap(Dependency::Epoch(m.mint_epoch)))?;
        if self.state.minted.contains_key(&m.mint_epoch) {
            return Err(LedgerError::Invalid("this epoch was already minted"));
        }
        if m.mint_epoch >= b.epoch {
            return Err(LedgerError::Invalid(
                "an epoch is minted only after it ends",
            ));
        }
        if m.recipients.is_empty() {
            return Err(LedgerError::Invalid("a Mint needs recipients"));
        }
        let mut total = Credits::ZERO;
        for (i, (a, amount)) in m.recipients.iter().enumerate() {
            positive(*amount)?;
            if i > 0 && m.recipients[i - 1].0 >= *a {
                return Err(LedgerError::Invalid(
                    "mint recipients must be sorted and distinct",
                ));
            }
            a.public_key()?;
            total = total.checked_add(*amount)?;
            fx.pending_add.push(((*a, hash), *amount));
        }
        if total > self.params().epoch_emission {
            return Err(LedgerError::Invalid("mint above the epoch emission cap"));
        }
        check_stake_qc(
            info,
            MINT,
            &MintBody::signed_message(m.mint_epoch, &m.recipients),
            &m.qc,
        )?;
        fx.mint = total;
        fx.minted = Some(m.mint_epoch);
        Ok(())
    }

    fn checkpoint(&self, c: &CheckpointBody, fx: &mut Effects) -> Result<()> {
        let latest = self.latest_epoch();
        if c.new_epoch <= latest.epoch {
            // Several representatives may post the same checkpoint at once: a copy of an agreed table
            // with a valid QC is a no-op, so the race costs nothing and no chain is stuck on it.
            let known = self.epoch_info(c.new_epoch);
            let previous = c.new_epoch.checked_sub(1).and_then(|e| self.epoch_info(e));
            return match (known, previous) {
                (Some(known), Some(previous)) if known.table == c.table => {
                    let message = CheckpointBody::signed_message(c.new_epoch, &c.table);
                    check_stake_qc(previous, CHECKPOINT, &message, &c.qc)
                }
                _ => Err(LedgerError::Invalid(
                    "this epoch already has a different stake table",
                )),
            };
        }
        if c.new_epoch != latest.epoch + 1 {
            return Err(LedgerError::Gap(Dependency::Epoch(c.new_epoch - 1)));
        }
        if c.table.is_empty() {
            return Err(LedgerError::Invalid("empty stake table"));
        }
        for (i, (a, stake)) in c.table.iter().enumerate() {
            positive(*stake)?;
            if i > 0 && c.table[i - 1].0 >= *a {
                return Err(LedgerError::Invalid(
                    "stake table must be sorted and distinct",
                ));
            }
            a.public_key()?;
        }
        let message = CheckpointBody::signed_message(c.new_epoch, &c.table);
        check_stake_qc(latest, CHECKPOINT, &message, &c.qc)?;
        fx.epoch = Some(EpochInfo::new(
            c.new_epoch,
            next_seed(&latest.seed, c.new_epoch, &message),
            c.table.clone(),
        )?);
        Ok(())
    }

    fn apply_effects(
        &mut self,
        block: Block,
        hash: BlockHash,
        fx: Effects,
        seq: Option<u64>,
    ) -> Result<()> {
        // Every fallible step comes before the first mutation.
        let mut pending_updates: Vec<(PendingKey, Credits)> =
            Vec::with_capacity(fx.pending_add.len());
        for (k, amount) in &fx.pending_add {
            let prior = pending_updates
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, a)| *a)
                .or_else(|| self.state.pending.get(k).copied())
                .unwrap_or(Credits::ZERO);
            let v = prior.checked_add(*amount)?;
            match pending_updates.iter_mut().find(|(pk, _)| pk == k) {
                Some(slot) => slot.1 = v,
                None => pending_updates.push((*k, v)),
            }
        }
        let supply = self
            .state
            .supply
            .checked_add(fx.mint)?
            .checked_sub(fx.burn)?;

        let account = block.account;
        self.state.accounts.insert(account, fx.account);
        self.changes.accounts.insert(account);
        if let Some((id, w)) = fx.worker {
            self.state.accounts.insert(id, w);
            self.changes.accounts.insert(id);
        }
        if let Some(k) = fx.pending_remove {
            self.state.pending.remove(&k);
            self.changes.pending.insert(k);
        }
        for (k, v) in pending_updates {
            self.state.pending.insert(k, v);
            self.changes.pending.insert(k);
        }
        if let Some((h, e)) = fx.escrow {
            self.state.jobs.insert((e.requester, e.job_id));
            self.state.escrows.insert(h, e);
            self.changes.escrows.insert(h);
        }
        if let Some(info) = fx.epoch {
            self.changes.epochs.insert(info.epoch);
            self.state.epochs.insert(info.epoch, info);
        }
        if let Some(e) = fx.minted {
            self.state.minted.insert(e, hash);
            self.changes.minted.insert(e);
        }
        self.state.supply = supply;
        let seq = seq.unwrap_or(self.next_seq);
        self.next_seq = self.next_seq.max(seq + 1);
        self.by_height.insert((account, block.height), hash);
        self.order.insert(seq, hash);
        self.blocks.insert(hash, (seq, block));
        self.changes.added.push(hash);
        Ok(())
    }

    // ---------------------------------------------------------------- confirmation and rollback

    /// Marks a block and every block below it on its chain as confirmed (they can no longer be
    /// rolled back).
    pub fn confirm(&mut self, hash: &BlockHash) -> Result<()> {
        let (_, block) = self
            .blocks
            .get(hash)
            .ok_or_else(|| LedgerError::NotFound(format!("block {hash}")))?;
        let (account, mut height) = (block.account, block.height);
        while let Some(h) = self.by_height.get(&(account, height)).copied() {
            if !self.confirmed.insert(h) {
                break;
            }
            self.changes.confirmed.push(h);
            let Some(next) = height.checked_sub(1) else {
                break;
            };
            height = next;
        }
        Ok(())
    }

    /// Removes `hash` and every block that depends on it (later blocks of its chain, receives of its
    /// sends, claims of its escrows, …) by replaying all other blocks in application order and
    /// dropping those that become invalid. Returns the removed blocks; fails, changing nothing, if
    /// any of them is confirmed.
    pub fn rollback(&mut self, hash: &BlockHash) -> Result<Vec<Block>> {
        if !self.blocks.contains_key(hash) {
            return Err(LedgerError::NotFound(format!("block {hash}")));
        }
        if self.confirmed.contains(hash) {
            return Err(LedgerError::Confirmed(*hash));
        }
        let mut fresh = Ledger::new(&self.genesis)?;
        let mut removed = Vec::new();
        for (seq, h) in &self.order {
            let (_, block) = &self.blocks[h];
            if h == hash || fresh.apply_verified(block.clone(), Some(*seq)).is_err() {
                if self.confirmed.contains(h) {
                    return Err(LedgerError::Confirmed(*h));
                }
                removed.push((*h, *seq));
            }
        }
        let mut out = Vec::with_capacity(removed.len());
        for (h, seq) in &removed {
            if let Some((_, b)) = self.blocks.remove(h) {
                out.push(b);
            }
            self.changes.removed.push((*h, *seq));
        }
        self.state = fresh.state;
        self.by_height = fresh.by_height;
        self.order = fresh.order;
        self.changes.rewrite = true;
        Ok(out)
    }

    /// Drains the changes since the last call, for one store transaction.
    pub fn take_changes(&mut self) -> ChangeSet {
        let ch = std::mem::take(&mut self.changes);
        let mut cs = ChangeSet::default();
        let removed: HashSet<BlockHash> = ch.removed.iter().map(|(h, _)| *h).collect();
        for h in &ch.added {
            if removed.contains(h) {
                continue;
            }
            if let Some((seq, b)) = self.blocks.get(h) {
                cs.put_blocks.push((*h, *seq, b.encode()));
            }
        }
        cs.del_blocks = ch.removed;
        if ch.rewrite {
            cs.clear_state = true;
            for (tag, k, v) in self.state.entries() {
                cs.put.push((Table::from_tag(tag), k, v));
            }
        } else {
            for id in &ch.accounts {
                match self.state.accounts.get(id) {
                    Some(a) => cs.put.push((Table::Accounts, id.0.to_vec(), a.encode())),
                    None => cs.del.push((Table::Accounts, id.0.to_vec())),
                }
            }
            for k in &ch.pending {
                let key = crate::state::pending_key(k);
                match self.state.pending.get(k) {
                    Some(v) => cs
                        .put
                        .push((Table::Pending, key, v.0.to_le_bytes().to_vec())),
                    None => cs.del.push((Table::Pending, key)),
                }
            }
            for h in &ch.escrows {
                if let Some(e) = self.state.escrows.get(h) {
                    cs.put.push((Table::Escrows, h.0.to_vec(), e.encode()));
                }
            }
            for e in &ch.epochs {
                if let Some(info) = self.state.epochs.get(e) {
                    cs.put
                        .push((Table::Epochs, e.to_be_bytes().to_vec(), info.encode()));
                }
            }
            for e in &ch.minted {
                if let Some(h) = self.state.minted.get(e) {
                    cs.put
                        .push((Table::Minted, e.to_be_bytes().to_vec(), h.0.to_vec()));
                }
            }
        }
        for h in ch.confirmed {
            cs.put.push((Table::Confirmed, h.0.to_vec(), Vec::new()));
        }
        cs.put.push((
            Table::Meta,
            meta::GENESIS.to_vec(),
            self.genesis_hash.to_vec(),
        ));
        cs.put.push((
            Table::Meta,
            meta::SUPPLY.to_vec(),
            self.state.supply.0.to_le_bytes().to_vec(),
        ));
        cs.put.push((
            Table::Meta,
            meta::NEXT_SEQ.to_vec(),
            self.next_seq.to_le_bytes().to_vec(),
        ));
        cs
    }
}

fn unreachable_epoch() -> &'static EpochInfo {
    static EMPTY: std::sync::OnceLock<EpochInfo> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| EpochInfo {
        epoch: 0,
        seed: [0; 32],
        table: Vec::new(),
        total: Credits::ZERO,
    })
}

fn a_root(ledger: &Ledger, account: &AccountId) -> BlockHash {
    Genesis::account_root(&ledger.genesis_hash, account)
}

fn positive(amount: Credits) -> Result<()> {
    if amount.is_zero() {
        Err(LedgerError::Invalid("amount must be positive"))
    } else {
        Ok(())
    }
}

/// The message a node key signs in Bind/Rotate: `account ‖ node_key`.
pub fn bind_message(account: &AccountId, node_key: &[u8; 32]) -> [u8; 64] {
    let mut m = [0u8; 64];
    m[..32].copy_from_slice(&account.0);
    m[32..].copy_from_slice(node_key);
    m
}

/// True when `work` is a valid Open proof of work for `account` at `bits` leading zero bits.
pub fn work_ok(account: &AccountId, work: u64, bits: u32) -> bool {
    if bits == 0 {
        return true;
    }
    let h = domain_hash("mycel/v1/open-work", &[&account.0, &work.to_le_bytes()]);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    u64::from_le_bytes(first).leading_zeros() >= bits
}

/// Finds a proof of work for an Open without source (expected 2^bits hashes).
pub fn solve_work(account: &AccountId, bits: u32) -> u64 {
    (0u64..).find(|w| work_ok(account, *w, bits)).unwrap_or(0)
}

/// Verifies the block signatures of a batch; `true` per valid block. One batch verification (split
/// across threads for long batches), and single verification only when the batch fails.
fn verify_block_signatures(blocks: &[Block], keys: &[Result<PublicKey>]) -> Vec<bool> {
    let idx: Vec<usize> = (0..blocks.len()).filter(|i| keys[*i].is_ok()).collect();
    let mut ok = vec![false; blocks.len()];
    let check = |chunk: &[usize]| -> bool {
        let items: Vec<SignedItem<'_>> = chunk
            .iter()
            .filter_map(|i| {
                let key = keys[*i].as_ref().ok()?;
                Some(SignedItem {
                    domain: domains::BLOCK,
                    message: &blocks[*i].hash_ref().0,
                    signature: blocks[*i].signature(),
                    signer: key,
                })
            })
            .collect();
        verify_batch(&items).is_ok()
    };
    let threads = if idx.len() >= PARALLEL_VERIFY_MIN {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8)
    } else {
        1
    };
    let chunk_len = idx.len().div_ceil(threads.max(1)).max(1);
    let chunks: Vec<&[usize]> = idx.chunks(chunk_len).collect();
    let results: Vec<bool> = if chunks.len() > 1 {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks.iter().map(|c| s.spawn(|| check(c))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(false))
                .collect()
        })
    } else {
        chunks.iter().map(|c| check(c)).collect()
    };
    for (chunk, good) in chunks.iter().zip(results) {
        for i in *chunk {
            ok[*i] = if good {
                true
            } else {
                keys[*i]
                    .as_ref()
                    .is_ok_and(|k| blocks[*i].verify_signature(k).is_ok())
            };
        }
    }
    ok
}

/// The validators' keys of a verdict list, in order.
fn verdict_keys(verdicts: &[SignerSig]) -> Result<Vec<PublicKey>> {
    verdicts.iter().map(|v| v.signer.public_key()).collect()
}

/// Adds one batch-verification item per verdict (`keys` from [`verdict_keys`] of the same list).
fn push_verdicts<'a>(
    items: &mut Vec<SignedItem<'a>>,
    verdicts: &'a [SignerSig],
    keys: &'a [PublicKey],
    message: &'a [u8],
) {
    for (v, k) in verdicts.iter().zip(keys) {
        items.push(SignedItem {
            domain: domains::VERDICT,
            message,
            signature: &v.signature,
            signer: k,
        });
    }
}
