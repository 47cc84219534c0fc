//! `mycel`: the wallet CLI. Manages keys and DIDs, signs and verifies, issues and checks membership
//! credentials, chats through a node, and holds credits: ledger blocks are built and signed here and
//! only the signed blocks go to the node. Secrets stay in the encrypted keystore and are never
//! printed unless explicitly asked.

mod cli;
mod commands;
mod context;
mod error;
mod rpc;

use std::process::ExitCode;

use clap::Parser;
use serde_json::{Value, json};

use crate::cli::{Cli, Command};
use crate::commands::ledger::Bond;
use crate::context::Context;
use crate::error::CliResult;
use crate::rpc::Endpoint;

/// What a successful command prints: text for humans and data for `--json`.
pub struct Report {
    /// Human-readable lines (stdout).
    pub text: String,
    /// Machine-readable payload (`data` in the JSON envelope).
    pub data: Value,
}

impl Report {
    /// A report with both forms.
    pub fn new(text: impl Into<String>, data: Value) -> Self {
        Self {
            text: text.into(),
            data,
        }
    }
}

fn command_name(command: &Command) -> &'static str {
    use cli::{CredentialCommand as C, DidCommand as D, KeyCommand as K};
    match command {
        Command::Key(K::New { .. }) => "key new",
        Command::Key(K::List) => "key list",
        Command::Key(K::Show { .. }) => "key show",
        Command::Key(K::Import { .. }) => "key import",
        Command::Key(K::Export { .. }) => "key export",
        Command::Key(K::Delete { .. }) => "key delete",
        Command::Did(D::Show { .. }) => "did show",
        Command::Did(D::Resolve { .. }) => "did resolve",
        Command::Sign { .. } => "sign",
        Command::Verify { .. } => "verify",
        Command::Credential(C::Issue { .. }) => "credential issue",
        Command::Credential(C::Verify { .. }) => "credential verify",
        Command::Credential(C::Revoke { .. }) => "credential revoke",
        Command::Chat(_) => "chat",
        Command::Node(cli::NodeCommand::Status) => "node status",
        Command::Peers => "peers",
        Command::Models => "models",
        Command::Job { .. } => "job",
        Command::Balance(_) => "balance",
        Command::Send { .. } => "send",
        Command::Receive { .. } => "receive",
        Command::Stake { .. } => "stake",
        Command::Unstake { .. } => "unstake",
        Command::History { .. } => "history",
    }
}

fn run(cli: Cli, ctx: &Context) -> CliResult<Report> {
    let node = Endpoint {
        url: cli.rpc,
        token_file: cli.rpc_token_file,
    };
    match cli.command {
        Command::Key(cmd) => commands::key::run(cmd, ctx),
        Command::Did(cmd) => commands::did::run(cmd, ctx),
        Command::Sign { key, input } => commands::signature::sign(&key, &input, ctx),
        Command::Verify { did, sig, input } => commands::signature::verify(&did, &sig, &input),
        Command::Credential(cmd) => commands::credential::run(cmd, ctx, &node),
        Command::Chat(args) => commands::node::chat(args, &node, ctx),
        Command::Node(cli::NodeCommand::Status) => commands::node::status(&node),
        Command::Peers => commands::node::peers(&node),
        Command::Models => commands::node::models(&node),
        Command::Job { id } => commands::node::job(&id, &node),
        Command::Balance(account) => commands::ledger::balance(&account, &node, ctx),
        Command::Send { to, amount, submit } => {
            commands::ledger::send(&to, &amount, &submit, &node, ctx)
        }
        Command::Receive { submit } => commands::ledger::receive(&submit, &node, ctx),
        Command::Stake { amount, submit } => {
            commands::ledger::stake(Bond::Stake, &amount, &submit, &node, ctx)
        }
        Command::Unstake { amount, submit } => {
            commands::ledger::stake(Bond::Unstake, &amount, &submit, &node, ctx)
        }
        Command::History { account, limit } => {
            commands::ledger::history(&account, limit, &node, ctx)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = command_name(&cli.command);
    let json_mode = cli.json;
    let home = match cli
        .home
        .clone()
        .map(Ok)
        .unwrap_or_else(context::default_home)
    {
        Ok(home) => home,
        Err(e) => return finish(name, json_mode, Err(e)),
    };
    let ctx = Context {
        home,
        password_file: cli.password_file.clone(),
        verbosity: if cli.quiet { 0 } else { 1 + cli.verbose },
        json: json_mode,
    };
    ctx.detail(format!("wallet home: {}", ctx.home.display()));
    let result = run(cli, &ctx);
    finish(name, json_mode, result)
}

fn finish(command: &str, json_mode: bool, result: CliResult<Report>) -> ExitCode {
    match result {
        Ok(report) => {
            if json_mode {
                println!(
                    "{}",
                    json!({ "ok": true, "command": command, "data": report.data })
                );
            } else if !report.text.is_empty() {
                println!("{}", report.text.trim_end());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let code = error.kind.exit_code();
            if json_mode {
                println!(
                    "{}",
                    json!({
                        "ok": false,
                        "command": command,
                        "error": { "code": error.kind.code(), "message": error.message, "exit_code": code },
                    })
                );
            } else {
                eprintln!("error: {}", error.message);
            }
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}
