//! Backoff: the rules that turn a remote server's "slow down" reply into
//! a suspension or a throttle of one path (egress source × destination),
//! and the state of the paths under one, on virtual time.
//!
//! Owns: matching a reply against rules (the operator's first, then the
//! shipped defaults), the shipped defaults themselves, and per path until
//! when a suspension or a throttle holds.
//! Must never: read the clock or do I/O (every call takes `now_ms`);
//! compile a pattern or allocate per reply (patterns are compiled when
//! the rules are built, matching runs on the reply's bytes as they are);
//! let a second match shorten a backoff that holds.

use std::collections::HashMap;
use std::hash::Hash;

use regex::bytes::Regex;

use crate::smtp::client::{EnhancedStatus, ServerReply};

/// What a matching rule does to the path for its duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BackoffAction {
    /// No connection and no message on the path.
    Suspend,
    /// The path's rates (and its connection limit) scaled by `factor`,
    /// e.g. 0.5 for half (see [`super::rate::Rate::scaled`]).
    Throttle { factor: f64 },
}

/// A rule: every condition given must hold for a reply to match; a rule
/// with none matches every 4xx and 5xx reply.
///
/// The pattern is a byte pattern (`regex::bytes`) because a reply's text
/// is kept as the bytes the server sent: matching needs no conversion, no
/// copy, and still works on a reply that is not valid UTF-8.
#[derive(Debug, Clone)]
pub struct BackoffRule {
    /// The reply code, e.g. 421.
    pub code: Option<u16>,
    /// The enhanced status of the reply's first line, e.g. (4, 7, 28).
    pub enhanced: Option<(u8, u16, u16)>,
    /// Searched in the reply's full text: for a remote reply every line,
    /// code included (`421-4.7.28 ...`), joined by CRLF.
    pub text: Option<Regex>,
    pub action: BackoffAction,
    pub duration_ms: u64,
    /// Whether the path's mail may go out through another source of its
    /// pool meanwhile.
    pub reroute: bool,
}

impl BackoffRule {
    /// Whether `reply` matches. Only a negative reply (4xx, 5xx) can: a
    /// server that accepts mail is never a reason to slow down, whatever
    /// its text says.
    pub fn matches(&self, reply: &ServerReply) -> bool {
        reply.class() >= 4
            && self.code.is_none_or(|code| code == reply.code)
            && self.enhanced.is_none_or(|(class, subject, detail)| {
                reply.status
                    == Some(EnhancedStatus {
                        class,
                        subject,
                        detail,
                    })
            })
            && self.text.as_ref().is_none_or(|re| re.is_match(&reply.text))
    }
}

const MINUTE_MS: u64 = 60_000;

