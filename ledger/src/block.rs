//! Blocks and their canonical codec (specs/ledger.md §2).

use std::ops::Deref;

use mycel_identity::{Domain, Keypair, PublicKey, Signature, domains};

use crate::codec::{MAX_BLOCK_BYTES, MAX_LIST, Reader, Writer};
use crate::error::{LedgerError, Result};
use crate::receipt::WorkReceipt;
use crate::types::{AccountId, BlockHash, Credits, JobId, domain_hash};

/// The only block version this code knows.
pub const BLOCK_VERSION: u8 = 1;
/// Domain of the block hash.
pub const BLOCK_HASH_DOMAIN: &str = "mycel/v1/block-hash";
/// Domain of a node key's proof of possession in Bind/Rotate.
pub const NODE_BIND: Domain = Domain::new("mycel/v1/node-bind");
/// Bytes of the common header (version … epoch).
pub const HEADER_LEN: usize = 82;
const SIG_LEN: usize = 64;

/// Block kind codes (specs/ledger.md §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// First block of a chain.
    Open = 1,
    /// Move liquid credits to another account (pending until received).
    Send = 2,
    /// Take a pending amount, or refund an expired escrow.
    Receive = 3,
    /// Bond liquid credits.
    Stake = 4,
    /// Start unbonding.
    Unstake = 5,
    /// Bind a node key.
    Bind = 6,
    /// Replace the node key.
    Rotate = 7,
    /// Lock credits for a job.
    Escrow = 8,
    /// Settle an escrow with a receipt.
    Claim = 9,
    /// Cut a worker's bond after a failed audit.
    Slash = 10,
    /// Epoch emission.
    Mint = 11,
    /// Next epoch's stake table.
    Checkpoint = 12,
}

impl Kind {
    /// Lower-case name, as the RPC and the wallet show it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::Send => "send",
            Kind::Receive => "receive",
            Kind::Stake => "stake",
            Kind::Unstake => "unstake",
            Kind::Bind => "bind",
            Kind::Rotate => "rotate",
            Kind::Escrow => "escrow",
            Kind::Claim => "claim",
            Kind::Slash => "slash",
            Kind::Mint => "mint",
            Kind::Checkpoint => "checkpoint",
        }
    }

    fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            1 => Kind::Open,
            2 => Kind::Send,
            3 => Kind::Receive,
            4 => Kind::Stake,
            5 => Kind::Unstake,
            6 => Kind::Bind,
            7 => Kind::Rotate,
            8 => Kind::Escrow,
            9 => Kind::Claim,
            10 => Kind::Slash,
            11 => Kind::Mint,
            12 => Kind::Checkpoint,
            _ => return Err(LedgerError::Decode("unknown block kind")),
        })
    }
}

/// One signature of a quorum certificate or verdict list: who signed, and the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignerSig {
    /// The signing account.
    pub signer: AccountId,
    /// Its signature.
    pub signature: Signature,
}

/// Body of a Claim block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimBody {
    /// The escrow being settled.
    pub escrow: BlockHash,
    /// The receipt of the work.
    pub receipt: WorkReceipt,
    /// Worker's signature on the receipt.
    pub worker_sig: Signature,
    /// Requester's countersignature; the audit draw depends on it (specs/ledger.md §7).
    pub requester_sig: Signature,
    /// Accepting verdicts of the drawn validators (empty when not audited).
    pub verdicts: Vec<SignerSig>,
}

/// Body of a Slash block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlashBody {
    /// The escrow of the audited job.
    pub escrow: BlockHash,
    /// The receipt the worker signed.
    pub receipt: WorkReceipt,
    /// Worker's signature on it.
    pub worker_sig: Signature,
    /// Requester's countersignature: it proves the receipt was delivered and accepted for payment,
    /// and the audit draw depends on it (specs/ledger.md §7).
    pub requester_sig: Signature,
    /// Failing verdicts of the drawn validators.
    pub verdicts: Vec<SignerSig>,
}

/// Body of a Mint block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintBody {
    /// The finished epoch whose emission this is.
    pub mint_epoch: u64,
    /// Who gets what, sorted by account.
    pub recipients: Vec<(AccountId, Credits)>,
    /// Signatures of the epoch's stake table over [`MintBody::signed_message`].
    pub qc: Vec<SignerSig>,
}

