//! Command-line definitions (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  internal error
  2  usage error (bad flags or arguments)
  3  wrong or missing password
  4  not found (no such key, file, model or job)
  5  already exists (a key name is taken)
  6  invalid input (malformed DID, signature, seed, key file or credential)
  7  verification failed (signature or credential does not verify)
  8  I/O error
  9  the node is unreachable, failed to answer, or keeps no ledger
 10  the ledger refused (insufficient funds, or the node rejected the block)
 11  the node accepts blocks only from its own machine or with its bearer token
 12  a submitted block was not confirmed in time (it may still confirm: see `mycel history`)

Passwords come from a hidden prompt when the terminal is interactive, else from --password-file or
the MYCEL_PASSWORD environment variable. They are never echoed.

Amounts are credits with up to 6 decimals (1 credit = 1000000 µ-credits). With --json every amount
is an object {\"micro\": \"<µ-credits>\", \"credits\": \"<credits, 6 decimals>\"}: strings,
as they can exceed what JSON numbers hold exactly.";

/// mycel wallet: manage your identity, keys, signatures and membership credentials.
#[derive(Debug, Parser)]
#[command(name = "mycel", version, about, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Print one JSON object per command ({"ok":…,"command":…,"data"|"error":…}) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Wallet home directory (keys live in <home>/keys). Default: $MYCEL_HOME, else the per-user
    /// data directory.
    #[arg(long, global = true, env = "MYCEL_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Read the password from this file (first line) instead of prompting.
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// More detail on stderr (repeatable).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// The node to talk to (its HTTP/JSON-RPC URL).
    #[arg(
        long,
        global = true,
        env = "MYCEL_RPC",
        default_value = "http://127.0.0.1:7400"
    )]
    pub rpc: String,
    /// Read the node's RPC bearer token from this file (first line); needed to submit blocks to a
    /// node on another machine. Default: $MYCEL_RPC_TOKEN, else none.
    #[arg(long, global = true, value_name = "FILE")]
    pub rpc_token_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show, import, export and delete keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show your DID or resolve any did:key into its DID document.
    #[command(subcommand)]
    Did(DidCommand),
    /// Sign a file (or stdin with `-`) with a key: prints a detached signature (hex).
    #[command(
        after_help = "Examples:\n  mycel sign notes.txt\n  echo hello | mycel sign --key work -"
    )]
    Sign {
        /// Key to sign with.
        #[arg(long, default_value = "default")]
        key: String,
        /// File to sign, or `-` for stdin.
        input: PathBuf,
    },
    /// Verify a detached signature made by `mycel sign`.
    #[command(after_help = "Example:\n  mycel verify --did did:key:z6Mk… --sig 3f2a… notes.txt")]
    Verify {
        /// The signer's DID.
        #[arg(long)]
        did: String,
        /// The signature, 128 hex characters.
        #[arg(long)]
        sig: String,
        /// File that was signed, or `-` for stdin.
        input: PathBuf,
    },
    /// Issue and verify consortium membership credentials (W3C VC-JWT).
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Chat with the network through a node: streams the answer as it is generated. Without a
    /// prompt, starts an interactive session (one line per turn; an empty line or EOF ends it).
    #[command(
        after_help = "Examples:\n  mycel chat \"What is the capital of France?\"\n  mycel chat --system \"Answer briefly.\" --temperature 0.7 --seed 7 \"Tell me a joke\"\n  mycel --rpc http://127.0.0.1:7402 chat"
    )]
    Chat(ChatArgs),
    /// Ask a node about itself.
    #[command(subcommand)]
    Node(NodeCommand),
    /// List the peers of the node.
    Peers,
    /// List the models reachable through the node.
    Models,
    /// Show a chat job the node took: its state, who served it, token counts, timing and, for a
    /// job the node paid a provider for, the escrow. The id is the `id` of an answer (`mycel --json
    /// chat`, the OpenAI API's completion id) or of its streamed chunks; `mycel chat` prints it.
    #[command(
        after_help = "Examples:\n  mycel job chatcmpl-18a2f7c3e91b0d4c2\n  mycel --json job chatcmpl-18a2f7c3e91b0d4c2\n  mycel --rpc http://127.0.0.1:7402 job chatcmpl-18a2f7c3e91b0d4c2\n\nA node remembers its latest 4096 jobs; older ones, and jobs another node took, are not found\n(exit code 4)."
    )]
    Job {
        /// The job id (`chatcmpl-…`).
        id: String,
    },
    /// Show an account's credits: liquid, bonded, unbonding (with release epochs) and receivable.
    #[command(
        after_help = "Examples:\n  mycel balance\n  mycel balance --key work\n  mycel balance did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp\n  mycel --json balance"
    )]
    Balance(AccountArgs),
    /// Send credits to another account (signed here; the node only relays the signed block).
    #[command(
        after_help = "Examples:\n  mycel send did:key:z6Mk… 10\n  mycel send --key work did:key:z6Mk… 0.5\n  mycel send --no-wait 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29 0.000001"
    )]
    Send {
        /// The recipient: a did:key or a 64-hex public key.
        to: String,
        /// Credits, with up to 6 decimals (`10`, `0.5`, `0.000001`).
        #[arg(allow_hyphen_values = true)]
        amount: String,
        #[command(flatten)]
        submit: SubmitArgs,
    },
    /// Receive everything sent to your account (one block per pending amount; the first one opens
    /// a new account).
    #[command(after_help = "Examples:\n  mycel receive\n  mycel receive --key work --no-wait")]
    Receive {
        #[command(flatten)]
        submit: SubmitArgs,
    },
    /// Bond liquid credits as stake (voting weight for a node bound to the account).
    #[command(after_help = "Examples:\n  mycel stake 100\n  mycel stake --key work 2.5")]
    Stake {
        /// Credits, with up to 6 decimals.
        #[arg(allow_hyphen_values = true)]
        amount: String,
        #[command(flatten)]
        submit: SubmitArgs,
    },
    /// Start unbonding stake: it becomes liquid again at a later epoch (see `mycel balance`).
    #[command(
        after_help = "Examples:\n  mycel unstake 1\n  mycel unstake --key work 0.5 --no-wait"
    )]
    Unstake {
        /// Credits, with up to 6 decimals.
        #[arg(allow_hyphen_values = true)]
        amount: String,
        #[command(flatten)]
        submit: SubmitArgs,
    },
    /// List an account's latest blocks, newest first.
    #[command(
        after_help = "Examples:\n  mycel history\n  mycel history --key work --limit 5\n  mycel --json history did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
    )]
    History {
        #[command(flatten)]
        account: AccountArgs,
        /// How many blocks to list (1–1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

/// Which account a read-only ledger command looks at.
#[derive(Debug, Args)]
pub struct AccountArgs {
    /// A did:key or a 64-hex public key (default: the account of --key).
    pub account: Option<String>,
    /// Key whose account to use when no ACCOUNT is given (no password needed).
    #[arg(long, default_value = "default", conflicts_with = "account")]
    pub key: String,
}

/// Options of the commands that sign and submit a block.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Key that signs (its account pays or receives).
    #[arg(long, default_value = "default")]
    pub key: String,
    /// Return once the node has applied the block, without waiting for its confirmation.
    #[arg(long)]
    pub no_wait: bool,
    /// Longest wait for the confirmation, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, conflicts_with = "no_wait",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// `mycel chat` options.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The question. Omit it for an interactive session.
    pub prompt: Option<String>,
    /// Model id (default: the node's default).
    #[arg(long)]
    pub model: Option<String>,
    /// A system message sent before the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature in [0, 2]; 0 is greedy.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass in (0, 1].
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Maximum new tokens.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Random seed: the same seed, model and prompt give the same answer.
    #[arg(long)]
    pub seed: Option<u64>,
    /// A private job: only providers the node trusts (enough stake or audited work) may answer, it
    /// is never audited and earns no emission. The serving node still sees the whole conversation.
    #[arg(long)]
    pub private: bool,
}

