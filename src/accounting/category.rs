//! Bounce categories: which of ten kinds of failure a refusal is, read from
//! its reply code, its enhanced status and its text, for the `bounceCat`
//! field of the accounting log.
//!
//! Owns: the category names, the rule that matches a reply, and the shipped
//! rule table (the operator's rules from `[[accounting.category]]` are
//! tried before it). A category is a label for reports and list hygiene:
//! it never decides whether mail is retried or bounced.
//! Must never: do I/O, read a clock, or compile a pattern per reply
//! (patterns are compiled when the rules are built).

use regex::bytes::Regex;
use serde::Serialize;

/// The kind of a refusal, with the names existing accounting tools use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BounceCategory {
    /// The mailbox does not exist.
    BadMailbox,
    /// The domain does not exist or accepts no mail.
    BadDomain,
    /// The mailbox exists but is disabled, suspended or moved.
    InactiveMailbox,
    /// The mailbox or the receiving system is full.
    QuotaIssues,
    /// Refused by the receiver's policy (authentication, access, relaying).
    PolicyRelated,
    /// Refused as spam, or for the sender's reputation or a block list.
    SpamRelated,
    /// No route to the mailbox: loops, DNS failures, unusable hosts.
    RoutingErrors,
    /// Undelivered when its time in the queue ran out.
    MessageExpired,
    /// No connection to any host of the destination.
    NoAnswerFromHost,
    /// None of the above.
    Other,
}

impl BounceCategory {
    /// Every category, in the order the README lists them.
    pub const ALL: [BounceCategory; 10] = [
        BounceCategory::BadMailbox,
        BounceCategory::BadDomain,
        BounceCategory::InactiveMailbox,
        BounceCategory::QuotaIssues,
        BounceCategory::PolicyRelated,
        BounceCategory::SpamRelated,
        BounceCategory::RoutingErrors,
        BounceCategory::MessageExpired,
        BounceCategory::NoAnswerFromHost,
        BounceCategory::Other,
    ];

    /// The name as written in the log and in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            BounceCategory::BadMailbox => "bad-mailbox",
            BounceCategory::BadDomain => "bad-domain",
            BounceCategory::InactiveMailbox => "inactive-mailbox",
            BounceCategory::QuotaIssues => "quota-issues",
            BounceCategory::PolicyRelated => "policy-related",
            BounceCategory::SpamRelated => "spam-related",
            BounceCategory::RoutingErrors => "routing-errors",
            BounceCategory::MessageExpired => "message-expired",
            BounceCategory::NoAnswerFromHost => "no-answer-from-host",
            BounceCategory::Other => "other",
        }
    }

    /// The category of a name, as [`BounceCategory::as_str`] writes it.
    pub fn from_name(name: &str) -> Option<BounceCategory> {
        BounceCategory::ALL
            .into_iter()
            .find(|category| category.as_str() == name)
    }
}

/// An enhanced status to match: `None` parts match anything, so
/// `X.1.1` is `{ class: None, subject: 1, detail: Some(1) }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusPattern {
    pub class: Option<u8>,
    pub subject: u16,
    pub detail: Option<u16>,
}

impl StatusPattern {
    /// Exactly `class.subject.detail`.
    pub fn exact((class, subject, detail): (u8, u16, u16)) -> StatusPattern {
        StatusPattern {
            class: Some(class),
            subject,
            detail: Some(detail),
        }
    }

    fn matches(&self, (class, subject, detail): (u8, u16, u16)) -> bool {
        self.class.is_none_or(|c| c == class)
            && self.subject == subject
            && self.detail.is_none_or(|d| d == detail)
    }
}

/// A rule: every condition given must hold for a reply to match.
#[derive(Debug, Clone)]
pub struct CategoryRule {
    pub code: Option<u16>,
    pub enhanced: Option<StatusPattern>,
    /// Searched in the reply's text (for a remote reply: every line,
    /// codes included).
    pub text: Option<Regex>,
    pub category: BounceCategory,
}

impl CategoryRule {
    /// Whether a reply of `code`, enhanced status `status` and `text`
    /// matches.
    pub fn matches(&self, code: u16, status: Option<(u8, u16, u16)>, text: &[u8]) -> bool {
        self.code.is_none_or(|c| c == code)
            && self
                .enhanced
                .is_none_or(|pattern| status.is_some_and(|s| pattern.matches(s)))
            && self.text.as_ref().is_none_or(|re| re.is_match(text))
    }
}

