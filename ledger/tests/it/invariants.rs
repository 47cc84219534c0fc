//! Random valid histories: supply conservation, no double payment, and one state root for every
//! arrival order.

use mycel_identity::Keypair;
use mycel_ledger::block::{CheckpointBody, MintBody};
use mycel_ledger::quorum::{CHECKPOINT, MINT};
use mycel_ledger::wallet::EscrowTerms;
use mycel_ledger::{
    Block, BlockBody, BlockData, BlockHash, Credits, JobId, Kind, Ledger, Processed, Wallet,
};
use proptest::prelude::*;

use crate::common::*;

struct Actors {
    stakers: Vec<Keypair>,
    users: Vec<Keypair>,
    worker: Keypair,
}

fn actors() -> Actors {
    Actors {
        stakers: (0..3).map(|i| key(7, i)).collect(),
        users: (10..14).map(|i| key(7, i)).collect(),
        worker: key(7, 20),
    }
}

/// Builds a valid history from `ops`, applying to `ledger`; ops that would be invalid are skipped.
fn history(a: &Actors, ledger: &mut Ledger, ops: &[(u8, u8, u8, u16)]) -> Vec<Block> {
    let mut out = Vec::new();
    let mut epoch = 0u64;
    let mut escrows: Vec<(BlockHash, JobId, usize)> = Vec::new();
    let mut jobs = 0u8;
    for &(op, x, y, amt) in ops {
        let user = &a.users[usize::from(x) % a.users.len()];
        let other = &a.users[usize::from(y) % a.users.len()];
        let amount = Credits(u128::from(amt) * 1000 + 1);
        let mut build = || -> Option<Block> {
            match op % 10 {
                0 => {
                    // A new epoch starts with its checkpoint (same table, signed by the stakers).
                    epoch += 1;
                    let table = ledger.epoch_info(0)?.table.clone();
                    let msg = CheckpointBody::signed_message(epoch, &table);
                    let poster = &a.stakers[usize::from(y) % 3];
                    let acc = ledger.account(&id(poster))?;
                    Some(Block::sign(
                        BlockData {
                            account: id(poster),
                            height: acc.height + 1,
                            previous: acc.frontier,
                            epoch,
                            body: BlockBody::Checkpoint(Box::new(CheckpointBody {
                                new_epoch: epoch,
                                table,
                                qc: qc(&a.stakers, CHECKPOINT, &msg),
                            })),
                        },
                        poster,
                    ))
                }
                1 | 2 => Wallet::new(user)
                    .send(ledger, id(other), amount, epoch)
                    .ok(),
                3 => ledger
                    .receivable(&id(user))
                    .first()
                    .and_then(|(s, _)| Wallet::new(user).receive(ledger, *s, epoch).ok()),
                4 => Wallet::new(user).stake(ledger, amount, epoch).ok(),
                5 => Wallet::new(user).unstake(ledger, amount, epoch).ok(),
                6 => {
                    jobs = jobs.wrapping_add(1);
                    let terms = EscrowTerms {
                        job_id: JobId([jobs; 32]),
                        worker: id(&a.worker),
                        amount,
                        expires_epoch: epoch + u64::from(y % 3),
                        private: y % 5 == 0,
                    };
                    let b = Wallet::new(user).escrow(ledger, terms, epoch).ok();
                    if let Some(b) = &b {
                        escrows.push((b.hash(), JobId([jobs; 32]), usize::from(x) % a.users.len()));
                    }
                    b
                }
                7 => escrows
                    .get(usize::from(y) % escrows.len().max(1))
                    .and_then(|(e, job, u)| {
                        let requester = &a.users[*u];
                        let price = Credits(amount.0.min(ledger.escrow(e)?.amount.0));
                        let r = receipt(*e, *job, id(&a.worker), id(requester), price);
                        let mut all = a.stakers.clone();
                        all.push(a.worker.clone());
                        let csig = r.countersign(requester);
                        let v = verdicts(ledger, e, &r, &csig, &all, true);
                        let audited = ledger.audit_draw(e, &csig)?.audited;
                        Wallet::new(&a.worker)
                            .claim(
                                ledger,
                                r.clone(),
                                csig,
                                if audited { v } else { vec![] },
                                epoch,
                            )
                            .ok()
                    }),
                8 => escrows
                    .get(usize::from(y) % escrows.len().max(1))
                    .filter(|(_, _, u)| *u == usize::from(x) % a.users.len())
                    .and_then(|(e, _, _)| Wallet::new(user).receive(ledger, *e, epoch).ok()),
                _ => (|| {
                    // Mint of a past epoch, signed by all stakers.
                    let e = epoch.checked_sub(1)?;
                    let mut rec = vec![(id(user), amount), (id(other), Credits(7))];
                    rec.sort();
                    rec.dedup_by_key(|r| r.0);
                    let msg = MintBody::signed_message(e, &rec);
                    let minter = &a.stakers[usize::from(y) % 3];
                    let acc = ledger.account(&id(minter))?;
                    Some(Block::sign(
                        BlockData {
                            account: id(minter),
                            height: acc.height + 1,
                            previous: acc.frontier,
                            epoch: epoch.max(acc.epoch),
                            body: BlockBody::Mint(Box::new(MintBody {
                                mint_epoch: e,
                                recipients: rec,
                                qc: qc(&a.stakers, MINT, &msg),
                            })),
                        },
                        minter,
                    ))
                })(),
            }
        };
        let Some(block) = build() else { continue };
        let before = ledger.state().supply;
        let kind = block.body.kind();
        let res = ledger.process(block.clone(), epoch);
        if kind == Kind::Checkpoint {
            assert!(res.is_ok(), "checkpoint refused: {res:?}");
        }
        if let Ok(Processed::Applied { .. }) = res {
            let after = ledger.state().supply;
            if !matches!(kind, Kind::Mint | Kind::Slash) {
                assert_eq!(before, after, "supply changed by a {kind:?}");
            }
            assert_eq!(
                ledger.state().computed_supply().expect("no overflow"),
                after,
                "supply accounting after {kind:?}"
            );
            out.push(block);
        }
    }
    out
}