/// The shipped rules, for the deferrals of the large mailbox providers
/// that mean "this source is sending too much" (see the reply table of
/// the reference notes). Each keys on the code, the enhanced status and a
/// short distinctive part of the text, never on an address or other part
/// that varies between replies. Specific rules come before generic ones.
///
/// Built once, with the configuration: each call compiles the patterns.
pub fn shipped() -> Vec<BackoffRule> {
    vec![
        // Gmail, `421-4.7.28 ... unusual rate of unsolicited mail
        // originating from your IP address / SPF domain / DKIM domain`: the
        // rate or the reputation of this source; back off the source ×
        // destination. More mail soon only earns more of the same reply.
        rule(
            Some(421),
            Some((4, 7, 28)),
            r"(?i)unusual rate",
            BackoffAction::Suspend,
            30 * MINUTE_MS,
        ),
        // Yahoo, `421 4.7.0 [TSS04] Messages from a.b.c.d temporarily
        // deferred due to unexpected volume or user complaints` (also
        // `[TSS05]`, `[TS01]`..., and the older `421 Message temporarily
        // deferred - 4.16.5x` with no enhanced status): volume or
        // complaints; suspend the source for Yahoo for a while.
        rule(
            Some(421),
            None,
            r"\[TSS?0\d\]|(?i:temporarily deferred - 4\.16\.5\d)",
            BackoffAction::Suspend,
            60 * MINUTE_MS,
        ),
        // Microsoft (Outlook, Hotmail), `451 4.7.650 The mail server
        // [a.b.c.d] has been temporarily rate limited due to IP
        // reputation` (also 4.7.651, 4.7.652): reputation throttling;
        // reduce the rate of that source rather than stop it.
        rule(
            Some(451),
            None,
            r"\b4\.7\.65[0-2]\b",
            BackoffAction::Throttle { factor: 0.5 },
            60 * MINUTE_MS,
        ),
        // Many servers, `421 4.7.0 Too many connections` / `too many
        // concurrent SMTP connections`: a connection cap; the throttle
        // cuts the path's connection limit with its rates.
        rule(
            Some(421),
            None,
            r"(?i)too many (concurrent )?(smtp )?connections",
            BackoffAction::Throttle { factor: 0.5 },
            10 * MINUTE_MS,
        ),
        // Many servers, `421 ... rate limit exceeded` and the like: the
        // same slowing down, said in general words.
        rule(
            Some(421),
            None,
            r"(?i)\brate[ -]?limit",
            BackoffAction::Throttle { factor: 0.5 },
            10 * MINUTE_MS,
        ),
        // Deliberately absent: Gmail's `450-4.2.1 ... receiving mail at a
        // rate that prevents additional messages` (one recipient over its
        // rate: retry that recipient, not the whole path) and `421-4.7.0
        // ... TLS` / `421-4.3.0 Temporary System Problem` (transient: the
        // ordinary retry handles them).
    ]
}

/// A shipped rule. The pattern is a constant, compiled by a test: a
/// failure here is a bug in this file, never an input's fault.
fn rule(
    code: Option<u16>,
    enhanced: Option<(u8, u16, u16)>,
    pattern: &str,
    action: BackoffAction,
    duration_ms: u64,
) -> BackoffRule {
    BackoffRule {
        code,
        enhanced,
        text: Some(Regex::new(pattern).expect("a shipped pattern compiles")),
        action,
        duration_ms,
        reroute: false,
    }
}

/// The rule that decides `reply`: the first of the operator's rules that
/// matches, else the first shipped rule that does, so an operator's rule
/// always wins over a shipped one.
pub fn first_match<'a>(
    operator: &'a [BackoffRule],
    shipped: &'a [BackoffRule],
    reply: &ServerReply,
) -> Option<&'a BackoffRule> {
    operator
        .iter()
        .chain(shipped)
        .find(|rule| rule.matches(reply))
}

/// A backoff that holds on a path now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Active {
    pub action: BackoffAction,
    /// The first time at which it no longer holds.
    pub until_ms: u64,
    pub reroute: bool,
}

/// What [`Backoffs::apply`] did: the backoff that now holds on the path
/// (a suspension outranks a throttle), and whether one held already (a
/// log says "extended" rather than "suspended").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    pub active: Active,
    pub extended: bool,
}

/// One path's backoffs. A suspension and a throttle are kept apart, so a
/// short suspension on top of a long throttle ends with the throttle
/// still in force instead of stretching the suspension over it.
#[derive(Debug, Clone, Copy, Default)]
struct PathBackoff {
    suspend: Option<Hold>,
    throttle: Option<(f64, Hold)>,
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    until_ms: u64,
    reroute: bool,
}

impl Hold {
    /// This hold widened by another: the later end, and reroute if either
    /// asks for it.
    fn widen(self, other: Hold) -> Hold {
        Hold {
            until_ms: self.until_ms.max(other.until_ms),
            reroute: self.reroute || other.reroute,
        }
    }
}

