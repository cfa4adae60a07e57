//! Per-destination shaping, as the config states it: the `[[shaping]]`
//! rules, the `[delivery]` limits they fall back to, and the one reading of
//! which rule applies to a recipient domain or a set of MX hosts.
//!
//! This module owns the validated model of those limits, the choice of the
//! most specific rule, and the filling of a rule's omitted limits from
//! `[delivery]`, so that every caller shapes a destination the same way.
//! It never counts connections, takes a rate token or resolves a name:
//! delivery does that with these values. The file format and its checks
//! live in `shaping_raw`.

use std::cmp::Reverse;

use serde::{Serialize, Serializer};

use super::route::is_subdomain_of;
use crate::shaping::rate::Rate;

/// `[delivery] max_recipients_per_transaction` when a file does not set it:
/// what RFC 5321 section 4.5.3.1.8 obliges every server to accept.
pub const DEFAULT_RECIPIENTS_PER_TRANSACTION: usize = 100;
/// Largest `max_recipients_per_transaction`: servers that take more in one
/// transaction are rare, and one failed transaction should not defer a
/// whole mailing list.
pub const MAX_RECIPIENTS_PER_TRANSACTION: usize = 1000;

/// One `[[shaping]]`: limits for the destinations its matcher selects.
/// A limit the file omits is none here and `[delivery]`'s in [`Shape`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShapingSection {
    #[serde(flatten)]
    pub matcher: ShapingMatch,
    /// Open connections to one destination from one source, over all
    /// shards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages_per_connection: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "rate_text")]
    pub max_message_rate: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "rate_text")]
    pub max_connection_rate: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_recipients_per_transaction: Option<usize>,
}

/// What a `[[shaping]]` rule applies to. Written as one key of the rule
/// (`domain = "..."` or `mx = "..."`), which is how the flattened
/// serialization prints it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapingMatch {
    /// A recipient domain, lower-cased, without a trailing dot:
    /// `"gmail.com"` is that domain only, `".example.com"` every subdomain
    /// of example.com (as in `[[route]]`).
    Domain(String),
    /// An MX host name pattern, lower-cased, without a trailing dot:
    /// `"*.google.com"` is every host under google.com, a pattern without
    /// `*` that one host. Every domain whose MX hosts match shares the
    /// rule's budget.
    Mx(String),
}

/// The effective limits of one rule (or of `[delivery]` alone), every one
/// filled, per egress source and destination over all shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub max_connections: usize,
    pub max_messages_per_connection: usize,
    /// None: no limit.
    pub max_message_rate: Option<Rate>,
    /// None: no limit.
    pub max_connection_rate: Option<Rate>,
    pub max_recipients_per_transaction: usize,
}

/// A rate as its text (`"600/min"`), none as `""`: the form the file
/// gives it in, so a printed config reads back the same.
pub(super) fn rate_text<S: Serializer>(
    rate: &Option<Rate>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match rate {
        Some(rate) => serializer.collect_str(rate),
        None => serializer.serialize_str(""),
    }
}

/// A name as DNS may give it: the trailing dot (the root) is not part of
/// what rules compare.
pub(super) fn without_root(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

impl ShapingMatch {
    /// The key this matcher is written as in a rule.
    pub fn key(&self) -> &'static str {
        match self {
            ShapingMatch::Domain(_) => "domain",
            ShapingMatch::Mx(_) => "mx",
        }
    }

    /// How specifically this `domain` rule matches `domain`, if it does:
    /// an exact rule above any subdomain rule, a longer parent above a
    /// shorter one. None for an `mx` rule.
    fn domain_rank(&self, domain: &str) -> Option<Rank> {
        let ShapingMatch::Domain(pattern) = self else {
            return None;
        };
        rank(pattern.strip_prefix('.'), pattern, domain)
    }

    /// How specifically this `mx` rule matches `host`, if it does: an exact
    /// host above any wildcard, a longer pattern above a shorter one.
    fn mx_rank(&self, host: &str) -> Option<Rank> {
        let ShapingMatch::Mx(pattern) = self else {
            return None;
        };
        rank(pattern.strip_prefix("*."), pattern, host)
    }
}

