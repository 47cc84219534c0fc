//! Credits through a node: `balance` and `history` read the ledger; `send`, `receive`, `stake` and
//! `unstake` build and sign blocks here with [`Wallet::build`] from the chain head the node reports
//! (`ledger_account`, `ledger_info`), submit only the signed encoding (`ledger_submit`) and, unless
//! `--no-wait`, poll `ledger_block` until the node holds them confirmed. Secrets never leave the
//! wallet.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonrpsee::http_client::HttpClient;
use mycel_identity::{Did, Keypair};
use mycel_ledger::{
    AccountId, Block, BlockBody, BlockHash, ChainView, Credits, LedgerError, Wallet,
};
use mycel_rpc_api::ledger::{AccountView, BalanceInfo, BlockView, LedgerApiClient};
use serde_json::{Value, json};

use crate::Report;
use crate::cli::{AccountArgs, SubmitArgs};
use crate::context::Context;
use crate::error::{CliError, CliResult, Kind};
use crate::rpc::{Endpoint, runtime};

/// How often a waiting command asks the node whether its blocks are confirmed.
const POLL: Duration = Duration::from_millis(250);
/// Most Receive blocks one `mycel receive` builds; the rest wait for the next run, so a flood of
/// tiny sends cannot make one command run unbounded.
const MAX_RECEIVES: usize = 100;

/// Whether `stake` bonds or `unstake` starts unbonding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bond {
    /// Liquid → bonded.
    Stake,
    /// Bonded → unbonding (liquid at a later epoch).
    Unstake,
}

/// Parses an amount given on the command line: credits with up to 6 decimals, more than zero.
pub fn parse_amount(text: &str) -> CliResult<Credits> {
    let amount: Credits = text.parse().map_err(|e: LedgerError| {
        let why = match e {
            LedgerError::Decode(m) => m.strip_prefix("amount: ").unwrap_or(m).to_owned(),
            other => other.to_string(),
        };
        CliError::new(Kind::Invalid, format!("bad amount `{text}`: {why}"))
    })?;
    if amount.is_zero() {
        return Err(CliError::new(
            Kind::Invalid,
            format!("bad amount `{text}`: must be more than zero"),
        ));
    }
    Ok(amount)
}

/// Parses an account named by `did:key` or by its 64-hex public key.
pub fn parse_account(text: &str) -> CliResult<AccountId> {
    let text = text.trim();
    let id = if text.starts_with("did:") {
        let did = Did::parse(text)
            .map_err(|e| CliError::new(Kind::Invalid, format!("account `{text}`: {e}")))?;
        AccountId::from_public_key(&did.public_key())
    } else {
        AccountId::from_hex(text).map_err(|_| {
            CliError::new(
                Kind::Invalid,
                format!("`{text}` is not an account: expected a did:key or a 64-hex public key"),
            )
        })?
    };
    id.public_key().map_err(|_| {
        CliError::new(
            Kind::Invalid,
            format!("account `{text}` is not a valid Ed25519 public key"),
        )
    })?;
    Ok(id)
}

/// The account's DID as text (the node accepts it, people recognise it).
fn did_of(account: &AccountId) -> String {
    account
        .did()
        .map(|d| d.to_string())
        .unwrap_or_else(|_| account.to_hex())
}

/// An amount for `--json`: exact µ-credits and the human form, both strings.
fn amount_json(c: Credits) -> Value {
    json!({ "micro": c.0.to_string(), "credits": c.to_string() })
}

/// A µ-credit amount as the node sends it (decimal string).
fn micros(text: &str) -> CliResult<Credits> {
    text.parse::<u128>().map(Credits).map_err(|_| {
        CliError::new(
            Kind::Node,
            format!("the node sent a malformed amount `{text}`"),
        )
    })
}

/// The account of `--key` (no password needed) or of the given ACCOUNT.
fn target(args: &AccountArgs, ctx: &Context) -> CliResult<AccountId> {
    match &args.account {
        Some(text) => parse_account(text),
        None => key_account(&args.key, ctx),
    }
}

