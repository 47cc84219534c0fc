//! Stake tables, votes and quorum certificates (specs/ledger.md §6).
//!
//! All QC checks use batch verification; signers must be distinct and members of the table.

use mycel_identity::{Domain, Keypair, PublicKey, Signature, SignedItem, domains, verify_batch};

use crate::block::SignerSig;
use crate::codec::{Reader, Writer};
use crate::error::{LedgerError, Result};
use crate::types::{AccountId, BlockHash, Credits};

/// Domain of Mint QC signatures.
pub const MINT: Domain = Domain::new("mycel/v1/mint");
/// Domain of Checkpoint QC signatures.
pub const CHECKPOINT: Domain = Domain::new("mycel/v1/checkpoint");

/// The stake table and seed of one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochInfo {
    /// The epoch.
    pub epoch: u64,
    /// Sortition seed.
    pub seed: [u8; 32],
    /// `(account, stake)`, sorted by account, stakes > 0.
    pub table: Vec<(AccountId, Credits)>,
    /// Σ stake.
    pub total: Credits,
}

impl EpochInfo {
    /// Builds a table, computing the total.
    pub fn new(epoch: u64, seed: [u8; 32], table: Vec<(AccountId, Credits)>) -> Result<Self> {
        let mut total = Credits::ZERO;
        for (_, s) in &table {
            total = total.checked_add(*s)?;
        }
        Ok(Self {
            epoch,
            seed,
            table,
            total,
        })
    }

    /// Stake of `account` in this table (zero when absent).
    pub fn weight(&self, account: &AccountId) -> Credits {
        self.table
            .binary_search_by(|(a, _)| a.cmp(account))
            .map(|i| self.table[i].1)
            .unwrap_or(Credits::ZERO)
    }

    /// True when `weight` is at least two thirds of `total`.
    ///
    /// Confirmation always counts against the whole stake of the epoch's table, never an
    /// observed-online estimate: with a low estimate (at start, after a partition) two honest nodes
    /// could each see "2/3 of online" for different candidates of one root and both confirm — the
    /// real-network fork test found exactly that. With the full table, two quorums overlap in more
    /// than a third of the stake, so conflicting confirmations need ≥ 1/3 byzantine stake; liveness
    /// needs 2/3 of the table's stake online (the table is re-agreed every epoch by Checkpoint).
    pub fn is_quorum(weight: Credits, total: Credits) -> bool {
        // weight·3 ≥ total·2, in u128 with saturation (amounts are far below u128::MAX / 3).
        weight.0.saturating_mul(3) >= total.0.saturating_mul(2) && !total.is_zero()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.epoch).bytes(&self.seed);
        crate::block::write_amounts(&mut w, &self.table);
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let epoch = r.u64()?;
        let seed = r.array()?;
        let n = r.count(crate::codec::MAX_LIST)?;
        let mut table = Vec::with_capacity(n);
        for _ in 0..n {
            table.push((r.account()?, r.credits()?));
        }
        r.finish()?;
        Self::new(epoch, seed, table)
    }
}

/// Verifies a list of `(signer, message, signature)` in `domain` with one batch verification.
pub fn verify_many(domain: Domain, items: &[(AccountId, &[u8], Signature)]) -> Result<()> {
    let keys: Vec<PublicKey> = items
        .iter()
        .map(|(a, _, _)| a.public_key())
        .collect::<Result<_>>()?;
    let batch: Vec<SignedItem<'_>> = items
        .iter()
        .zip(&keys)
        .map(|((_, m, s), k)| SignedItem {
            domain,
            message: m,
            signature: s,
            signer: k,
        })
        .collect();
    verify_batch(&batch).map_err(|_| LedgerError::BadSignature("quorum certificate"))
}

/// Checks that `qc` holds ≥ 2/3 of `info`'s stake over `message` in `domain`.
pub fn check_stake_qc(
    info: &EpochInfo,
    domain: Domain,
    message: &[u8],
    qc: &[SignerSig],
) -> Result<()> {
    let mut weight = Credits::ZERO;
    for (i, s) in qc.iter().enumerate() {
        if i > 0 && qc[i - 1].signer >= s.signer {
            return Err(LedgerError::Quorum("signers must be distinct and sorted"));
        }
        let w = info.weight(&s.signer);
        if w.is_zero() {
            return Err(LedgerError::Quorum(
                "signer is not in the epoch's stake table",
            ));
        }
        weight = weight.checked_add(w)?;
    }
    if !EpochInfo::is_quorum(weight, info.total) {
        return Err(LedgerError::Quorum("less than 2/3 of the stake signed"));
    }
    let items: Vec<(AccountId, &[u8], Signature)> = qc
        .iter()
        .map(|s| (s.signer, message, s.signature))
        .collect();
    verify_many(domain, &items)
}

/// Signs `message` for a QC.
pub fn sign_qc(key: &Keypair, domain: Domain, message: &[u8]) -> SignerSig {
    SignerSig {
        signer: AccountId::from_public_key(&key.public()),
        signature: key.sign(domain, message),
    }
}