/// Body of a Checkpoint block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointBody {
    /// The epoch that starts with this table.
    pub new_epoch: u64,
    /// Stake table, sorted by account.
    pub table: Vec<(AccountId, Credits)>,
    /// Signatures of the previous epoch's table over [`CheckpointBody::signed_message`].
    pub qc: Vec<SignerSig>,
}

/// The kind-specific part of a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockBody {
    /// First block of a chain: receives `source` (or none when zero, then `work` is a proof of work).
    Open {
        /// A pending source to receive, or zero.
        source: BlockHash,
        /// Proof-of-work nonce (only checked when `source` is zero).
        work: u64,
    },
    /// Send credits.
    Send {
        /// Recipient.
        destination: AccountId,
        /// Amount (> 0).
        amount: Credits,
    },
    /// Receive a pending amount, or refund an expired own escrow.
    Receive {
        /// The block that created the pending amount, or the escrow.
        source: BlockHash,
    },
    /// Bond credits.
    Stake {
        /// Amount (> 0).
        amount: Credits,
    },
    /// Unbond credits (liquid after the unbonding delay).
    Unstake {
        /// Amount (> 0).
        amount: Credits,
    },
    /// Bind a node key to the account.
    Bind {
        /// The node's Ed25519 key.
        node_key: [u8; 32],
        /// Node key's signature over `account ‖ node_key` in [`NODE_BIND`].
        proof: Signature,
    },
    /// Replace the bound node key.
    Rotate {
        /// The new node key.
        node_key: [u8; 32],
        /// New key's proof of possession.
        proof: Signature,
    },
    /// Lock credits for a job.
    Escrow {
        /// Job id.
        job_id: JobId,
        /// The chosen worker.
        worker: AccountId,
        /// Maximum price.
        amount: Credits,
        /// Last epoch a claim may state.
        expires_epoch: u64,
        /// Private jobs are never audited and earn no emission.
        private: bool,
    },
    /// Settle an escrow.
    Claim(Box<ClaimBody>),
    /// Slash a worker.
    Slash(Box<SlashBody>),
    /// Emission for an epoch.
    Mint(Box<MintBody>),
    /// Next epoch's stake table.
    Checkpoint(Box<CheckpointBody>),
}

impl BlockBody {
    /// The kind code.
    pub fn kind(&self) -> Kind {
        match self {
            BlockBody::Open { .. } => Kind::Open,
            BlockBody::Send { .. } => Kind::Send,
            BlockBody::Receive { .. } => Kind::Receive,
            BlockBody::Stake { .. } => Kind::Stake,
            BlockBody::Unstake { .. } => Kind::Unstake,
            BlockBody::Bind { .. } => Kind::Bind,
            BlockBody::Rotate { .. } => Kind::Rotate,
            BlockBody::Escrow { .. } => Kind::Escrow,
            BlockBody::Claim(_) => Kind::Claim,
            BlockBody::Slash(_) => Kind::Slash,
            BlockBody::Mint(_) => Kind::Mint,
            BlockBody::Checkpoint(_) => Kind::Checkpoint,
        }
    }
}

/// The signed content of a block: header and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockData {
    /// The chain's owner.
    pub account: AccountId,
    /// Position in the chain.
    pub height: u64,
    /// Hash of the block below (zero for Open).
    pub previous: BlockHash,
    /// The epoch the signer states.
    pub epoch: u64,
    /// Kind-specific content.
    pub body: BlockBody,
}

/// A signed block with its hash computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    data: BlockData,
    signature: Signature,
    hash: BlockHash,
}

impl Deref for Block {
    type Target = BlockData;
    fn deref(&self) -> &BlockData {
        &self.data
    }
}

fn write_sigs(w: &mut Writer, sigs: &[SignerSig]) {
    w.count(sigs.len());
    for s in sigs {
        w.bytes(&s.signer.0).bytes(s.signature.as_bytes());
    }
}

fn read_sigs(r: &mut Reader<'_>) -> Result<Vec<SignerSig>> {
    let n = r.count(MAX_LIST)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let signer = r.account()?;
        if out.last().is_some_and(|p: &SignerSig| p.signer >= signer) {
            return Err(LedgerError::Decode("signers not strictly sorted"));
        }
        out.push(SignerSig {
            signer,
            signature: Signature::from_bytes(r.array()?),
        });
    }
    Ok(out)
}

/// Encodes a sorted `(account, amount)` list.
pub(crate) fn write_amounts(w: &mut Writer, list: &[(AccountId, Credits)]) {
    w.count(list.len());
    for (a, c) in list {
        w.bytes(&a.0).credits(*c);
    }
}