fn new_ledger(a: &Actors) -> Ledger {
    let mut accounts: Vec<(&Keypair, u128, u128)> =
        a.stakers.iter().map(|k| (k, 10, 100)).collect();
    accounts.extend(a.users.iter().map(|k| (k, 1000, 0)));
    accounts.push((&a.worker, 0, 100));
    Ledger::new(&genesis(&accounts, test_params())).expect("genesis")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_conserve_supply_and_converge(
        ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u16>()), 10..80),
        shuffle_seed in any::<u64>(),
    ) {
        let a = actors();
        let mut reference = new_ledger(&a);
        let blocks = history(&a, &mut reference, &ops);

        // No escrow is settled twice.
        let mut settled = std::collections::HashSet::new();
        for b in &blocks {
            let e = match &b.body {
                BlockBody::Claim(c) => Some(c.escrow),
                BlockBody::Receive { source } if reference.escrow(source).is_some() => Some(*source),
                _ => None,
            };
            if let Some(e) = e {
                prop_assert!(settled.insert(e), "escrow {} paid twice", e);
            }
        }

        // Any arrival order gives the same state.
        let mut order: Vec<Block> = blocks.clone();
        let mut s = shuffle_seed | 1;
        for i in (1..order.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut other = new_ledger(&a);
        let now = blocks.iter().map(|b| b.epoch).max().unwrap_or(0);
        for b in order {
            let _ = other.process(b, now);
        }
        prop_assert_eq!(other.unchecked_len(), 0);
        prop_assert_eq!(other.block_count(), blocks.len());
        prop_assert_eq!(other.state_root(), reference.state_root());
        // And in batches.
        let mut batched = new_ledger(&a);
        for chunk in blocks.chunks(7) {
            for r in batched.process_batch(chunk.to_vec(), now) {
                prop_assert!(r.is_ok());
            }
        }
        prop_assert_eq!(batched.state_root(), reference.state_root());
    }
}
