//! The file as written: every key optional and carrying its byte span, so
//! that a value that parses but makes no sense (`max_recipients = 50`) is
//! reported at its own line and column. Conversion fills in defaults and
//! checks values; the result is the plain [`Config`].

use std::collections::HashSet;
use std::fmt::Display;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::accounting_raw::RawAccounting;
use super::backoff_raw::{backoff_rules, RawBackoff};
use super::dkim_raw::{dkim_entries, RawDkim, RawSigning};
use super::domain_raw::{domains, RawAliases, RawDomain};
use super::egress_raw::{check_name, claim_name, RawEgress, RawPool, RawPoolSelection, RawSource};
use super::operations::{RawAdmin, RawLog};
use super::route::{is_domain_name, split_host_port};
use super::shaping_raw::{delivery_rate, recipients_per_transaction, shaping_rules, RawShaping};
use super::{
    duration, AuthSection, Config, DeliverySection, DnsSection, DurationSetting, IpNet,
    ListenerSection, Located, OutboundTls, RelayHost, RelaySection, RouteDomain, RouteSection,
    ServerSection, SpoolSection, DEFAULT_MIN_FREE_SPACE, DEFAULT_SEGMENT_SIZE, DEFAULT_SPOOL_PATH,
    MIN_MAX_RECIPIENTS, MIN_SEGMENT_SIZE, SEGMENT_SIZE_ALIGN,
};

/// The DNS port, for `[dns] servers` given without one.
const DNS_PORT: u16 = 53;

/// Parses and validates `text` into a [`Config`].
pub(super) fn parse(text: &str) -> Result<Config, Located> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| Located {
        span: e.span(),
        message: e.message().trim_end().to_owned(),
    })?;
    raw.into_config()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    listener: Vec<RawListener>,
    #[serde(default)]
    relay: RawRelay,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    accounting: RawAccounting,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    domain: Vec<RawDomain>,
    #[serde(default)]
    aliases: RawAliases,
    #[serde(default)]
    source: Vec<RawSource>,
    #[serde(default)]
    pool: Vec<Spanned<RawPool>>,
    pool_selection: Option<Spanned<RawPoolSelection>>,
    #[serde(default)]
    shaping: Vec<Spanned<RawShaping>>,
    #[serde(default)]
    backoff: Vec<Spanned<RawBackoff>>,
    #[serde(default)]
    dkim: Vec<RawDkim>,
    #[serde(default)]
    signing: RawSigning,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    admin: RawAdmin,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    hostname: Option<Spanned<String>>,
    shards: Option<usize>,
    postmaster: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    path: Option<Spanned<PathBuf>>,
    segment_size: Option<Spanned<u64>>,
    min_free_space: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Option<Spanned<String>>,
    address: Spanned<String>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
    implicit_tls: Option<Spanned<bool>>,
    max_message_size: Option<Spanned<u64>>,
    max_recipients: Option<Spanned<usize>>,
    max_errors: Option<Spanned<u32>>,
    max_junk_commands: Option<Spanned<u32>>,
    command_timeout: Option<Spanned<DurationSetting>>,
    data_timeout: Option<Spanned<DurationSetting>>,
    session_timeout: Option<Spanned<DurationSetting>>,
    tls_handshake_timeout: Option<Spanned<DurationSetting>>,
    min_data_rate: Option<u64>,
    max_connections: Option<Spanned<usize>>,
    max_connections_per_ip: Option<Spanned<usize>>,
    ipv6_prefix_length: Option<Spanned<u8>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    networks: Option<Vec<Spanned<String>>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    users_file: Option<Spanned<PathBuf>>,
    max_failures: Option<u32>,
    failure_window: Option<Spanned<DurationSetting>>,
    failure_delay: Option<DurationSetting>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    servers: Option<Vec<Spanned<String>>>,
    timeout: Option<Spanned<DurationSetting>>,
    attempts: Option<Spanned<u32>>,
    randomize_case: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    paused: Option<bool>,
    // Wider than u16 so that 70000 gets the same message as 0.
    port: Option<Spanned<u64>>,
    max_mx_addresses: Option<Spanned<usize>>,
    refuse_private_mx: Option<bool>,
    max_connections_per_destination: Option<Spanned<usize>>,
    max_messages_per_connection: Option<Spanned<usize>>,
    max_message_rate: Option<Spanned<String>>,
    max_connection_rate: Option<Spanned<String>>,
    max_recipients_per_transaction: Option<Spanned<usize>>,
    retry: Option<Spanned<Vec<Spanned<DurationSetting>>>>,
    max_age: Option<Spanned<DurationSetting>>,
    tls: Option<OutboundTls>,
    tls_ca_file: Option<Spanned<PathBuf>>,
    connect_timeout: Option<Spanned<DurationSetting>>,
    command_timeout: Option<Spanned<DurationSetting>>,
    data_timeout: Option<Spanned<DurationSetting>>,
    idle_timeout: Option<Spanned<DurationSetting>>,
    delay_notice: Option<Spanned<DurationSetting>>,
    helo_name: Option<Spanned<String>>,
    default_backoff: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    domain: Spanned<String>,
    relay: Spanned<String>,
}