/// `mycel node …`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// The node's DID, PeerId, addresses, models and peer count.
    Status,
}

/// `mycel key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a new key and store it encrypted.
    #[command(after_help = "Examples:\n  mycel key new\n  mycel key new --name work")]
    New {
        /// Name of the key in the keystore.
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// List the keys in the keystore.
    List,
    /// Show a key's DID, public key and libp2p PeerId (no password needed).
    #[command(after_help = "Example:\n  mycel key show work")]
    Show {
        /// Key name.
        #[arg(default_value = "default")]
        name: String,
    },
    /// Import a key: a raw 32-byte seed in hex (from a file or stdin), or an encrypted key file
    /// made by `mycel key export`.
    #[command(
        after_help = "Examples:\n  mycel key import --name old --seed-file seed.hex\n  cat seed.hex | mycel key import --name old --seed-file -\n  mycel key import --name moved --encrypted backup.json"
    )]
    Import {
        /// Name for the imported key.
        #[arg(long, default_value = "default")]
        name: String,
        #[command(flatten)]
        source: ImportSource,
    },
    /// Export a key: the encrypted key file (default), or the raw secret with --raw-secret.
    #[command(
        after_help = "Examples:\n  mycel key export work --out backup.json\n  mycel key export work --raw-secret   # prints the secret seed: handle with care"
    )]
    Export {
        /// Key name.
        #[arg(default_value = "default")]
        name: String,
        /// Write to this file (mode 0600) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Export the unencrypted secret seed (hex). Asks for the password; prints a warning.
        #[arg(long)]
        raw_secret: bool,
    },
    /// Delete a key (asks to confirm by typing its name; --yes skips the question).
    #[command(after_help = "Example:\n  mycel key delete old --yes")]
    Delete {
        /// Key name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Where `key import` reads from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ImportSource {
    /// File holding a 64-hex-character seed, or `-` for stdin.
    #[arg(long, value_name = "FILE")]
    pub seed_file: Option<PathBuf>,
    /// An encrypted key file made by `mycel key export`.
    #[arg(long, value_name = "FILE")]
    pub encrypted: Option<PathBuf>,
}

