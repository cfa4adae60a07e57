//! One RCPT of a hosted domain (or of the domain of rewritten senders)
//! into the envelope recipients it stands for.
//!
//! A local user becomes its mailbox address (`user_of(local)@domain` as
//! configured); an alias its targets, expanded in turn (local targets
//! resolved like any recipient, others forwarded); a rewritten sender
//! (`SRS0=...`) the original sender; an unknown user the domain's
//! catch-all, or a refusal. Users of an LMTP-verified domain are known by
//! the answers the session got from the LMTP server: one missing stops
//! the walk with [`Resolution::NeedsProbe`], and the walk is done again
//! once the answer is in.
//!
//! Must never: loop (the path of aliases being expanded is kept, and a
//! name met again on it is a loop) or expand without bound (depth and
//! the number of names looked at are limited).

use super::{split_address, Recipients, Srs};
use crate::smtp::recipients::{RecipientTable, Refusal, Resolution, Target};

/// Aliases expanded within each other, at most.
pub const MAX_ALIAS_DEPTH: usize = 8;
/// Addresses looked at for one RCPT, at most (an alias of aliases of
/// lists can name many).
pub const MAX_EXPANSION: usize = 1000;

/// What a walk reads.
pub struct Lookup<'a> {
    pub tables: &'a Recipients,
    /// The SRS day number today.
    pub today: u32,
    /// The LMTP servers' answers so far: mailbox address, exists.
    pub answers: &'a [(String, bool)],
}

enum Stop {
    Refused(Refusal),
    Probe(String),
}

struct Walk<'a, 'o> {
    l: &'a Lookup<'a>,
    out: &'o mut Vec<Target>,
    /// The aliases being expanded (user, domain).
    path: Vec<(String, String)>,
    looked_at: usize,
}

impl Lookup<'_> {
    /// Resolves `address` (`local@domain`, as the client wrote it) into
    /// `out` (cleared first).
    pub fn resolve(&self, address: &str, out: &mut Vec<Target>) -> Result<Resolution, Refusal> {
        out.clear();
        let Some((local, domain)) = split_address(address) else {
            return Ok(Resolution::NotHosted);
        };
        let srs_domain = self.srs_for(domain).is_some();
        if self.tables.domain(domain).is_none() && !srs_domain {
            return Ok(Resolution::NotHosted);
        }
        let mut walk = Walk {
            l: self,
            out,
            path: Vec::new(),
            looked_at: 0,
        };
        match walk.visit(local, domain, 0, false) {
            Ok(()) => Ok(Resolution::Resolved),
            Err(Stop::Refused(r)) => Err(r),
            Err(Stop::Probe(mailbox)) => Ok(Resolution::NeedsProbe { mailbox }),
        }
    }

    fn srs_for(&self, domain: &str) -> Option<&Srs> {
        let srs = self.tables.srs.as_ref()?;
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        srs.domain().eq_ignore_ascii_case(domain).then_some(srs)
    }
}

impl Walk<'_, '_> {
    fn visit(
        &mut self,
        local: &str,
        domain: &str,
        depth: usize,
        catch_all: bool,
    ) -> Result<(), Stop> {
        self.looked_at += 1;
        if depth > MAX_ALIAS_DEPTH || self.looked_at > MAX_EXPANSION {
            return Err(Stop::Refused(Refusal::TooDeep));
        }
        let tables = self.l.tables;
        if let Some(srs) = self.l.srs_for(domain).filter(|_| Srs::is_rewritten(local)) {
            let original = srs
                .reverse(local, self.l.today)
                .map_err(|e| Stop::Refused(Refusal::BadSrs { why: e.to_string() }))?;
            // A sender of a hosted domain is a recipient here like any
            // other; one elsewhere gets its bounce relayed, as it is.
            return match split_address(&original) {
                Some((l, d)) if tables.domain(d).is_some() => self.visit(l, d, depth + 1, false),
                _ => {
                    self.push(original.into_bytes(), false);
                    Ok(())
                }
            };
        }
        let Some(hosted) = tables.domain(domain) else {
            if self.l.srs_for(domain).is_some() {
                return Err(unknown(local, domain));
            }
            self.push(format!("{local}@{domain}").into_bytes(), depth > 0);
            return Ok(());
        };
        let d = &hosted.section;
        let user = d.user_of(local);
        if let Some(targets) = tables.aliases.targets(&user, &d.name) {
            return self.expand(&user, &d.name, targets, depth);
        }
        let mailbox = format!("{user}@{}", d.name);
        let exists = match d.verify {
            crate::config::Verify::None => true,
            crate::config::Verify::Users => hosted.users.contains(user.as_ref()),
            crate::config::Verify::Lmtp => {
                match self.l.answers.iter().find(|(m, _)| *m == mailbox) {
                    Some(&(_, exists)) => exists,
                    None => return Err(Stop::Probe(mailbox)),
                }
            }
        };
        if exists {
            self.push(mailbox.into_bytes(), false);
            return Ok(());
        }
        match d.catch_all.as_deref().and_then(split_address) {
            Some((l, dom)) if !catch_all => self.visit(l, dom, depth + 1, true),
            _ => Err(unknown(local, domain)),
        }
    }

    fn expand(
        &mut self,
        user: &str,
        domain: &str,
        targets: &[String],
        depth: usize,
    ) -> Result<(), Stop> {
        if self.path.iter().any(|(u, d)| u == user && d == domain) {
            return Err(Stop::Refused(Refusal::Loop {
                alias: format!("{user}@{domain}"),
            }));
        }
        self.path.push((user.to_owned(), domain.to_owned()));
        for target in targets {
            // The alias file was checked: every target has an `@`.
            if let Some((l, d)) = split_address(target) {
                self.visit(l, d, depth + 1, false)?;
            }
        }
        self.path.pop();
        Ok(())
    }

    fn push(&mut self, address: Vec<u8>, forward: bool) {
        if !self.out.iter().any(|t| t.address == address) {
            self.out.push(Target { address, forward });
        }
    }
}

fn unknown(local: &str, domain: &str) -> Stop {
    Stop::Refused(Refusal::Unknown {
        address: format!("{local}@{domain}"),
    })
}

impl RecipientTable for Recipients {
    fn resolve(
        &self,
        address: &str,
        today: u32,
        answers: &[(String, bool)],
        out: &mut Vec<Target>,
    ) -> Result<Resolution, Refusal> {
        let lookup = Lookup {
            tables: self,
            today,
            answers,
        };
        lookup.resolve(address, out)
    }

    fn forward_sender(&self, sender: &[u8], today: u32) -> Option<Vec<u8>> {
        // The null sender stays null: nothing may answer a bounce.
        match sender.is_empty() {
            true => None,
            false => self.srs.as_ref()?.forward(sender, today),
        }
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
