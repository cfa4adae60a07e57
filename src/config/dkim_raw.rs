//! `[[dkim]]` and `[signing]` as written, and their checks: names that
//! can stand in DNS, known algorithms and canonicalizations, a header
//! list that signs `From`, each error at the value it is about.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::dkim::{DkimSection, SigningSection, DEFAULT_SIGNING_THREADS, MAX_SIGNING_THREADS};
use super::raw::{checked, error_at, optional, parsed, valid};
use super::route::is_domain_name;
use super::{DurationSetting, Located};
use crate::dkim::{Algorithm, Canonicalization, DEFAULT_HEADERS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkim {
    domain: Spanned<String>,
    selector: Spanned<String>,
    private_key: Spanned<PathBuf>,
    algorithm: Spanned<String>,
    sender_domains: Option<Vec<Spanned<String>>>,
    headers: Option<Spanned<Vec<Spanned<String>>>>,
    canonicalization: Option<Spanned<String>>,
    expire: Option<Spanned<DurationSetting>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigning {
    key_dir: Option<Spanned<PathBuf>>,
    threads: Option<Spanned<usize>>,
}

impl RawSigning {
    pub(super) fn into_section(self) -> Result<SigningSection, Located> {
        Ok(SigningSection {
            key_dir: self
                .key_dir
                .map(Spanned::into_inner)
                .filter(|p| !p.as_os_str().is_empty()),
            threads: checked(self.threads, DEFAULT_SIGNING_THREADS, |&n| {
                match n <= MAX_SIGNING_THREADS {
                    true => Ok(()),
                    false => Err(format!(
                        "threads = {n}: at most {MAX_SIGNING_THREADS} signing threads"
                    )),
                }
            })?,
        })
    }
}

/// The `[[dkim]]` entries in file order.
pub(super) fn dkim_entries(raws: Vec<RawDkim>) -> Result<Vec<DkimSection>, Located> {
    raws.into_iter().map(RawDkim::into_section).collect()
}

fn domain(key: &'static str) -> impl Fn(&String) -> Result<(), String> {
    move |name| match is_domain_name(name) {
        true => Ok(()),
        false => Err(format!("{key} {name:?} is not a domain name")),
    }
}

impl RawDkim {
    fn into_section(self) -> Result<DkimSection, Located> {
        let domain_name = valid(self.domain, domain("domain"))?.to_ascii_lowercase();
        let selector = valid(self.selector, domain("selector"))?;
        let private_key = valid(self.private_key, |p| match p.as_os_str().is_empty() {
            true => Err("private_key is empty: give the key's PEM file".to_owned()),
            false => Ok(()),
        })?;
        let mut sender_domains = Vec::new();
        for name in self.sender_domains.unwrap_or_default() {
            let span = name.span();
            let name = valid(name, domain("sender domain"))?.to_ascii_lowercase();
            if sender_domains.contains(&name) {
                return error_at(span, format!("sender domain {name:?} is listed twice"));
            }
            sender_domains.push(name);
        }
        let canonicalization = match self.canonicalization {
            Some(text) => parsed(&text, Canonicalization::parse)?,
            None => Canonicalization::DEFAULT,
        };
        Ok(DkimSection {
            domain: domain_name,
            selector,
            private_key,
            algorithm: parsed(&self.algorithm, Algorithm::parse)?,
            sender_domains,
            headers: headers(self.headers)?,
            canonicalization,
            expire: optional(self.expire, |d| match d.0.as_secs() {
                0 => Err("expire must be at least one second".to_owned()),
                _ => Ok(()),
            })?,
        })
    }
}

/// The header names to sign: each a field name, none twice, `From`
/// among them (RFC 6376 5.4 requires it).
fn headers(raw: Option<Spanned<Vec<Spanned<String>>>>) -> Result<Vec<String>, Located> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_HEADERS.iter().map(|&h| h.to_owned()).collect());
    };
    let list_span = raw.span();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in raw.into_inner() {
        let span = name.span();
        let name = valid(name, |n| {
            match !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                true => Ok(()),
                false => Err(format!("{n:?} is not a header field name")),
            }
        })?;
        if !seen.insert(name.to_ascii_lowercase()) {
            return error_at(span, format!("header {name:?} is listed twice (From is signed once more than it occurs anyway)"));
        }
        out.push(name);
    }
    if !seen.contains("from") {
        return error_at(
            list_span,
            "headers must include \"From\": a DKIM signature always signs it".to_owned(),
        );
    }
    Ok(out)
}
