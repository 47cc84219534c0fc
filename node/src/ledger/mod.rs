//! The node's ledger: a redb-backed [`mycel_ledger::StoredLedger`] driven by the network.
//!
//! One actor ([`service`]) owns the ledger, the elections and this node's representative; it runs on
//! its own thread so redb's fsyncs never stall the async runtime. It takes blocks from wallets
//! ([`LedgerHandle::submit`]), from gossip (`mycel/blocks/1`) and from sync, validates them, votes
//! with the node's stake (`mycel/votes/1`), confirms at 2/3 of online stake, settles forks, and posts
//! the checkpoint of each new epoch once the current stake table signed it. [`syncer`] pulls what the
//! node is missing from peers over `/mycel/ledger-sync/1.0.0`: whole chains after a restart or a late
//! join (every block is validated again, every quorum certificate checked), single blocks that a
//! gossiped block depends on, and the certificates of blocks whose votes it missed. Wire formats are in [`wire`] and specs/wire.md.

mod service;
mod syncer;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use libp2p::gossipsub::MessageId;
use mycel_identity::Keypair;
use mycel_ledger::state::AccountState;
use mycel_ledger::{AccountId, Balance, Block, BlockHash, Genesis, Kind, Processed};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::{NodeError, Result};
use crate::network::NetworkHandle;

/// Capacity of the ledger's inbox from the network (gossip, sync requests).
pub const INBOX_CAPACITY: usize = 1024;
/// Capacity of the command channel from handles.
const COMMAND_CAPACITY: usize = 256;
/// Confirmation events buffered per subscriber before it lags.
pub const CONFIRMATION_BUFFER: usize = 1024;
/// Most blocks returned by one history query.
pub const MAX_HISTORY: usize = 1000;

/// What the network hands the ledger.
#[derive(Debug)]
pub enum LedgerInbound {
    /// A gossiped block; the ledger reports a validation verdict for `id`.
    Block {
        /// Encoded block.
        data: Vec<u8>,
        /// Gossipsub message id.
        id: MessageId,
        /// The peer that forwarded it.
        source: PeerId,
    },
    /// A gossiped votes message.
    Votes {
        /// Encoded [`wire::VotesMessage`].
        data: Vec<u8>,
        /// Gossipsub message id.
        id: MessageId,
        /// The peer that forwarded it.
        source: PeerId,
    },
    /// An inbound sync request; answer with [`NetworkHandle::respond_sync`].
    SyncRequest {
        /// The asking peer.
        peer: PeerId,
        /// Answer handle.
        id: u64,
        /// The request.
        request: wire::SyncRequest,
    },
    /// A new connection: a chance to sync with that peer.
    PeerConnected(PeerId),
}

/// Settings of the ledger service.
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    /// The network's genesis.
    pub genesis: Genesis,
    /// The redb file.
    pub path: PathBuf,
    /// How often the node rebroadcasts its votes, does checkpoint duty and syncs with a peer.
    pub tick: Duration,
}

/// A block confirmed by this node (a quorum of final votes, or a verified certificate from sync).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    /// The block.
    pub hash: BlockHash,
    /// Its chain.
    pub account: AccountId,
    /// Its height.
    pub height: u64,
    /// Its kind.
    pub kind: Kind,
    /// The epoch it states.
    pub epoch: u64,
}

/// A block as the node holds it.
#[derive(Clone, Debug)]
pub struct BlockInfo {
    /// The block.
    pub block: Block,
    /// Whether it is confirmed.
    pub confirmed: bool,
}

/// Chain and balances of an account.
#[derive(Clone, Debug)]
pub struct AccountInfo {
    /// Chain head and raw state.
    pub state: AccountState,
    /// Balances, including what it can receive.
    pub balance: Balance,
    /// Pending amounts it can receive, with their source blocks.
    pub receivable: Vec<(BlockHash, mycel_ledger::Credits)>,
}

