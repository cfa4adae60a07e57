//! The file as written: every key optional and carrying its byte span, so
//! that a value that parses but makes no sense (`max_recipients = 50`) is
//! reported at its own line and column. Conversion fills in defaults and
//! checks values; the result is the plain [`Config`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    AuthSection, Config, DeliverySection, DurationSetting, IpNet, ListenerSection, Located,
    RelaySection, ServerSection, SpoolSection, DEFAULT_MIN_FREE_SPACE, DEFAULT_SEGMENT_SIZE,
    DEFAULT_SPOOL_PATH, MIN_MAX_RECIPIENTS, MIN_SEGMENT_SIZE, SEGMENT_SIZE_ALIGN,
};

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
    delivery: RawDelivery,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    hostname: Option<Spanned<String>>,
    shards: Option<usize>,
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
    address: Spanned<String>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
    implicit_tls: Option<Spanned<bool>>,
    max_message_size: Option<Spanned<u64>>,
    max_recipients: Option<Spanned<usize>>,
    max_errors: Option<Spanned<u32>>,
    command_timeout: Option<Spanned<DurationSetting>>,
    data_timeout: Option<Spanned<DurationSetting>>,
    session_timeout: Option<Spanned<DurationSetting>>,
    min_data_rate: Option<u64>,
    max_connections: Option<Spanned<usize>>,
    max_connections_per_ip: Option<Spanned<usize>>,
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
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    paused: Option<bool>,
}

fn error_at<T>(span: std::ops::Range<usize>, message: String) -> Result<T, Located> {
    Err(Located {
        span: Some(span),
        message,
    })
}

/// The value if present (after `check`), else `default`.
fn checked<T>(
    value: Option<Spanned<T>>,
    default: T,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, Located> {
    match value {
        None => Ok(default),
        Some(value) => match check(value.get_ref()) {
            Ok(()) => Ok(value.into_inner()),
            Err(message) => error_at(value.span(), message),
        },
    }
}

fn at_least<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    min: T,
) -> impl FnOnce(&T) -> Result<(), String> {
    move |value| match *value >= min {
        true => Ok(()),
        false => Err(format!("{key} = {value} is below the minimum of {min}")),
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
        let mut seen = HashSet::new();
        let mut listener = Vec::with_capacity(self.listener.len());
        for raw in self.listener {
            let address_span = raw.address.span();
            let section = raw.into_section(spool.segment_size)?;
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
        Ok(Config {
            server: self.server.into_section()?,
            spool,
            listener,
            relay: self.relay.into_section()?,
            auth: AuthSection {
                users_file: match self.auth.users_file {
                    None => None,
                    Some(file) => Some(checked(
                        Some(file),
                        PathBuf::new(),
                        not_empty("users_file"),
                    )?),
                },
            },
            delivery: DeliverySection {
                paused: self.delivery.paused.unwrap_or(true),
            },
        })
    }
}

impl RawServer {
    fn into_section(self) -> Result<ServerSection, Located> {
        let hostname = match self.hostname {
            Some(name) => checked(Some(name), String::new(), |name| check_hostname(name))?,
            None => super::system_hostname(),
        };
        Ok(ServerSection {
            hostname,
            shards: self.shards.unwrap_or(0),
        })
    }
}

/// A hostname must be a domain that can stand in EHLO and `Received:`:
/// dot-separated labels of letters, digits and inner hyphens.
fn check_hostname(name: &str) -> Result<(), String> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    match name.len() <= 253 && name.split('.').all(label_ok) {
        true => Ok(()),
        false => Err(format!(
            "hostname {name:?} is not a valid domain name (letters, digits, hyphens and dots, e.g. \"mta.example.com\")"
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

fn timeout(
    value: Option<Spanned<DurationSetting>>,
    key: &'static str,
    default: Duration,
) -> Result<Duration, Located> {
    let setting = checked(value, DurationSetting(default), |setting| {
        match setting.0.is_zero() {
            true => Err(format!("{key} must be longer than zero")),
            false => Ok(()),
        }
    })?;
    Ok(setting.0)
}

impl RawRelay {
    fn into_section(self) -> Result<RelaySection, Located> {
        let Some(texts) = self.networks else {
            return Ok(RelaySection {
                networks: loopback_networks(),
            });
        };
        let mut networks = Vec::with_capacity(texts.len());
        for text in texts {
            match text.get_ref().parse::<IpNet>() {
                Ok(net) => networks.push(net),
                Err(e) => return error_at(text.span(), e.to_string()),
            }
        }
        Ok(RelaySection { networks })
    }
}

/// Loopback only: the one relay policy that is safe on any machine.
fn loopback_networks() -> Vec<IpNet> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    [
        (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
    ]
    .into_iter()
    .filter_map(|(addr, len)| IpNet::new(addr, len).ok())
    .collect()
}
