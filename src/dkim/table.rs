//! The signers of a configuration, by the `From:` domain they sign for:
//! the `[[dkim]]` entries and every key of `[signing] key_dir`, each key
//! read and parsed once, when the table is built (at start and reload).
//!
//! A lookup walks the labels of the `From:` domain (the domain, then its
//! parents), one hash map probe each: its cost depends on the domain's
//! length, never on how many keys there are.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::sign::Signer;
use super::{key, Canonicalization, DEFAULT_HEADERS};
use crate::config::{Config, DkimSection};

/// A key that stops startup or a reload: the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("DKIM key {}{context}: {reason}", path.display())]
pub struct KeyError {
    pub path: PathBuf,
    /// Empty, or which entry names the file.
    pub context: String,
    pub reason: String,
}

#[derive(Default)]
pub struct SignerTable {
    /// Sign mail whose `From:` domain is the key or under it.
    pub(super) under: HashMap<Box<str>, Vec<Arc<Signer>>>,
    /// Sign mail whose `From:` domain is exactly the key (`sender_domains`).
    exact: HashMap<Box<str>, Vec<Arc<Signer>>>,
    count: usize,
}

impl std::fmt::Debug for SignerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignerTable({} signers)", self.count)
    }
}

impl SignerTable {
    /// Reads every key the config names; the first that cannot be used
    /// is the error.
    pub fn load(config: &Config) -> Result<SignerTable, KeyError> {
        let mut table = SignerTable::default();
        let mut taken = HashSet::new();
        for entry in &config.dkim {
            let signer = Arc::new(entry_signer(entry)?);
            table.claim(&mut taken, &signer, &entry.private_key)?;
            match entry.sender_domains.is_empty() {
                true => table.add_under(&entry.domain, signer),
                false => {
                    for domain in &entry.sender_domains {
                        let list = table.exact.entry(domain.as_str().into()).or_default();
                        list.push(signer.clone());
                    }
                    table.count += 1;
                }
            }
        }
        if let Some(dir) = &config.signing.key_dir {
            for (path, signer) in directory(dir)? {
                let signer = Arc::new(signer);
                table.claim(&mut taken, &signer, &path)?;
                let domain = signer.domain.clone();
                table.add_under(&domain, signer);
            }
        }
        Ok(table)
    }

    /// Number of signing keys.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The signers for mail whose `From:` header has `domain`, in a fixed
    /// order: exact sender domains first, then from the domain up.
    pub fn signers_for(&self, domain: &str) -> Vec<&Signer> {
        let mut out: Vec<&Signer> = Vec::new();
        self.each_signer_for(domain, |s| out.push(s));
        out
    }

    /// [`SignerTable::signers_for`], shared: for signing on another
    /// thread than the table's reader.
    pub fn shared_signers_for(&self, domain: &str) -> Vec<Arc<Signer>> {
        let mut out = Vec::new();
        self.each_signer_for(domain, |s| out.push(s.clone()));
        out
    }

    fn each_signer_for<'a>(&'a self, domain: &str, mut found: impl FnMut(&'a Arc<Signer>)) {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        let lower;
        let domain = match domain.bytes().any(|b| b.is_ascii_uppercase()) {
            true => {
                lower = domain.to_ascii_lowercase();
                lower.as_str()
            }
            false => domain,
        };
        if let Some(list) = self.exact.get(domain) {
            list.iter().for_each(&mut found);
        }
        let mut suffix = domain;
        loop {
            if let Some(list) = self.under.get(suffix) {
                list.iter().for_each(&mut found);
            }
            match suffix.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => suffix = parent,
                _ => break,
            }
        }
    }

    fn add_under(&mut self, domain: &str, signer: Arc<Signer>) {
        self.under.entry(domain.into()).or_default().push(signer);
        self.count += 1;
    }

    /// Refuses a second key for one `d=` and `s=`: both would sign, and
    /// a verifier can find only one of them in DNS.
    fn claim(
        &self,
        taken: &mut HashSet<(Box<str>, Box<str>)>,
        signer: &Signer,
        path: &Path,
    ) -> Result<(), KeyError> {
        match taken.insert((signer.domain.clone(), signer.selector.clone())) {
            true => Ok(()),
            false => Err(KeyError {
                path: path.to_owned(),
                context: String::new(),
                reason: format!(
                    "a second key for domain {} and selector {}",
                    signer.domain, signer.selector
                ),
            }),
        }
    }
}

/// The signer of one `[[dkim]]` entry: its key read, and of the algorithm
/// the entry says.
fn entry_signer(entry: &DkimSection) -> Result<Signer, KeyError> {
    let error = |reason: String| KeyError {
        path: entry.private_key.clone(),
        context: format!(
            " ([[dkim]] domain {:?}, selector {:?})",
            entry.domain, entry.selector
        ),
        reason,
    };
    let key = key::load(&entry.private_key).map_err(error)?;
    if key.algorithm() != entry.algorithm {
        return Err(error(format!(
            "an {} key, but algorithm = {:?}",
            key.algorithm().name(),
            entry.algorithm.name()
        )));
    }
    Ok(Signer {
        domain: entry.domain.as_str().into(),
        selector: entry.selector.as_str().into(),
        key,
        canonicalization: entry.canonicalization,
        headers: entry.headers.iter().map(|h| h.as_str().into()).collect(),
        expire: entry.expire.map(|e| e.0.as_secs()),
    })
}

/// Every `<domain>/<selector>.pem` under `dir`, as signers with the
/// defaults; other files are skipped.
fn directory(dir: &Path) -> Result<Vec<(PathBuf, Signer)>, KeyError> {
    let error = |path: &Path, reason: String| KeyError {
        path: path.to_owned(),
        context: " ([signing] key_dir)".to_owned(),
        reason,
    };
    let mut out = Vec::new();
    for domain_dir in read_dir(dir).map_err(|e| error(dir, e))? {
        if !domain_dir.is_dir() {
            continue;
        }
        let domain = file_name(&domain_dir).to_ascii_lowercase();
        if !crate::smtp::address::is_domain_name(&domain) {
            return Err(error(
                &domain_dir,
                format!("{domain:?} is not a domain name"),
            ));
        }
        for path in read_dir(&domain_dir).map_err(|e| error(&domain_dir, e))? {
            if path.extension().is_none_or(|e| e != "pem") || path.is_dir() {
                continue;
            }
            let selector = file_stem(&path);
            if !crate::smtp::address::is_domain_name(&selector) {
                return Err(error(
                    &path,
                    format!("selector {selector:?} is not a DNS label"),
                ));
            }
            let key = key::load(&path).map_err(|e| error(&path, e))?;
            out.push((path, directory_signer(&domain, &selector, key)));
        }
    }
    Ok(out)
}

fn directory_signer(domain: &str, selector: &str, key: super::SigningKey) -> Signer {
    Signer {
        domain: domain.into(),
        selector: selector.into(),
        key,
        canonicalization: Canonicalization::DEFAULT,
        headers: DEFAULT_HEADERS.iter().map(|&h| h.into()).collect(),
        expire: None,
    }
}

/// The entries of `dir`, sorted, so the order of signatures does not
/// depend on the file system.
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read the directory: {e}"))?;
    let mut paths = entries
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read the directory: {e}"))?;
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}