/// What `submit` did with a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Applied (and gossiped; confirmation follows from votes).
    Applied(BlockHash),
    /// Valid so far but waiting for a dependency (kept in the unchecked pool).
    Queued(BlockHash),
    /// Validly signed, but another block holds its place on the chain: both are now candidates of one
    /// election and the votes decide (a double spend ends here).
    Contested(BlockHash),
}

/// Ledger-wide figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerStatus {
    /// Network name from genesis.
    pub network: String,
    /// Genesis hash.
    pub genesis: [u8; 32],
    /// Epoch by the clock.
    pub epoch: u64,
    /// Latest stake-table epoch.
    pub table_epoch: u64,
    /// Applied blocks.
    pub blocks: usize,
    /// Confirmed blocks.
    pub confirmed: usize,
    /// Blocks waiting for dependencies.
    pub unchecked: usize,
    /// Open elections.
    pub elections: usize,
    /// State root.
    pub state_root: [u8; 32],
    /// Total supply.
    pub supply: mycel_ledger::Credits,
    /// This node's account.
    pub account: AccountId,
    /// This node's voting weight in the latest table.
    pub weight: mycel_ledger::Credits,
}

/// How a remote job is paid: the escrow the requester locked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Payment {
    /// The Escrow block (hex in JSON).
    #[serde(with = "mycel_ledger::genesis::hex32")]
    pub escrow: [u8; 32],
    /// The job id it names.
    #[serde(with = "mycel_ledger::genesis::hex32")]
    pub job_id: [u8; 32],
}

/// What the ledger says about a would-be worker, for routing (specs/scoring.md).
#[derive(Clone, Debug)]
pub struct Standing {
    /// Its stake in the latest table.
    pub stake: mycel_ledger::Credits,
    /// Its record from ledger-confirmed work and audits.
    pub reputation: crate::scoring::Reputation,
    /// The epoch its account appeared (0 for genesis accounts).
    pub first_seen_epoch: u64,
    /// The current epoch by the clock.
    pub epoch: u64,
    /// The bond a job of `price_per_token × 1024` tokens requires (a typical job).
    pub typical_bond: mycel_ledger::Credits,
}

/// A countersigned receipt and the audit draw of its job.
#[derive(Clone, Debug)]
pub struct Countersigned {
    /// The receipt with both signatures.
    pub settled: wire::SettledReceipt,
    /// The drawn seats when the job is audited (None: not audited, or private).
    pub audit: Option<mycel_ledger::sortition::AuditDraw>,
}

/// What the worker's receipt says about a finished job (hashes computed by the caller).
#[derive(Clone, Debug)]
pub struct JobFacts {
    /// blake3 of the model id.
    pub model: [u8; 32],
    /// Hash of the weights ([`crate::models::weights_hash`]).
    pub weights: [u8; 32],
    /// blake3 of the prompt (the job's messages as JSON).
    pub prompt_hash: [u8; 32],
    /// blake3 of the answer text.
    pub output_hash: [u8; 32],
    /// blake3 of how the answer was drawn ([`crate::chat::Drawn`]).
    pub sampling: [u8; 32],
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
}

enum Command {
    Escrow {
        worker: AccountId,
        max_tokens: u32,
        private: bool,
        reply: oneshot::Sender<Result<Payment>>,
    },
    SignReceipt {
        payment: Payment,
        facts: JobFacts,
        reply: oneshot::Sender<Result<String>>,
    },
    Countersign {
        receipt: String,
        facts: JobFacts,
        reply: oneshot::Sender<Result<Countersigned>>,
    },
    Standing {
        accounts: Vec<AccountId>,
        reply: oneshot::Sender<Vec<Standing>>,
    },
    AuditCheck {
        settled: wire::SettledReceipt,
        reply: oneshot::Sender<Result<usize>>,
    },
    SignVerdict {
        settled: wire::SettledReceipt,
        accept: bool,
        reply: oneshot::Sender<mycel_ledger::block::SignerSig>,
    },
    AuditOutcome {
        verdicts: wire::AuditVerdicts,
        reply: oneshot::Sender<Result<()>>,
    },
    Submit {
        block: Block,
        reply: oneshot::Sender<Result<Submitted>>,
    },
    Account {
        account: AccountId,
        reply: oneshot::Sender<Option<AccountInfo>>,
    },
    Block {
        hash: BlockHash,
        reply: oneshot::Sender<Option<BlockInfo>>,
    },
    History {
        account: AccountId,
        limit: usize,
        reply: oneshot::Sender<Vec<BlockInfo>>,
    },
    Status {
        reply: oneshot::Sender<LedgerStatus>,
    },
    /// For the syncer: heights of these accounts (None: no chain here).
    Heights {
        accounts: Vec<AccountId>,
        reply: oneshot::Sender<Vec<Option<u64>>>,
    },
    /// For the syncer: blocks pulled from a peer, in chain order, with their certificates.
    ApplySynced {
        blocks: Vec<wire::SyncedBlock>,
        from: PeerId,
        reply: oneshot::Sender<usize>,
    },
}