/// The account of a key in the keystore (fails on a missing key before anything else happens).
fn key_account(name: &str, ctx: &Context) -> CliResult<AccountId> {
    Ok(AccountId::from_public_key(
        &ctx.keystore()?.info(name)?.public_key,
    ))
}

/// An account's balances, parsed from the node's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Balance {
    liquid: Credits,
    bonded: Credits,
    /// (amount, epoch it becomes liquid).
    unbonding: Vec<(Credits, u64)>,
    receivable: Credits,
}

impl Balance {
    fn parse(info: &BalanceInfo) -> CliResult<Self> {
        Ok(Self {
            liquid: micros(&info.liquid)?,
            bonded: micros(&info.bonded)?,
            unbonding: info
                .unbonding
                .iter()
                .map(|u| Ok((micros(&u.amount)?, u.release_epoch)))
                .collect::<CliResult<_>>()?,
            receivable: micros(&info.receivable)?,
        })
    }

    fn text(&self, epoch: u64) -> String {
        let mut text = format!("liquid:     {}\nbonded:     {}\n", self.liquid, self.bonded);
        if self.unbonding.is_empty() {
            text.push_str(&format!("unbonding:  {}\n", Credits::ZERO));
        }
        for (i, (amount, release)) in self.unbonding.iter().enumerate() {
            let label = if i == 0 { "unbonding:" } else { "" };
            text.push_str(&format!(
                "{label:<11} {amount} (liquid at epoch {release}; now {epoch})\n"
            ));
        }
        text.push_str(&format!("receivable: {}", self.receivable));
        text
    }

    fn json(&self) -> Value {
        json!({
            "liquid": amount_json(self.liquid),
            "bonded": amount_json(self.bonded),
            "unbonding": self.unbonding.iter()
                .map(|(a, e)| json!({ "amount": amount_json(*a), "release_epoch": e }))
                .collect::<Vec<_>>(),
            "receivable": amount_json(self.receivable),
        })
    }
}

async fn fetch_balance(
    client: &HttpClient,
    node: &Endpoint,
    account: &AccountId,
) -> CliResult<Balance> {
    let info = client
        .balance(did_of(account))
        .await
        .map_err(|e| node.error(e))?;
    Balance::parse(&info)
}

/// `mycel balance`.
pub fn balance(args: &AccountArgs, node: &Endpoint, ctx: &Context) -> CliResult<Report> {
    let account = target(args, ctx)?;
    runtime()?.block_on(async {
        let client = node.http()?;
        let info = client.info().await.map_err(|e| node.error(e))?;
        let balance = fetch_balance(&client, node, &account).await?;
        let did = did_of(&account);
        let text = format!("account:    {did}\n{}", balance.text(info.epoch));
        let mut data = balance.json();
        data["account"] = json!(did);
        data["network"] = json!(info.network);
        data["epoch"] = json!(info.epoch);
        Ok(Report::new(text, data))
    })
}

/// The chain head and balances of the signing account, as the node reports them.
struct Head {
    /// The node's current epoch.
    epoch: u64,
    /// None: the account has no chain and nothing to receive.
    view: Option<AccountView>,
}

impl Head {
    async fn fetch(client: &HttpClient, node: &Endpoint, account: &AccountId) -> CliResult<Self> {
        let info = client.info().await.map_err(|e| node.error(e))?;
        let view = client
            .account(did_of(account))
            .await
            .map_err(|e| node.error(e))?;
        Ok(Self {
            epoch: info.epoch,
            view,
        })
    }

    fn balance(&self) -> CliResult<Balance> {
        match &self.view {
            Some(v) => Balance::parse(&v.balance),
            None => Ok(Balance::default()),
        }
    }

    /// The chain to build on (None: not open yet; only a Receive, as an Open, can start it).
    fn chain(&self) -> CliResult<Option<ChainView>> {
        let Some(view) = self.view.as_ref().filter(|v| v.open) else {
            return Ok(None);
        };
        let frontier = BlockHash::from_hex(&view.frontier).map_err(|_| {
            CliError::new(
                Kind::Node,
                format!("the node sent a malformed frontier `{}`", view.frontier),
            )
        })?;
        Ok(Some(ChainView {
            height: view.height,
            frontier,
            epoch: view.epoch,
        }))
    }