pub(super) fn error_at<T>(span: std::ops::Range<usize>, message: String) -> Result<T, Located> {
    Err(Located {
        span: Some(span),
        message,
    })
}

/// The value if it passes `check`, else the error at its span.
pub(super) fn valid<T>(
    value: Spanned<T>,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, Located> {
    match check(value.get_ref()) {
        Ok(()) => Ok(value.into_inner()),
        Err(message) => error_at(value.span(), message),
    }
}

/// The value if present (after `check`), else `default`.
pub(super) fn checked<T>(
    value: Option<Spanned<T>>,
    default: T,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, Located> {
    value.map_or(Ok(default), |value| valid(value, check))
}

/// The value if present (after `check`), else none.
pub(super) fn optional<T>(
    value: Option<Spanned<T>>,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<Option<T>, Located> {
    value.map(|value| valid(value, check)).transpose()
}

/// `text` read by `parse`, or the parse error at the text's span.
pub(super) fn parsed<T, E: Display>(
    text: &Spanned<String>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, Located> {
    parse(text.get_ref()).or_else(|e| error_at(text.span(), e.to_string()))
}

/// The matcher of a `rule` (`"rule"`, `"[[shaping]] rule"`): the one key
/// it gives among `given` (each a key, its value if written, and the reader
/// `read` applies to it), not taken by an earlier rule. The error is at the
/// rule when it gives none (`choices` says which it may give), else at the
/// value that is one too many, unreadable or taken.
pub(super) fn rule_matcher<M: Hash + Eq + Clone, R, const N: usize>(
    rule_span: std::ops::Range<usize>,
    given: [(&'static str, Option<Spanned<String>>, R); N],
    (rule, choices): (&str, &str),
    read: impl FnOnce(R, &str) -> Result<M, String>,
    taken: &mut HashSet<M>,
) -> Result<M, Located> {
    let mut given = given
        .into_iter()
        .filter_map(|(key, value, reader)| Some((key, value?, reader)));
    let Some((key, value, reader)) = given.next() else {
        return error_at(rule_span, format!("a {rule} needs a matcher: {choices}"));
    };
    if let Some((second, extra, _)) = given.next() {
        return error_at(
            extra.span(),
            format!("a {rule} has one matcher, but this one gives both {key} and {second}: split it into two rules"),
        );
    }
    let matcher = parsed(&value, |text| read(reader, text))?;
    claim_matcher(taken, &matcher, key, &value, rule)?;
    Ok(matcher)
}

/// Records `matcher` (read from `key = value`) as taken, or the error at
/// the value when an earlier `rule` has it: two rules on one matcher would
/// let the file's order decide silently.
fn claim_matcher<M: Hash + Eq + Clone>(
    taken: &mut HashSet<M>,
    matcher: &M,
    key: &str,
    value: &Spanned<String>,
    rule: &str,
) -> Result<(), Located> {
    match taken.insert(matcher.clone()) {
        true => Ok(()),
        false => error_at(
            value.span(),
            format!(
                "an earlier {rule} already matches {key} = {:?}: rules may not overlap",
                value.get_ref()
            ),
        ),
    }
}

pub(super) fn at_least<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    min: T,
) -> impl FnOnce(&T) -> Result<(), String> {
    move |value| match *value >= min {
        true => Ok(()),
        false => Err(format!("{key} = {value} is below the minimum of {min}")),
    }
}

pub(super) fn between<T: PartialOrd + Display>(
    key: &'static str,
    min: T,
    max: T,
) -> impl FnOnce(&T) -> Result<(), String> {
    move |value| match *value >= min && *value <= max {
        true => Ok(()),
        false => Err(format!("{key} = {value} must be between {min} and {max}")),
    }
}

fn positive(key: &'static str) -> impl FnOnce(&DurationSetting) -> Result<(), String> {
    move |setting| match setting.0.is_zero() {
        true => Err(format!("{key} must be longer than zero")),
        false => Ok(()),
    }
}

/// A file that must be there when the daemon needs it: opened now, so a
/// typo is a config error instead of failed deliveries later.
fn readable_file(key: &'static str) -> impl FnOnce(&PathBuf) -> Result<(), String> {
    move |path| match std::fs::File::open(path).and_then(|file| file.metadata()) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(format!("{key} {path:?} is not a regular file")),
        Err(e) => Err(format!("{key} {path:?} cannot be read: {e}")),
    }
}

fn not_empty(key: &'static str) -> impl FnOnce(&PathBuf) -> Result<(), String> {
    move |path| match path.as_os_str().is_empty() {
        true => Err(format!("{key} is empty: give a path")),
        false => Ok(()),
    }
}

impl RawConfig {
    fn into_config(self) -> Result<Config, Located> {
        let spool = self.spool.into_section()?;
        let (listener, listener_names) = listeners(self.listener, spool.segment_size)?;
        let server = self.server.into_section()?;
        let delivery = self.delivery.into_section(&server.hostname)?;
        let route: Vec<RouteSection> = self
            .route
            .iter()
            .map(|raw| raw.to_section(delivery.port))
            .collect::<Result<_, _>>()?;
        let domain = domains(self.domain, &route)?;
        let egress = RawEgress {
            source: self.source,
            pool: self.pool,
            pool_selection: self.pool_selection,
        }
        .into_egress(&delivery.helo_name, &listener_names)?;
        Ok(Config {
            server,
            spool,
            listener,
            relay: self.relay.into_section()?,
            auth: self.auth.into_section()?,
            dns: self.dns.into_section()?,
            delivery,
            accounting: self.accounting.into_section()?,
            route,
            domain,
            aliases: self.aliases.into_section()?,
            shaping: shaping_rules(self.shaping)?,
            backoff: backoff_rules(self.backoff)?,
            source: egress.source,
            pool: egress.pool,
            pool_selection: egress.pool_selection,
            dkim: dkim_entries(self.dkim)?,
            signing: self.signing.into_section()?,
            log: self.log.into_section(),
            admin: self.admin.into_section()?,
        })
    }
}

/// The `[[listener]]`s, each address and name used once, and their names.
fn listeners(
    raws: Vec<RawListener>,
    segment_size: u64,
) -> Result<(Vec<ListenerSection>, HashSet<String>), Located> {
    let mut seen = HashSet::new();
    let mut names = HashSet::new();
    let mut listener = Vec::with_capacity(raws.len());
    for raw in raws {
        let address_span = raw.address.span();
        if let Some(name) = &raw.name {
            valid(name.clone(), |name| check_name("listener", name))?;
            claim_name(&mut names, name, "[[listener]]")?;
        }
        let section = raw.into_section(segment_size)?;
        if !seen.insert(section.address) {
            return error_at(
                address_span,
                format!(
                    "listener address {} is already used by an earlier [[listener]]",
                    section.address
                ),
            );
        }
        listener.push(section);
    }
    Ok((listener, names))
}

impl RawServer {
    fn into_section(self) -> Result<ServerSection, Located> {
        let hostname = match self.hostname {
            Some(name) => valid(name, |name| check_hostname("hostname", name))?,
            None => super::system_hostname(),
        };
        let postmaster = match self.postmaster {
            Some(address) => valid(address, |a| check_mailbox("postmaster", a))?,
            None => String::new(),
        };
        Ok(ServerSection {
            hostname,
            shards: self.shards.unwrap_or(0),
            postmaster,
        })
    }
}

/// A mailbox mail can be sent to: `local@domain` as it stands in a path
/// (empty is allowed: none), with a domain name.
pub(super) fn check_mailbox(key: &'static str, address: &str) -> Result<(), String> {
    use crate::smtp::address::{parse_path, DomainKind, ReversePath};
    if address.is_empty() {
        return Ok(());
    }
    let path = format!("<{address}>");
    match parse_path(path.as_bytes(), false, false) {
        Ok((ReversePath::Mailbox(m), rest))
            if rest.is_empty() && m.domain_kind == DomainKind::Name && !m.source_route =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{key} {address:?} is not a mailbox with a domain (e.g. \"ops@example.com\")"
        )),
    }
}

/// A hostname must be a domain that can stand in EHLO and `Received:`.
pub(super) fn check_hostname(key: &'static str, name: &str) -> Result<(), String> {
    match is_domain_name(name) {
        true => Ok(()),
        false => Err(format!(
            "{key} {name:?} is not a valid domain name (letters, digits, hyphens and dots, e.g. \"mta.example.com\")"
        )),
    }
}

impl RawSpool {
    fn into_section(self) -> Result<SpoolSection, Located> {
        let segment_size = checked(self.segment_size, DEFAULT_SEGMENT_SIZE, |&size| {
            // Record offsets inside a segment are 32-bit.
            let max = spool_format::MAX_SEGMENT_SIZE - SEGMENT_SIZE_ALIGN;
            match (MIN_SEGMENT_SIZE..=max).contains(&size) && size % SEGMENT_SIZE_ALIGN == 0 {
                true => Ok(()),
                false => Err(format!(
                    "segment_size = {size} must be between {MIN_SEGMENT_SIZE} (1 MiB) and {max} (4 GiB - 4 KiB) and a multiple of {SEGMENT_SIZE_ALIGN}"
                )),
            }
        })?;
        Ok(SpoolSection {
            path: checked(
                self.path,
                PathBuf::from(DEFAULT_SPOOL_PATH),
                not_empty("path"),
            )?,
            segment_size,
            min_free_space: self.min_free_space.unwrap_or(DEFAULT_MIN_FREE_SPACE),
        })
    }
}

impl RawListener {
    fn into_section(self, segment_size: u64) -> Result<ListenerSection, Located> {
        let address = parse_address(&self.address)?;
        let tls = self.tls_settings()?;
        let defaults = ListenerSection::with_defaults(address);
        let max_message_size = checked(
            self.max_message_size,
            defaults.max_message_size,
            |&size| {
                match size > 0 && size < segment_size {
                true => Ok(()),
                false => Err(format!(
                    "max_message_size = {size} must be above 0 and below [spool] segment_size ({segment_size}): a message is stored in one segment"
                )),
            }
            },
        )?;
        Ok(ListenerSection {
            name: self.name.map(Spanned::into_inner),
            tls_cert: tls.0,
            tls_key: tls.1,
            implicit_tls: tls.2,
            max_message_size,
            max_recipients: checked(self.max_recipients, defaults.max_recipients, |&n| {
                match n >= MIN_MAX_RECIPIENTS {
                    true => Ok(()),
                    false => Err(format!(
                        "max_recipients = {n} is below the minimum of {MIN_MAX_RECIPIENTS} (RFC 5321 section 4.5.3.1.8)"
                    )),
                }
            })?,
            max_errors: checked(
                self.max_errors,
                defaults.max_errors,
                at_least("max_errors", 1),
            )?,
            max_junk_commands: checked(
                self.max_junk_commands,
                defaults.max_junk_commands,
                at_least("max_junk_commands", 1),
            )?,
            tls_handshake_timeout: timeout(
                self.tls_handshake_timeout,
                "tls_handshake_timeout",
                defaults.tls_handshake_timeout,
            )?,
            ipv6_prefix_length: checked(
                self.ipv6_prefix_length,
                defaults.ipv6_prefix_length,
                between("ipv6_prefix_length", 1, 128),
            )?,
            command_timeout: timeout(
                self.command_timeout,
                "command_timeout",
                defaults.command_timeout,
            )?,
            data_timeout: timeout(self.data_timeout, "data_timeout", defaults.data_timeout)?,
            session_timeout: timeout(
                self.session_timeout,
                "session_timeout",
                defaults.session_timeout,
            )?,
            min_data_rate: self.min_data_rate.unwrap_or(defaults.min_data_rate),
            max_connections: checked(
                self.max_connections,
                defaults.max_connections,
                at_least("max_connections", 1),
            )?,
            max_connections_per_ip: checked(
                self.max_connections_per_ip,
                defaults.max_connections_per_ip,
                at_least("max_connections_per_ip", 1),
            )?,
            ..defaults
        })
    }

    /// Certificate, key and implicit TLS: the certificate and key come as a
    /// pair, and implicit TLS needs them.
    #[allow(clippy::type_complexity)]
    fn tls_settings(&self) -> Result<(Option<PathBuf>, Option<PathBuf>, bool), Located> {
        let cert = self.tls_cert.as_ref();
        let key = self.tls_key.as_ref();
        for (key_name, path) in [("tls_cert", cert), ("tls_key", key)] {
            if let Some(path) = path.filter(|p| p.get_ref().as_os_str().is_empty()) {
                return error_at(
                    path.span(),
                    format!("{key_name} is empty: give a path to a PEM file"),
                );
            }
        }
        match (cert, key) {
            (Some(cert), None) => {
                return error_at(
                    cert.span(),
                    "tls_cert is set but tls_key is not: TLS needs both".into(),
                )
            }
            (None, Some(key)) => {
                return error_at(
                    key.span(),
                    "tls_key is set but tls_cert is not: TLS needs both".into(),
                )
            }
            _ => {}
        }
        let implicit = self.implicit_tls.as_ref();
        if let Some(flag) = implicit.filter(|flag| *flag.get_ref() && cert.is_none()) {
            return error_at(
                flag.span(),
                "implicit_tls = true needs tls_cert and tls_key".into(),
            );
        }
        Ok((
            cert.map(|c| c.get_ref().clone()),
            key.map(|k| k.get_ref().clone()),
            implicit.is_some_and(|flag| *flag.get_ref()),
        ))
    }
}

fn parse_address(address: &Spanned<String>) -> Result<SocketAddr, Located> {
    match address.get_ref().parse() {
        Ok(address) => Ok(address),
        Err(_) => error_at(
            address.span(),
            format!(
                "invalid listener address {:?}: expected IP:PORT such as \"127.0.0.1:2525\" or \"[::1]:2525\"",
                address.get_ref()
            ),
        ),
    }
}

impl RawAuth {
    fn into_section(self) -> Result<AuthSection, Located> {
        let defaults = AuthSection::default();
        Ok(AuthSection {
            users_file: optional(self.users_file, not_empty("users_file"))?,
            max_failures: self.max_failures.unwrap_or(defaults.max_failures),
            failure_window: timeout(
                self.failure_window,
                "failure_window",
                defaults.failure_window,
            )?,
            failure_delay: self.failure_delay.map_or(defaults.failure_delay, |d| d.0),
        })
    }
}

fn timeout(
    value: Option<Spanned<DurationSetting>>,
    key: &'static str,
    default: Duration,
) -> Result<Duration, Located> {
    Ok(nonzero(value, DurationSetting(default), key)?.0)
}

/// A duration key that may not be zero, or its default.
fn nonzero(
    value: Option<Spanned<DurationSetting>>,
    default: DurationSetting,
    key: &'static str,
) -> Result<DurationSetting, Located> {
    checked(value, default, positive(key))
}

impl RawRelay {
    fn into_section(self) -> Result<RelaySection, Located> {
        let Some(texts) = self.networks else {
            return Ok(RelaySection {
                networks: loopback_networks(),
            });
        };
        let networks = texts
            .iter()
            .map(|text| parsed(text, super::network::parse_network))
            .collect::<Result<_, _>>()?;
        Ok(RelaySection { networks })
    }
}

impl RawDns {
    fn into_section(self) -> Result<DnsSection, Located> {
        let defaults = DnsSection::default();
        let servers = match self.servers {
            None => defaults.servers,
            Some(texts) => texts
                .iter()
                .map(|text| parsed(text, dns_server))
                .collect::<Result<_, _>>()?,
        };
        Ok(DnsSection {
            servers,
            timeout: nonzero(self.timeout, defaults.timeout, "timeout")?,
            attempts: checked(self.attempts, defaults.attempts, between("attempts", 1, 10))?,
            randomize_case: self.randomize_case.unwrap_or(defaults.randomize_case),
        })
    }
}

/// A nameserver: an IP address with an optional port.
fn dns_server(text: &str) -> Result<SocketAddr, String> {
    let address = split_host_port(text).and_then(|(host, port)| match host.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, port.unwrap_or(DNS_PORT))),
        Err(_) => Err(format!("{host:?} is not an IP address")),
    });
    address.map_err(|reason| {
        format!(
            "invalid DNS server {text:?}: {reason}; expected an IP address and optional port, e.g. \"192.0.2.53\", \"192.0.2.53:5353\" or \"[2001:db8::53]:53\""
        )
    })
}

