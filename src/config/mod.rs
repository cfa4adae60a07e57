//! The config model: what a petrel config file may say, its defaults, and
//! how a file becomes a validated [`Config`].
//!
//! This module owns the TOML keys (a public interface: names never change
//! silently), their defaults and the checks on their values. Every error
//! points at `FILE:LINE:COL`, and unknown keys are errors rather than being
//! ignored, because a misspelt limit that silently falls back to its default
//! is how mail servers get abused. It never touches the network or the spool,
//! and opens only a file whose absence would otherwise surface at the first
//! delivery (`[delivery] tls_ca_file`); checks that need the machine (CPUs,
//! RLIMIT_MEMLOCK, the spool directory, egress source addresses) live in
//! `preflight`.

#![deny(unsafe_code)]

pub mod accounting;
mod accounting_raw;
pub mod backoff;
mod backoff_raw;
pub mod dkim;
mod dkim_raw;
pub mod domain;
mod domain_raw;
pub mod duration;
pub mod egress;
mod egress_raw;
mod network;
pub mod operations;
mod raw;
pub mod route;
pub mod shaping;
mod shaping_raw;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use accounting::{AccountingSection, CategorySection};
pub use backoff::{BackoffActionSetting, BackoffSection, ReplyConditions};
pub use dkim::{DkimSection, SigningSection};
pub use domain::{AliasesSection, DomainSection, ForwardSender, LmtpTarget, LocalDelivery, Verify};
pub use duration::{DurationError, DurationSetting};
pub use egress::{
    HeaderPool, PoolMatcher, PoolMember, PoolQuery, PoolRule, PoolSection, PoolSelectionSection,
    SourceSection, UnknownPool,
};
pub use network::{contains as network_contains, IpNet, IpNetError};
pub use operations::{AdminSection, LogSection};
pub use route::{is_domain_name, RelayHost, RouteDomain, RouteError, RouteSection};
pub use shaping::{Shape, ShapingMatch, ShapingSection};

/// The embedded default, used by `petrel run` without `--config`: it works
/// on a fresh machine without root. Kept as TOML text (not a struct literal)
/// so it goes through the same parser and checks as any file, and so
/// `petrel check --default` can show it.
pub const DEFAULT_CONFIG: &str = r#"# petrel's embedded default: SMTP on 127.0.0.1:2525, the spool in
# ./petrel-spool, relaying from loopback only, one shard per CPU, and
# delivery to each recipient domain's MX hosts.

[server]
shards = 0

[spool]
path = "./petrel-spool"

[[listener]]
address = "127.0.0.1:2525"

[relay]
networks = ["127.0.0.0/8", "::1/128"]
"#;

/// The name errors in [`DEFAULT_CONFIG`] would carry in place of a file name.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default>";

/// `[spool] path` when a file does not set it.
pub const DEFAULT_SPOOL_PATH: &str = "/var/spool/petrel";
/// `[spool] segment_size` default: 256 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 256 << 20;
/// Smallest `[spool] segment_size`: 1 MiB.
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;
/// `[spool] segment_size` must be a multiple of this (the page size), so
/// segments map and preallocate in whole pages.
pub const SEGMENT_SIZE_ALIGN: u64 = 4096;
/// `[spool] min_free_space` default: 1 GiB.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 1 << 30;
/// RFC 5321 section 4.5.3.1.8: a server must accept at least 100 recipients.
pub const MIN_MAX_RECIPIENTS: usize = 100;