/// Length of an encoded vote.
pub const VOTE_LEN: usize = 82 + 64;

/// A representative's vote on a block (specs/ledger.md §2.4, §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vote {
    /// The block voted for.
    pub block: BlockHash,
    /// The epoch whose stake table weighs the vote.
    pub epoch: u64,
    /// Final (round 2) vote: cast at most once per root.
    pub is_final: bool,
    /// Replacement order of initial votes (higher wins).
    pub sequence: u64,
    /// The voter.
    pub voter: AccountId,
    /// Signature over the first 82 bytes.
    pub signature: Signature,
}

impl Vote {
    fn message(
        block: &BlockHash,
        epoch: u64,
        is_final: bool,
        sequence: u64,
        voter: &AccountId,
    ) -> [u8; 82] {
        let mut w = Writer::with_capacity(82);
        w.u8(1)
            .bytes(&block.0)
            .u64(epoch)
            .u8(u8::from(is_final))
            .u64(sequence)
            .bytes(&voter.0);
        let mut out = [0u8; 82];
        out.copy_from_slice(w.as_slice());
        out
    }

    /// Signs a vote.
    pub fn sign(
        key: &Keypair,
        block: BlockHash,
        epoch: u64,
        is_final: bool,
        sequence: u64,
    ) -> Vote {
        let voter = AccountId::from_public_key(&key.public());
        let signature = key.sign(
            domains::VOTE,
            &Self::message(&block, epoch, is_final, sequence, &voter),
        );
        Vote {
            block,
            epoch,
            is_final,
            sequence,
            voter,
            signature,
        }
    }

    /// The signed bytes.
    pub fn signed_bytes(&self) -> [u8; 82] {
        Self::message(
            &self.block,
            self.epoch,
            self.is_final,
            self.sequence,
            &self.voter,
        )
    }

    /// Encoding: signed bytes ‖ signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_bytes().to_vec();
        out.extend_from_slice(self.signature.as_bytes());
        out
    }

    /// Decodes exactly one vote.
    pub fn decode(bytes: &[u8]) -> Result<Vote> {
        let mut r = Reader::new(bytes);
        if r.u8()? != 1 {
            return Err(LedgerError::Decode("unknown vote version"));
        }
        let block = r.hash()?;
        let epoch = r.u64()?;
        let is_final = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(LedgerError::Decode("vote final flag must be 0 or 1")),
        };
        let sequence = r.u64()?;
        let voter = r.account()?;
        let signature = Signature::from_bytes(r.array()?);
        r.finish()?;
        Ok(Vote {
            block,
            epoch,
            is_final,
            sequence,
            voter,
            signature,
        })
    }

    /// Verifies one vote.
    pub fn verify(&self) -> Result<()> {
        let key = self.voter.public_key()?;
        key.verify(domains::VOTE, &self.signed_bytes(), &self.signature)
            .map_err(|_| LedgerError::BadSignature("vote"))
    }
}

/// Verifies many votes with one batch verification.
pub fn verify_votes(votes: &[Vote]) -> Result<()> {
    let msgs: Vec<[u8; 82]> = votes.iter().map(Vote::signed_bytes).collect();
    let items: Vec<(AccountId, &[u8], Signature)> = votes
        .iter()
        .zip(&msgs)
        .map(|(v, m)| (v.voter, m.as_slice(), v.signature))
        .collect();
    verify_many(domains::VOTE, &items)
}

/// A quorum certificate: final votes for one block reaching ≥ 2/3 of a threshold weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumCert {
    /// The confirmed block.
    pub block: BlockHash,
    /// The final votes.
    pub votes: Vec<Vote>,
}

impl QuorumCert {
    /// Checks that the votes are final, for `block`, from distinct members of `info`, that their
    /// stake reaches 2/3 of the table's stake ([`EpochInfo::is_quorum`]), and that every signature verifies.
    pub fn verify(&self, info: &EpochInfo) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let mut weight = Credits::ZERO;
        for v in &self.votes {
            if !v.is_final || v.block != self.block || v.epoch != info.epoch {
                return Err(LedgerError::Quorum(
                    "vote is not a final vote for this block and epoch",
                ));
            }
            if !seen.insert(v.voter) {
                return Err(LedgerError::Quorum("duplicate voter"));
            }
            weight = weight.checked_add(info.weight(&v.voter))?;
        }
        if !EpochInfo::is_quorum(weight, info.total) {
            return Err(LedgerError::Quorum("less than 2/3 of the stake table"));
        }
        verify_votes(&self.votes)
    }

    /// Encoding: block ‖ count u16 ‖ votes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(&self.block.0).count(self.votes.len());
        for v in &self.votes {
            w.bytes(&v.encode());
        }
        w.finish()
    }

    /// Decodes a QC.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let block = r.hash()?;
        let n = r.count(crate::codec::MAX_LIST)?;
        let mut votes = Vec::with_capacity(n);
        for _ in 0..n {
            votes.push(Vote::decode(r.take(VOTE_LEN)?)?);
        }
        r.finish()?;
        Ok(Self { block, votes })
    }
}
