//! Ledger messages between nodes (specs/wire.md, "Ledger"): gossip payloads on the blocks and votes
//! topics, and the `/mycel/ledger-sync/1.0.0` request-response protocol that lets a node pull what it
//! is missing. Everything a peer sends is decoded here with explicit size limits and validated by the
//! ledger before it is used.

use mycel_identity::domains;
use mycel_identity::{Keypair, Signature};
use mycel_ledger::block::SignerSig;
use mycel_ledger::block::{CheckpointBody, MintBody};
use mycel_ledger::codec::{Reader, Writer};
use mycel_ledger::quorum::{CHECKPOINT, MINT, VOTE_LEN};
use mycel_ledger::receipt::{RECEIPT_LEN, verdict_message};
use mycel_ledger::{AccountId, Credits, LedgerError, Vote, WorkReceipt};
use serde::{Deserialize, Serialize};

/// Gossip topic of new blocks (payload: one canonical block encoding).
pub const BLOCKS_TOPIC: &str = "mycel/blocks/1";
/// Gossip topic of votes and checkpoint signatures (payload: [`VotesMessage`]).
pub const VOTES_TOPIC: &str = "mycel/votes/1";
/// The ledger sync request-response protocol.
pub const SYNC_PROTOCOL: &str = "/mycel/ledger-sync/1.0.0";
/// Most votes in one gossip message.
pub const MAX_VOTES_PER_MESSAGE: usize = 64;
/// Most frontiers in one sync response.
pub const MAX_FRONTIERS: usize = 1024;
/// Most blocks in one sync response.
pub const MAX_SYNC_BLOCKS: usize = 128;
/// Largest sync request on the wire.
pub const MAX_SYNC_REQUEST_BYTES: u64 = 4 * 1024;
/// Largest sync response on the wire (blocks are ≤ 64 KiB each; CBOR byte strings add little).
pub const MAX_SYNC_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

const KIND_VOTES: u8 = 1;
const KIND_CHECKPOINT: u8 = 2;
const KIND_RECEIPT: u8 = 3;
const KIND_VERDICTS: u8 = 4;
const KIND_MINT: u8 = 5;

/// The drawn validators' verdicts on an audited job, gossiped by the requester: accepting ones let the
/// worker claim (rejecting ones go into a Slash block instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditVerdicts {
    /// The settled receipt.
    pub settled: SettledReceipt,
    /// Whether the verdicts accept.
    pub accept: bool,
    /// `(validator, sign("mycel/v1/verdict", receipt_hash ‖ accept))`, sorted by validator.
    pub verdicts: Vec<SignerSig>,
}

impl AuditVerdicts {
    /// Checks the receipt's signatures and every verdict signature.
    pub fn verify(&self) -> Result<(), LedgerError> {
        self.settled.verify()?;
        let message = verdict_message(&self.settled.receipt.hash(), self.accept);
        for v in &self.verdicts {
            v.signer
                .public_key()?
                .verify(domains::VERDICT, &message, &v.signature)
                .map_err(|_| LedgerError::BadSignature("verdict"))?;
        }
        Ok(())
    }
}

/// A work receipt signed by the worker and countersigned by the requester: the requester gossips it
/// once the answer was delivered, and the worker claims its escrow with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledReceipt {
    /// The receipt.
    pub receipt: WorkReceipt,
    /// Worker's signature.
    pub worker_sig: Signature,
    /// Requester's countersignature.
    pub requester_sig: Signature,
}

impl SettledReceipt {
    /// Checks both signatures against the receipt's worker and requester.
    pub fn verify(&self) -> Result<(), LedgerError> {
        self.receipt
            .verify_worker(&self.receipt.worker.public_key()?, &self.worker_sig)?;
        self.receipt
            .verify_requester(&self.receipt.requester.public_key()?, &self.requester_sig)
    }
}

/// What a [`QuorumShare`] signs: the next epoch's stake table, or a finished epoch's emission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShareKind {
    /// `CheckpointBody::signed_message(epoch, list)` in domain `mycel/v1/checkpoint`.
    Checkpoint,
    /// `MintBody::signed_message(epoch, list)` in domain `mycel/v1/mint`.
    Mint,
}

/// One representative's signature on a list for an epoch: the stake table it sees for the next epoch
/// (Checkpoint), or the emission recipients of a finished epoch (Mint). A quorum of identical shares
/// becomes the block (specs/ledger.md §5.4, specs/wire.md "Checkpoints and mints").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumShare {
    /// Checkpoint or Mint.
    pub kind: ShareKind,
    /// The new epoch (Checkpoint) or the minted epoch (Mint).
    pub epoch: u64,
    /// `(account, amount)`, sorted by account: stakes or emission amounts.
    pub list: Vec<(AccountId, Credits)>,
    /// The signer.
    pub signer: AccountId,
    /// The signature over the kind's message.
    pub signature: Signature,
}