/// A complete, validated configuration with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub server: ServerSection,
    pub spool: SpoolSection,
    pub listener: Vec<ListenerSection>,
    pub relay: RelaySection,
    pub auth: AuthSection,
    pub dns: DnsSection,
    pub delivery: DeliverySection,
    /// `[accounting]`: always printed, off (`path = ""`) by default.
    pub accounting: AccountingSection,
    /// `[[route]]`s in file order; the first that matches wins.
    pub route: Vec<RouteSection>,
    /// `[[domain]]`s: the domains this server is the final destination
    /// for. Not printed when empty, so a file without them prints as
    /// before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domain: Vec<DomainSection>,
    /// `[aliases]`: not printed when every key is at its default.
    #[serde(skip_serializing_if = "AliasesSection::is_default")]
    pub aliases: AliasesSection,
    /// `[[shaping]]` rules in file order; the most specific that matches
    /// applies (see [`Config::shaping_for_domain`]). Not printed when
    /// empty, so a file without them prints as before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shaping: Vec<ShapingSection>,
    /// `[[backoff]]` rules in file order, tried before the shipped ones
    /// (see [`Config::backoff_rules`]). Not printed when empty, so a file
    /// without them prints as before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backoff: Vec<BackoffSection>,
    /// Local addresses mail may leave from; empty: the machine's own
    /// address and `[delivery] helo_name`, as chosen by the kernel. Not
    /// printed when empty, so a file without sources prints as before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<SourceSection>,
    /// Groups of sources; with sources but no `[[pool]]` in the file, one
    /// pool named "default" of every source. Empty without sources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pool: Vec<PoolSection>,
    /// How a message's pool is chosen. Not printed without sources: the
    /// file it came from could not have said anything else, and a printed
    /// `[pool_selection]` without sources would not parse back.
    #[serde(skip_serializing_if = "PoolSelectionSection::is_inactive")]
    pub pool_selection: PoolSelectionSection,
    /// `[[dkim]]` keys in file order. Not printed when empty, so a file
    /// without them prints as before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dkim: Vec<DkimSection>,
    /// `[signing]`: not printed when all its keys have their defaults.
    #[serde(skip_serializing_if = "SigningSection::is_inactive")]
    pub signing: SigningSection,
    pub log: LogSection,
    pub admin: AdminSection,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerSection {
    /// Name used in the greeting, EHLO and `Received:`; default: the
    /// machine's hostname.
    pub hostname: String,
    /// Number of shards (pinned executors); 0 means one per allowed CPU.
    pub shards: usize,
    /// The mailbox that mail for the domainless `<Postmaster>` (RFC 5321
    /// 4.5.1) goes to; empty: none, and `RCPT TO:<postmaster>` is refused.
    pub postmaster: String,
}

/// `[spool]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpoolSection {
    /// Spool directory; relative paths are relative to the working
    /// directory.
    pub path: PathBuf,
    /// Bytes per segment file.
    pub segment_size: u64,
    /// Below this much free space, MAIL is answered 452 4.3.1.
    pub min_free_space: u64,
}

/// One `[[listener]]`: an address to accept SMTP on, and its limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerSection {
    /// What `[pool_selection] rules` call it; unique among listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub address: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// TLS from the first byte (RFC 8314) instead of STARTTLS.
    pub implicit_tls: bool,
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// Errors in one session before 421 4.7.0 and close.
    pub max_errors: u32,
    /// Commands that move no mail (EHLO, HELO, RSET, NOOP, VRFY, HELP)
    /// between accepted messages before each counts as an error.
    pub max_junk_commands: u32,
    #[serde(with = "duration::serde_str")]
    pub command_timeout: Duration,
    #[serde(with = "duration::serde_str")]
    pub data_timeout: Duration,
    #[serde(with = "duration::serde_str")]
    pub session_timeout: Duration,
    /// The whole TLS handshake (STARTTLS or implicit TLS).
    #[serde(with = "duration::serde_str")]
    pub tls_handshake_timeout: Duration,
    /// Bytes per second averaged over DATA; 0 disables the check.
    pub min_data_rate: u64,
    /// Open connections per shard.
    pub max_connections: usize,
    /// Open connections per client IP per shard; not applied to relay
    /// networks.
    pub max_connections_per_ip: usize,
    /// IPv6 clients count against `max_connections_per_ip` (and the AUTH
    /// failure limit) by network of this prefix length, not by address.
    pub ipv6_prefix_length: u8,
}

/// `[relay]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelaySection {
    /// Clients in these networks may relay to any domain.
    pub networks: Vec<IpNet>,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthSection {
    /// File of users and password hashes for AUTH; none means no AUTH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    /// Failed AUTH attempts from one client IP (IPv6: its network, see
    /// `ipv6_prefix_length`) within `failure_window` before further
    /// attempts get 454 4.7.0 until the window passes; 0 = no limit.
    pub max_failures: u32,
    #[serde(with = "duration::serde_str")]
    pub failure_window: Duration,
    /// How long a failed attempt waits before its 535 reply.
    #[serde(with = "duration::serde_str")]
    pub failure_delay: Duration,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            users_file: None,
            max_failures: 5,
            failure_window: Duration::from_secs(10 * 60),
            failure_delay: Duration::from_secs(1),
        }
    }
}

/// `[dns]`: the resolver used to find MX hosts and relay addresses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsSection {
    /// Nameservers asked in order; empty means those in /etc/resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// How long to wait for one server's reply to one query.
    pub timeout: DurationSetting,
    /// How many times the whole server list is tried (1 to 10).
    pub attempts: u32,
    /// 0x20: queries spell names in random case, and a reply must echo it.
    pub randomize_case: bool,
}