impl PathBackoff {
    /// Forgets what has ended by `now_ms`; whether anything did.
    fn expire(&mut self, now_ms: u64) -> bool {
        let before = (self.suspend.is_some(), self.throttle.is_some());
        self.suspend = self.suspend.filter(|h| h.until_ms > now_ms);
        self.throttle = self.throttle.filter(|(_, h)| h.until_ms > now_ms);
        before != (self.suspend.is_some(), self.throttle.is_some())
    }

    fn is_empty(&self) -> bool {
        self.suspend.is_none() && self.throttle.is_none()
    }

    /// The strongest backoff kept: a suspension, else the throttle.
    fn strongest(&self) -> Option<Active> {
        let active = |action, h: Hold| Active {
            action,
            until_ms: h.until_ms,
            reroute: h.reroute,
        };
        match (self.suspend, self.throttle) {
            (Some(h), _) => Some(active(BackoffAction::Suspend, h)),
            (None, Some((factor, h))) => Some(active(BackoffAction::Throttle { factor }, h)),
            (None, None) => None,
        }
    }

    fn next_expiry(&self) -> Option<u64> {
        let ends = [self.suspend, self.throttle.map(|(_, h)| h)];
        ends.into_iter().flatten().map(|h| h.until_ms).min()
    }
}

/// The backoffs in force per path; `K` is the caller's key (source ×
/// destination). Only paths under a backoff have an entry, so the map
/// stays as small as the trouble is.
#[derive(Debug, Clone)]
pub struct Backoffs<K> {
    paths: HashMap<K, PathBackoff>,
}

impl<K: Eq + Hash> Backoffs<K> {
    pub fn new() -> Backoffs<K> {
        Backoffs {
            paths: HashMap::new(),
        }
    }

    /// Puts `key` under `rule` from `now_ms` for the rule's duration. A
    /// backoff of the same kind that holds already is extended, never
    /// shortened; of two throttles the slower factor holds.
    pub fn apply(&mut self, key: K, rule: &BackoffRule, now_ms: u64) -> Applied {
        let hold = Hold {
            until_ms: now_ms.saturating_add(rule.duration_ms),
            reroute: rule.reroute,
        };
        if hold.until_ms <= now_ms {
            // A rule of no duration holds nothing; what holds stays.
            let held = self.active(&key, now_ms);
            let nothing = Active {
                action: rule.action,
                until_ms: now_ms,
                reroute: rule.reroute,
            };
            return Applied {
                active: held.unwrap_or(nothing),
                extended: held.is_some(),
            };
        }
        let path = self.paths.entry(key).or_default();
        path.expire(now_ms);
        let extended = !path.is_empty();
        match rule.action {
            BackoffAction::Suspend => {
                path.suspend = Some(path.suspend.map_or(hold, |h| h.widen(hold)));
            }
            BackoffAction::Throttle { factor } => {
                path.throttle = Some(match path.throttle {
                    Some((old, h)) => (old.min(factor), h.widen(hold)),
                    None => (factor, hold),
                });
            }
        }
        let active = path.strongest().unwrap_or(Active {
            action: rule.action,
            until_ms: hold.until_ms,
            reroute: hold.reroute,
        });
        Applied { active, extended }
    }

    /// The backoff that holds on `key` at `now_ms`, if any; what has ended
    /// by then is forgotten. A backoff holds up to, not at, its `until_ms`.
    pub fn active(&mut self, key: &K, now_ms: u64) -> Option<Active> {
        let path = self.paths.get_mut(key)?;
        path.expire(now_ms);
        let active = path.strongest();
        if active.is_none() {
            self.paths.remove(key);
        }
        active
    }

    /// Forgets what has ended by `now_ms` on every path, calling `ended`
    /// with each path where something did (a suspension ended: the path
    /// may send again, maybe still under a throttle that [`Self::active`]
    /// reports). For the caller's timer at [`Self::next_expiry`].
    pub fn expire(&mut self, now_ms: u64, mut ended: impl FnMut(&K)) {
        self.paths.retain(|key, path| {
            if path.expire(now_ms) {
                ended(key);
            }
            !path.is_empty()
        });
    }