impl QuorumShare {
    fn message(kind: ShareKind, epoch: u64, list: &[(AccountId, Credits)]) -> Vec<u8> {
        match kind {
            ShareKind::Checkpoint => CheckpointBody::signed_message(epoch, list),
            ShareKind::Mint => MintBody::signed_message(epoch, list),
        }
    }

    fn domain(kind: ShareKind) -> mycel_identity::Domain {
        match kind {
            ShareKind::Checkpoint => CHECKPOINT,
            ShareKind::Mint => MINT,
        }
    }

    /// Signs `list` for `epoch`.
    pub fn sign(
        key: &Keypair,
        kind: ShareKind,
        epoch: u64,
        list: Vec<(AccountId, Credits)>,
    ) -> Self {
        let message = Self::message(kind, epoch, &list);
        Self {
            kind,
            epoch,
            signer: AccountId::from_public_key(&key.public()),
            signature: key.sign(Self::domain(kind), &message),
            list,
        }
    }

    /// Checks the signature (the caller checks that the signer is in the right table).
    pub fn verify(&self) -> Result<(), LedgerError> {
        let message = Self::message(self.kind, self.epoch, &self.list);
        self.signer
            .public_key()?
            .verify(Self::domain(self.kind), &message, &self.signature)
            .map_err(|_| LedgerError::BadSignature("quorum share"))
    }
}

/// A message on the votes topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VotesMessage {
    /// Block votes (1..=[`MAX_VOTES_PER_MESSAGE`]).
    Votes(Vec<Vote>),
    /// A checkpoint or mint signature.
    Share(QuorumShare),
    /// A countersigned work receipt.
    Receipt(SettledReceipt),
    /// Audit verdicts on a receipt.
    Verdicts(AuditVerdicts),
}

impl VotesMessage {
    /// `0x01 ‖ u16 n ‖ n votes` or `0x02 ‖ u64 epoch ‖ u16 n ‖ n × (account ‖ u128 stake) ‖ signer ‖ sig`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            VotesMessage::Votes(votes) => {
                w.u8(KIND_VOTES).count(votes.len());
                for v in votes {
                    w.bytes(&v.encode());
                }
            }
            VotesMessage::Share(c) => {
                let kind = match c.kind {
                    ShareKind::Checkpoint => KIND_CHECKPOINT,
                    ShareKind::Mint => KIND_MINT,
                };
                w.u8(kind).u64(c.epoch).count(c.list.len());
                for (a, s) in &c.list {
                    w.bytes(&a.0).credits(*s);
                }
                w.bytes(&c.signer.0).bytes(c.signature.as_bytes());
            }
            VotesMessage::Receipt(r) => {
                w.u8(KIND_RECEIPT);
                write_settled(&mut w, r);
            }
            VotesMessage::Verdicts(v) => {
                w.u8(KIND_VERDICTS);
                write_settled(&mut w, &v.settled);
                w.u8(u8::from(v.accept)).count(v.verdicts.len());
                for s in &v.verdicts {
                    w.bytes(&s.signer.0).bytes(s.signature.as_bytes());
                }
            }
        }
        w.finish()
    }

    /// Decodes exactly one message; rejects empty or oversize lists and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, LedgerError> {
        let mut r = Reader::new(bytes);
        let out = match r.u8()? {
            KIND_VOTES => {
                let n = r.count(MAX_VOTES_PER_MESSAGE)?;
                if n == 0 {
                    return Err(LedgerError::Decode("empty vote list"));
                }
                let mut votes = Vec::with_capacity(n);
                for _ in 0..n {
                    votes.push(Vote::decode(r.take(VOTE_LEN)?)?);
                }
                VotesMessage::Votes(votes)
            }
            k @ (KIND_CHECKPOINT | KIND_MINT) => {
                let epoch = r.u64()?;
                let n = r.count(mycel_ledger::codec::MAX_LIST)?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    list.push((r.account()?, r.credits()?));
                }
                let signer = r.account()?;
                let signature = Signature::from_bytes(r.array()?);
                VotesMessage::Share(QuorumShare {
                    kind: if k == KIND_MINT {
                        ShareKind::Mint
                    } else {
                        ShareKind::Checkpoint
                    },
                    epoch,
                    list,
                    signer,
                    signature,
                })
            }
            KIND_RECEIPT => VotesMessage::Receipt(read_settled(&mut r)?),
            KIND_VERDICTS => {
                let settled = read_settled(&mut r)?;
                let accept = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(LedgerError::Decode("verdict flag must be 0 or 1")),
                };
                let n = r.count(mycel_ledger::codec::MAX_LIST)?;
                let mut verdicts = Vec::with_capacity(n);
                for _ in 0..n {
                    verdicts.push(SignerSig {
                        signer: r.account()?,
                        signature: Signature::from_bytes(r.array()?),
                    });
                }
                VotesMessage::Verdicts(AuditVerdicts {
                    settled,
                    accept,
                    verdicts,
                })
            }
            _ => return Err(LedgerError::Decode("unknown votes message kind")),
        };
        r.finish()?;
        Ok(out)
    }
}