    /// What the account can receive: (source block, amount), oldest-first as the node lists them.
    fn receivable(&self) -> CliResult<Vec<(BlockHash, Credits)>> {
        let Some(view) = &self.view else {
            return Ok(Vec::new());
        };
        view.receivable
            .iter()
            .map(|r| {
                let source = BlockHash::from_hex(&r.source).map_err(|_| {
                    CliError::new(
                        Kind::Node,
                        format!("the node sent a malformed source `{}`", r.source),
                    )
                })?;
                Ok((source, micros(&r.amount)?))
            })
            .collect()
    }
}

/// "need X, have Y" with a hint when receivable credits would cover it.
fn insufficient(action: &str, need: Credits, have: Credits, what: &str, b: &Balance) -> CliError {
    let hint = if what == "liquid" && !b.receivable.is_zero() {
        format!(
            "; {} more is waiting to be received: run `mycel receive` first",
            b.receivable
        )
    } else {
        String::new()
    };
    CliError::new(
        Kind::Rejected,
        format!(
            "insufficient funds: {action} {need} credits, but the account has only {have} {what}{hint}"
        ),
    )
}

fn build(
    pair: &Keypair,
    chain: Option<&ChainView>,
    epoch: u64,
    body: BlockBody,
) -> CliResult<Block> {
    Wallet::new(pair)
        .build(chain, epoch, body)
        .map_err(|e| CliError::new(Kind::Rejected, e.to_string()))
}

/// A block sent to the node and what became of it.
#[derive(Debug)]
struct Submitted {
    hash: String,
    kind: &'static str,
    /// `applied`, `queued` (the node waits for a dependency) or `confirmed`.
    status: String,
}

impl Submitted {
    fn confirmed(&self) -> bool {
        self.status == "confirmed"
    }

    fn json(&self) -> Value {
        json!({ "hash": self.hash, "kind": self.kind, "status": self.status, "confirmed": self.confirmed() })
    }
}

/// Submits `blocks` in order, then (unless `--no-wait`) waits until the node holds all of them
/// confirmed. Returns them with their status and how long the wait took.
async fn submit(
    client: &HttpClient,
    node: &Endpoint,
    blocks: Vec<Block>,
    args: &SubmitArgs,
    ctx: &Context,
) -> CliResult<(Vec<Submitted>, Option<Duration>)> {
    let mut done: Vec<Submitted> = Vec::with_capacity(blocks.len());
    for block in blocks {
        let hash = block.hash().to_hex();
        let answer = match client.submit(hex::encode(block.encode())).await {
            Ok(answer) => answer,
            Err(e) => {
                let mut err = node.error(e);
                if !done.is_empty() {
                    let hashes: Vec<&str> = done.iter().map(|s| s.hash.as_str()).collect();
                    err.message.push_str(&format!(
                        " (the node had accepted {} earlier block(s): {})",
                        done.len(),
                        hashes.join(", ")
                    ));
                }
                return Err(err);
            }
        };
        if answer.hash != hash {
            return Err(CliError::new(
                Kind::Node,
                format!("the node reports hash {} for block {hash}", answer.hash),
            ));
        }
        let kind = block.body.kind().name();
        ctx.detail(format!("submitted {kind} {hash}: {}", answer.status));
        done.push(Submitted {
            hash,
            kind,
            status: answer.status,
        });
    }
    if args.no_wait || done.is_empty() {
        return Ok((done, None));
    }
    let waited = wait_confirmed(
        client,
        node,
        &mut done,
        Duration::from_secs(args.timeout),
        ctx,
    )
    .await?;
    Ok((done, Some(waited)))
}