/// Cloneable handle to the ledger service.
#[derive(Clone)]
pub struct LedgerHandle {
    tx: mpsc::Sender<Command>,
    confirmations: broadcast::Sender<Confirmation>,
    genesis: Arc<Genesis>,
    account: AccountId,
}

impl std::fmt::Debug for LedgerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerHandle")
            .field("network", &self.genesis.network)
            .field("account", &self.account)
            .finish()
    }
}

fn stopped() -> NodeError {
    NodeError::Ledger("ledger service stopped".into())
}

impl LedgerHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// The network's genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// This node's account (its node key).
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The current epoch by the clock.
    pub fn epoch(&self) -> u64 {
        self.genesis.epoch_at(service::unix_now())
    }

    /// Validates and applies a signed block from a wallet, then gossips it.
    pub async fn submit(&self, block: Block) -> Result<Submitted> {
        self.ask(|reply| Command::Submit { block, reply }).await?
    }

    /// An account's chain head and balances (None: no chain and nothing to receive).
    pub async fn account_info(&self, account: AccountId) -> Result<Option<AccountInfo>> {
        self.ask(|reply| Command::Account { account, reply }).await
    }

    /// A block by hash.
    pub async fn block(&self, hash: BlockHash) -> Result<Option<BlockInfo>> {
        self.ask(|reply| Command::Block { hash, reply }).await
    }

    /// The latest `limit` blocks of an account's chain, newest first.
    pub async fn history(&self, account: AccountId, limit: usize) -> Result<Vec<BlockInfo>> {
        let limit = limit.min(MAX_HISTORY);
        self.ask(|reply| Command::History {
            account,
            limit,
            reply,
        })
        .await
    }

    /// Ledger-wide figures.
    pub async fn status(&self) -> Result<LedgerStatus> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// Locks credits for a job served by `worker` (at most `max_tokens` tokens, prompt included, at the
    /// genesis price per token): posts an Escrow block on this node's chain and gossips it. A private
    /// escrow is never audited and earns no emission.
    pub async fn escrow(
        &self,
        worker: AccountId,
        max_tokens: u32,
        private: bool,
    ) -> Result<Payment> {
        self.ask(|reply| Command::Escrow {
            worker,
            max_tokens,
            private,
            reply,
        })
        .await?
    }

    /// As the worker: builds and signs the receipt of a paid job (hex of receipt ‖ signature).
    pub async fn sign_receipt(&self, payment: Payment, facts: JobFacts) -> Result<String> {
        self.ask(|reply| Command::SignReceipt {
            payment,
            facts,
            reply,
        })
        .await?
    }

    /// As the requester: checks the worker's receipt against what was delivered, countersigns it and
    /// gossips it so the worker can claim. Says whether the job was drawn for audit, and by whom.
    pub async fn countersign(&self, receipt: String, facts: JobFacts) -> Result<Countersigned> {
        self.ask(|reply| Command::Countersign {
            receipt,
            facts,
            reply,
        })
        .await?
    }

    /// Stake, reputation and age of would-be workers' accounts (one answer per account).
    pub async fn standing(&self, accounts: Vec<AccountId>) -> Result<Vec<Standing>> {
        self.ask(|reply| Command::Standing { accounts, reply })
            .await
    }

    /// As a validator: checks that `settled` is a genuine receipt of an audited job and that this node
    /// holds seats of its draw (and is neither its worker nor its requester). Returns the seats.
    pub async fn audit_check(&self, settled: wire::SettledReceipt) -> Result<usize> {
        self.ask(|reply| Command::AuditCheck { settled, reply })
            .await?
    }

    /// As a validator: signs a verdict on a receipt.
    pub async fn sign_verdict(
        &self,
        settled: wire::SettledReceipt,
        accept: bool,
    ) -> Result<mycel_ledger::block::SignerSig> {
        self.ask(|reply| Command::SignVerdict {
            settled,
            accept,
            reply,
        })
        .await
    }

    /// As the requester: acts on a quorum of verdicts — gossips accepting ones (the worker claims with
    /// them), or posts a Slash with rejecting ones.
    pub async fn audit_outcome(&self, verdicts: wire::AuditVerdicts) -> Result<()> {
        self.ask(|reply| Command::AuditOutcome { verdicts, reply })
            .await?
    }

    /// Confirmation events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Confirmation> {
        self.confirmations.subscribe()
    }

    async fn heights(&self, accounts: Vec<AccountId>) -> Result<Vec<Option<u64>>> {
        self.ask(|reply| Command::Heights { accounts, reply }).await
    }

    async fn apply_synced(&self, blocks: Vec<wire::SyncedBlock>, from: PeerId) -> Result<usize> {
        self.ask(|reply| Command::ApplySynced {
            blocks,
            from,
            reply,
        })
        .await
    }
}