fn write_settled(w: &mut Writer, r: &SettledReceipt) {
    w.bytes(&r.receipt.encode())
        .bytes(r.worker_sig.as_bytes())
        .bytes(r.requester_sig.as_bytes());
}

fn read_settled(r: &mut Reader<'_>) -> Result<SettledReceipt, LedgerError> {
    let receipt = WorkReceipt::decode(r.take(RECEIPT_LEN)?)?;
    let worker_sig = Signature::from_bytes(r.array()?);
    let requester_sig = Signature::from_bytes(r.array()?);
    Ok(SettledReceipt {
        receipt,
        worker_sig,
        requester_sig,
    })
}

impl SettledReceipt {
    /// `receipt ‖ worker signature ‖ requester signature`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        write_settled(&mut w, self);
        w.finish()
    }

    /// Decodes exactly one settled receipt.
    pub fn decode(bytes: &[u8]) -> Result<Self, LedgerError> {
        let mut r = Reader::new(bytes);
        let out = read_settled(&mut r)?;
        r.finish()?;
        Ok(out)
    }
}

/// A ledger sync request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Chain heads of accounts after `after` (exclusive) in account order, at most [`MAX_FRONTIERS`].
    Frontiers {
        /// Resume point.
        after: Option<[u8; 32]>,
    },
    /// Blocks of one chain from `from_height` upwards, at most [`MAX_SYNC_BLOCKS`].
    Chain {
        /// The account.
        account: [u8; 32],
        /// First height wanted.
        from_height: u64,
    },
    /// One block by hash.
    Block {
        /// The hash.
        hash: [u8; 32],
    },
}

/// One chain head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier {
    /// The account.
    pub account: [u8; 32],
    /// Height of its last block.
    pub height: u64,
    /// Hash of its last block.
    pub head: [u8; 32],
}

/// A block with its quorum certificate when the sender holds it confirmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedBlock {
    /// Canonical block encoding.
    #[serde(with = "crate::wire::byte_string")]
    pub block: Vec<u8>,
    /// Encoded quorum certificate.
    #[serde(with = "crate::wire::byte_string::option")]
    pub qc: Option<Vec<u8>>,
}

/// A ledger sync response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// Chain heads; `more` when the list was cut at [`MAX_FRONTIERS`].
    Frontiers {
        /// Genesis hash of the sender's network (a node of another network is not synced from).
        genesis: [u8; 32],
        /// Heads.
        entries: Vec<Frontier>,
        /// Whether more follow.
        more: bool,
    },
    /// Blocks in chain order.
    Blocks(Vec<SyncedBlock>),
    /// The request could not be served.
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_ledger::BlockHash;

    #[test]
    fn votes_message_round_trips_and_rejects_trailing_and_empty() {
        let key = Keypair::generate();
        let votes: Vec<Vote> = (0..3)
            .map(|i| Vote::sign(&key, BlockHash([i; 32]), 0, i == 2, 0))
            .collect();
        let msg = VotesMessage::Votes(votes);
        let bytes = msg.encode();
        assert_eq!(VotesMessage::decode(&bytes).expect("decodes"), msg);
        let mut long = bytes.clone();
        long.push(0);
        assert!(VotesMessage::decode(&long).is_err());
        assert!(VotesMessage::decode(&[KIND_VOTES, 0, 0]).is_err());
        assert!(VotesMessage::decode(&[9]).is_err());
        assert!(VotesMessage::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn quorum_shares_round_trip_and_verify_per_kind() {
        let key = Keypair::generate();
        let table = vec![
            (AccountId([1; 32]), Credits(5)),
            (AccountId([2; 32]), Credits(7)),
        ];
        for kind in [ShareKind::Checkpoint, ShareKind::Mint] {
            let share = QuorumShare::sign(&key, kind, 3, table.clone());
            share.verify().expect("verifies");
            let msg = VotesMessage::Share(share.clone());
            let VotesMessage::Share(back) = VotesMessage::decode(&msg.encode()).expect("decodes")
            else {
                panic!("kind changed");
            };
            assert_eq!(back, share);
            let mut forged = share.clone();
            forged.epoch = 4;
            assert!(forged.verify().is_err());
            // A checkpoint signature is not a mint signature (domain separation).
            let mut other = share;
            other.kind = match kind {
                ShareKind::Checkpoint => ShareKind::Mint,
                ShareKind::Mint => ShareKind::Checkpoint,
            };
            assert!(other.verify().is_err());
        }
    }
}
