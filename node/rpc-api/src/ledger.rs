//! The `ledger` JSON-RPC namespace: balances, chains, blocks, submission of wallet-signed blocks and
//! confirmation notifications (specs/rpc.md, "Ledger").
//!
//! Accounts are named by DID (`did:key:z6Mk…`) or by the 64-hex public key; block hashes are 64 hex.
//! Amounts are decimal strings of µ-credits (1 credit = 10⁶ µ): JSON numbers cannot hold u128.

use jsonrpsee::core::{RpcResult, SubscriptionResult};
use jsonrpsee::proc_macros::rpc;
use serde::{Deserialize, Serialize};

/// Ledger-wide figures and the parameters a wallet needs to build blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerInfo {
    /// Network name from genesis.
    pub network: String,
    /// Genesis hash (hex).
    pub genesis_hash: String,
    /// Current epoch by the node's clock.
    pub epoch: u64,
    /// Epoch of the latest stake table (checkpoint).
    pub table_epoch: u64,
    /// Seconds per epoch.
    pub epoch_secs: u64,
    /// Unix time epoch 0 started.
    pub start_time: u64,
    /// Applied blocks.
    pub blocks: u64,
    /// Confirmed blocks.
    pub confirmed: u64,
    /// Blocks waiting for dependencies.
    pub unchecked: u64,
    /// Open elections.
    pub elections: u64,
    /// State root (hex): equal on nodes holding the same blocks.
    pub state_root: String,
    /// Total supply, µ-credits.
    pub supply: String,
    /// Proof-of-work bits an Open without source needs.
    pub open_work_bits: u32,
    /// Price per token, µ-credits.
    pub price_per_token: String,
    /// The node's own account (DID).
    pub node_account: String,
    /// The node's voting weight in the latest table, µ-credits.
    pub node_weight: String,
}

/// One unbonding entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbonding {
    /// µ-credits.
    pub amount: String,
    /// Epoch at which it becomes liquid.
    pub release_epoch: u64,
}

/// Balances of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceInfo {
    /// The account (DID).
    pub account: String,
    /// Liquid µ-credits.
    pub liquid: String,
    /// Bonded stake, µ-credits.
    pub bonded: String,
    /// Unbonding entries.
    pub unbonding: Vec<Unbonding>,
    /// µ-credits waiting to be received.
    pub receivable: String,
}

/// An amount waiting for a Receive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receivable {
    /// The block that sent or paid it (hex): the `source` of the Receive.
    pub source: String,
    /// µ-credits.
    pub amount: String,
}

/// An account's chain head and balances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// The account (DID).
    pub account: String,
    /// Public key (hex).
    pub public_key: String,
    /// Whether the account has a chain (false: it can only receive, with an Open).
    pub open: bool,
    /// Height of the last block.
    pub height: u64,
    /// Hash of the last block (hex).
    pub frontier: String,
    /// Epoch of the last block.
    pub epoch: u64,
    /// Balances.
    pub balance: BalanceInfo,
    /// Amounts it can receive.
    pub receivable: Vec<Receivable>,
    /// Bound node key (hex), if any.
    pub node_key: Option<String>,
}

/// A block as JSON, with its canonical encoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockView {
    /// Hash (hex).
    pub hash: String,
    /// Kind: open, send, receive, stake, unstake, bind, rotate, escrow, claim, slash, mint,
    /// checkpoint.
    pub kind: String,
    /// The chain (DID).
    pub account: String,
    /// Height on the chain.
    pub height: u64,
    /// Previous block (hex).
    pub previous: String,
    /// Epoch stated by the block.
    pub epoch: u64,
    /// Whether the node holds it confirmed.
    pub confirmed: bool,
    /// Kind-specific fields.
    pub body: serde_json::Value,
    /// Canonical encoding (hex), as `ledger_submit` takes it.
    pub raw: String,
}

/// What `ledger_submit` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResult {
    /// The block's hash (hex).
    pub hash: String,
    /// `applied` (validated, applied and gossiped), `queued` (waiting for a dependency) or
    /// `contested` (a validly signed fork of an unconfirmed block: the votes decide which one stays).
    pub status: String,
}

/// A confirmation notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmationView {
    /// The confirmed block (hex).
    pub hash: String,
    /// Its chain (DID).
    pub account: String,
    /// Its height.
    pub height: u64,
    /// Its kind.
    pub kind: String,
    /// Its epoch.
    pub epoch: u64,
}

/// The `ledger_*` methods.
#[rpc(server, client, namespace = "ledger")]
pub trait LedgerApi {
    /// `ledger_info`: network, epochs, counts, state root, parameters.
    #[method(name = "info")]
    async fn info(&self) -> RpcResult<LedgerInfo>;

    /// `ledger_balance`: balances of an account (all zero when unknown).
    #[method(name = "balance")]
    async fn balance(&self, account: String) -> RpcResult<BalanceInfo>;

    /// `ledger_account`: chain head, balances and receivables (null when the account has no chain
    /// and nothing to receive).
    #[method(name = "account")]
    async fn account(&self, account: String) -> RpcResult<Option<AccountView>>;

    /// `ledger_block`: a block by hash (null when unknown).
    #[method(name = "block")]
    async fn block(&self, hash: String) -> RpcResult<Option<BlockView>>;

    /// `ledger_history`: the latest blocks of an account's chain, newest first (limit ≤ 1000,
    /// default 50).
    #[method(name = "history")]
    async fn history(&self, account: String, limit: Option<u32>) -> RpcResult<Vec<BlockView>>;

    /// `ledger_submit`: validates, applies and gossips a block signed by a wallet (hex encoding).
    #[method(name = "submit", with_extensions)]
    async fn submit(&self, block: String) -> RpcResult<SubmitResult>;

    /// `ledger_subscribeConfirmations` (WebSocket): a `ledger_confirmation` notification per block
    /// this node confirms from now on.
    #[subscription(name = "subscribeConfirmations" => "confirmation", unsubscribe = "unsubscribeConfirmations", item = ConfirmationView)]
    async fn subscribe_confirmations(&self) -> SubscriptionResult;
}
