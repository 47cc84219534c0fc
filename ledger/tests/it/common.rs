//! Shared builders for the tests.

use mycel_identity::{Keypair, SecretKey, Signature};
use mycel_ledger::block::SignerSig;
use mycel_ledger::genesis::GenesisAccount;
use mycel_ledger::quorum::sign_qc;
use mycel_ledger::receipt::sign_verdict;
use mycel_ledger::{AccountId, BlockHash, Credits, Genesis, JobId, Ledger, Params, WorkReceipt};

/// A deterministic key from a seed and an index.
pub fn key(seed: u64, i: u64) -> Keypair {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&i.to_le_bytes());
    s[16] = 0x5a;
    Keypair::from_secret(&SecretKey::from_bytes(s))
}

pub fn id(k: &Keypair) -> AccountId {
    AccountId::from_public_key(&k.public())
}

/// A genesis giving each key `balance` and `stake` (whole credits), with test-friendly params.
pub fn genesis(keys: &[(&Keypair, u128, u128)], params: Params) -> Genesis {
    Genesis {
        network: "mycel-test".into(),
        seed: [9; 32],
        start_time: 0,
        accounts: keys
            .iter()
            .map(|(k, b, s)| GenesisAccount {
                account: *k.public().as_bytes(),
                balance: Credits::whole(*b),
                stake: Credits::whole(*s),
            })
            .collect(),
        params,
    }
}

pub fn test_params() -> Params {
    Params {
        open_work_bits: 4,
        unbonding_epochs: 3,
        audit_bps: 5000,
        audit_validators: 5,
        ..Params::default()
    }
}

/// A receipt for an escrow.
pub fn receipt(
    escrow: BlockHash,
    job: JobId,
    worker: AccountId,
    requester: AccountId,
    price: Credits,
) -> WorkReceipt {
    WorkReceipt {
        job_id: job,
        escrow,
        worker,
        requester,
        model: [1; 32],
        weights: [2; 32],
        prompt_hash: [3; 32],
        output_hash: [4; 32],
        sampling: Some([5; 32]),
        prompt_tokens: 10,
        output_tokens: 20,
        price,
    }
}

/// Verdicts from every seat holder among `validators` of the draw that `requester_sig` (the
/// receipt's countersignature) decides (sorted by signer).
pub fn verdicts(
    ledger: &Ledger,
    escrow: &BlockHash,
    r: &WorkReceipt,
    requester_sig: &Signature,
    validators: &[Keypair],
    accept: bool,
) -> Vec<SignerSig> {
    let draw = ledger
        .audit_draw(escrow, requester_sig)
        .expect("escrow and epoch known");
    let mut out: Vec<SignerSig> = validators
        .iter()
        .filter(|k| draw.seats_of(&id(k)) > 0)
        .map(|k| SignerSig {
            signer: id(k),
            signature: sign_verdict(k, r, accept),
        })
        .collect();
    out.sort_by_key(|s| s.signer);
    out
}

/// A stake QC over `message` by all `signers`, sorted.
pub fn qc(signers: &[Keypair], domain: mycel_identity::Domain, message: &[u8]) -> Vec<SignerSig> {
    let mut out: Vec<SignerSig> = signers
        .iter()
        .map(|k| sign_qc(k, domain, message))
        .collect();
    out.sort_by_key(|s| s.signer);
    out
}
