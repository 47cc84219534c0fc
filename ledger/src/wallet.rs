//! Building and signing blocks offline, for the `mycel` wallet: secrets stay in the caller's
//! [`Keypair`]; blocks are built against the caller's view of the ledger (a local file or a node's
//! answers) and then applied locally or submitted.

use mycel_identity::Keypair;

use crate::block::{Block, BlockBody, BlockData, ClaimBody, NODE_BIND, SignerSig};
use crate::error::{LedgerError, Result};
use crate::ledger::{Ledger, bind_message, solve_work};
use crate::receipt::WorkReceipt;
use crate::store::{Store, StoredLedger};
use crate::types::{AccountId, BlockHash, Credits, JobId};

/// What an Escrow block locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EscrowTerms {
    /// The job.
    pub job_id: JobId,
    /// The chosen worker.
    pub worker: AccountId,
    /// Maximum price.
    pub amount: Credits,
    /// Last epoch a claim may state; refundable after it.
    pub expires_epoch: u64,
    /// Private jobs are never audited.
    pub private: bool,
}

/// The head of an account's chain, as a wallet learns it from a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainView {
    /// Height of the last block (0 for a genesis account's virtual block).
    pub height: u64,
    /// Hash of the last block.
    pub frontier: BlockHash,
    /// Epoch of the last block.
    pub epoch: u64,
}

/// Builds the next block of one account's chain.
#[derive(Debug)]
pub struct Wallet<'k> {
    key: &'k Keypair,
    account: AccountId,
}

impl<'k> Wallet<'k> {
    /// A wallet for the account of `key`.
    pub fn new(key: &'k Keypair) -> Self {
        Self {
            key,
            account: AccountId::from_public_key(&key.public()),
        }
    }

    /// The account.
    pub fn account(&self) -> AccountId {
        self.account
    }

    fn next(&self, ledger: &Ledger, epoch: u64, body: BlockBody) -> Result<Block> {
        let chain = ledger.account(&self.account).map(|a| ChainView {
            height: a.height,
            frontier: a.frontier,
            epoch: a.epoch,
        });
        self.build(chain.as_ref(), epoch, body)
    }

    /// Builds and signs the block that follows `chain` (the account's head as a node reported it;
    /// `None`: the account has no chain yet, and only a Receive, which becomes an Open, can start one).
    /// The block states `max(epoch, chain.epoch)`.
    pub fn build(&self, chain: Option<&ChainView>, epoch: u64, body: BlockBody) -> Result<Block> {
        let data = match (chain, body) {
            (Some(c), body) => BlockData {
                account: self.account,
                height: c.height + 1,
                previous: c.frontier,
                epoch: epoch.max(c.epoch),
                body,
            },
            (None, BlockBody::Receive { source }) => BlockData {
                account: self.account,
                height: 0,
                previous: BlockHash::ZERO,
                epoch,
                body: BlockBody::Open { source, work: 0 },
            },
            (None, _) => {
                return Err(LedgerError::NotFound(format!(
                    "account {} has no chain yet: receive or open first",
                    self.account
                )));
            }
        };
        Ok(Block::sign(data, self.key))
    }

    /// The first block: receives `source`, or, without one, carries a proof of work.
    pub fn open(&self, ledger: &Ledger, source: Option<BlockHash>, epoch: u64) -> Result<Block> {
        if ledger.account(&self.account).is_some() {
            return Err(LedgerError::Invalid("account is already open"));
        }
        let body = match source {
            Some(source) => BlockBody::Open { source, work: 0 },
            None => BlockBody::Open {
                source: BlockHash::ZERO,
                work: solve_work(&self.account, ledger.params().open_work_bits),
            },
        };
        let data = BlockData {
            account: self.account,
            height: 0,
            previous: BlockHash::ZERO,
            epoch,
            body,
        };
        Ok(Block::sign(data, self.key))
    }

