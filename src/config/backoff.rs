//! Backoff as the config states it: the `[[backoff]]` rules in file order
//! and `[delivery] default_backoff`, and their conversion into the rules
//! delivery matches replies against.
//!
//! This module owns the validated model of those rules (each pattern
//! compiled once, when the file is loaded) and the one place that turns a
//! rule as written into a [`BackoffRule`]. It never matches a reply, keeps
//! the state of a path or reads a clock: `shaping::backoff` does that with
//! these rules. The file format and its checks live in `backoff_raw`.

use std::time::Duration;

use regex::bytes::Regex;
use serde::{Serialize, Serializer};

use super::duration::DurationSetting;
use crate::shaping::backoff::{self, BackoffAction, BackoffRule};

/// `factor` of a `"throttle"` rule that gives none: half the rates.
pub const DEFAULT_THROTTLE_FACTOR: f64 = 0.5;
/// Longest `duration` of a rule: a week. A longer hold on a path is a
/// path given up, which is `max_age`'s decision, not a backoff's.
pub const MAX_BACKOFF_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Which replies a rule (`[[backoff]]`, `[[accounting.category]]`)
/// matches: every condition given must hold, and at least one is given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplyConditions {
    /// The reply code, 400 to 599.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The enhanced status of the reply's first line, class 4 or 5.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "enhanced_text"
    )]
    pub enhanced: Option<(u8, u16, u16)>,
    /// A pattern searched in the reply's full text, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// `reply` compiled when the file was loaded, so building the rule
    /// again can neither fail nor cost a compilation.
    #[serde(skip)]
    pub(super) pattern: CompiledReply,
}

/// One `[[backoff]]`: which replies it matches and what it does to the
/// path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackoffSection {
    #[serde(flatten)]
    pub conditions: ReplyConditions,
    pub action: BackoffActionSetting,
    /// `"throttle"` only; none: [`DEFAULT_THROTTLE_FACTOR`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    pub duration: DurationSetting,
    /// `"suspend"` only: while the source is suspended, its waiting mail
    /// to the destination moves to another source of its pool.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reroute: bool,
}

/// What a `[[backoff]]` rule does, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffActionSetting {
    /// No connection and no message on the path for `duration`.
    Suspend,
    /// The path's rates and connection cap scaled by `factor`.
    Throttle,
}

/// The compiled form of a rule's `reply`. Equal whenever the texts are:
/// it is derived from `reply`, which the section's equality compares.
#[derive(Debug, Clone, Default)]
pub(super) struct CompiledReply(pub(super) Option<Regex>);

impl PartialEq for CompiledReply {
    fn eq(&self, _: &CompiledReply) -> bool {
        true
    }
}

/// An enhanced status as its text (`"4.7.28"`), the form the file gives.
fn enhanced_text<S: Serializer>(
    enhanced: &Option<(u8, u16, u16)>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match enhanced {
        Some((class, subject, detail)) => {
            serializer.collect_str(&format_args!("{class}.{subject}.{detail}"))
        }
        None => serializer.serialize_none(),
    }
}

impl BackoffSection {
    /// The rule delivery matches replies against.
    pub fn rule(&self) -> BackoffRule {
        let action = match self.action {
            BackoffActionSetting::Suspend => BackoffAction::Suspend,
            BackoffActionSetting::Throttle => BackoffAction::Throttle {
                factor: self.factor.unwrap_or(DEFAULT_THROTTLE_FACTOR),
            },
        };
        BackoffRule {
            code: self.conditions.code,
            enhanced: self.conditions.enhanced,
            text: self.conditions.pattern.0.clone(),
            action,
            duration_ms: self.duration.as_millis(),
            reroute: self.reroute,
        }
    }
}

impl super::Config {
    /// The file's `[[backoff]]` rules, in file order: tried before the
    /// shipped ones.
    pub fn backoff_rules(&self) -> Vec<BackoffRule> {
        self.backoff.iter().map(BackoffSection::rule).collect()
    }

    /// The shipped rules for the large providers when `[delivery]
    /// default_backoff` is on, else none.
    pub fn shipped_backoff(&self) -> Vec<BackoffRule> {
        match self.delivery.default_backoff {
            true => backoff::shipped(),
            false => Vec::new(),
        }
    }
}