impl RawDelivery {
    fn into_section(self, hostname: &str) -> Result<DeliverySection, Located> {
        let defaults = DeliverySection::with_defaults(hostname.to_owned());
        let max_age = nonzero(self.max_age, defaults.max_age, "max_age")?;
        Ok(DeliverySection {
            paused: self.paused.unwrap_or(defaults.paused),
            port: port(self.port, defaults.port)?,
            max_mx_addresses: checked(
                self.max_mx_addresses,
                defaults.max_mx_addresses,
                at_least("max_mx_addresses", 1),
            )?,
            refuse_private_mx: self.refuse_private_mx.unwrap_or(defaults.refuse_private_mx),
            max_connections_per_destination: checked(
                self.max_connections_per_destination,
                defaults.max_connections_per_destination,
                at_least("max_connections_per_destination", 1),
            )?,
            max_messages_per_connection: checked(
                self.max_messages_per_connection,
                defaults.max_messages_per_connection,
                at_least("max_messages_per_connection", 1),
            )?,
            max_message_rate: delivery_rate(self.max_message_rate)?,
            max_connection_rate: delivery_rate(self.max_connection_rate)?,
            max_recipients_per_transaction: checked(
                self.max_recipients_per_transaction,
                defaults.max_recipients_per_transaction,
                recipients_per_transaction(),
            )?,
            retry: match self.retry {
                None => defaults.retry,
                Some(list) => retry_schedule(list)?,
            },
            max_age,
            tls: self.tls.unwrap_or(defaults.tls),
            tls_ca_file: optional(self.tls_ca_file, readable_file("tls_ca_file"))?,
            connect_timeout: nonzero(
                self.connect_timeout,
                defaults.connect_timeout,
                "connect_timeout",
            )?,
            command_timeout: nonzero(
                self.command_timeout,
                defaults.command_timeout,
                "command_timeout",
            )?,
            data_timeout: nonzero(self.data_timeout, defaults.data_timeout, "data_timeout")?,
            idle_timeout: nonzero(self.idle_timeout, defaults.idle_timeout, "idle_timeout")?,
            delay_notice: optional(self.delay_notice, before_max_age(max_age))?,
            helo_name: checked(self.helo_name, defaults.helo_name, |name| {
                check_hostname("helo_name", name)
            })?,
            default_backoff: self.default_backoff.unwrap_or(defaults.default_backoff),
        })
    }
}