/// The operator's rules, then the shipped ones.
#[derive(Debug, Clone)]
pub struct CategoryRules {
    operator: Vec<CategoryRule>,
    shipped: Vec<CategoryRule>,
}

impl CategoryRules {
    /// `operator` (in file order) before the shipped table. Compiles the
    /// shipped patterns: build once, with the configuration.
    pub fn new(operator: Vec<CategoryRule>) -> CategoryRules {
        CategoryRules {
            operator,
            shipped: shipped(),
        }
    }

    /// The category of a refusal: the first rule that matches, else
    /// [`BounceCategory::Other`].
    pub fn categorize(
        &self,
        code: u16,
        status: Option<(u8, u16, u16)>,
        text: &[u8],
    ) -> BounceCategory {
        self.operator
            .iter()
            .chain(&self.shipped)
            .find(|rule| rule.matches(code, status, text))
            .map_or(BounceCategory::Other, |rule| rule.category)
    }
}

/// `X.subject.detail`, or `X.subject.X` when `detail` is `None`.
const fn any_class(subject: u16, detail: Option<u16>) -> Option<StatusPattern> {
    Some(StatusPattern {
        class: None,
        subject,
        detail,
    })
}

fn status_rule(enhanced: Option<StatusPattern>, category: BounceCategory) -> CategoryRule {
    CategoryRule {
        code: None,
        enhanced,
        text: None,
        category,
    }
}

fn text_rule(pattern: &str, category: BounceCategory) -> CategoryRule {
    // The patterns are constants checked by the tests below.
    #[allow(clippy::expect_used)]
    let text = Regex::new(pattern).expect("a shipped category pattern compiles");
    CategoryRule {
        code: None,
        enhanced: None,
        text: Some(text),
        category,
    }
}

/// The shipped table, in the order it is tried (the README's table says
/// the same). Three tiers: first the statuses petrel itself gives when
/// it gives up (an expired message's text quotes the last error, which
/// must not decide its category), then the text (servers often send a
/// generic status such as 5.0.0 or 5.7.1 with a precise text), then the
/// remaining statuses.
pub fn shipped() -> Vec<CategoryRule> {
    use BounceCategory::*;
    vec![
        status_rule(any_class(4, Some(7)), MessageExpired),
        status_rule(Some(StatusPattern::exact((4, 4, 1))), NoAnswerFromHost),
        status_rule(Some(StatusPattern::exact((4, 4, 2))), NoAnswerFromHost),
        status_rule(any_class(4, Some(6)), RoutingErrors),
        text_rule(r"(?i)delivery time expired|message expired", MessageExpired),
        text_rule(
            r"(?i)connection (timed out|refused|reset)|no route to host|network is unreachable",
            NoAnswerFromHost,
        ),
        // Before spam: a refusal for missing authentication often says
        // "blocked" too.
        text_rule(r"(?i)\b(DMARC|SPF|DKIM)\b|unauthenticated", PolicyRelated),
        text_rule(
            r"(?i)spam|unsolicited|junk mail|bulk mail|black ?list|block ?list|\b(RBL|DNSBL)\b|spamhaus|reputation",
            SpamRelated,
        ),
        text_rule(
            r"(?i)quota|mailbox (is )?full|insufficient (system )?storage|out of storage",
            QuotaIssues,
        ),
        text_rule(
            r"(?i)\b(account|mailbox|user|recipient)\b[^.;]{0,40}\b(disabled|inactive|deactivated|suspended|no longer (active|in use|available))",
            InactiveMailbox,
        ),
        // Before bad-mailbox: "Recipient address rejected: Domain not
        // found" is about the domain.
        text_rule(
            r"(?i)\b(domain|host)\b[^.;]{0,40}\b(not found|does ?n[o']t exist|unknown|not valid|invalid)|no such domain|NXDOMAIN",
            BadDomain,
        ),
        text_rule(
            r"(?i)\b(user|mailbox|recipient|address|account)\b[^.;]{0,40}\b(unknown|not found|does ?n[o']t exist|invalid|unavailable|not valid)|\bno such (user|mailbox|recipient|address)|\b(unknown|invalid) (user|recipient|mailbox|address)|doesn't have an? \S+ account|recipient address rejected: access denied",
            BadMailbox,
        ),
        text_rule(
            r"(?i)polic(y|ies)|not (authori[sz]ed|permitted|allowed)|access denied|relay(ing)? (access )?denied|prohibited",
            PolicyRelated,
        ),
        status_rule(any_class(1, Some(1)), BadMailbox),
        status_rule(any_class(1, Some(3)), BadMailbox),
        status_rule(any_class(1, Some(2)), BadDomain),
        status_rule(any_class(1, Some(10)), BadDomain),
        status_rule(any_class(1, Some(6)), InactiveMailbox),
        status_rule(any_class(2, Some(1)), InactiveMailbox),
        status_rule(any_class(2, Some(2)), QuotaIssues),
        status_rule(any_class(3, Some(1)), QuotaIssues),
        status_rule(any_class(4, Some(1)), NoAnswerFromHost),
        status_rule(any_class(4, Some(2)), NoAnswerFromHost),
        status_rule(any_class(4, None), RoutingErrors),
        status_rule(any_class(7, None), PolicyRelated),
    ]
}

