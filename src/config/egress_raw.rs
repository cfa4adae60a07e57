//! `[[source]]`, `[[pool]]` and `[pool_selection]` as written, and their
//! conversion into the [`egress`](super::egress) model: defaults filled
//! (the implicit pool, the default pool, EHLO names) and every reference
//! between them checked, each error at the value it is about.
//!
//! It never looks at the machine: whether a source address is configured
//! here is a startup check (`preflight`), so a file can be checked on
//! another host.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::egress::{
    PoolMatcher, PoolMember, PoolRule, PoolSection, PoolSelectionSection, SourceSection,
    UnknownPool, DEFAULT_POOL_HEADER, DEFAULT_POOL_NAME, MAX_POOL_WEIGHT,
};
use super::raw::{check_hostname, error_at, parsed, rule_matcher, valid};
use super::route::is_domain_name;
use super::Located;
use crate::shaping::warmup::Warmup;

/// Longest source, pool or listener name: it appears in logs and metrics
/// labels, which should stay readable.
const MAX_NAME_LEN: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    name: Spanned<String>,
    address: Spanned<String>,
    ehlo: Option<Spanned<String>>,
    warmup: Option<Spanned<RawWarmup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWarmup {
    start: Spanned<String>,
    daily: Spanned<Vec<Spanned<u64>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    name: Spanned<String>,
    sources: Spanned<Vec<Spanned<RawMember>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    source: Spanned<String>,
    weight: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPoolSelection {
    header: Option<Spanned<String>>,
    default: Option<Spanned<String>>,
    unknown: Option<UnknownPool>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    sender_domain: Option<Spanned<String>>,
    auth_user: Option<Spanned<String>>,
    listener: Option<Spanned<String>>,
    pool: Spanned<String>,
}

/// The egress part of a file, as read.
pub(super) struct RawEgress {
    pub source: Vec<RawSource>,
    pub pool: Vec<Spanned<RawPool>>,
    pub pool_selection: Option<Spanned<RawPoolSelection>>,
}

/// The validated egress settings.
pub(super) struct Egress {
    pub source: Vec<SourceSection>,
    pub pool: Vec<PoolSection>,
    pub pool_selection: PoolSelectionSection,
}

impl RawEgress {
    /// `helo_name` is the effective `[delivery] helo_name`, the EHLO of a
    /// source that names none; `listeners` are the names rules may use.
    pub(super) fn into_egress(
        self,
        helo_name: &str,
        listeners: &HashSet<String>,
    ) -> Result<Egress, Located> {
        let source = sources(self.source, helo_name)?;
        if source.is_empty() {
            // Pools of nothing would silently send from the machine's own
            // address, which is what the operator wrote them to avoid.
            let stray = self.pool.first().map(|pool| (pool.span(), "[[pool]]"));
            let stray = stray.or(self.pool_selection.map(|s| (s.span(), "[pool_selection]")));
            if let Some((span, what)) = stray {
                return error_at(
                    span,
                    format!("{what} needs at least one [[source]] to choose from"),
                );
            }
            return Ok(Egress {
                source,
                pool: Vec::new(),
                pool_selection: PoolSelectionSection::without_sources(),
            });
        }
        let pool = pools(self.pool, &source)?;
        let pool_selection = match self.pool_selection {
            Some(raw) => raw.into_inner().into_section(&pool, listeners)?,
            None => selection_defaults(&pool),
        };
        Ok(Egress {
            source,
            pool,
            pool_selection,
        })
    }
}

/// A source, pool or listener name: short, and made of characters that
/// need no quoting in a header, a log line or a metrics label.
pub(super) fn check_name(what: &'static str, name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    match !name.is_empty() && name.len() <= MAX_NAME_LEN && name.chars().all(allowed) {
        true => Ok(()),
        false => Err(format!(
            "{what} name {name:?} is not valid: use 1 to {MAX_NAME_LEN} letters, digits, '_', '.' or '-'"
        )),
    }
}

/// Records `name` as taken, or the error at it when an earlier `table`
/// already has it.
pub(super) fn claim_name(
    seen: &mut HashSet<String>,
    name: &Spanned<String>,
    table: &'static str,
) -> Result<(), Located> {
    match seen.insert(name.get_ref().clone()) {
        true => Ok(()),
        false => error_at(
            name.span(),
            format!(
                "name {:?} is already used by an earlier {table}",
                name.get_ref()
            ),
        ),
    }
}

fn sources(raws: Vec<RawSource>, helo_name: &str) -> Result<Vec<SourceSection>, Located> {
    let mut seen = HashSet::new();
    let mut sources = Vec::with_capacity(raws.len());
    for raw in raws {
        let name = raw.name;
        valid(name.clone(), |name| check_name("source", name))?;
        claim_name(&mut seen, &name, "[[source]]")?;
        let ehlo = match raw.ehlo {
            Some(ehlo) => valid(ehlo, |name| check_hostname("ehlo", name))?,
            None => helo_name.to_owned(),
        };
        let warmup = match raw.warmup {
            Some(w) => Some(Arc::new(w.into_inner().into_warmup()?)),
            None => None,
        };
        sources.push(SourceSection {
            name: name.into_inner(),
            address: parsed(&raw.address, source_address)?,
            ehlo,
            warmup,
        });
    }
    Ok(sources)
}