/// `mycel did …`
#[derive(Debug, Subcommand)]
pub enum DidCommand {
    /// Print the DID of one of your keys.
    #[command(after_help = "Example:\n  mycel did show --key work")]
    Show {
        /// Key name.
        #[arg(long, default_value = "default")]
        key: String,
    },
    /// Resolve a did:key into its DID document (JSON-LD), offline.
    #[command(
        after_help = "Example:\n  mycel did resolve did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
    )]
    Resolve {
        /// The DID.
        did: String,
        /// How verification methods are written.
        #[arg(long, value_enum, default_value_t = DocFormat::Multikey)]
        format: DocFormat,
    },
}

/// DID document encodings.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DocFormat {
    /// `Multikey` with `publicKeyMultibase` (did:key default).
    Multikey,
    /// `Ed25519VerificationKey2018` with `publicKeyBase58` (older tools).
    Ed25519_2018,
}

/// `mycel credential …`
#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Issue a membership credential (VC-JWT) signed by one of your keys as consortium admin.
    #[command(
        after_help = "Example:\n  mycel credential issue --subject did:key:z6Mk… --consortium acme --expires 2027-12-31T00:00:00Z --out member.jwt"
    )]
    Issue {
        /// The member's DID.
        #[arg(long)]
        subject: String,
        /// The consortium's name.
        #[arg(long)]
        consortium: String,
        /// Expiry time, RFC 3339.
        #[arg(long)]
        expires: String,
        /// Issuer key.
        #[arg(long, default_value = "default")]
        key: String,
        /// Write the credential to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Revoke a member's consortium membership: signs a revocation as consortium admin (a trusted
    /// issuer), writes it, and with `--publish` hands it to the node at `--rpc`, which applies and
    /// gossips it (every member then disconnects and blocks the revoked DID).
    #[command(
        after_help = "Examples:\n  mycel credential revoke --subject did:key:z6Mk… --consortium acme --out revoke.json\n  mycel credential revoke --subject did:key:z6Mk… --consortium acme --publish\n\nPublishing needs a loopback --rpc or the node's bearer token (--rpc-token-file)."
    )]
    Revoke {
        /// The member's DID.
        #[arg(long)]
        subject: String,
        /// The consortium's name.
        #[arg(long)]
        consortium: String,
        /// Issuer (admin) key.
        #[arg(long, default_value = "default")]
        key: String,
        /// Write the signed revocation (JSON) to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Also submit it to the node at `--rpc` (JSON-RPC `mycel_revokeMembership`).
        #[arg(long)]
        publish: bool,
    },
    /// Verify a membership credential file (signature, validity window, optional expectations).
    #[command(
        after_help = "Example:\n  mycel credential verify member.jwt --issuer did:key:z6Mk… --consortium acme"
    )]
    Verify {
        /// The credential file (VC-JWT), or `-` for stdin.
        file: PathBuf,
        /// Require this issuer.
        #[arg(long)]
        issuer: Option<String>,
        /// Require this subject.
        #[arg(long)]
        subject: Option<String>,
        /// Require this consortium.
        #[arg(long)]
        consortium: Option<String>,
    },
}