/// A delay notice is for mail still being tried, so it must come before
/// the bounce at `max_age`.
fn before_max_age(max_age: DurationSetting) -> impl FnOnce(&DurationSetting) -> Result<(), String> {
    move |notice| match !notice.0.is_zero() && *notice < max_age {
        true => Ok(()),
        false => Err(format!(
            "delay_notice = \"{}\" must be longer than zero and shorter than max_age (\"{}\")",
            duration::format(notice.0),
            duration::format(max_age.0)
        )),
    }
}

fn port(value: Option<Spanned<u64>>, default: u16) -> Result<u16, Located> {
    let port = checked(
        value,
        u64::from(default),
        between("port", 1, u64::from(u16::MAX)),
    )?;
    // In range after the check above, so the fallback is never taken.
    Ok(u16::try_from(port).unwrap_or(default))
}

/// `[delivery] retry`: at least one interval, none of them zero (a zero
/// wait would retry a failing host in a tight loop).
fn retry_schedule(
    list: Spanned<Vec<Spanned<DurationSetting>>>,
) -> Result<Vec<DurationSetting>, Located> {
    let list = valid(list, |list| match list.is_empty() {
        true => Err("retry is empty: give at least one interval, e.g. [\"5m\", \"1h\"]".into()),
        false => Ok(()),
    })?;
    list.into_iter()
        .map(|interval| valid(interval, positive("each retry interval")))
        .collect()
}

impl RawRoute {
    fn to_section(&self, default_port: u16) -> Result<RouteSection, Located> {
        Ok(RouteSection {
            domain: parsed(&self.domain, str::parse::<RouteDomain>)?,
            relay: parsed(&self.relay, |text| RelayHost::parse(text, default_port))?,
        })
    }
}

/// Loopback only: the one relay policy that is safe on any machine.
pub(super) fn loopback_networks() -> Vec<IpNet> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    [
        (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
    ]
    .into_iter()
    .filter_map(|(addr, len)| super::network::network(addr, len).ok())
    .collect()
}