/// Whether outbound connections use STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    /// STARTTLS when offered, without checking the certificate; plain
    /// text otherwise. What most of the internet does (RFC 3207).
    #[default]
    Opportunistic,
    /// STARTTLS with a certificate valid for the host, or the message is
    /// deferred.
    Required,
    /// Never STARTTLS.
    Disabled,
}

/// `[delivery]`: how spooled mail leaves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliverySection {
    /// Accept and spool, but do not deliver.
    pub paused: bool,
    /// Port of MX hosts, and of relays that give none.
    pub port: u16,
    /// Addresses one delivery attempt tries, over all the MX hosts of the
    /// destination in preference order; then the attempt is deferred.
    pub max_mx_addresses: usize,
    /// Refuse MX hosts whose addresses are private, loopback, link-local
    /// or unspecified (never a `[[route]]` relay).
    pub refuse_private_mx: bool,
    /// Open connections to one destination, over the whole process.
    pub max_connections_per_destination: usize,
    /// Messages sent over one connection before it is closed.
    pub max_messages_per_connection: usize,
    /// Messages per egress source and destination over all shards; none
    /// (printed as `""`): no limit.
    #[serde(serialize_with = "shaping::rate_text")]
    pub max_message_rate: Option<crate::shaping::rate::Rate>,
    /// New connections per egress source and destination over all
    /// shards; none (printed as `""`): no limit.
    #[serde(serialize_with = "shaping::rate_text")]
    pub max_connection_rate: Option<crate::shaping::rate::Rate>,
    /// Recipients of one message per transaction; the rest go in further
    /// transactions. 1 to [`shaping::MAX_RECIPIENTS_PER_TRANSACTION`].
    pub max_recipients_per_transaction: usize,
    /// Waits between delivery attempts; the last one repeats.
    pub retry: Vec<DurationSetting>,
    /// Age at which a message still undelivered is bounced.
    pub max_age: DurationSetting,
    pub tls: OutboundTls,
    /// CA certificates (PEM) for checking servers; none means the system's
    /// roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    pub connect_timeout: DurationSetting,
    /// Waiting for the greeting and the replies to EHLO, MAIL, RCPT, DATA,
    /// RSET and QUIT.
    pub command_timeout: DurationSetting,
    /// Waiting for the reply to the end of data, and between body blocks.
    pub data_timeout: DurationSetting,
    /// How long an open connection waits for another message to the same
    /// destination before QUIT.
    pub idle_timeout: DurationSetting,
    /// Age at which the sender is told a message is delayed; none means
    /// no delay notices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_notice: Option<DurationSetting>,
    /// Name sent in EHLO; `[server] hostname` when the file gives none.
    pub helo_name: String,
    /// Whether the shipped backoff rules for the large providers apply
    /// after the file's own `[[backoff]]` rules.
    pub default_backoff: bool,
}

impl Default for DnsSection {
    fn default() -> DnsSection {
        DnsSection {
            servers: Vec::new(),
            timeout: DurationSetting(Duration::from_secs(2)),
            attempts: 2,
            randomize_case: true,
        }
    }
}

impl RelaySection {
    /// Whether a client at `ip` may relay to any domain.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        self.networks.iter().any(|n| network::contains(n, ip))
    }
}

impl DnsSection {
    /// The `timeout` setting as a plain duration.
    pub fn timeout(&self) -> Duration {
        self.timeout.duration()
    }
}

impl DeliverySection {
    /// Every key at its default, EHLO as `helo_name`.
    pub fn with_defaults(helo_name: String) -> DeliverySection {
        let minutes = |m: u64| DurationSetting(Duration::from_secs(m * 60));
        DeliverySection {
            paused: false,
            port: 25,
            // Postfix's smtp_mx_address_limit: each address may take a
            // whole connect timeout.
            max_mx_addresses: 5,
            refuse_private_mx: false,
            max_connections_per_destination: 20,
            max_messages_per_connection: 1000,
            max_message_rate: None,
            max_connection_rate: None,
            max_recipients_per_transaction: shaping::DEFAULT_RECIPIENTS_PER_TRANSACTION,
            // Doubling from 5 minutes, then every 4 hours: quick for a
            // greylisting pause, patient with a host that is down.
            retry: [5, 10, 20, 40, 60, 120, 240].map(minutes).to_vec(),
            max_age: minutes(5 * 24 * 60),
            tls: OutboundTls::Opportunistic,
            tls_ca_file: None,
            connect_timeout: DurationSetting(Duration::from_secs(30)),
            // RFC 5321 section 4.5.3.2: at least 5 minutes for most
            // replies and 10 for the one to the end of data.
            command_timeout: minutes(5),
            data_timeout: minutes(10),
            idle_timeout: DurationSetting(Duration::from_secs(5)),
            delay_notice: None,
            helo_name,
            default_backoff: true,
        }
    }
}