fn read_amounts(r: &mut Reader<'_>) -> Result<Vec<(AccountId, Credits)>> {
    let n = r.count(MAX_LIST)?;
    let mut out: Vec<(AccountId, Credits)> = Vec::with_capacity(n);
    for _ in 0..n {
        let a = r.account()?;
        if out.last().is_some_and(|p| p.0 >= a) {
            return Err(LedgerError::Decode("accounts not strictly sorted"));
        }
        out.push((a, r.credits()?));
    }
    Ok(out)
}

impl MintBody {
    /// What the QC signs: `mint_epoch ‖ recipients`.
    pub fn signed_message(mint_epoch: u64, recipients: &[(AccountId, Credits)]) -> Vec<u8> {
        let mut w = Writer::with_capacity(10 + recipients.len() * 48);
        w.u64(mint_epoch);
        write_amounts(&mut w, recipients);
        w.finish()
    }
}

impl CheckpointBody {
    /// What the QC signs: `new_epoch ‖ table`.
    pub fn signed_message(new_epoch: u64, table: &[(AccountId, Credits)]) -> Vec<u8> {
        let mut w = Writer::with_capacity(10 + table.len() * 48);
        w.u64(new_epoch);
        write_amounts(&mut w, table);
        w.finish()
    }
}

impl BlockData {
    /// The unsigned encoding (everything but the signature).
    pub fn encode_unsigned(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(HEADER_LEN + 64 + SIG_LEN);
        self.write(&mut w);
        w.finish()
    }

    fn write(&self, w: &mut Writer) {
        w.u8(BLOCK_VERSION)
            .u8(self.body.kind() as u8)
            .bytes(&self.account.0)
            .u64(self.height)
            .bytes(&self.previous.0)
            .u64(self.epoch);
        match &self.body {
            BlockBody::Open { source, work } => {
                w.bytes(&source.0).u64(*work);
            }
            BlockBody::Send {
                destination,
                amount,
            } => {
                w.bytes(&destination.0).credits(*amount);
            }
            BlockBody::Receive { source } => {
                w.bytes(&source.0);
            }
            BlockBody::Stake { amount } | BlockBody::Unstake { amount } => {
                w.credits(*amount);
            }
            BlockBody::Bind { node_key, proof } | BlockBody::Rotate { node_key, proof } => {
                w.bytes(node_key).bytes(proof.as_bytes());
            }
            BlockBody::Escrow {
                job_id,
                worker,
                amount,
                expires_epoch,
                private,
            } => {
                w.bytes(&job_id.0)
                    .bytes(&worker.0)
                    .credits(*amount)
                    .u64(*expires_epoch)
                    .u8(u8::from(*private));
            }
            BlockBody::Claim(c) => {
                w.bytes(&c.escrow.0);
                c.receipt.write(w);
                w.bytes(c.worker_sig.as_bytes())
                    .bytes(c.requester_sig.as_bytes());
                write_sigs(w, &c.verdicts);
            }
            BlockBody::Slash(s) => {
                w.bytes(&s.escrow.0);
                s.receipt.write(w);
                w.bytes(s.worker_sig.as_bytes())
                    .bytes(s.requester_sig.as_bytes());
                write_sigs(w, &s.verdicts);
            }
            BlockBody::Mint(m) => {
                w.u64(m.mint_epoch);
                write_amounts(w, &m.recipients);
                write_sigs(w, &m.qc);
            }
            BlockBody::Checkpoint(c) => {
                w.u64(c.new_epoch);
                write_amounts(w, &c.table);
                write_sigs(w, &c.qc);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        if r.u8()? != BLOCK_VERSION {
            return Err(LedgerError::Decode("unknown block version"));
        }
        let kind = Kind::from_u8(r.u8()?)?;
        let account = r.account()?;
        let height = r.u64()?;
        let previous = r.hash()?;
        let epoch = r.u64()?;
        let body = match kind {
            Kind::Open => BlockBody::Open {
                source: r.hash()?,
                work: r.u64()?,
            },
            Kind::Send => BlockBody::Send {
                destination: r.account()?,
                amount: r.credits()?,
            },
            Kind::Receive => BlockBody::Receive { source: r.hash()? },
            Kind::Stake => BlockBody::Stake {
                amount: r.credits()?,
            },
            Kind::Unstake => BlockBody::Unstake {
                amount: r.credits()?,
            },
            Kind::Bind | Kind::Rotate => {
                let node_key = r.array()?;
                let proof = Signature::from_bytes(r.array()?);
                if kind == Kind::Bind {
                    BlockBody::Bind { node_key, proof }
                } else {
                    BlockBody::Rotate { node_key, proof }
                }
            }
            Kind::Escrow => BlockBody::Escrow {
                job_id: r.job()?,
                worker: r.account()?,
                amount: r.credits()?,
                expires_epoch: r.u64()?,
                private: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(LedgerError::Decode("undefined escrow flag bits")),
                },
            },
            Kind::Claim => BlockBody::Claim(Box::new(ClaimBody {
                escrow: r.hash()?,
                receipt: WorkReceipt::read(r)?,
                worker_sig: Signature::from_bytes(r.array()?),
                requester_sig: Signature::from_bytes(r.array()?),
                verdicts: read_sigs(r)?,
            })),
            Kind::Slash => BlockBody::Slash(Box::new(SlashBody {
                escrow: r.hash()?,
                receipt: WorkReceipt::read(r)?,
                worker_sig: Signature::from_bytes(r.array()?),
                requester_sig: Signature::from_bytes(r.array()?),
                verdicts: read_sigs(r)?,
            })),
            Kind::Mint => BlockBody::Mint(Box::new(MintBody {
                mint_epoch: r.u64()?,
                recipients: read_amounts(r)?,
                qc: read_sigs(r)?,
            })),
            Kind::Checkpoint => BlockBody::Checkpoint(Box::new(CheckpointBody {
                new_epoch: r.u64()?,
                table: read_amounts(r)?,
                qc: read_sigs(r)?,
            })),
        };
        Ok(BlockData {
            account,
            height,
            previous,
            epoch,
            body,
        })
    }

    /// The block hash of this content.
    pub fn hash(&self) -> BlockHash {
        BlockHash(domain_hash(BLOCK_HASH_DOMAIN, &[&self.encode_unsigned()]))
    }
}

impl Block {
    /// Signs `data` with the account's key. The key must be the account's (checked in debug builds).
    pub fn sign(data: BlockData, key: &Keypair) -> Block {
        debug_assert_eq!(data.account, AccountId::from_public_key(&key.public()));
        let hash = data.hash();
        let signature = key.sign(domains::BLOCK, &hash.0);
        Block {
            data,
            signature,
            hash,
        }
    }

