//! The `ledger` JSON-RPC namespace implemented on a [`Node`]'s ledger service.

use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::{Extensions, PendingSubscriptionSink};
use mycel_identity::Did;
use mycel_ledger::block::SignerSig;
use mycel_ledger::{AccountId, Balance, Block, BlockBody, BlockHash, Credits};
use mycel_rpc_api::error_codes;
use mycel_rpc_api::ledger::{
    AccountView, BalanceInfo, BlockView, ConfirmationView, LedgerApiServer, LedgerInfo, Receivable,
    SubmitResult, Unbonding,
};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::Caller;
use crate::error::NodeError;
use crate::ledger::{BlockInfo, LedgerHandle, Submitted};
use crate::node::Node;

/// Default and largest `ledger_history` page.
const DEFAULT_HISTORY: u32 = 50;

pub(super) struct LedgerRpc {
    pub(super) node: Node,
}

fn ledger_error(e: NodeError) -> ErrorObjectOwned {
    let code = match &e {
        NodeError::Ledger(m) if m.contains("keeps no ledger") => error_codes::LEDGER_UNAVAILABLE,
        NodeError::Ledger(_) => error_codes::BLOCK_REJECTED,
        NodeError::InvalidRequest(_) => error_codes::INVALID_PARAMS,
        _ => jsonrpsee::types::error::INTERNAL_ERROR_CODE,
    };
    ErrorObjectOwned::owned(code, e.to_string(), None::<()>)
}

fn invalid(msg: String) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(error_codes::INVALID_PARAMS, msg, None::<()>)
}

/// An account named by DID (`did:key:…`) or by its 64-hex public key.
pub fn parse_account(text: &str) -> Result<AccountId, ErrorObjectOwned> {
    let text = text.trim();
    let id = if text.starts_with("did:") {
        let did: Did = text
            .parse()
            .map_err(|e| invalid(format!("account `{text}`: {e}")))?;
        AccountId(*did.public_key().as_bytes())
    } else {
        AccountId::from_hex(text)
            .map_err(|_| invalid(format!("account `{text}`: expected a did:key or 64 hex")))?
    };
    id.public_key()
        .map_err(|_| invalid(format!("account `{text}` is not a valid Ed25519 key")))?;
    Ok(id)
}

fn did(a: &AccountId) -> String {
    a.did()
        .map(|d| d.to_string())
        .unwrap_or_else(|_| a.to_hex())
}

fn amount(c: Credits) -> String {
    c.0.to_string()
}

fn balance_info(account: &AccountId, b: &Balance) -> BalanceInfo {
    BalanceInfo {
        account: did(account),
        liquid: amount(b.liquid),
        bonded: amount(b.bonded),
        unbonding: b
            .unbonding
            .iter()
            .map(|(a, e)| Unbonding {
                amount: amount(*a),
                release_epoch: *e,
            })
            .collect(),
        receivable: amount(b.receivable),
    }
}

fn sigs(list: &[SignerSig]) -> Value {
    list.iter()
        .map(|s| json!({ "signer": did(&s.signer), "signature": hex::encode(s.signature.as_bytes()) }))
        .collect()
}

fn body_json(body: &BlockBody) -> Value {
    match body {
        BlockBody::Open { source, work } => json!({ "source": source.to_hex(), "work": work }),
        BlockBody::Send {
            destination,
            amount: a,
        } => json!({ "destination": did(destination), "amount": amount(*a) }),
        BlockBody::Receive { source } => json!({ "source": source.to_hex() }),
        BlockBody::Stake { amount: a } | BlockBody::Unstake { amount: a } => {
            json!({ "amount": amount(*a) })
        }
        BlockBody::Bind { node_key, .. } | BlockBody::Rotate { node_key, .. } => {
            json!({ "node_key": hex::encode(node_key) })
        }
        BlockBody::Escrow {
            job_id,
            worker,
            amount: a,
            expires_epoch,
            private,
        } => json!({
            "job_id": job_id.to_hex(), "worker": did(worker), "amount": amount(*a),
            "expires_epoch": expires_epoch, "private": private,
        }),
        BlockBody::Claim(c) => json!({
            "escrow": c.escrow.to_hex(), "job_id": c.receipt.job_id.to_hex(),
            "price": amount(c.receipt.price), "prompt_tokens": c.receipt.prompt_tokens,
            "output_tokens": c.receipt.output_tokens, "verdicts": sigs(&c.verdicts),
        }),
        BlockBody::Slash(s) => json!({
            "escrow": s.escrow.to_hex(), "worker": did(&s.receipt.worker),
            "verdicts": sigs(&s.verdicts),
        }),
        BlockBody::Mint(m) => json!({
            "mint_epoch": m.mint_epoch,
            "recipients": m.recipients.iter()
                .map(|(a, c)| json!({ "account": did(a), "amount": amount(*c) }))
                .collect::<Vec<_>>(),
            "qc": sigs(&m.qc),
        }),
        BlockBody::Checkpoint(c) => json!({
            "new_epoch": c.new_epoch,
            "table": c.table.iter()
                .map(|(a, s)| json!({ "account": did(a), "stake": amount(*s) }))
                .collect::<Vec<_>>(),
            "qc": sigs(&c.qc),
        }),
    }
}

/// A block as the RPC shows it.
pub fn block_view(info: &BlockInfo) -> BlockView {
    let b = &info.block;
    BlockView {
        hash: b.hash().to_hex(),
        kind: b.body.kind().name().to_string(),
        account: did(&b.account),
        height: b.height,
        previous: b.previous.to_hex(),
        epoch: b.epoch,
        confirmed: info.confirmed,
        body: body_json(&b.body),
        raw: hex::encode(b.encode()),
    }
}

