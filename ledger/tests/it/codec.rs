//! Codec: round trip, canonical uniqueness, and byte mutations that never panic the decoder.

use mycel_identity::Signature;
use mycel_ledger::block::{CheckpointBody, ClaimBody, MintBody, SignerSig, SlashBody};
use mycel_ledger::codec::MAX_BLOCK_BYTES;
use mycel_ledger::{
    AccountId, Block, BlockBody, BlockData, BlockHash, Credits, JobId, WorkReceipt,
};
use proptest::prelude::*;

use crate::common::*;

fn arb_hash() -> impl Strategy<Value = BlockHash> {
    any::<[u8; 32]>().prop_map(BlockHash)
}
fn arb_account() -> impl Strategy<Value = AccountId> {
    any::<[u8; 32]>().prop_map(AccountId)
}
fn arb_credits() -> impl Strategy<Value = Credits> {
    any::<u128>().prop_map(Credits)
}
fn arb_sigs() -> impl Strategy<Value = Vec<SignerSig>> {
    proptest::collection::btree_map(any::<[u8; 32]>(), any::<[u8; 32]>(), 0..5).prop_map(|m| {
        m.into_iter()
            .map(|(a, s)| {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&s);
                SignerSig {
                    signer: AccountId(a),
                    signature: Signature::from_bytes(sig),
                }
            })
            .collect()
    })
}
fn arb_amounts() -> impl Strategy<Value = Vec<(AccountId, Credits)>> {
    proptest::collection::btree_map(any::<[u8; 32]>(), any::<u128>(), 0..5).prop_map(|m| {
        m.into_iter()
            .map(|(a, c)| (AccountId(a), Credits(c)))
            .collect()
    })
}

fn arb_receipt() -> impl Strategy<Value = WorkReceipt> {
    (
        arb_hash(),
        arb_account(),
        arb_account(),
        any::<u32>(),
        arb_credits(),
        proptest::option::of(any::<[u8; 32]>()),
    )
        .prop_map(|(e, w, r, t, p, sampling)| {
            let mut x = receipt(e, JobId([t as u8; 32]), w, r, p);
            x.output_tokens = t;
            // Version 1 (no sampling) and version 2 receipts.
            x.sampling = sampling;
            x
        })
}