impl RawWarmup {
    /// The schedule: a date that parses, and at least one day, each with
    /// room for at least one message.
    fn into_warmup(self) -> Result<Warmup, Located> {
        let daily = self.daily.get_ref();
        if daily.is_empty() {
            return error_at(
                self.daily.span(),
                "warmup daily is empty: give the most messages per destination for each day, e.g. [500, 1000, 2500]".to_owned(),
            );
        }
        if let Some(zero) = daily.iter().find(|d| *d.get_ref() == 0) {
            return error_at(
                zero.span(),
                "a warm-up day of 0 messages sends nothing: give at least 1 (leave the source out of its pools to stop it)".to_owned(),
            );
        }
        let daily = daily.iter().map(|d| *d.get_ref()).collect();
        parsed(&self.start, |start| Warmup::new(start, daily))
    }
}

/// An address outbound connections can bind to and that names one
/// interface: the wildcard would let the kernel pick (the very thing a
/// source exists to prevent), and a connection cannot come from a group or
/// broadcast address.
fn source_address(text: &str) -> Result<IpAddr, String> {
    let address: IpAddr = text.parse().map_err(|_| {
        format!(
            "invalid source address {text:?}: expected an IPv4 or IPv6 address such as \"203.0.113.10\" or \"2001:db8::10\""
        )
    })?;
    let why = if address.is_unspecified() {
        "unspecified"
    } else if address.is_multicast() {
        "a multicast address"
    } else if matches!(address, IpAddr::V4(v4) if v4.is_broadcast()) {
        "the broadcast address"
    } else {
        return Ok(address);
    };
    Err(format!(
        "source address {address} is {why}: give the address this machine's outbound mail must leave from"
    ))
}

/// The `[[pool]]`s, or the implicit one of every source.
fn pools(
    raws: Vec<Spanned<RawPool>>,
    sources: &[SourceSection],
) -> Result<Vec<PoolSection>, Located> {
    if raws.is_empty() {
        let every = sources.iter().map(|source| PoolMember {
            source: source.name.clone(),
            weight: 1,
        });
        return Ok(vec![PoolSection {
            name: DEFAULT_POOL_NAME.to_owned(),
            sources: every.collect(),
        }]);
    }
    let source_names: HashSet<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    let mut seen = HashSet::new();
    let mut ids = std::collections::HashMap::new();
    let mut pools = Vec::with_capacity(raws.len());
    for raw in raws {
        let raw = raw.into_inner();
        valid(raw.name.clone(), |name| check_name("pool", name))?;
        claim_name(&mut seen, &raw.name, "[[pool]]")?;
        // The spool records a message's pool by this 16-bit id: two pools
        // sharing one would be taken for each other after a restart.
        let id = spool_format::envelope::pool_id(raw.name.get_ref());
        if let Some(earlier) = ids.insert(id, raw.name.get_ref().clone()) {
            return error_at(
                raw.name.span(),
                format!(
                    "pool names {:?} and {earlier:?} have the same id in the spool ({id}): rename one of them",
                    raw.name.get_ref()
                ),
            );
        }
        let name = raw.name.into_inner();
        if raw.sources.get_ref().is_empty() {
            return error_at(
                raw.sources.span(),
                format!("pool {name:?} has no sources: list at least one, e.g. [{{ source = \"ip1\" }}]"),
            );
        }
        let members = raw.sources.into_inner();
        let mut in_pool = HashSet::new();
        let sources = members
            .into_iter()
            .map(|member| member.into_inner().into_member(&source_names, &mut in_pool))
            .collect::<Result<_, _>>()?;
        pools.push(PoolSection { name, sources });
    }
    Ok(pools)
}

impl RawMember {
    fn into_member(
        self,
        sources: &HashSet<&str>,
        in_pool: &mut HashSet<String>,
    ) -> Result<PoolMember, Located> {
        let name = self.source.get_ref();
        if !sources.contains(name.as_str()) {
            return error_at(
                self.source.span(),
                format!("source {name:?} is not the name of a [[source]]"),
            );
        }
        if !in_pool.insert(name.clone()) {
            return error_at(
                self.source.span(),
                format!("source {name:?} is already in this pool: give it once, with the weight it should have"),
            );
        }
        let weight = match self.weight {
            None => 1,
            Some(weight) => valid(weight, |&weight| {
                match (1..=MAX_POOL_WEIGHT).contains(&weight) {
                    true => Ok(()),
                    false => Err(format!(
                        "weight = {weight} must be between 1 and {MAX_POOL_WEIGHT}"
                    )),
                }
            })?,
        };
        Ok(PoolMember {
            source: self.source.into_inner(),
            weight,
        })
    }
}

