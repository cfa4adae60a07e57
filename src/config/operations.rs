//! `[log]` and `[admin]`: how much petrel says about each message, and
//! where operators reach its metrics and queue API.
//!
//! Owns the validated model of both sections and their defaults, and
//! their conversion from the file (each error at its value). It never
//! opens a socket or a log: the admin server and the logging do.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::network::parse_network;
use super::raw::parsed;
use super::{IpNet, Located};

/// `[admin] address` default.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9925";

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogSection {
    /// One line per message accepted and per recipient's outcome
    /// (delivered, deferred, bounced); off for very high volumes, where
    /// the accounting log and the metrics tell the story.
    pub messages: bool,
}

impl Default for LogSection {
    fn default() -> LogSection {
        LogSection { messages: true }
    }
}

/// `[admin]`: the HTTP endpoint of `/metrics` and the queue API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminSection {
    /// Where it listens; none (`""` in the file): no admin endpoint.
    #[serde(serialize_with = "super::text_or_empty")]
    pub address: Option<SocketAddr>,
    /// Clients allowed to use it; loopback unless set.
    pub allow: Vec<IpNet>,
}

impl Default for AdminSection {
    fn default() -> AdminSection {
        AdminSection {
            address: DEFAULT_ADMIN_ADDRESS.parse().ok(),
            allow: super::raw::loopback_networks(),
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    messages: Option<bool>,
}

impl RawLog {
    pub(super) fn into_section(self) -> LogSection {
        LogSection {
            messages: self.messages.unwrap_or(true),
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    address: Option<Spanned<String>>,
    allow: Option<Vec<Spanned<String>>>,
}

impl RawAdmin {
    pub(super) fn into_section(self) -> Result<AdminSection, Located> {
        let defaults = AdminSection::default();
        let address = match self.address {
            None => defaults.address,
            Some(text) if text.get_ref().is_empty() => None,
            Some(text) => Some(parsed(&text, admin_address)?),
        };
        let allow = match self.allow {
            None => defaults.allow,
            Some(texts) => texts
                .iter()
                .map(|text| parsed(text, parse_network))
                .collect::<Result<_, _>>()?,
        };
        Ok(AdminSection { address, allow })
    }
}

fn admin_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "invalid admin address {text:?}: expected IP:PORT such as \"{DEFAULT_ADMIN_ADDRESS}\", or \"\" for no admin endpoint"
        )
    })
}