    /// Sends `amount` to `to` (checked against the liquid balance first).
    pub fn send(
        &self,
        ledger: &Ledger,
        to: AccountId,
        amount: Credits,
        epoch: u64,
    ) -> Result<Block> {
        to.public_key()?;
        let have = ledger.balance(&self.account).liquid;
        have.checked_sub(amount)?;
        self.next(
            ledger,
            epoch,
            BlockBody::Send {
                destination: to,
                amount,
            },
        )
    }

    /// Receives a pending amount (or refunds an expired own escrow); opens the account if needed.
    pub fn receive(&self, ledger: &Ledger, source: BlockHash, epoch: u64) -> Result<Block> {
        if ledger.account(&self.account).is_none() {
            return self.open(ledger, Some(source), epoch);
        }
        self.next(ledger, epoch, BlockBody::Receive { source })
    }

    /// Bonds `amount`.
    pub fn stake(&self, ledger: &Ledger, amount: Credits, epoch: u64) -> Result<Block> {
        ledger.balance(&self.account).liquid.checked_sub(amount)?;
        self.next(ledger, epoch, BlockBody::Stake { amount })
    }

    /// Starts unbonding `amount`.
    pub fn unstake(&self, ledger: &Ledger, amount: Credits, epoch: u64) -> Result<Block> {
        ledger.balance(&self.account).bonded.checked_sub(amount)?;
        self.next(ledger, epoch, BlockBody::Unstake { amount })
    }

    /// Binds (first time) or rotates to the node key `node`.
    pub fn bind_node(&self, ledger: &Ledger, node: &Keypair, epoch: u64) -> Result<Block> {
        let node_key = *node.public().as_bytes();
        let proof = node.sign(NODE_BIND, &bind_message(&self.account, &node_key));
        let bound = ledger
            .account(&self.account)
            .and_then(|a| a.node_key)
            .is_some();
        let body = if bound {
            BlockBody::Rotate { node_key, proof }
        } else {
            BlockBody::Bind { node_key, proof }
        };
        self.next(ledger, epoch, body)
    }

    /// Locks credits for a job (see [`EscrowTerms`]).
    pub fn escrow(&self, ledger: &Ledger, terms: EscrowTerms, epoch: u64) -> Result<Block> {
        ledger
            .balance(&self.account)
            .liquid
            .checked_sub(terms.amount)?;
        let EscrowTerms {
            job_id,
            worker,
            amount,
            expires_epoch,
            private,
        } = terms;
        self.next(
            ledger,
            epoch,
            BlockBody::Escrow {
                job_id,
                worker,
                amount,
                expires_epoch,
                private,
            },
        )
    }

    /// Claims an escrow with a countersigned receipt and, for audited jobs, accepting verdicts.
    pub fn claim(
        &self,
        ledger: &Ledger,
        receipt: WorkReceipt,
        requester_sig: mycel_identity::Signature,
        mut verdicts: Vec<SignerSig>,
        epoch: u64,
    ) -> Result<Block> {
        verdicts.sort_by_key(|v| v.signer);
        let worker_sig = receipt.sign_as_worker(self.key);
        let escrow = receipt.escrow;
        let body = BlockBody::Claim(Box::new(ClaimBody {
            escrow,
            receipt,
            worker_sig,
            requester_sig,
            verdicts,
        }));
        self.next(ledger, epoch, body)
    }
}

/// Builds, applies and persists Receives for everything `key`'s account can receive (and refunds of
/// its expired escrows). Returns the new blocks' hashes.
pub fn receive_all<S: Store>(
    ledger: &mut StoredLedger<S>,
    key: &Keypair,
    epoch: u64,
) -> Result<Vec<BlockHash>> {
    let wallet = Wallet::new(key);
    let account = wallet.account();
    let mut sources: Vec<BlockHash> = ledger
        .ledger()
        .receivable(&account)
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    sources.extend(
        ledger
            .ledger()
            .refundable(&account, epoch)
            .into_iter()
            .map(|(h, _)| h),
    );
    let mut out = Vec::with_capacity(sources.len());
    for source in sources {
        let block = wallet.receive(ledger.ledger(), source, epoch)?;
        let hash = block.hash();
        ledger.process(block, epoch)?;
        out.push(hash);
    }
    Ok(out)
}