    /// The earliest time at which a backoff ends, for the caller's timer.
    /// A scan: the map holds only the paths under a backoff, and this is
    /// asked after a change, not per message.
    pub fn next_expiry(&self) -> Option<u64> {
        self.paths
            .values()
            .filter_map(PathBackoff::next_expiry)
            .min()
    }

    /// How many paths are under a backoff (a gauge).
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

impl<K: Eq + Hash> Default for Backoffs<K> {
    fn default() -> Backoffs<K> {
        Backoffs::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    /// A reply as the server sent it: `lines` joined by CRLF, the code
    /// and enhanced status read from the first.
    fn remote(lines: &[&str]) -> ServerReply {
        let first = lines[0];
        let code = first[..3].parse().unwrap();
        let status = first[4..].split(' ').next().and_then(|s| {
            let mut parts = s.split('.').map(|p| p.parse::<u16>().ok());
            let (class, subject, detail) = (parts.next()??, parts.next()??, parts.next()??);
            Some(EnhancedStatus {
                class: u8::try_from(class).ok()?,
                subject,
                detail,
            })
        });
        ServerReply {
            code,
            status,
            text: lines.join("\r\n").into_bytes(),
            local: false,
        }
    }

    fn gmail_rate() -> ServerReply {
        remote(&[
            "421-4.7.28 [192.0.2.1      15] Our system has detected an unusual rate of",
            "421-4.7.28 unsolicited mail originating from your IP address. To protect our",
            "421 4.7.28 users from spam, mail sent from your IP address has been temporarily",
        ])
    }

    fn yahoo() -> ServerReply {
        remote(&["421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"])
    }

    fn microsoft() -> ServerReply {
        remote(&["451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation. For e-mail delivery information, see https://postmaster.live.com (S775) [Name=Protocol Filter Agent]"])
    }

    fn on(code: Option<u16>, enhanced: Option<(u8, u16, u16)>, text: Option<&str>) -> BackoffRule {
        BackoffRule {
            code,
            enhanced,
            text: text.map(|t| Regex::new(t).unwrap()),
            action: BackoffAction::Suspend,
            duration_ms: 10 * MIN,
            reroute: false,
        }
    }

    fn throttle(factor: f64, duration_ms: u64) -> BackoffRule {
        BackoffRule {
            action: BackoffAction::Throttle { factor },
            duration_ms,
            ..on(None, None, None)
        }
    }

    #[test]
    fn every_given_condition_must_hold() {
        let reply = gmail_rate();
        assert!(on(Some(421), None, None).matches(&reply));
        assert!(!on(Some(451), None, None).matches(&reply));
        assert!(on(None, Some((4, 7, 28)), None).matches(&reply));
        assert!(!on(None, Some((4, 7, 0)), None).matches(&reply));
        // The text is every line, code included.
        assert!(on(None, None, Some(r"^421-4\.7\.28 ")).matches(&reply));
        assert!(on(None, None, Some("from your IP address")).matches(&reply));
        assert!(!on(None, None, Some("(?i)too many connections")).matches(&reply));
        assert!(on(Some(421), Some((4, 7, 28)), Some("unusual")).matches(&reply));
        assert!(!on(Some(421), Some((4, 7, 28)), Some("usual rate of spam")).matches(&reply));
        assert!(!on(Some(421), Some((4, 7, 1)), Some("unusual")).matches(&reply));
        // No condition: any negative reply, never a positive one.
        assert!(on(None, None, None).matches(&reply));
        let ok = remote(&["250 2.0.0 OK: rate limit not reached"]);
        assert!(!on(None, None, Some("rate limit")).matches(&ok));
    }

    #[test]
    fn the_text_is_matched_as_bytes() {
        let mut reply = remote(&["421 4.7.0 too many connections"]);
        reply.text.extend_from_slice(b" \xff\xfe from you");
        assert!(on(None, None, Some("from you")).matches(&reply));
    }

    #[test]
    fn shipped_rules_know_the_large_providers() {
        let rules = shipped();
        let action = |reply: &ServerReply| first_match(&[], &rules, reply).map(|r| r.action);
        assert_eq!(action(&gmail_rate()), Some(BackoffAction::Suspend));
        assert_eq!(action(&yahoo()), Some(BackoffAction::Suspend));
        let old_yahoo = remote(&[
            "421 Message temporarily deferred - 4.16.50. Please refer to https://help.yahoo.com/",
        ]);
        assert_eq!(action(&old_yahoo), Some(BackoffAction::Suspend));
        let half = Some(BackoffAction::Throttle { factor: 0.5 });
        assert_eq!(action(&microsoft()), half);
        let ms_652 = remote(&["451 4.7.652 The mail server [192.0.2.1] has exceeded the maximum number of connections."]);
        assert_eq!(action(&ms_652), half);
        for text in [
            "421 4.7.0 Too many connections from your IP",
            "421 mx.example too many concurrent SMTP connections; please try again later",
            "421 4.7.0 Rate limit exceeded, try again later",
        ] {
            assert_eq!(action(&remote(&[text])), half, "{text}");
        }
        // One recipient over its rate, TLS trouble, a timeout of ours, an
        // address that varies: none of them slows the path.
        for reply in [
            remote(&[
                "450-4.2.1 The user you are trying to contact is receiving mail at a rate that",
                "450 4.2.1 prevents additional messages from being delivered.",
            ]),
            remote(&["421-4.7.0 TLS required for RCPT domain, closing connection."]),
            remote(&["421-4.3.0 Temporary System Problem.  Try again later (10)."]),
            remote(&["421 4.7.28 192.0.2.1 deferred"]),
            ServerReply::local(421, (4, 4, 2), "timeout waiting for a reply"),
        ] {
            assert_eq!(action(&reply), None, "{reply:?}");
        }
    }

    #[test]
    fn every_shipped_rule_has_a_pattern_and_a_duration() {
        for rule in shipped() {
            assert!(rule.text.is_some() && rule.code.is_some(), "{rule:?}");
            assert!(rule.duration_ms >= MIN, "{rule:?}");
        }
    }

    #[test]
    fn an_operators_rule_wins_over_a_shipped_one() {
        let shipped = shipped();
        let mine = [
            on(Some(550), None, None),
            BackoffRule {
                reroute: true,
                ..throttle(0.25, 5 * MIN)
            },
        ];
        let rule = first_match(&mine, &shipped, &gmail_rate()).unwrap();
        assert_eq!(rule.action, BackoffAction::Throttle { factor: 0.25 });
        assert!(rule.reroute);
        // Where the operator's rules say nothing, the shipped ones speak.
        let rule = first_match(&mine[..1], &shipped, &gmail_rate()).unwrap();
        assert_eq!(rule.action, BackoffAction::Suspend);
        assert!(first_match(&mine[..1], &[], &gmail_rate()).is_none());
    }

    #[test]
    fn a_suspension_ends_exactly_at_its_end() {
        let mut b = Backoffs::new();
        let applied = b.apply("gmail", &on(None, None, None), 1_000);
        let want = Active {
            action: BackoffAction::Suspend,
            until_ms: 1_000 + 10 * MIN,
            reroute: false,
        };
        assert_eq!(
            applied,
            Applied {
                active: want,
                extended: false
            }
        );
        assert_eq!(b.next_expiry(), Some(want.until_ms));
        assert_eq!(b.active(&"yahoo", 1_000), None);
        assert_eq!(b.active(&"gmail", 1_000), Some(want));
        assert_eq!(b.active(&"gmail", want.until_ms - 1), Some(want));
        assert_eq!(b.active(&"gmail", want.until_ms), None);
        assert!(b.is_empty(), "an ended backoff is forgotten");
        assert_eq!(b.next_expiry(), None);
    }

    #[test]
    fn a_throttle_reports_its_factor_then_is_gone() {
        let mut b = Backoffs::new();
        b.apply(7u32, &throttle(0.5, 60_000), 0);
        let active = b.active(&7, 59_999).unwrap();
        assert_eq!(active.action, BackoffAction::Throttle { factor: 0.5 });
        assert_eq!(active.until_ms, 60_000);
        assert_eq!(b.active(&7, 60_000), None);
    }

    #[test]
    fn a_second_match_extends_and_never_shortens() {
        let mut b = Backoffs::new();
        b.apply("p", &on(None, None, None), 0);
        let later = b.apply("p", &on(None, None, None), 5 * MIN);
        assert!(later.extended);
        assert_eq!(later.active.until_ms, 15 * MIN);
        let short = BackoffRule {
            duration_ms: MIN,
            reroute: true,
            ..on(None, None, None)
        };
        let again = b.apply("p", &short, 6 * MIN);
        assert_eq!(again.active.until_ms, 15 * MIN, "not shortened");
        assert!(again.active.reroute);
        // Of two throttles the slower factor holds, for the later end.
        let mut b = Backoffs::new();
        b.apply("p", &throttle(0.25, 10 * MIN), 0);
        let applied = b.apply("p", &throttle(0.5, 20 * MIN), MIN);
        assert_eq!(
            applied.active.action,
            BackoffAction::Throttle { factor: 0.25 }
        );
        assert_eq!(applied.active.until_ms, 21 * MIN);
        // After the end, a match starts afresh.
        let fresh = b.apply("p", &throttle(0.5, MIN), 30 * MIN);
        assert!(!fresh.extended);
        assert_eq!(fresh.active.action, BackoffAction::Throttle { factor: 0.5 });
    }

    #[test]
    fn a_short_suspension_over_a_long_throttle_leaves_the_throttle() {
        let mut b = Backoffs::new();
        b.apply("p", &throttle(0.5, 60 * MIN), 0);
        let applied = b.apply("p", &on(None, None, None), MIN);
        assert_eq!(applied.active.action, BackoffAction::Suspend);
        assert_eq!(applied.active.until_ms, 11 * MIN);
        assert_eq!(b.next_expiry(), Some(11 * MIN));
        let mut ended = Vec::new();
        b.expire(11 * MIN - 1, |k| ended.push(*k));
        assert!(ended.is_empty());
        b.expire(11 * MIN, |k| ended.push(*k));
        assert_eq!(ended, ["p"]);
        let active = b.active(&"p", 11 * MIN).unwrap();
        assert_eq!(active.action, BackoffAction::Throttle { factor: 0.5 });
        assert_eq!(b.next_expiry(), Some(60 * MIN));
    }

    #[test]
    fn expiry_runs_over_every_path_and_forgets_them() {
        let mut b = Backoffs::new();
        for (i, minutes) in [(1u8, 3), (2, 1), (3, 2)] {
            b.apply(i, &throttle(0.5, minutes * MIN), 0);
        }
        assert_eq!(b.next_expiry(), Some(MIN));
        let mut ended = Vec::new();
        b.expire(2 * MIN, |k| ended.push(*k));
        ended.sort_unstable();
        assert_eq!(ended, [2, 3]);
        assert_eq!(b.len(), 1);
        assert_eq!(b.next_expiry(), Some(3 * MIN));
        // A rule of no duration holds nothing.
        let applied = b.apply(9, &throttle(0.5, 0), 5 * MIN);
        assert_eq!(applied.active.until_ms, 5 * MIN);
        assert!(!applied.extended);
        assert_eq!(b.len(), 1, "and leaves no entry behind");
        assert_eq!(b.active(&9, 5 * MIN), None);
        let held = b.apply(1, &throttle(0.25, 0), 2 * MIN);
        assert!(held.extended);
        assert_eq!(held.active.action, BackoffAction::Throttle { factor: 0.5 });
    }
}