/// Polls `ledger_block` until every block is confirmed, or fails with [`Kind::Timeout`].
async fn wait_confirmed(
    client: &HttpClient,
    node: &Endpoint,
    blocks: &mut [Submitted],
    timeout: Duration,
    ctx: &Context,
) -> CliResult<Duration> {
    let started = Instant::now();
    let what = match &*blocks {
        [one] => format!("{} {}", one.kind, one.hash),
        many => format!("{} blocks", many.len()),
    };
    ctx.note(format!(
        "waiting for the network to confirm {what} (up to {} s; --no-wait skips this)…",
        timeout.as_secs()
    ));
    let deadline = started + timeout;
    loop {
        // Whether the node still holds the first unconfirmed block (for the timeout message).
        let mut held = true;
        for b in blocks.iter_mut().filter(|b| !b.confirmed()) {
            // A node that stops answering must not stretch the wait past the deadline.
            let answer =
                tokio::time::timeout_at(deadline.into(), client.block(b.hash.clone())).await;
            let Ok(answer) = answer else { break };
            let view = answer.map_err(|e| {
                let err = node.error(e);
                CliError::new(
                    err.kind,
                    format!(
                        "block {} was submitted, but asking whether it is confirmed failed: {}",
                        b.hash, err.message
                    ),
                )
            })?;
            match view {
                Some(view) if view.confirmed => b.status = "confirmed".into(),
                seen => {
                    held = seen.is_some();
                    break;
                }
            }
        }
        let Some(pending) = blocks.iter().find(|b| !b.confirmed()) else {
            return Ok(started.elapsed());
        };
        if Instant::now() >= deadline {
            let state = if held {
                "the node holds it, so it may still confirm: check with `mycel history`"
            } else {
                "the node no longer holds it: a conflicting block may have won"
            };
            return Err(CliError::new(
                Kind::Timeout,
                format!(
                    "block {} ({}) was not confirmed within {} s; {state}",
                    pending.hash,
                    pending.kind,
                    timeout.as_secs()
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The status line of a submitting command.
fn status_text(done: &[Submitted], waited: Option<Duration>) -> String {
    match waited {
        Some(d) => format!("status:  confirmed ({:.1} s)", d.as_secs_f64()),
        None => {
            let mut states: Vec<&str> = done.iter().map(|s| s.status.as_str()).collect();
            states.dedup();
            format!(
                "status:  {} (not waiting for confirmation: check with `mycel history`)",
                states.join(", ")
            )
        }
    }
}

/// `mycel send`.
pub fn send(
    to: &str,
    amount: &str,
    args: &SubmitArgs,
    node: &Endpoint,
    ctx: &Context,
) -> CliResult<Report> {
    let to = parse_account(to)?;
    let amount = parse_amount(amount)?;
    let from = key_account(&args.key, ctx)?;
    let rt = runtime()?;
    let client = node.http()?;
    let head = rt.block_on(Head::fetch(&client, node, &from))?;
    let balance = head.balance()?;
    if balance.liquid < amount {
        return Err(insufficient(
            "sending",
            amount,
            balance.liquid,
            "liquid",
            &balance,
        ));
    }
    let chain = head.chain()?;
    let pair = ctx.unlock(&args.key)?;
    let block = build(
        &pair,
        chain.as_ref(),
        head.epoch,
        BlockBody::Send {
            destination: to,
            amount,
        },
    )?;
    let (done, waited) = rt.block_on(submit(&client, node, vec![block], args, ctx))?;
    let after = rt.block_on(fetch_balance(&client, node, &from))?;
    let to_did = did_of(&to);
    let text = format!(
        "sent {amount} credits to {to_did}\nblock:   {}\n{}\nliquid:  {}",
        done[0].hash,
        status_text(&done, waited),
        after.liquid
    );
    let data = json!({
        "account": did_of(&from),
        "to": to_did,
        "amount": amount_json(amount),
        "block": done[0].json(),
        "balance": after.json(),
    });
    Ok(Report::new(text, data))
}

/// `mycel receive`.
pub fn receive(args: &SubmitArgs, node: &Endpoint, ctx: &Context) -> CliResult<Report> {
    let account = key_account(&args.key, ctx)?;
    let rt = runtime()?;
    let client = node.http()?;
    let head = rt.block_on(Head::fetch(&client, node, &account))?;
    let mut pending = head.receivable()?;
    let left = pending.len().saturating_sub(MAX_RECEIVES);
    pending.truncate(MAX_RECEIVES);
    if pending.is_empty() {
        let balance = head.balance()?;
        return Ok(Report::new(
            format!("nothing to receive\nliquid:  {}", balance.liquid),
            json!({
                "account": did_of(&account),
                "received": amount_json(Credits::ZERO),
                "blocks": [],
                "left": 0,
                "balance": balance.json(),
            }),
        ));
    }
    let pair = ctx.unlock(&args.key)?;
    let mut chain = head.chain()?;
    let mut blocks = Vec::with_capacity(pending.len());
    let mut total = Credits::ZERO;
    for (source, amount) in &pending {
        let block = build(
            &pair,
            chain.as_ref(),
            head.epoch,
            BlockBody::Receive { source: *source },
        )?;
        // The next Receive follows this one: chain them here rather than asking the node again.
        chain = Some(ChainView {
            height: block.height,
            frontier: block.hash(),
            epoch: block.epoch,
        });
        blocks.push(block);
        total = total
            .checked_add(*amount)
            .map_err(|_| CliError::new(Kind::Node, "the node sent receivables that overflow"))?;
    }
    let (done, waited) = rt.block_on(submit(&client, node, blocks, args, ctx))?;
    let after = rt.block_on(fetch_balance(&client, node, &account))?;
    let mut text = format!("received {total} credits in {} block(s)\n", done.len());
    for ((source, amount), s) in pending.iter().zip(&done) {
        text.push_str(&format!(
            "  {:>20}  source {source}  block {}\n",
            amount.to_string(),
            s.hash
        ));
    }
    text.push_str(&status_text(&done, waited));
    text.push_str(&format!("\nliquid:  {}", after.liquid));
    if left > 0 {
        text.push_str(&format!(
            "\n{left} more pending amount(s): run `mycel receive` again"
        ));
    }
    let items: Vec<Value> = pending
        .iter()
        .zip(&done)
        .map(|((source, amount), s)| {
            let mut v = s.json();
            v["source"] = json!(source.to_hex());
            v["amount"] = amount_json(*amount);
            v
        })
        .collect();
    Ok(Report::new(
        text,
        json!({
            "account": did_of(&account),
            "received": amount_json(total),
            "blocks": items,
            "left": left,
            "balance": after.json(),
        }),
    ))
}

/// `mycel stake` and `mycel unstake`.
pub fn stake(
    bond: Bond,
    amount: &str,
    args: &SubmitArgs,
    node: &Endpoint,
    ctx: &Context,
) -> CliResult<Report> {
    let amount = parse_amount(amount)?;
    let account = key_account(&args.key, ctx)?;
    let rt = runtime()?;
    let client = node.http()?;
    let head = rt.block_on(Head::fetch(&client, node, &account))?;
    let balance = head.balance()?;
    let body = match bond {
        Bond::Stake if balance.liquid < amount => {
            return Err(insufficient(
                "staking",
                amount,
                balance.liquid,
                "liquid",
                &balance,
            ));
        }
        Bond::Unstake if balance.bonded < amount => {
            return Err(insufficient(
                "unstaking",
                amount,
                balance.bonded,
                "bonded",
                &balance,
            ));
        }
        Bond::Stake => BlockBody::Stake { amount },
        Bond::Unstake => BlockBody::Unstake { amount },
    };
    let chain = head.chain()?;
    let pair = ctx.unlock(&args.key)?;
    let block = build(&pair, chain.as_ref(), head.epoch, body)?;
    let (done, waited) = rt.block_on(submit(&client, node, vec![block], args, ctx))?;
    let after = rt.block_on(fetch_balance(&client, node, &account))?;
    let what = match bond {
        Bond::Stake => format!("bonded {amount} credits"),
        Bond::Unstake => format!("started unbonding {amount} credits"),
    };
    let text = format!(
        "{what}\nblock:   {}\n{}\n{}",
        done[0].hash,
        status_text(&done, waited),
        after.text(head.epoch)
    );
    Ok(Report::new(
        text,
        json!({
            "account": did_of(&account),
            "amount": amount_json(amount),
            "block": done[0].json(),
            "balance": after.json(),
        }),
    ))
}

/// One line of `mycel history`.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    height: u64,
    kind: String,
    epoch: u64,
    amount: Option<Credits>,
    /// `in`, `out` or none (stake moves, bindings, …).
    direction: Option<&'static str>,
    /// The other account (or node key) where relevant.
    peer: Option<String>,
    /// The block a Receive/Open takes its credits from.
    source: Option<String>,
    confirmed: bool,
    hash: String,
}

fn body_str<'a>(body: &'a Value, field: &str) -> Option<&'a str> {
    body.get(field).and_then(Value::as_str)
}

fn body_amount(body: &Value, field: &str) -> Option<Credits> {
    body_str(body, field)
        .and_then(|s| s.parse::<u128>().ok())
        .map(Credits)
}

/// Describes `block` of account `me`; `source` is the block a Receive/Open names, when known.
fn entry(block: &BlockView, me: &str, source: Option<&BlockView>) -> Entry {
    let body = &block.body;
    let mut e = Entry {
        height: block.height,
        kind: block.kind.clone(),
        epoch: block.epoch,
        amount: None,
        direction: None,
        peer: None,
        source: None,
        confirmed: block.confirmed,
        hash: block.hash.clone(),
    };
    match block.kind.as_str() {
        "send" => {
            e.amount = body_amount(body, "amount");
            e.direction = Some("out");
            e.peer = body_str(body, "destination").map(str::to_owned);
        }
        "escrow" => {
            e.amount = body_amount(body, "amount");
            e.direction = Some("out");
            e.peer = body_str(body, "worker").map(str::to_owned);
        }
        "stake" | "unstake" => e.amount = body_amount(body, "amount"),
        "claim" => {
            e.amount = body_amount(body, "price");
            e.direction = Some("in");
        }
        "bind" | "rotate" => e.peer = body_str(body, "node_key").map(str::to_owned),
        "receive" | "open" => {
            e.source = body_str(body, "source")
                .filter(|s| BlockHash::from_hex(s).is_ok_and(|h| !h.is_zero()))
                .map(str::to_owned);
            if e.source.is_some() {
                e.direction = Some("in");
            }
            if let Some(src) = source {
                match src.kind.as_str() {
                    "send" => e.amount = body_amount(&src.body, "amount"),
                    // The refund of an own expired escrow.
                    "escrow" => e.amount = body_amount(&src.body, "amount"),
                    "mint" => {
                        e.amount = src
                            .body
                            .get("recipients")
                            .and_then(Value::as_array)
                            .and_then(|list| {
                                list.iter().find(|r| body_str(r, "account") == Some(me))
                            })
                            .and_then(|r| body_amount(r, "amount"));
                    }
                    _ => {}
                }
                if src.account != me {
                    e.peer = Some(src.account.clone());
                }
            }
        }
        _ => {}
    }
    e
}

impl Entry {
    fn line(&self) -> String {
        let sign = match self.direction {
            Some("in") => "+",
            Some("out") => "-",
            _ => "",
        };
        let amount = self
            .amount
            .map(|a| format!("{sign}{a}"))
            .unwrap_or_else(|| "-".into());
        let peer = match (&self.peer, &self.source) {
            (Some(peer), _) => peer.clone(),
            (None, Some(source)) => format!("from block {}…", &source[..source.len().min(16)]),
            (None, None) => "-".into(),
        };
        let confirmed = if self.confirmed { "yes" } else { "no" };
        format!(
            "{:>6}  {:<9} {:>22}  {:<56}  {:<9}  {}",
            self.height, self.kind, amount, peer, confirmed, self.hash
        )
    }

    fn json(&self) -> Value {
        json!({
            "height": self.height,
            "kind": self.kind,
            "epoch": self.epoch,
            "amount": self.amount.map(amount_json),
            "direction": self.direction,
            "peer": self.peer,
            "source": self.source,
            "confirmed": self.confirmed,
            "hash": self.hash,
        })
    }
}

/// `mycel history`.
pub fn history(
    args: &AccountArgs,
    limit: u32,
    node: &Endpoint,
    ctx: &Context,
) -> CliResult<Report> {
    let account = target(args, ctx)?;
    let me = did_of(&account);
    runtime()?.block_on(async {
        let client = node.http()?;
        let blocks = client
            .history(me.clone(), Some(limit))
            .await
            .map_err(|e| node.error(e))?;
        // Receives name their source block: fetch each once, for the amount and the sender.
        let mut sources: HashMap<String, Option<BlockView>> = HashMap::new();
        for b in &blocks {
            if let Some(src) = body_str(&b.body, "source")
                && (b.kind == "receive" || b.kind == "open")
                && !sources.contains_key(src)
                && BlockHash::from_hex(src).is_ok_and(|h| !h.is_zero())
            {
                let found = client
                    .block(src.to_owned())
                    .await
                    .map_err(|e| node.error(e))?;
                sources.insert(src.to_owned(), found);
            }
        }
        let entries: Vec<Entry> = blocks
            .iter()
            .map(|b| {
                let src = body_str(&b.body, "source")
                    .and_then(|s| sources.get(s))
                    .and_then(Option::as_ref);
                entry(b, &me, src)
            })
            .collect();
        let mut text = String::new();
        if entries.is_empty() {
            text.push_str(&format!("no blocks on the chain of {me}"));
        } else {
            text.push_str(&format!(
                "{:>6}  {:<9} {:>22}  {:<56}  {:<9}  {}\n",
                "HEIGHT", "KIND", "AMOUNT", "PEER", "CONFIRMED", "HASH"
            ));
            for e in &entries {
                text.push_str(&e.line());
                text.push('\n');
            }
        }
        Ok(Report::new(
            text,
            json!({
                "account": me,
                "blocks": entries.iter().map(Entry::json).collect::<Vec<_>>(),
            }),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_credits_with_six_decimals_at_most() {
        assert_eq!(parse_amount("10").expect("10"), Credits::whole(10));
        assert_eq!(parse_amount("0.5").expect("0.5"), Credits(500_000));
        assert_eq!(parse_amount("0.000001").expect("1 µ"), Credits(1));
        let message = |text: &str| {
            let e = parse_amount(text).expect_err(text);
            assert_eq!(e.kind, Kind::Invalid, "{text}");
            e.message
        };
        assert!(message("1.0000001").contains("at most 6 decimals"));
        assert!(message("-1").contains("negative"));
        assert!(message("0").contains("more than zero"));
        assert!(message("0.000000").contains("more than zero"));
        assert!(message("abc").contains("decimal number"));
        assert!(message(&"9".repeat(40)).contains("too large"));
        // The message quotes what was typed and drops the parser's "decode:" prefix.
        let m = message("1.0000001");
        assert!(m.starts_with("bad amount `1.0000001`: at most"), "{m}");
    }

    #[test]
    fn accounts_are_did_keys_or_64_hex() {
        let pair = Keypair::generate();
        let id = AccountId::from_public_key(&pair.public());
        let did = Did::from_public_key(pair.public()).to_string();
        assert_eq!(parse_account(&did).expect("did"), id);
        assert_eq!(parse_account(&id.to_hex()).expect("hex"), id);
        assert_eq!(
            parse_account(&format!(" {} ", id.to_hex())).expect("hex"),
            id
        );
        for bad in ["", "abc", "did:web:example", &id.to_hex()[..62]] {
            assert_eq!(
                parse_account(bad).expect_err(bad).kind,
                Kind::Invalid,
                "{bad}"
            );
        }
    }

    fn view(kind: &str, account: &str, body: Value) -> BlockView {
        BlockView {
            hash: "aa".repeat(32),
            kind: kind.into(),
            account: account.into(),
            height: 3,
            previous: "bb".repeat(32),
            epoch: 2,
            confirmed: true,
            body,
            raw: String::new(),
        }
    }

    #[test]
    fn history_entries_show_amount_and_peer() {
        let send = view(
            "send",
            "did:me",
            json!({ "destination": "did:you", "amount": "10000000" }),
        );
        let e = entry(&send, "did:me", None);
        assert_eq!(e.amount, Some(Credits::whole(10)));
        assert_eq!(e.direction, Some("out"));
        assert_eq!(e.peer.as_deref(), Some("did:you"));
        assert!(e.line().contains("-10.000000"), "{}", e.line());

        let source = view(
            "send",
            "did:you",
            json!({ "destination": "did:me", "amount": "2500000" }),
        );
        let recv = view("receive", "did:me", json!({ "source": "cc".repeat(32) }));
        let e = entry(&recv, "did:me", Some(&source));
        assert_eq!(e.amount, Some(Credits(2_500_000)));
        assert_eq!(e.direction, Some("in"));
        assert_eq!(e.peer.as_deref(), Some("did:you"));
        assert_eq!(e.source, Some("cc".repeat(32)));
        assert!(e.line().contains("+2.500000"), "{}", e.line());

        // A receive whose source the node does not know still says where it came from.
        let e = entry(&recv, "did:me", None);
        assert_eq!(e.amount, None);
        assert!(e.line().contains("from block cccccccc"), "{}", e.line());

        // A mint pays several accounts: only ours counts.
        let mint = view(
            "mint",
            "did:minter",
            json!({ "recipients": [
                { "account": "did:other", "amount": "1" },
                { "account": "did:me", "amount": "7" },
            ] }),
        );
        assert_eq!(entry(&recv, "did:me", Some(&mint)).amount, Some(Credits(7)));

        // An open carrying proof of work instead of a source has no amount and no direction.
        let open = view(
            "open",
            "did:me",
            json!({ "source": "00".repeat(32), "work": 5 }),
        );
        let e = entry(&open, "did:me", None);
        assert_eq!((e.amount, e.direction, e.source), (None, None, None));

        let stake = view("unstake", "did:me", json!({ "amount": "1000000" }));
        let e = entry(&stake, "did:me", None);
        assert_eq!(e.amount, Some(Credits::whole(1)));
        assert!(e.line().contains(" 1.000000"), "{}", e.line());
        assert_eq!(e.json()["amount"]["micro"], "1000000");
    }

    #[test]
    fn balances_parse_and_print_release_epochs() {
        let info = BalanceInfo {
            account: "did:me".into(),
            liquid: "1500000".into(),
            bonded: "2000000".into(),
            unbonding: vec![mycel_rpc_api::ledger::Unbonding {
                amount: "1000000".into(),
                release_epoch: 9,
            }],
            receivable: "0".into(),
        };
        let b = Balance::parse(&info).expect("parse");
        assert_eq!(b.liquid, Credits(1_500_000));
        let text = b.text(4);
        assert!(text.contains("liquid:     1.500000"), "{text}");
        assert!(
            text.contains("1.000000 (liquid at epoch 9; now 4)"),
            "{text}"
        );
        assert_eq!(b.json()["unbonding"][0]["release_epoch"], 9);
        let bad = BalanceInfo {
            liquid: "-5".into(),
            ..info
        };
        assert_eq!(Balance::parse(&bad).expect_err("bad").kind, Kind::Node);
    }

    #[test]
    fn a_shortfall_with_receivable_credits_suggests_receive() {
        let b = Balance {
            liquid: Credits::whole(1),
            receivable: Credits::whole(5),
            ..Balance::default()
        };
        let e = insufficient("sending", Credits::whole(3), b.liquid, "liquid", &b);
        assert_eq!(e.kind, Kind::Rejected);
        assert!(e.message.starts_with("insufficient funds"), "{}", e.message);
        assert!(e.message.contains("mycel receive"), "{}", e.message);
    }
}