    /// Assembles a block from content and a signature made elsewhere (not verified here).
    pub fn from_parts(data: BlockData, signature: Signature) -> Block {
        let hash = data.hash();
        Block {
            data,
            signature,
            hash,
        }
    }

    /// The block's hash.
    pub fn hash(&self) -> BlockHash {
        self.hash
    }

    pub(crate) fn hash_ref(&self) -> &BlockHash {
        &self.hash
    }

    /// The block's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The signed content.
    pub fn data(&self) -> &BlockData {
        &self.data
    }

    /// Checks the signature against a parsed key of the account.
    pub fn verify_signature(&self, key: &PublicKey) -> Result<()> {
        key.verify(domains::BLOCK, &self.hash.0, &self.signature)
            .map_err(|_| LedgerError::BadSignature("block"))
    }

    /// Canonical encoding: unsigned bytes ‖ signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(HEADER_LEN + 64 + SIG_LEN);
        self.data.write(&mut w);
        w.bytes(self.signature.as_bytes());
        w.finish()
    }

    /// Decodes exactly one block; rejects trailing bytes, unknown versions and kinds, oversize input.
    pub fn decode(bytes: &[u8]) -> Result<Block> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(LedgerError::Decode("block larger than MAX_BLOCK_BYTES"));
        }
        if bytes.len() < HEADER_LEN + SIG_LEN {
            return Err(LedgerError::Decode("truncated input"));
        }
        let split = bytes.len() - SIG_LEN;
        let (unsigned, sig) = bytes.split_at(split);
        let mut r = Reader::new(unsigned);
        let data = BlockData::read(&mut r)?;
        r.finish()?;
        let mut sig_bytes = [0u8; SIG_LEN];
        sig_bytes.copy_from_slice(sig);
        let hash = BlockHash(domain_hash(BLOCK_HASH_DOMAIN, &[unsigned]));
        Ok(Block {
            data,
            signature: Signature::from_bytes(sig_bytes),
            hash,
        })
    }
}
