//! petrel(8): the command line.
//!
//! Parses arguments, loads the config, runs the startup checks and hands
//! over to `petrel::daemon`; the offline tools (`check`, `spool inspect`)
//! run here without starting any shard, and `queue` asks the running
//! daemon's admin endpoint. This file owns the exit codes:
//! 0 ok, 1 runtime failure, 2 usage or config error.
//! Must never: start a shard for a config that did not validate.

#![deny(unsafe_code)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use petrel::config::{Config, ConfigError, DEFAULT_CONFIG_NAME};
use petrel::queue::api::Scope;
use petrel::queue::cli::{self, Action};
use petrel::{daemon, preflight};

// mimalloc's per-thread heaps suit thread-per-core shards: no allocator
// lock is shared between cores.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "petrel",
    version,
    about = "A thread-per-core SMTP mail transfer agent for bulk senders on dedicated IPs",
    long_about = "A thread-per-core SMTP mail transfer agent for bulk senders on dedicated IPs.\n\n\
        petrel accepts mail over SMTP on one io_uring shard per CPU and acknowledges a \
        message only once it is durable in its append-only spool.",
    after_help = "Exit status: 0 ok, 1 runtime failure, 2 usage or config error.\n\
        Logging: set PETREL_LOG (e.g. PETREL_LOG=debug or PETREL_LOG=petrel=trace); default info, to stderr."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground until SIGTERM or SIGINT.
    ///
    /// Without --config, runs on the embedded default: SMTP on 127.0.0.1:2525,
    /// the spool in ./petrel-spool, relaying from loopback only, one shard per
    /// CPU. Startup checks (io_uring, RLIMIT_MEMLOCK, spool directory, CPUs)
    /// run first and stop it with a one-line error.
    Run {
        /// Config file (TOML); see `petrel check --default` for every key.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print the effective settings.
    ///
    /// Prints the config as TOML with every default filled in. A bad file
    /// prints FILE:LINE:COL: what is wrong, and exits 2. A [[source]]
    /// address that is not configured on this machine exits 1, as it would
    /// stop `run`.
    Check {
        /// Config file (TOML) to validate.
        #[arg(short, long, value_name = "FILE", required_unless_present = "default")]
        config: Option<PathBuf>,
        /// Print the embedded default's effective settings instead.
        #[arg(long, conflicts_with = "config")]
        default: bool,
    },
    /// Hash a password for SMTP AUTH and print or store USER:HASH.
    ///
    /// Reads the password from stdin: one line, its line ending stripped
    /// (pipe it in, e.g. `printf '%s\n' "$PW" | petrel passwd alice`). At a
    /// terminal it prompts twice on stderr without echo. Prints USER:HASH
    /// (argon2id), or with --file adds or replaces USER's line in FILE.
    Passwd {
        /// User name: no whitespace, no ':', not starting with '#'.
        #[arg(value_name = "USER")]
        user: String,
        /// Users file to update in place (created with mode 0600 if missing).
        #[arg(short, long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Offline spool tools (no daemon needed).
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// DKIM signing tools.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
    /// Look at and act on the running daemon's queues.
    ///
    /// Talks to the admin endpoint ([admin] address of the config; the
    /// embedded default's 127.0.0.1:9925 without --config). Every action
    /// is logged by the daemon; pauses are kept in <spool>/paused across
    /// restarts. Exits 1 when the daemon cannot be reached or refuses.
    Queue {
        /// Config file (TOML) of the running daemon.
        #[arg(short, long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
        /// Print the daemon's JSON answer as it is.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: QueueCommand,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Destinations with mail waiting: messages, oldest age, state, last
    /// reply; then the pauses in force.
    List,
    /// One message: sender, recipients and their state, size, received
    /// time, pool, attempts and next attempt.
    Show {
        /// Queue ID, as in `250 ... queued as ID` and the logs.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Open no connection to DEST until resumed (survives a restart).
    Pause(ScopeArgs),
    /// End a pause of DEST, and lift its suspensions (a backoff's too).
    Resume(ScopeArgs),
    /// Retry deferred mail now: of DEST, or of every destination.
    Flush {
        #[arg(value_name = "DEST")]
        destination: Option<String>,
        #[command(flatten)]
        narrow: Narrow,
    },
    /// Fail the waiting mail of DEST, or message ID, with a notice to
    /// each sender.
    Bounce {
        #[arg(value_name = "DEST|ID")]
        target: String,
    },
    /// Fail the waiting mail of DEST, or message ID, with no notice
    /// (each recipient is logged).
    Delete {
        #[arg(value_name = "DEST|ID")]
        target: String,
    },
}

#[derive(clap::Args)]
struct ScopeArgs {
    /// A recipient domain, or relay:HOST:PORT for a [[route]].
    #[arg(value_name = "DEST")]
    destination: String,
    #[command(flatten)]
    narrow: Narrow,
}

#[derive(clap::Args)]
struct Narrow {
    /// Only the queue of this [[source]].
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
    /// Only the queues of this [[pool]]'s sources.
    #[arg(long, value_name = "POOL")]
    pool: Option<String>,
}

impl Narrow {
    fn scope(self, destination: Option<String>) -> Scope {
        Scope {
            destination: destination.map(|d| d.to_ascii_lowercase()),
            source: self.source,
            pool: self.pool,
        }
    }
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Write a new private key and print the DNS TXT record to publish.
    ///
    /// Writes DIR/DOMAIN/SELECTOR.pem (PKCS#8 PEM, mode 0600; never over an
    /// existing file), the layout of [signing] key_dir, and prints
    /// `SELECTOR._domainkey.DOMAIN IN TXT "v=DKIM1; k=...; p=..."`.
    Keygen {
        /// rsa (rsa-sha256) or ed25519 (ed25519-sha256, RFC 8463).
        #[arg(long, value_parser = ["rsa", "ed25519"])]
        algorithm: String,
        /// The signing domain (d=).
        #[arg(long)]
        domain: String,
        /// The selector (s=).
        #[arg(long)]
        selector: String,
        /// RSA key size: 2048 to 4096.
        #[arg(long, default_value_t = petrel::dkim::keygen::DEFAULT_RSA_BITS)]
        bits: usize,
        /// Directory the key is written under.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// Print a spool's segments, records, and live/finished counts.
    Inspect {
        /// Spool directory (the [spool] path of the config).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { config } => run(config.as_deref()),
        Command::Check { config, .. } => check(config.as_deref()),
        Command::Passwd { user, file } => passwd(&user, file.as_deref()),
        Command::Spool {
            command: SpoolCommand::Inspect { dir },
        } => spool_inspect(&dir),
        Command::Queue {
            config,
            json,
            command,
        } => queue(config.as_deref(), json, command),
        Command::Dkim {
            command:
                DkimCommand::Keygen {
                    algorithm,
                    domain,
                    selector,
                    bits,
                    out,
                },
        } => dkim_keygen(&algorithm, &domain, &selector, bits, &out),
    }
}

fn dkim_keygen(algorithm: &str, domain: &str, selector: &str, bits: usize, out: &Path) -> ExitCode {
    use petrel::dkim::{keygen, Algorithm};
    let algorithm = match algorithm {
        "rsa" => Algorithm::RsaSha256,
        _ => Algorithm::Ed25519Sha256,
    };
    let domain = domain.to_ascii_lowercase();
    for (what, name) in [("domain", &*domain), ("selector", selector)] {
        if !petrel::config::is_domain_name(name) {
            return fail(
                EXIT_USAGE,
                &format!("petrel dkim keygen: {what} {name:?} is not a domain name"),
            );
        }
    }
    let written = keygen::generate(algorithm, bits)
        .and_then(|key| Ok((keygen::write(out, &domain, selector, &key.pem)?, key.public)));
    match written {
        Ok((path, public)) => {
            eprintln!("petrel dkim keygen: wrote {}; publish:", path.display());
            println!(
                "{}",
                keygen::dns_record(selector, &domain, algorithm, &public)
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_FAILURE, &format!("petrel dkim keygen: {e}")),
    }
}

fn queue(path: Option<&Path>, json: bool, command: QueueCommand) -> ExitCode {
    let action = match command {
        QueueCommand::List => Action::List,
        QueueCommand::Show { id } => Action::Show(id),
        QueueCommand::Pause(a) => Action::Pause(a.narrow.scope(Some(a.destination))),
        QueueCommand::Resume(a) => Action::Resume(a.narrow.scope(Some(a.destination))),
        QueueCommand::Flush {
            destination,
            narrow,
        } => Action::Flush(narrow.scope(destination)),
        QueueCommand::Bounce { target } => Action::Bounce(target),
        QueueCommand::Delete { target } => Action::Delete(target),
    };
    let config = match load(path) {
        Ok(config) => config,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let text = cli::call(config.admin.address, &action).and_then(|value| match json {
        true => Ok(format!("{value:#}\n")),
        false => cli::render(&action, &value),
    });
    match text {
        Ok(text) => {
            let _ = io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_FAILURE, &format!("petrel queue: {e}")),
    }
}

/// The embedded default when no file is given.
fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None => Ok(Config::embedded_default()),
    }
}

fn run(path: Option<&Path>) -> ExitCode {
    init_logging();
    let config = match load(path) {
        Ok(config) => config,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    // Read once here and handed to every shard.
    let dkim = match petrel::dkim::SignerTable::load(&config) {
        Ok(table) => table,
        Err(e) => return fail(EXIT_USAGE, &format!("petrel: {e}")),
    };
    let plan = match preflight::check(&config) {
        Ok(plan) => plan,
        Err(e) => return fail(EXIT_FAILURE, &format!("petrel: {e}")),
    };
    tracing::info!(
        config = %path.map_or_else(|| DEFAULT_CONFIG_NAME.to_owned(), |p| p.display().to_string()),
        shards = plan.shards,
        cpus = ?plan.cpus,
        io_memory = plan.io_memory,
        spool = %config.spool.path.display(),
        "starting petrel {}",
        env!("CARGO_PKG_VERSION"),
    );
    for warning in warnings(&config) {
        tracing::warn!("{warning}");
    }
    match daemon::run(config, dkim, plan, path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILURE, &format!("petrel: {e}")),
    }
}

/// What `run` logs and `check` prints as warnings: settings allowed but
/// probably not meant, and a spool on a file system that does not keep
/// petrel's promises.
fn warnings(config: &Config) -> Vec<String> {
    let mut all = config.warnings();
    let caveat = petrel::spool::filesystem::caveat(&config.spool.path);
    all.extend(caveat.map(|c| c.warning()));
    all
}

fn check(path: Option<&Path>) -> ExitCode {
    let name = path.map_or_else(
        || DEFAULT_CONFIG_NAME.to_owned(),
        |p| p.display().to_string(),
    );
    let config = match load(path) {
        Ok(config) => config,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    if let Err(e) = petrel::dkim::SignerTable::load(&config) {
        return fail(EXIT_USAGE, &format!("petrel: {e}"));
    }
    // The users files and the alias file, each error with its FILE:LINE;
    // the SRS secret is read if it exists, never made.
    if let Err(e) = petrel::hosted::Recipients::load(&config, petrel::hosted::Secret::ReadOnly) {
        return fail(EXIT_USAGE, &format!("petrel: {e}"));
    }
    // The startup checks about the file's own values that only this
    // machine can answer (source addresses, Maildir roots); the rest
    // (io_uring, CPUs, spool) are `run`'s.
    if let Err(e) = preflight::check_sources(&config) {
        return fail(EXIT_FAILURE, &format!("petrel: {e}"));
    }
    if let Err(e) = preflight::check_maildir_roots(&config) {
        return fail(EXIT_FAILURE, &format!("petrel: {e}"));
    }
    for warning in warnings(&config) {
        eprintln!("petrel: warning: {warning}");
    }
    let text = match config.to_toml_string() {
        Ok(text) => text,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let mut out = io::stdout().lock();
    let written = writeln!(out, "# Effective settings of {name}, defaults filled in.\n")
        .and_then(|()| out.write_all(text.as_bytes()))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`petrel check | head`) is the reader's choice.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILURE, &format!("petrel: writing to stdout: {e}")),
    }
}

fn spool_inspect(dir: &Path) -> ExitCode {
    let mut out = io::stdout().lock();
    match petrel::spool::inspect::run(dir, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILURE, &format!("petrel: spool inspect: {e}")),
    }
}

fn passwd(user: &str, file: Option<&Path>) -> ExitCode {
    use petrel::auth;
    use std::io::IsTerminal;
    if let Some(why) = auth::invalid_user_name(user) {
        return fail(EXIT_USAGE, &format!("petrel passwd: {why}"));
    }
    let password = if io::stdin().is_terminal() {
        auth::prompt_password(user)
    } else {
        auth::read_password_line(&mut io::stdin().lock())
    };
    let password = match password {
        Ok(p) if p.is_empty() => return fail(EXIT_USAGE, &"petrel passwd: empty password"),
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return fail(EXIT_USAGE, &format!("petrel passwd: {e}"))
        }
        Err(e) => {
            return fail(
                EXIT_FAILURE,
                &format!("petrel passwd: reading the password: {e}"),
            )
        }
    };
    let hash = match auth::hash_password(&password) {
        Ok(hash) => hash,
        Err(e) => return fail(EXIT_FAILURE, &format!("petrel passwd: {e}")),
    };
    let done = match file {
        Some(file) => auth::set_user(file, user, &hash),
        None => writeln!(io::stdout().lock(), "{user}:{hash}"),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILURE, &format!("petrel passwd: {e}")),
    }
}

/// Logs to stderr, filtered by PETREL_LOG (default info); systemd's journal
/// adds its own timestamps, but a terminal needs them, so they stay. Colours
/// only on a terminal: a journal or a log file gets plain text.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PETREL_LOG");
    let bad_filter = std::env::var_os("PETREL_LOG").is_some() && filter.is_err();
    tracing_subscriber::fmt()
        .with_env_filter(filter.unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")))
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
    if bad_filter {
        tracing::warn!("PETREL_LOG is not a valid filter; logging at info");
    }
}

/// Prints a one-line error to stderr and returns the exit code.
fn fail(code: u8, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("{error}");
    ExitCode::from(code)
}