/// `[pool_selection]` when the file has none.
fn selection_defaults(pools: &[PoolSection]) -> PoolSelectionSection {
    PoolSelectionSection {
        default: default_pool_name(pools),
        ..PoolSelectionSection::without_sources()
    }
}

/// The pool named "default" if there is one, else the first.
fn default_pool_name(pools: &[PoolSection]) -> String {
    let named = pools.iter().find(|pool| pool.name == DEFAULT_POOL_NAME);
    named
        .or(pools.first())
        .map_or_else(String::new, |pool| pool.name.clone())
}

/// The value if it names one of `pools`, else the error at it.
fn known_pool(
    key: &'static str,
    name: Spanned<String>,
    pools: &[PoolSection],
) -> Result<String, Located> {
    valid(name, |name| {
        match pools.iter().any(|pool| pool.name == *name) {
            true => Ok(()),
            false => Err(format!("{key} = {name:?} is not the name of a [[pool]]")),
        }
    })
}

/// RFC 5322 section 3.6.8: a field name is one or more printable ASCII
/// characters other than the colon (the caller says what "" means).
pub(super) fn is_field_name(name: &str) -> bool {
    let ftext = |b: u8| (33..=126).contains(&b) && b != b':';
    name.bytes().all(ftext)
}

fn check_header(name: &str) -> Result<(), String> {
    match is_field_name(name) {
        true => Ok(()),
        false => Err(format!(
            "header {name:?} is not a valid header field name: printable ASCII without spaces or ':', e.g. \"{DEFAULT_POOL_HEADER}\"; \"\" turns header selection off"
        )),
    }
}

impl RawPoolSelection {
    fn into_section(
        self,
        pools: &[PoolSection],
        listeners: &HashSet<String>,
    ) -> Result<PoolSelectionSection, Located> {
        let defaults = selection_defaults(pools);
        let header = match self.header {
            Some(header) => valid(header, |name| check_header(name))?,
            None => defaults.header,
        };
        let default = match self.default {
            Some(name) => known_pool("default", name, pools)?,
            None => defaults.default,
        };
        let mut matchers = HashSet::new();
        let rules = self
            .rules
            .into_iter()
            .map(|rule| rule_of(rule, pools, listeners, &mut matchers))
            .collect::<Result<_, _>>()?;
        Ok(PoolSelectionSection {
            header,
            default,
            unknown: self.unknown.unwrap_or(defaults.unknown),
            rules,
        })
    }
}

/// Reads one matcher's value; the listener names are for `listener`.
type ReadMatcher = fn(&str, &HashSet<String>) -> Result<PoolMatcher, String>;

/// One rule: exactly one matcher, valid and not already taken by an
/// earlier rule (two rules for one sender would make the file's order
/// decide silently), and a known pool.
fn rule_of(
    rule: Spanned<RawRule>,
    pools: &[PoolSection],
    listeners: &HashSet<String>,
    taken: &mut HashSet<PoolMatcher>,
) -> Result<PoolRule, Located> {
    let rule_span = rule.span();
    let rule = rule.into_inner();
    let given: [(&str, _, ReadMatcher); 3] = [
        ("sender_domain", rule.sender_domain, sender_domain),
        ("auth_user", rule.auth_user, auth_user),
        ("listener", rule.listener, listener),
    ];
    let matcher = rule_matcher(
        rule_span,
        given,
        ("rule", "one of sender_domain, auth_user or listener"),
        |read, text| read(text, listeners),
        taken,
    )?;
    Ok(PoolRule {
        matcher,
        pool: known_pool("pool", rule.pool, pools)?,
    })
}

/// Lower-cased, because domains compare without regard to case.
fn sender_domain(text: &str, _: &HashSet<String>) -> Result<PoolMatcher, String> {
    match is_domain_name(text) {
        true => Ok(PoolMatcher::SenderDomain(text.to_ascii_lowercase())),
        false => Err(format!(
            "sender_domain {text:?} is not a valid domain name, e.g. \"news.example.com\""
        )),
    }
}

/// A name no users file can hold would be a rule that never matches.
fn auth_user(text: &str, _: &HashSet<String>) -> Result<PoolMatcher, String> {
    match crate::auth::invalid_user_name(text) {
        None => Ok(PoolMatcher::AuthUser(text.to_owned())),
        Some(why) => Err(format!("auth_user {text:?} can never match: {why}")),
    }
}

fn listener(text: &str, listeners: &HashSet<String>) -> Result<PoolMatcher, String> {
    match listeners.contains(text) {
        true => Ok(PoolMatcher::Listener(text.to_owned())),
        false => Err(format!(
            "listener {text:?} is not the name of a [[listener]] (give that listener name = {text:?})"
        )),
    }
}
