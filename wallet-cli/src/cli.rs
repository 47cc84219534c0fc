//! Command-line definitions (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  internal error
  2  usage error (bad flags or arguments)
  3  wrong or missing password
  4  not found (no such key or file)
  5  already exists (a key name is taken)
  6  invalid input (malformed DID, signature, seed, key file or credential)
  7  verification failed (signature or credential does not verify)
  8  I/O error
  9  the node is unreachable or failed to answer

Passwords come from a hidden prompt when the terminal is interactive, else from --password-file or
the MYCEL_PASSWORD environment variable. They are never echoed.";

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