#[cfg(test)]
mod tests {
    use super::BounceCategory::*;
    use super::*;

    fn category(code: u16, status: (u8, u16, u16), text: &str) -> BounceCategory {
        CategoryRules::new(Vec::new()).categorize(code, Some(status), text.as_bytes())
    }

    #[test]
    fn names_read_back() {
        for category in BounceCategory::ALL {
            assert_eq!(BounceCategory::from_name(category.as_str()), Some(category));
        }
        assert_eq!(BounceCategory::from_name("bad_mailbox"), None);
        assert_eq!(BounceCategory::from_name("Other"), None);
    }

    #[test]
    fn real_world_replies() {
        for (code, status, text, expected) in [
            (550, (5, 1, 1), "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n550-5.1.1 double-checking the recipient's email address for typos or\r\n550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser", BadMailbox),
            (550, (5, 1, 1), "550 5.1.1 <x@example.com>: Recipient address rejected: User unknown in virtual mailbox table", BadMailbox),
            (550, (5, 5, 0), "550 5.5.0 Requested action not taken: mailbox unavailable", BadMailbox),
            (554, (5, 0, 0), "554 5.0.0 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]", BadMailbox),
            (550, (5, 4, 1), "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", BadMailbox),
            (550, (5, 1, 1), "550 5.1.1 No such user", BadMailbox),
            (552, (5, 2, 2), "552-5.2.2 The email account that you tried to reach is over quota and inactive.", QuotaIssues),
            (452, (4, 2, 2), "452-4.2.2 The email account that you tried to reach is over quota.", QuotaIssues),
            (552, (5, 2, 2), "552 5.2.2 Mailbox full", QuotaIssues),
            (550, (5, 2, 1), "550-5.2.1 The email account that you tried to reach is disabled.", InactiveMailbox),
            (550, (5, 7, 1), "550-5.7.1 [203.0.113.10] Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked.", SpamRelated),
            (554, (5, 7, 1), "554 5.7.1 Service unavailable; Client host [203.0.113.10] blocked using zen.spamhaus.org", SpamRelated),
            (550, (5, 7, 26), "550-5.7.26 This mail is unauthenticated, which poses a security risk to the sender and Gmail users, and has been blocked. The sender must authenticate with at least one of SPF or DKIM.", PolicyRelated),
            (550, (5, 7, 1), "550 5.7.1 Message rejected due to content restrictions policy", PolicyRelated),
            (554, (5, 7, 1), "554 5.7.1 <x@example.com>: Relay access denied", PolicyRelated),
            (550, (5, 7, 1), "550 5.7.1 Delivery not authorized, message refused", PolicyRelated),
            (554, (5, 4, 7), "delivery time expired after 5d; last error: 550 5.1.1 user unknown", MessageExpired),
            (554, (5, 4, 7), "delivery time expired after 5d; last error: connect to mx.example.com[192.0.2.1]:25: connection refused", MessageExpired),
            (550, (5, 1, 2), "domain nowhere.example does not exist", BadDomain),
            (550, (5, 1, 2), "nowhere.example: NXDOMAIN", BadDomain),
            (550, (5, 1, 10), "nowhere.example does not accept mail (null MX)", BadDomain),
            (550, (5, 1, 1), "550 5.1.1 <x@nowhere.example>: Recipient address rejected: Domain not found", BadDomain),
            (451, (4, 4, 1), "connect to mx.example.com[192.0.2.1]:25: Connection timed out", NoAnswerFromHost),
            (451, (4, 4, 1), "no host could be reached", NoAnswerFromHost),
            (451, (4, 4, 2), "connection failed", NoAnswerFromHost),
            (554, (5, 4, 6), "mail for example.com loops back to myself", RoutingErrors),
            (451, (4, 4, 3), "example.com: SERVFAIL", RoutingErrors),
            (421, (4, 7, 0), "421-4.7.0 [203.0.113.10] Our system has detected an unusual rate of unsolicited mail originating from your IP address.", SpamRelated),
            (421, (4, 7, 0), "421 4.7.0 Try again later, closing connection.", PolicyRelated),
            (552, (5, 3, 4), "552 5.3.4 Message size exceeds fixed limit", Other),
            (451, (4, 3, 0), "451 4.3.0 Temporary System Problem", Other),
        ] {
            assert_eq!(category(code, status, text), expected, "{text}");
        }
    }