impl ListenerSection {
    /// A listener on `address` with every limit at its default.
    pub fn with_defaults(address: SocketAddr) -> ListenerSection {
        ListenerSection {
            name: None,
            address,
            tls_cert: None,
            tls_key: None,
            implicit_tls: false,
            max_message_size: 10_240_000,
            max_recipients: 1000,
            max_errors: 20,
            max_junk_commands: 100,
            // RFC 5321 section 4.5.3.2: 5 minutes for commands, 10 for the
            // DATA terminator; one hour caps a session that keeps trickling.
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            session_timeout: Duration::from_secs(60 * 60),
            tls_handshake_timeout: Duration::from_secs(10),
            min_data_rate: 1024,
            max_connections: 1000,
            max_connections_per_ip: 50,
            ipv6_prefix_length: 64,
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A syntax, type or value error, located in the file.
    #[error("{name}:{line}:{column}: {message}")]
    Invalid {
        name: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot print the config as TOML: {0}")]
    Render(String),
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_str_named(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `name` is what errors call it.
    pub fn from_str_named(text: &str, name: &str) -> Result<Config, ConfigError> {
        raw::parse(text).map_err(|located| {
            let (line, column) = line_col(text, located.span.map_or(0, |span| span.start));
            ConfigError::Invalid {
                name: name.to_owned(),
                line,
                column,
                message: located.message,
            }
        })
    }

    /// The embedded default ([`DEFAULT_CONFIG`]).
    pub fn embedded_default() -> Config {
        // The text is a constant checked by `embedded_default_is_valid`
        // below, so this cannot fail at run time.
        #[allow(clippy::expect_used)]
        Config::from_str_named(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME)
            .expect("the embedded default config is valid")
    }

    /// The route for mail to `domain`: the first `[[route]]` that matches,
    /// or none when the domain's MX hosts should be used.
    pub fn route_for(&self, domain: &str) -> Option<&RouteSection> {
        self.route.iter().find(|route| route.domain.matches(domain))
    }

    /// The `[[domain]]` hosting `domain` (any case, a trailing dot
    /// ignored), if this server is its final destination.
    pub fn hosted_domain(&self, domain: &str) -> Option<&DomainSection> {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.domain
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(domain))
    }

    /// How many shards to run on a machine with `cpus` usable CPUs.
    pub fn effective_shards(&self, cpus: usize) -> usize {
        match self.server.shards {
            0 => cpus.max(1),
            n => n,
        }
    }

    /// What is allowed but probably not meant: one line each, for `petrel
    /// check` and the log at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.server.postmaster.is_empty() {
            warnings.push(
                "[server] postmaster is not set: RCPT TO:<postmaster> is refused with 550 5.1.1, \
                 though RFC 5321 4.5.1 expects every server to accept it; set it to the mailbox \
                 that should receive such mail"
                    .to_owned(),
            );
        }
        warnings
    }

    /// The effective settings as TOML, every default written out; parsing
    /// the result gives back an equal `Config`.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Render(e.to_string()))
    }
}

/// Serializes a path that may be absent as `""` when it is (the file
/// form of "none" for path keys).
fn path_or_empty<S: serde::Serializer>(value: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(path) => path.serialize(s),
        None => s.serialize_str(""),
    }
}

/// Serializes a value that may be absent as its text, or `""` when it is.
fn text_or_empty<T: std::fmt::Display, S: serde::Serializer>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_str(""),
    }
}

/// A message with the byte range it is about, before it gets a file name.
#[derive(Debug)]
struct Located {
    span: Option<Range<usize>>,
    message: String,
}

/// 1-based line and column (in characters) of a byte offset; offsets past
/// the end, or inside a character, land on the nearest position before.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The machine's hostname, the default for `[server] hostname`: the node
/// name from uname(2), which is what gethostname(2) returns.
fn system_hostname() -> String {
    let uname = rustix::system::uname();
    match uname.nodename().to_str() {
        Ok(name) if !name.is_empty() => name.to_owned(),
        // A greeting needs some name; "localhost" is what an unnamed
        // machine calls itself anyway.
        _ => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod accounting_tests;
#[cfg(test)]
mod backoff_tests;
#[cfg(test)]
mod dkim_tests;
#[cfg(test)]
mod domain_tests;
#[cfg(test)]
mod egress_tests;
#[cfg(test)]
mod operations_tests;
#[cfg(test)]
mod shaping_tests;
#[cfg(test)]
mod tests;