fn arb_body() -> impl Strategy<Value = BlockBody> {
    prop_oneof![
        (arb_hash(), any::<u64>()).prop_map(|(source, work)| BlockBody::Open { source, work }),
        (arb_account(), arb_credits()).prop_map(|(destination, amount)| BlockBody::Send {
            destination,
            amount
        }),
        arb_hash().prop_map(|source| BlockBody::Receive { source }),
        arb_credits().prop_map(|amount| BlockBody::Stake { amount }),
        arb_credits().prop_map(|amount| BlockBody::Unstake { amount }),
        any::<[u8; 32]>().prop_map(|k| BlockBody::Bind {
            node_key: k,
            proof: Signature::from_bytes([k[0]; 64])
        }),
        any::<[u8; 32]>().prop_map(|k| BlockBody::Rotate {
            node_key: k,
            proof: Signature::from_bytes([k[1]; 64])
        }),
        (
            any::<[u8; 32]>(),
            arb_account(),
            arb_credits(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(
                |(j, worker, amount, expires_epoch, private)| BlockBody::Escrow {
                    job_id: JobId(j),
                    worker,
                    amount,
                    expires_epoch,
                    private
                }
            ),
        (arb_hash(), arb_receipt(), arb_sigs()).prop_map(|(escrow, receipt, verdicts)| {
            BlockBody::Claim(Box::new(ClaimBody {
                escrow,
                receipt,
                worker_sig: Signature::from_bytes([1; 64]),
                requester_sig: Signature::from_bytes([2; 64]),
                verdicts,
            }))
        }),
        (arb_hash(), arb_receipt(), arb_sigs()).prop_map(|(escrow, receipt, verdicts)| {
            BlockBody::Slash(Box::new(SlashBody {
                escrow,
                receipt,
                worker_sig: Signature::from_bytes([3; 64]),
                requester_sig: Signature::from_bytes([4; 64]),
                verdicts,
            }))
        }),
        (any::<u64>(), arb_amounts(), arb_sigs()).prop_map(|(mint_epoch, recipients, qc)| {
            BlockBody::Mint(Box::new(MintBody {
                mint_epoch,
                recipients,
                qc,
            }))
        }),
        (any::<u64>(), arb_amounts(), arb_sigs()).prop_map(|(new_epoch, table, qc)| {
            BlockBody::Checkpoint(Box::new(CheckpointBody {
                new_epoch,
                table,
                qc,
            }))
        }),
    ]
}

fn arb_block() -> impl Strategy<Value = Block> {
    (
        arb_account(),
        any::<u64>(),
        arb_hash(),
        any::<u64>(),
        arb_body(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(account, height, previous, epoch, body, s)| {
            let mut sig = [0u8; 64];
            sig[32..].copy_from_slice(&s);
            Block::from_parts(
                BlockData {
                    account,
                    height,
                    previous,
                    epoch,
                    body,
                },
                Signature::from_bytes(sig),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn block_round_trips_and_is_canonical(block in arb_block(), extra in any::<u8>()) {
        let bytes = block.encode();
        let back = Block::decode(&bytes).expect("decodes");
        prop_assert_eq!(&back, &block);
        prop_assert_eq!(back.hash(), block.hash());
        // Canonical: any accepted encoding re-encodes to itself; trailing bytes are refused.
        prop_assert_eq!(back.encode(), bytes.clone());
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert!(Block::decode(&longer).is_err());
        prop_assert!(Block::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}

#[test]
fn unknown_version_kind_and_oversize_are_refused() {
    let k = key(5, 1);
    let b = Block::sign(
        BlockData {
            account: id(&k),
            height: 1,
            previous: BlockHash([1; 32]),
            epoch: 0,
            body: BlockBody::Receive {
                source: BlockHash([2; 32]),
            },
        },
        &k,
    );
    let bytes = b.encode();
    let mut v = bytes.clone();
    v[0] = 2;
    assert!(Block::decode(&v).is_err());
    let mut v = bytes.clone();
    v[1] = 13;
    assert!(Block::decode(&v).is_err());
    v[1] = 0;
    assert!(Block::decode(&v).is_err());
    assert!(Block::decode(&vec![0u8; MAX_BLOCK_BYTES + 1]).is_err());
}

/// Claim and Slash bodies follow specs/ledger.md §2.2 byte for byte: `escrow ‖ receipt (313 B) ‖
/// worker_sig ‖ requester_sig ‖ u16 count ‖ (validator ‖ sig)*`; a Slash without the requester's
/// countersignature (the layout before it was added) does not decode.
#[test]
fn claim_and_slash_bodies_have_the_spec_layout() {
    let k = key(7, 1);
    let r = receipt(
        BlockHash([4; 32]),
        JobId([5; 32]),
        id(&k),
        AccountId([6; 32]),
        Credits(77),
    );
    let verdicts = vec![SignerSig {
        signer: AccountId([1; 32]),
        signature: Signature::from_bytes([9; 64]),
    }];
    let claim = BlockBody::Claim(Box::new(ClaimBody {
        escrow: BlockHash([4; 32]),
        receipt: r.clone(),
        worker_sig: Signature::from_bytes([1; 64]),
        requester_sig: Signature::from_bytes([2; 64]),
        verdicts: verdicts.clone(),
    }));
    let slash = BlockBody::Slash(Box::new(SlashBody {
        escrow: BlockHash([4; 32]),
        receipt: r.clone(),
        worker_sig: Signature::from_bytes([1; 64]),
        requester_sig: Signature::from_bytes([2; 64]),
        verdicts,
    }));
    for (code, body) in [(0x09u8, claim), (0x0A, slash)] {
        let block = signed(&k, body);
        let bytes = block.encode();
        assert_eq!(bytes[1], code);
        let body = &bytes[82..bytes.len() - 64];
        assert_eq!(body.len(), 32 + 313 + 64 + 64 + 2 + 32 + 64);
        assert_eq!(&body[..32], &[4; 32]);
        assert_eq!(&body[32..345], r.encode().as_slice());
        assert_eq!(&body[345..409], &[1; 64]);
        assert_eq!(&body[409..473], &[2; 64]);
        assert_eq!(&body[473..475], &1u16.to_le_bytes());
        assert_eq!(&body[475..507], &[1; 32]);
        assert_eq!(&body[507..571], &[9; 64]);
        let mut without = bytes.clone();
        without.drain(82 + 409..82 + 473);
        assert!(Block::decode(&without).is_err());
    }
}

/// A version 1 receipt (281 bytes, before `sampling`) still decodes, alone and inside a Claim
/// block, and re-encodes to the same bytes (so its signatures and hash still verify).
#[test]
fn version_1_receipts_still_decode() {
    let k = key(7, 1);
    let mut r = receipt(
        BlockHash([4; 32]),
        JobId([5; 32]),
        id(&k),
        AccountId([6; 32]),
        Credits(77),
    );
    assert_eq!(r.encode().len(), 313);
    assert_eq!(r.encode()[0], 2);
    r.sampling = None;
    let v1 = r.encode();
    assert_eq!((v1.len(), v1[0]), (281, 1));
    assert_eq!(WorkReceipt::decode(&v1).unwrap(), r);
    let block = signed(
        &k,
        BlockBody::Claim(Box::new(ClaimBody {
            escrow: BlockHash([4; 32]),
            receipt: r.clone(),
            worker_sig: Signature::from_bytes([1; 64]),
            requester_sig: Signature::from_bytes([2; 64]),
            verdicts: Vec::new(),
        })),
    );
    let bytes = block.encode();
    assert_eq!(&bytes[82 + 32..82 + 32 + 281], v1.as_slice());
    assert_eq!(Block::decode(&bytes).unwrap(), block);
    // Another version byte is refused.
    let mut v3 = v1.clone();
    v3[0] = 3;
    assert!(WorkReceipt::decode(&v3).is_err());
}

/// `body` as block 1 of `k`'s chain (previous [3; 32], epoch 2).
fn signed(k: &mycel_identity::Keypair, body: BlockBody) -> Block {
    Block::sign(
        BlockData {
            account: id(k),
            height: 1,
            previous: BlockHash([3; 32]),
            epoch: 2,
            body,
        },
        k,
    )
}

/// xorshift64*: a fast deterministic generator for the mutation loop.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid signed blocks of several kinds (including list-carrying ones).
fn corpus() -> Vec<Block> {
    let k = key(6, 1);
    let other = id(&key(6, 2));
    let mk = |height: u64, body: BlockBody| {
        Block::sign(
            BlockData {
                account: id(&k),
                height,
                previous: BlockHash([height as u8; 32]),
                epoch: 3,
                body,
            },
            &k,
        )
    };
    let sigs = vec![
        SignerSig {
            signer: AccountId([1; 32]),
            signature: Signature::from_bytes([7; 64]),
        },
        SignerSig {
            signer: AccountId([2; 32]),
            signature: Signature::from_bytes([8; 64]),
        },
    ];
    let r = receipt(
        BlockHash([4; 32]),
        JobId([5; 32]),
        id(&k),
        other,
        Credits(77),
    );
    vec![
        mk(
            0,
            BlockBody::Open {
                source: BlockHash([9; 32]),
                work: 5,
            },
        ),
        mk(
            1,
            BlockBody::Send {
                destination: other,
                amount: Credits(10),
            },
        ),
        mk(
            2,
            BlockBody::Receive {
                source: BlockHash([3; 32]),
            },
        ),
        mk(3, BlockBody::Stake { amount: Credits(5) }),
        mk(
            4,
            BlockBody::Escrow {
                job_id: JobId([1; 32]),
                worker: other,
                amount: Credits(9),
                expires_epoch: 8,
                private: true,
            },
        ),
        mk(
            5,
            BlockBody::Claim(Box::new(ClaimBody {
                escrow: BlockHash([4; 32]),
                receipt: r.clone(),
                worker_sig: Signature::from_bytes([1; 64]),
                requester_sig: Signature::from_bytes([2; 64]),
                verdicts: sigs.clone(),
            })),
        ),
        mk(
            6,
            BlockBody::Mint(Box::new(MintBody {
                mint_epoch: 1,
                recipients: vec![(other, Credits(3))],
                qc: sigs.clone(),
            })),
        ),
        mk(
            8,
            BlockBody::Slash(Box::new(SlashBody {
                escrow: BlockHash([4; 32]),
                receipt: r,
                worker_sig: Signature::from_bytes([1; 64]),
                requester_sig: Signature::from_bytes([2; 64]),
                verdicts: sigs.clone(),
            })),
        ),
        mk(
            7,
            BlockBody::Checkpoint(Box::new(CheckpointBody {
                new_epoch: 2,
                table: vec![(other, Credits(3))],
                qc: sigs,
            })),
        ),
    ]
}

/// Millions of random byte mutations of valid blocks: the decoder never panics; a mutated input is
/// either refused or decodes to a block whose signature no longer verifies (signature checks are sampled: 1/16
/// of the mutations inside the signature, 1/1024 of the others, whose hash changed).
#[test]
fn mutations_never_panic_and_never_keep_a_valid_signature() {
    const MUTATIONS: usize = 2_000_000;
    let k = key(6, 1);
    let key = k.public();
    let corpus: Vec<(Block, Vec<u8>)> = corpus()
        .into_iter()
        .map(|b| {
            let e = b.encode();
            (b, e)
        })
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut refused, mut decoded, mut sig_checked) = (0usize, 0usize, 0usize);
    let mut buf = Vec::with_capacity(2048);
    for i in 0..MUTATIONS {
        let (orig, bytes) = &corpus[i % corpus.len()];
        buf.clear();
        buf.extend_from_slice(bytes);
        for _ in 0..1 + rng.below(3) {
            match rng.below(6) {
                0 | 1 => {
                    let p = rng.below(buf.len().max(1));
                    if let Some(b) = buf.get_mut(p) {
                        *b ^= 1 << rng.below(8);
                    }
                }
                2 => {
                    let p = rng.below(buf.len().max(1));
                    if let Some(b) = buf.get_mut(p) {
                        *b = rng.next() as u8;
                    }
                }
                3 => {
                    let p = rng.below(buf.len() + 1);
                    buf.insert(p, rng.next() as u8);
                }
                4 => {
                    if !buf.is_empty() {
                        let p = rng.below(buf.len());
                        buf.remove(p);
                    }
                }
                _ => {
                    let n = rng.below(buf.len() + 1);
                    buf.truncate(n);
                }
            }
        }
        if buf == *bytes {
            continue;
        }
        match Block::decode(&buf) {
            Err(_) => refused += 1,
            Ok(b) => {
                decoded += 1;
                assert_eq!(b.encode(), buf, "accepted a non-canonical encoding");
                let same_hash = b.hash() == orig.hash();
                if (same_hash && i % 16 == 0) || i % 1024 == 0 {
                    sig_checked += 1;
                    assert!(
                        b.verify_signature(&key).is_err(),
                        "mutation {i} kept a valid signature"
                    );
                }
            }
        }
    }
    assert!(
        refused > 0 && decoded > 0 && sig_checked > 0,
        "{refused} {decoded} {sig_checked}"
    );
}
