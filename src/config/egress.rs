//! Egress sources and IP pools: which local address and EHLO name a
//! message leaves from, as the config states it.
//!
//! This module owns the validated model of `[[source]]`, `[[pool]]` and
//! `[pool_selection]`, their defaults, and the one reading of the selection
//! rules (header, then rules by kind, then the default pool) so that every
//! caller picks a message's pool the same way. It never binds a socket,
//! reads a message or picks a source inside a pool by weight: delivery does
//! that with these values. The file format and its checks live in
//! `egress_raw`.

use std::net::IpAddr;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::shaping::warmup::Warmup;

/// The pool made of every source, weight 1 each, when a file gives sources
/// but no `[[pool]]`; also the pool `default` prefers when it is not set.
pub const DEFAULT_POOL_NAME: &str = "default";
/// `[pool_selection] header` when a file does not set it.
pub const DEFAULT_POOL_HEADER: &str = "X-Petrel-Pool";
/// Largest pool member `weight`: shares finer than 1 in 10,000 mean nothing
/// for mail, and the bound keeps a pool's total weight far from overflow.
pub const MAX_POOL_WEIGHT: u32 = 10_000;

/// One `[[source]]`: a local address outbound connections bind to, and
/// the name they give in EHLO from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceSection {
    /// Unique among sources; what pools and logs call it.
    pub name: String,
    /// Bound before connect; configured on this machine (a startup check).
    pub address: IpAddr,
    /// EHLO name from this address; `[delivery] helo_name` when the file
    /// gives none.
    pub ehlo: String,
    /// The most messages per destination on each day of the source's
    /// warm-up; none: the source is warm.
    pub warmup: Option<Arc<Warmup>>,
}

/// One `[[pool]]`: sources that share a kind of mail, chosen by weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSection {
    /// Unique among pools; what the header, rules and `default` name.
    pub name: String,
    /// At least one; each source at most once.
    pub sources: Vec<PoolMember>,
}

/// A source's share of its pool: `weight` out of the pool's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolMember {
    /// The `name` of a `[[source]]`.
    pub source: String,
    /// 1 to [`MAX_POOL_WEIGHT`].
    pub weight: u32,
}

/// `[pool_selection]`: how a message's pool is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSelectionSection {
    /// Header field whose value names the pool; removed before delivery.
    /// Empty: no header selection.
    pub header: String,
    /// The pool of a message that no header or rule places. Empty only
    /// when there are no sources.
    pub default: String,
    /// What a header naming no pool gets.
    pub unknown: UnknownPool,
    /// Tried by kind, not file order: sender domain, then AUTH user, then
    /// listener; no two rules share a matcher, so at most one of each kind
    /// matches.
    pub rules: Vec<PoolRule>,
}

/// What happens to a message whose pool header names no pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPool {
    /// 550 5.7.0 at the end of DATA: a typo must not send mail from the
    /// wrong addresses.
    #[default]
    Reject,
    /// Send it from the default pool.
    Default,
}

/// One entry of `[pool_selection] rules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolRule {
    #[serde(flatten)]
    pub matcher: PoolMatcher,
    /// The `name` of a `[[pool]]`.
    pub pool: String,
}

/// What a rule looks at. Written as one key of the rule (`sender_domain =
/// "..."`), which is how the flattened serialization prints it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMatcher {
    /// The envelope sender's domain, lower-cased; matched without regard
    /// to case, exactly (subdomains are other domains).
    SenderDomain(String),
    /// The user the client authenticated as, byte for byte.
    AuthUser(String),
    /// The `name` of the `[[listener]]` the message arrived on.
    Listener(String),
}

/// What is known of a message when its pool is chosen by rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolQuery<'a> {
    /// Domain of the envelope sender; none for the null sender.
    pub sender_domain: Option<&'a str>,
    /// AUTH identity; none for an unauthenticated session.
    pub auth_user: Option<&'a str>,
    /// Name of the receiving listener; none when it has no name.
    pub listener: Option<&'a str>,
}

/// The pool a message's header asks for, as `unknown` resolves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderPool<'a> {
    /// This pool (the one named, or the default under `unknown =
    /// "default"`).
    Pool(&'a str),
    /// The header names no pool and `unknown = "reject"`: 550 5.7.0.
    Reject,
}

impl PoolSelectionSection {
    /// The selection of a config without sources: nothing to select.
    pub fn without_sources() -> PoolSelectionSection {
        PoolSelectionSection {
            header: DEFAULT_POOL_HEADER.to_owned(),
            default: String::new(),
            unknown: UnknownPool::Reject,
            rules: Vec::new(),
        }
    }

    /// Whether this is the selection of a config without sources (the
    /// only one whose default pool is empty).
    pub fn is_inactive(&self) -> bool {
        self.default.is_empty()
    }

    /// The header field to read (and remove), if header selection is on.
    /// None without sources: such a config leaves messages as they are.
    pub fn header_name(&self) -> Option<&str> {
        Some(self.header.as_str()).filter(|name| !name.is_empty() && !self.is_inactive())
    }

    /// The pool the rules give `query`, else the default pool (empty
    /// without sources). Kinds are
    /// tried in a fixed order, so the order of rules in the file does not
    /// matter.
    pub fn pool_by_rules(&self, query: PoolQuery<'_>) -> &str {
        let by = |wanted: Option<&str>, matches: fn(&PoolMatcher, &str) -> bool| {
            let wanted = wanted?;
            let rule = self
                .rules
                .iter()
                .find(|rule| matches(&rule.matcher, wanted))?;
            Some(rule.pool.as_str())
        };
        by(query.sender_domain, |matcher, domain| {
            matches!(matcher, PoolMatcher::SenderDomain(d) if d.eq_ignore_ascii_case(domain))
        })
        .or_else(|| {
            by(query.auth_user, |matcher, user| {
                matches!(matcher, PoolMatcher::AuthUser(u) if u == user)
            })
        })
        .or_else(|| {
            by(query.listener, |matcher, name| {
                matches!(matcher, PoolMatcher::Listener(l) if l == name)
            })
        })
        .unwrap_or(&self.default)
    }
}

impl PoolMatcher {
    /// The key this matcher is written as in a rule.
    pub fn key(&self) -> &'static str {
        match self {
            PoolMatcher::SenderDomain(_) => "sender_domain",
            PoolMatcher::AuthUser(_) => "auth_user",
            PoolMatcher::Listener(_) => "listener",
        }
    }
}

impl super::Config {
    /// The `[[source]]` named `name`.
    pub fn source(&self, name: &str) -> Option<&SourceSection> {
        self.source.iter().find(|source| source.name == name)
    }

    /// The `[[pool]]` named `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolSection> {
        self.pool.iter().find(|pool| pool.name == name)
    }

    /// The pool for mail no header or rule places; none without sources,
    /// when mail leaves from the machine's own address.
    pub fn default_pool(&self) -> Option<&PoolSection> {
        self.pool(&self.pool_selection.default)
    }

    /// The pool a header value names, with `unknown` applied; only asked
    /// when there are sources. Surrounding
    /// whitespace (the space after the colon, folding) is not part of the
    /// name; names are compared exactly.
    pub fn header_pool(&self, value: &str) -> HeaderPool<'_> {
        let selection = &self.pool_selection;
        match (self.pool(value.trim()), selection.unknown) {
            (Some(pool), _) => HeaderPool::Pool(&pool.name),
            (None, UnknownPool::Default) => HeaderPool::Pool(&selection.default),
            (None, UnknownPool::Reject) => HeaderPool::Reject,
        }
    }
}