impl LedgerRpc {
    fn ledger(&self) -> RpcResult<&LedgerHandle> {
        self.node.ledger().map_err(ledger_error)
    }
}

#[async_trait]
impl LedgerApiServer for LedgerRpc {
    async fn info(&self) -> RpcResult<LedgerInfo> {
        let ledger = self.ledger()?;
        let s = ledger.status().await.map_err(ledger_error)?;
        let g = ledger.genesis();
        Ok(LedgerInfo {
            network: s.network,
            genesis_hash: hex::encode(s.genesis),
            epoch: s.epoch,
            table_epoch: s.table_epoch,
            epoch_secs: g.params.epoch_secs,
            start_time: g.start_time,
            blocks: s.blocks as u64,
            confirmed: s.confirmed as u64,
            unchecked: s.unchecked as u64,
            elections: s.elections as u64,
            state_root: hex::encode(s.state_root),
            supply: amount(s.supply),
            open_work_bits: g.params.open_work_bits,
            price_per_token: amount(g.params.price_per_token),
            node_account: did(&s.account),
            node_weight: amount(s.weight),
        })
    }

    async fn balance(&self, account: String) -> RpcResult<BalanceInfo> {
        let id = parse_account(&account)?;
        let info = self
            .ledger()?
            .account_info(id)
            .await
            .map_err(ledger_error)?;
        Ok(balance_info(
            &id,
            &info.map(|i| i.balance).unwrap_or_default(),
        ))
    }

    async fn account(&self, account: String) -> RpcResult<Option<AccountView>> {
        let id = parse_account(&account)?;
        let Some(info) = self
            .ledger()?
            .account_info(id)
            .await
            .map_err(ledger_error)?
        else {
            return Ok(None);
        };
        let open = !info.state.frontier.is_zero();
        Ok(Some(AccountView {
            account: did(&id),
            public_key: id.to_hex(),
            open,
            height: info.state.height,
            frontier: info.state.frontier.to_hex(),
            epoch: info.state.epoch,
            balance: balance_info(&id, &info.balance),
            receivable: info
                .receivable
                .iter()
                .map(|(h, a)| Receivable {
                    source: h.to_hex(),
                    amount: amount(*a),
                })
                .collect(),
            node_key: info.state.node_key.map(hex::encode),
        }))
    }

    async fn block(&self, hash: String) -> RpcResult<Option<BlockView>> {
        let h = BlockHash::from_hex(hash.trim())
            .map_err(|_| invalid(format!("hash `{hash}`: expected 64 hex")))?;
        let info = self.ledger()?.block(h).await.map_err(ledger_error)?;
        Ok(info.as_ref().map(block_view))
    }

    async fn history(&self, account: String, limit: Option<u32>) -> RpcResult<Vec<BlockView>> {
        let id = parse_account(&account)?;
        let limit = limit.unwrap_or(DEFAULT_HISTORY);
        if limit == 0 || limit as usize > crate::ledger::MAX_HISTORY {
            return Err(invalid(format!(
                "limit must be 1..={}",
                crate::ledger::MAX_HISTORY
            )));
        }
        let blocks = self
            .ledger()?
            .history(id, limit as usize)
            .await
            .map_err(ledger_error)?;
        Ok(blocks.iter().map(block_view).collect())
    }

    async fn submit(&self, ext: &Extensions, block: String) -> RpcResult<SubmitResult> {
        if !ext.get::<Caller>().is_some_and(|c| c.trusted) {
            return Err(ErrorObjectOwned::owned(
                error_codes::UNAUTHORIZED,
                "ledger_submit is only allowed from loopback or with the node's bearer token",
                None::<()>,
            ));
        }
        let ledger = self.ledger()?;
        let bytes = hex::decode(block.trim())
            .map_err(|_| invalid("block: expected the hex of a canonical block encoding".into()))?;
        if bytes.len() > mycel_ledger::codec::MAX_BLOCK_BYTES {
            return Err(invalid("block: larger than MAX_BLOCK_BYTES".into()));
        }
        let block = Block::decode(&bytes).map_err(|e| invalid(format!("block: {e}")))?;
        let (hash, status) = match ledger.submit(block).await.map_err(ledger_error)? {
            Submitted::Applied(h) => (h, "applied"),
            Submitted::Queued(h) => (h, "queued"),
            Submitted::Contested(h) => (h, "contested"),
        };
        Ok(SubmitResult {
            hash: hash.to_hex(),
            status: status.into(),
        })
    }

    async fn subscribe_confirmations(
        &self,
        pending: PendingSubscriptionSink,
    ) -> SubscriptionResult {
        let mut rx = match self.node.ledger() {
            Ok(l) => l.subscribe(),
            Err(e) => {
                pending.reject(ledger_error(e)).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        loop {
            tokio::select! {
                _ = sink.closed() => return Ok(()),
                ev = rx.recv() => match ev {
                    Ok(c) => {
                        let view = ConfirmationView {
                            hash: c.hash.to_hex(),
                            account: did(&c.account),
                            height: c.height,
                            kind: c.kind.name().to_string(),
                            epoch: c.epoch,
                        };
                        sink.send(serde_json::value::to_raw_value(&view)?).await?;
                    }
                    // A slow subscriber skips what it missed rather than holding memory.
                    Err(RecvError::Lagged(n)) => tracing::debug!(missed = n, "confirmation subscriber lagged"),
                    Err(RecvError::Closed) => return Ok(()),
                },
            }
        }
    }
}