    #[test]
    fn a_reply_without_enhanced_status_is_read_by_its_text() {
        let rules = CategoryRules::new(Vec::new());
        assert_eq!(
            rules.categorize(550, None, b"550 No such user here"),
            BadMailbox
        );
        assert_eq!(rules.categorize(550, None, b"550 Rejected"), Other);
    }

    #[test]
    fn operator_rules_come_first() {
        let rule = CategoryRule {
            code: Some(550),
            enhanced: Some(StatusPattern::exact((5, 1, 1))),
            text: Regex::new("(?i)mailbox unavailable").ok(),
            category: InactiveMailbox,
        };
        let rules = CategoryRules::new(vec![rule]);
        let unavailable = b"550 5.1.1 mailbox unavailable";
        assert_eq!(
            rules.categorize(550, Some((5, 1, 1)), unavailable),
            InactiveMailbox
        );
        // Every condition must hold; else the shipped table answers.
        assert_eq!(
            rules.categorize(551, Some((5, 1, 1)), unavailable),
            BadMailbox
        );
        assert_eq!(
            rules.categorize(550, Some((5, 1, 2)), unavailable),
            BadMailbox
        );
        assert_eq!(rules.categorize(550, None, unavailable), BadMailbox);
        assert_eq!(
            rules.categorize(550, Some((5, 1, 1)), b"550 5.1.1 unknown user"),
            BadMailbox
        );
    }

    #[test]
    fn every_shipped_rule_can_be_reached() {
        // A rule shadowed by the ones before it would be dead weight in
        // the README's table.
        let shipped = shipped();
        assert!(shipped.iter().all(|r| r.code.is_none()));
        let statuses = [
            (4, 4, 7),
            (4, 4, 1),
            (4, 4, 2),
            (5, 4, 6),
            (5, 1, 1),
            (5, 1, 3),
            (5, 1, 2),
            (5, 1, 10),
            (5, 1, 6),
            (5, 2, 1),
            (5, 2, 2),
            (5, 3, 1),
            (5, 4, 1),
            (5, 4, 2),
            (5, 4, 4),
            (5, 7, 9),
        ];
        let texts = [
            "message expired",
            "connection refused",
            "DMARC",
            "spam",
            "quota",
            "user disabled",
            "no such domain",
            "no such user",
            "policy",
        ];
        for (i, rule) in shipped.iter().enumerate() {
            let reached = statuses.iter().any(|&s| {
                let first = shipped.iter().position(|r| r.matches(500, Some(s), b"x"));
                first == Some(i)
            }) || texts.iter().any(|t| {
                let first = shipped
                    .iter()
                    .position(|r| r.matches(500, None, t.as_bytes()));
                first == Some(i)
            });
            assert!(
                reached,
                "rule {i} ({:?}) is never the first match",
                rule.category
            );
        }
    }
}
