//! `[[backoff]]` as written, and its conversion into the
//! [`backoff`](super::backoff) model: at least one condition per rule,
//! each condition readable and in range, the pattern compiled, the action
//! and its factor consistent, the duration bounded, each error at the
//! value it is about.
//!
//! It never builds the rules delivery matches with: that lives in
//! `backoff`, so what is checked here and what is matched there cannot
//! drift apart.

use regex::bytes::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::backoff::{
    BackoffActionSetting, BackoffSection, CompiledReply, ReplyConditions, MAX_BACKOFF_DURATION,
};
use super::duration::{self, DurationSetting};
use super::raw::{between, error_at, optional, parsed, valid};
use super::Located;
use crate::smtp::client::EnhancedStatus;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackoff {
    // Wider than u16 so that 70000 gets the same message as 200.
    code: Option<Spanned<i64>>,
    enhanced: Option<Spanned<String>>,
    reply: Option<Spanned<String>>,
    action: Option<Spanned<String>>,
    factor: Option<Spanned<f64>>,
    duration: Option<Spanned<DurationSetting>>,
    reroute: Option<Spanned<bool>>,
}

/// The `[[backoff]]` rules in file order.
pub(super) fn backoff_rules(
    raws: Vec<Spanned<RawBackoff>>,
) -> Result<Vec<BackoffSection>, Located> {
    raws.into_iter().map(rule_of).collect()
}

fn rule_of(raw: Spanned<RawBackoff>) -> Result<BackoffSection, Located> {
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.code.is_none() && raw.enhanced.is_none() && raw.reply.is_none() {
        return error_at(
            span,
            "a [[backoff]] rule needs at least one of code, enhanced or reply: without them it would match every 4xx and 5xx reply".into(),
        );
    }
    let conditions = reply_conditions(raw.code, raw.enhanced, raw.reply, "a backoff")?;
    let Some(action_text) = raw.action else {
        return error_at(
            span,
            "a [[backoff]] rule needs action = \"suspend\" or \"throttle\"".into(),
        );
    };
    let action = parsed(&action_text, action_setting)?;
    let factor = match (action, raw.factor) {
        (BackoffActionSetting::Suspend, Some(factor)) => {
            return error_at(
                factor.span(),
                "factor is for action = \"throttle\": a suspension sends nothing, at any rate"
                    .into(),
            )
        }
        (_, factor) => optional(factor, throttle_factor)?,
    };
    let Some(duration) = raw.duration else {
        return error_at(
            span,
            "a [[backoff]] rule needs a duration, e.g. duration = \"15m\"".into(),
        );
    };
    let reroute = match (action, raw.reroute) {
        (BackoffActionSetting::Throttle, Some(reroute)) if *reroute.get_ref() => {
            return error_at(
                reroute.span(),
                "reroute is for action = \"suspend\": a throttled source still sends, so its mail stays with it"
                    .into(),
            )
        }
        (_, reroute) => reroute.is_some_and(|r| r.into_inner()),
    };
    Ok(BackoffSection {
        conditions,
        action,
        factor,
        duration: valid(duration, backoff_duration)?,
        reroute,
    })
}

/// Reads a rule's `code`, `enhanced` and `reply` (`rule` names the rule
/// in messages, e.g. "a backoff"); each error at its value.
pub(super) fn reply_conditions(
    code: Option<Spanned<i64>>,
    enhanced: Option<Spanned<String>>,
    reply: Option<Spanned<String>>,
    rule: &str,
) -> Result<ReplyConditions, Located> {
    let code = optional(code, between("code", 400, 599))?;
    // In range after the check above, so the conversion cannot fail.
    let code = code.and_then(|code| u16::try_from(code).ok());
    let enhanced = match enhanced {
        Some(text) => Some(parsed(&text, |text| enhanced_status(text, code, rule))?),
        None => None,
    };
    let (reply, pattern) = match reply {
        Some(text) => {
            let regex = parsed(&text, reply_pattern)?;
            (Some(text.into_inner()), CompiledReply(Some(regex)))
        }
        None => (None, CompiledReply(None)),
    };
    Ok(ReplyConditions {
        code,
        enhanced,
        reply,
        pattern,
    })
}

/// An enhanced status of class 4 or 5 (`rule`, "a backoff", is about
/// refusals), of `code`'s class when the rule gives one: a server's reply
/// never disagrees with itself, so such a rule could never match.
fn enhanced_status(text: &str, code: Option<u16>, rule: &str) -> Result<(u8, u16, u16), String> {
    let Some(status) = EnhancedStatus::parse(text.as_bytes()) else {
        return Err(format!(
            "invalid enhanced status {text:?}: expected class.subject.detail such as \"4.7.28\""
        ));
    };
    if !matches!(status.class, 4 | 5) {
        return Err(format!(
            "enhanced = {text:?} is of class {}: {rule} matches only class 4 or 5",
            status.class
        ));
    }
    if let Some(code) = code.filter(|&code| code / 100 != u16::from(status.class)) {
        return Err(format!(
            "enhanced = {text:?} is of class {} but code = {code} is of class {}: the rule could never match",
            status.class,
            code / 100
        ));
    }
    Ok((status.class, status.subject, status.detail))
}

/// A byte pattern, compiled now so a bad one is a config error. An empty
/// one would match every reply, which is what omitting it says.
fn reply_pattern(text: &str) -> Result<Regex, String> {
    if text.is_empty() {
        return Err(
            "reply is empty: omit it, or give a pattern such as \"(?i)too many connections\""
                .into(),
        );
    }
    Regex::new(text).map_err(|e| {
        // The regex error spans several lines (the pattern, a caret, the
        // reason); an error here is one line, so keep the reason.
        let message = e.to_string();
        let reason = message.lines().last().unwrap_or_default().trim();
        let reason = reason.strip_prefix("error: ").unwrap_or(reason);
        format!("reply pattern {text:?} does not compile: {reason}")
    })
}

fn action_setting(text: &str) -> Result<BackoffActionSetting, String> {
    match text {
        "suspend" => Ok(BackoffActionSetting::Suspend),
        "throttle" => Ok(BackoffActionSetting::Throttle),
        _ => Err(format!(
            "unknown action {text:?}: expected \"suspend\" or \"throttle\""
        )),
    }
}

fn throttle_factor(factor: &f64) -> Result<(), String> {
    match *factor > 0.0 && *factor < 1.0 {
        true => Ok(()),
        false => Err(format!(
            "factor = {factor} must be above 0 and below 1: the rates are multiplied by it"
        )),
    }
}

fn backoff_duration(setting: &DurationSetting) -> Result<(), String> {
    let max = MAX_BACKOFF_DURATION;
    match !setting.0.is_zero() && setting.0 <= max {
        true => Ok(()),
        false => Err(format!(
            "duration = \"{}\" must be above zero and at most \"{}\"",
            duration::format(setting.0),
            duration::format(max)
        )),
    }
}