/// The rank of `pattern` for `name`: `parent` is the part after the
/// pattern's wildcard prefix, none when the pattern names one name.
fn rank(parent: Option<&str>, pattern: &str, name: &str) -> Option<Rank> {
    let name = without_root(name);
    let matched = match parent {
        Some(parent) => is_subdomain_of(name, parent),
        None => name.eq_ignore_ascii_case(pattern),
    };
    matched.then_some((parent.is_none(), pattern.len()))
}

impl super::Config {
    /// The index in `shaping` of the `domain` rule for mail to `domain`:
    /// the exact rule, else the subdomain rule with the longest parent;
    /// none when no rule names it. Case and a trailing dot do not matter.
    pub fn shaping_for_domain(&self, domain: &str) -> Option<usize> {
        let found = self.most_specific(|rule| rule.matcher.domain_rank(domain));
        found.map(|(_, index)| index)
    }

    /// The index in `shaping` of the `mx` rule matching any of `hosts`
    /// (a domain's MX host names): the most specific pattern that matches
    /// one of them, an exact host before a wildcard and a longer pattern
    /// before a shorter one, the earlier rule on a tie.
    pub fn shaping_for_mx<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) -> Option<usize> {
        let per_host = hosts
            .into_iter()
            .filter_map(|host| self.most_specific(|rule| rule.matcher.mx_rank(host)));
        per_host.max_by_key(precedence).map(|(_, index)| index)
    }

    /// The limits of rule `rule` (an index from [`shaping_for_domain`] or
    /// [`shaping_for_mx`]) with the ones it omits taken from `[delivery]`;
    /// none, or an index that names no rule: `[delivery]` alone.
    ///
    /// [`shaping_for_domain`]: super::Config::shaping_for_domain
    /// [`shaping_for_mx`]: super::Config::shaping_for_mx
    pub fn shape(&self, rule: Option<usize>) -> Shape {
        let delivery = &self.delivery;
        let base = Shape {
            max_connections: delivery.max_connections_per_destination,
            max_messages_per_connection: delivery.max_messages_per_connection,
            max_message_rate: delivery.max_message_rate,
            max_connection_rate: delivery.max_connection_rate,
            max_recipients_per_transaction: delivery.max_recipients_per_transaction,
        };
        let Some(rule) = rule.and_then(|index| self.shaping.get(index)) else {
            return base;
        };
        Shape {
            max_connections: rule.max_connections.unwrap_or(base.max_connections),
            max_messages_per_connection: rule
                .max_messages_per_connection
                .unwrap_or(base.max_messages_per_connection),
            max_message_rate: rule.max_message_rate.or(base.max_message_rate),
            max_connection_rate: rule.max_connection_rate.or(base.max_connection_rate),
            max_recipients_per_transaction: rule
                .max_recipients_per_transaction
                .unwrap_or(base.max_recipients_per_transaction),
        }
    }

    /// The rule `rank` ranks highest, with its rank and index.
    fn most_specific(
        &self,
        rank: impl Fn(&ShapingSection) -> Option<Rank>,
    ) -> Option<(Rank, usize)> {
        let ranked = self.shaping.iter().enumerate();
        let ranked = ranked.filter_map(|(index, rule)| Some((rank(rule)?, index)));
        ranked.max_by_key(precedence)
    }
}

/// How specifically a rule matches a name: whether it names that one name
/// (rather than a parent's subdomains), then the pattern's length.
type Rank = (bool, usize);

/// The order of ranked rules: the higher rank first, then, between equals,
/// the earlier rule in the file, so the choice never depends on the order
/// DNS lists hosts in.
fn precedence(&(rank, index): &(Rank, usize)) -> (Rank, Reverse<usize>) {
    (rank, Reverse(index))
}
