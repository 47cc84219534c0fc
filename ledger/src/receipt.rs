//! Work receipts and audit verdicts (specs/ledger.md §2.3).

use mycel_identity::{Domain, Keypair, PublicKey, Signature, domains};

use crate::codec::{Reader, Writer};
use crate::error::{LedgerError, Result};
use crate::types::{AccountId, BlockHash, Credits, JobId, domain_hash};

/// The requester's countersignature domain on a receipt.
pub const RECEIPT_COUNTERSIGN: Domain = Domain::new("mycel/v1/receipt-countersign");
/// Length of an encoded receipt (version 2, the one nodes sign).
pub const RECEIPT_LEN: usize = 313;
/// Version 1 receipts (281 bytes, no `sampling`) still decode: blocks confirmed before version 2
/// hold them.
const RECEIPT_V1: u8 = 1;
const RECEIPT_VERSION: u8 = 2;

/// What a worker did for a job: signed by the worker, countersigned by the requester on delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkReceipt {
    /// The job.
    pub job_id: JobId,
    /// The escrow block that funds it.
    pub escrow: BlockHash,
    /// Who did the work.
    pub worker: AccountId,
    /// Who asked and paid.
    pub requester: AccountId,
    /// blake3 of the model id string.
    pub model: [u8; 32],
    /// Hash of the weights file.
    pub weights: [u8; 32],
    /// Hash of the prompt.
    pub prompt_hash: [u8; 32],
    /// Hash of the output.
    pub output_hash: [u8; 32],
    /// Hash of how the output was drawn: sampling parameters and seed, stop strings, and the stop
    /// token the sampler drew (an audit replays the sampler from them). None only in a version 1
    /// receipt, which predates it.
    pub sampling: Option<[u8; 32]>,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Output length in tokens.
    pub output_tokens: u32,
    /// Price charged (≤ the escrow amount).
    pub price: Credits,
}

impl WorkReceipt {
    /// Canonical encoding (313 bytes; 281 for a version 1 receipt).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(RECEIPT_LEN);
        self.write(&mut w);
        w.finish()
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        let version = match self.sampling {
            Some(_) => RECEIPT_VERSION,
            None => RECEIPT_V1,
        };
        w.u8(version)
            .bytes(&self.job_id.0)
            .bytes(&self.escrow.0)
            .bytes(&self.worker.0)
            .bytes(&self.requester.0)
            .bytes(&self.model)
            .bytes(&self.weights)
            .bytes(&self.prompt_hash)
            .bytes(&self.output_hash);
        if let Some(sampling) = &self.sampling {
            w.bytes(sampling);
        }
        w.u32(self.prompt_tokens)
            .u32(self.output_tokens)
            .credits(self.price);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != RECEIPT_VERSION && version != RECEIPT_V1 {
            return Err(LedgerError::Decode("unknown receipt version"));
        }
        Ok(Self {
            job_id: r.job()?,
            escrow: r.hash()?,
            worker: r.account()?,
            requester: r.account()?,
            model: r.array()?,
            weights: r.array()?,
            prompt_hash: r.array()?,
            output_hash: r.array()?,
            sampling: match version {
                RECEIPT_V1 => None,
                _ => Some(r.array()?),
            },
            prompt_tokens: r.u32()?,
            output_tokens: r.u32()?,
            price: r.credits()?,
        })
    }

    /// Decodes exactly one receipt.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let out = Self::read(&mut r)?;
        r.finish()?;
        Ok(out)
    }

    /// `blake3("mycel/v1/receipt-hash" ‖ 0 ‖ encoding)`: what verdicts refer to.
    pub fn hash(&self) -> [u8; 32] {
        domain_hash("mycel/v1/receipt-hash", &[&self.encode()])
    }

    /// The worker's signature.
    pub fn sign_as_worker(&self, worker: &Keypair) -> Signature {
        worker.sign(domains::RECEIPT, &self.encode())
    }

    /// The requester's countersignature.
    pub fn countersign(&self, requester: &Keypair) -> Signature {
        requester.sign(RECEIPT_COUNTERSIGN, &self.encode())
    }

    /// Checks the worker's signature.
    pub fn verify_worker(&self, key: &PublicKey, sig: &Signature) -> Result<()> {
        key.verify(domains::RECEIPT, &self.encode(), sig)
            .map_err(|_| LedgerError::BadSignature("receipt (worker)"))
    }

    /// Checks the requester's countersignature.
    pub fn verify_requester(&self, key: &PublicKey, sig: &Signature) -> Result<()> {
        key.verify(RECEIPT_COUNTERSIGN, &self.encode(), sig)
            .map_err(|_| LedgerError::BadSignature("receipt (requester)"))
    }
}

/// The message a validator signs for a verdict: `receipt_hash ‖ accept`.
pub fn verdict_message(receipt_hash: &[u8; 32], accept: bool) -> [u8; 33] {
    let mut out = [0u8; 33];
    out[..32].copy_from_slice(receipt_hash);
    out[32] = u8::from(accept);
    out
}

/// Signs a verdict on a receipt.
pub fn sign_verdict(validator: &Keypair, receipt: &WorkReceipt, accept: bool) -> Signature {
    validator.sign(domains::VERDICT, &verdict_message(&receipt.hash(), accept))
}