/// A running ledger service.
#[derive(Debug)]
pub struct LedgerService {
    /// The handle.
    pub handle: LedgerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    syncer: tokio::task::JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl LedgerService {
    /// Opens (or creates) the ledger file and starts the service and its syncer. `inbox` receives what
    /// the network hands the ledger; `net` publishes and syncs.
    pub fn start(
        options: LedgerOptions,
        key: Keypair,
        net: NetworkHandle,
        inbox: mpsc::Receiver<LedgerInbound>,
    ) -> Result<Self> {
        let account = AccountId::from_public_key(&key.public());
        let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
        let (confirmations, _) = broadcast::channel(CONFIRMATION_BUFFER);
        let handle = LedgerHandle {
            tx,
            confirmations: confirmations.clone(),
            genesis: Arc::new(options.genesis.clone()),
            account,
        };
        let (fetch_tx, fetch_rx) = mpsc::channel(syncer::FETCH_QUEUE);
        let (trigger_tx, trigger_rx) = mpsc::channel(syncer::TRIGGER_QUEUE);
        let actor = service::Service::open(
            &options,
            key,
            net.clone(),
            confirmations,
            fetch_tx,
            trigger_tx,
        )?;
        let (stop, stop_rx) = oneshot::channel();
        let tick = options.tick;
        let thread = std::thread::Builder::new()
            .name("mycel-ledger".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the ledger runtime");
                        return;
                    }
                };
                rt.block_on(actor.run(rx, inbox, stop_rx, tick));
            })
            .map_err(|e| NodeError::Ledger(format!("cannot start the ledger thread: {e}")))?;
        let syncer = tokio::spawn(syncer::run(handle.clone(), net, fetch_rx, trigger_rx));
        Ok(Self {
            handle,
            thread: Some(thread),
            syncer,
            stop: Some(stop),
        })
    }

    /// Stops the syncer and the service; the ledger file is closed when this returns.
    pub async fn shutdown(mut self) {
        self.syncer.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for LedgerService {
    fn drop(&mut self) {
        self.syncer.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Maps a processing outcome to what `submit` reports.
fn submitted(p: &Processed, hash: BlockHash) -> Submitted {
    match p {
        Processed::Applied { .. } => Submitted::Applied(hash),
        Processed::Queued(_) => Submitted::Queued(hash),
    }
}
