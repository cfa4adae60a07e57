//! `[[shaping]]` and the `[delivery]` rates as written, and their
//! conversion into the [`shaping`](super::shaping) model: each rule's one
//! matcher read and normalised, no two rules on the same matcher, every
//! limit in range, each error at the value it is about.
//!
//! It never decides which rule applies to a destination: that reading
//! lives in `shaping`, so the checks here and the matching there cannot
//! drift into two meanings of one pattern.

use std::collections::HashSet;
use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

use super::raw::{at_least, between, error_at, optional, parsed, rule_matcher};
use super::route::{is_domain_name, RouteDomain};
use super::shaping::{without_root, ShapingMatch, ShapingSection, MAX_RECIPIENTS_PER_TRANSACTION};
use super::Located;
use crate::shaping::rate::Rate;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShaping {
    domain: Option<Spanned<String>>,
    mx: Option<Spanned<String>>,
    max_connections: Option<Spanned<usize>>,
    max_messages_per_connection: Option<Spanned<usize>>,
    max_message_rate: Option<Spanned<String>>,
    max_connection_rate: Option<Spanned<String>>,
    max_recipients_per_transaction: Option<Spanned<usize>>,
}

/// A `[delivery]` rate: none when omitted or `""` (no limit).
pub(super) fn delivery_rate(value: Option<Spanned<String>>) -> Result<Option<Rate>, Located> {
    match value {
        Some(text) if !text.get_ref().is_empty() => parsed(&text, Rate::parse).map(Some),
        _ => Ok(None),
    }
}

/// A rule's rate: none when omitted. `""` is refused: in a rule it could
/// only mean "no limit" or "the [delivery] value", and guessing wrong
/// either floods a destination or throttles it for nothing.
fn rule_rate(key: &'static str, value: Option<Spanned<String>>) -> Result<Option<Rate>, Located> {
    match value {
        Some(text) if text.get_ref().is_empty() => error_at(
            text.span(),
            format!("{key} = \"\" in a [[shaping]] rule: omit the key to use [delivery] {key}, or give a rate such as \"600/min\""),
        ),
        value => delivery_rate(value),
    }
}

/// The `[[shaping]]` rules in file order, no two on the same matcher (the
/// file's order would then decide silently which limits hold).
pub(super) fn shaping_rules(
    raws: Vec<Spanned<RawShaping>>,
) -> Result<Vec<ShapingSection>, Located> {
    let mut taken = HashSet::new();
    raws.into_iter()
        .map(|raw| rule_of(raw, &mut taken))
        .collect()
}

/// Reads one matcher's value.
type ReadMatcher = fn(&str) -> Result<ShapingMatch, String>;

fn rule_of(
    raw: Spanned<RawShaping>,
    taken: &mut HashSet<ShapingMatch>,
) -> Result<ShapingSection, Located> {
    let span = raw.span();
    let raw = raw.into_inner();
    let given: [(&str, _, ReadMatcher); 2] = [
        ("domain", raw.domain, domain_matcher),
        ("mx", raw.mx, mx_matcher),
    ];
    let matcher = rule_matcher(
        span,
        given,
        (
            "[[shaping]] rule",
            "domain (a recipient domain) or mx (an MX host name pattern)",
        ),
        |read, text| read(text),
        taken,
    )?;
    Ok(ShapingSection {
        matcher,
        max_connections: optional(raw.max_connections, at_least("max_connections", 1))?,
        max_messages_per_connection: optional(
            raw.max_messages_per_connection,
            at_least("max_messages_per_connection", 1),
        )?,
        max_message_rate: rule_rate("max_message_rate", raw.max_message_rate)?,
        max_connection_rate: rule_rate("max_connection_rate", raw.max_connection_rate)?,
        max_recipients_per_transaction: optional(
            raw.max_recipients_per_transaction,
            recipients_per_transaction(),
        )?,
    })
}

/// The range of `max_recipients_per_transaction`, in `[delivery]` and in
/// rules alike.
pub(super) fn recipients_per_transaction() -> impl FnOnce(&usize) -> Result<(), String> {
    between(
        "max_recipients_per_transaction",
        1,
        MAX_RECIPIENTS_PER_TRANSACTION,
    )
}

/// A recipient domain, or `.parent` for its subdomains, read as a
/// `[[route]]` domain is; `"*"` is what `[delivery]` already covers.
fn domain_matcher(text: &str) -> Result<ShapingMatch, String> {
    let expected =
        "expected a recipient domain such as \"gmail.com\", or \".example.com\" for its subdomains";
    match RouteDomain::from_str(without_root(text)) {
        _ if text.is_empty() => Err(format!("domain is empty: {expected}")),
        Ok(RouteDomain::Any) => Err(format!(
            "domain = \"*\" would shape every domain: set the [delivery] limits instead, or {expected}"
        )),
        Ok(domain) => Ok(ShapingMatch::Domain(domain.to_string())),
        Err(_) => Err(format!("invalid shaping domain {text:?}: {expected}")),
    }
}

/// An MX host name, or `*.` and a domain for every host under it.
fn mx_matcher(text: &str) -> Result<ShapingMatch, String> {
    let expected = "expected an MX host name such as \"mx.example.com\", or \"*.google.com\" for every host under google.com";
    let pattern = without_root(text).to_ascii_lowercase();
    let name = pattern.strip_prefix("*.").unwrap_or(&pattern);
    if text.is_empty() {
        Err(format!("mx is empty: {expected}"))
    } else if name.contains('*') {
        Err(format!(
            "mx pattern {text:?} has a '*' that is not a leading \"*.\": {expected}"
        ))
    } else if !is_domain_name(name) {
        Err(format!("invalid mx pattern {text:?}: {expected}"))
    } else {
        Ok(ShapingMatch::Mx(pattern))
    }
}
