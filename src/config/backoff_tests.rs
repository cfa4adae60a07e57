//! `[[backoff]]` and `[delivery] default_backoff`: their defaults, the
//! rules they build, the printed form, and every rejected value at its
//! place.

use super::tests::{assert_error, assert_prints_and_reads_back, parse, printed};
use super::*;
use crate::shaping::backoff::{first_match, BackoffAction};
use crate::smtp::client::ServerReply;

/// Rules of each condition and action, and the shipped ones turned off.
const RULES: &str = r#"
[delivery]
default_backoff = false
[[backoff]]
code = 421
enhanced = "4.7.28"
reply = "^421 .*(too many|rate)"
action = "suspend"
duration = "15m"
reroute = true
[[backoff]]
reply = "(?i)slow down"
action = "throttle"
factor = 0.25
duration = "1h"
[[backoff]]
enhanced = "5.7.1"
action = "throttle"
duration = 600
"#;

/// A one-line reply from the server; `text` is the whole line.
fn reply(code: u16, status: (u8, u16, u16), text: &str) -> ServerReply {
    ServerReply {
        local: false,
        ..ServerReply::local(code, status, text)
    }
}

#[test]
fn without_backoff_keys_the_shipped_rules_alone_apply() {
    let config = parse("");
    assert!(config.backoff.is_empty());
    assert!(config.delivery.default_backoff);
    assert!(config.backoff_rules().is_empty());
    assert_eq!(
        config.shipped_backoff().len(),
        crate::shaping::backoff::shipped().len()
    );
    let text = printed(&config);
    assert!(text.contains("default_backoff = true\n"), "{text}");
    assert!(!text.contains("[[backoff]]"), "{text}");
}

#[test]
fn every_backoff_key_is_read() {
    let config = parse(RULES);
    assert!(!config.delivery.default_backoff);
    assert!(config.shipped_backoff().is_empty());
    let first = &config.backoff[0];
    assert_eq!(first.conditions.code, Some(421));
    assert_eq!(first.conditions.enhanced, Some((4, 7, 28)));
    assert_eq!(
        first.conditions.reply.as_deref(),
        Some("^421 .*(too many|rate)")
    );
    assert_eq!(first.action, BackoffActionSetting::Suspend);
    assert_eq!(first.factor, None);
    assert_eq!(first.duration.as_millis(), 15 * 60_000);
    let rules = config.backoff_rules();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0].action, BackoffAction::Suspend);
    assert_eq!(rules[1].action, BackoffAction::Throttle { factor: 0.25 });
    assert_eq!(rules[1].duration_ms, 3_600_000);
    assert_eq!(
        rules[2].action,
        BackoffAction::Throttle { factor: 0.5 },
        "the default factor"
    );
    assert_eq!(rules[2].duration_ms, 600_000);
    assert!(first.reroute && rules[0].reroute);
    assert!(!rules[1].reroute && !rules[2].reroute, "off unless written");
    assert!(rules[2].text.is_none() && rules[2].code.is_none());
}

#[test]
fn the_files_rules_match_in_file_order() {
    let config = parse(RULES);
    let (mine, shipped) = (config.backoff_rules(), config.shipped_backoff());
    let action = |reply: &ServerReply| first_match(&mine, &shipped, reply).map(|r| r.action);
    let rate = reply(421, (4, 7, 28), "421 4.7.28 unusual rate");
    assert_eq!(action(&rate), Some(BackoffAction::Suspend));
    let other_status = reply(421, (4, 7, 0), "421 4.7.0 rate limited, slow down");
    assert_eq!(
        action(&other_status),
        Some(BackoffAction::Throttle { factor: 0.25 })
    );
    let policy = reply(550, (5, 7, 1), "550 5.7.1 refused");
    assert_eq!(
        action(&policy),
        Some(BackoffAction::Throttle { factor: 0.5 })
    );
    assert_eq!(action(&reply(450, (4, 2, 1), "450 4.2.1 busy")), None);
    // With the shipped rules on, they answer where the file's do not.
    let config = parse(&RULES.replace("default_backoff = false", "default_backoff = true"));
    let (mine, shipped) = (config.backoff_rules(), config.shipped_backoff());
    assert_eq!(
        first_match(&mine, &shipped, &rate).map(|r| r.duration_ms),
        Some(15 * 60_000),
        "the file's rule before the shipped Gmail one"
    );
    let yahoo = reply(
        421,
        (4, 7, 0),
        "421 4.7.0 [TSS04] Messages temporarily deferred",
    );
    let rule = first_match(&mine, &shipped, &yahoo).map(|r| r.duration_ms);
    assert_eq!(rule, Some(60 * 60_000), "the shipped Yahoo rule");
}

#[test]
fn printed_backoff_reads_back_the_same() {
    assert_prints_and_reads_back(
        &parse(RULES),
        &[
            "default_backoff = false\n",
            "[[backoff]]\ncode = 421\nenhanced = \"4.7.28\"\nreply = \"^421 .*(too many|rate)\"\naction = \"suspend\"\nduration = \"15m\"\n",
            "[[backoff]]\nreply = \"(?i)slow down\"\naction = \"throttle\"\nfactor = 0.25\nduration = \"1h\"\n",
            "[[backoff]]\nenhanced = \"5.7.1\"\naction = \"throttle\"\nduration = \"10m\"\n",
        ],
    );
}

#[test]
fn bad_backoff_values_are_errors_at_their_value() {
    let rule = |body: &str| format!("[[backoff]]\n{body}");
    for (text, location, contains) in [
        (
            rule("action = \"suspend\"\nduration = \"1m\"\n"),
            "1:1",
            "needs at least one of code, enhanced or reply: without them it would match every 4xx and 5xx reply",
        ),
        (
            rule("code = 250\naction = \"suspend\"\nduration = \"1m\"\n"),
            "2:8",
            "code = 250 must be between 400 and 599",
        ),
        (
            rule("code = 70000\naction = \"suspend\"\nduration = \"1m\"\n"),
            "2:8",
            "code = 70000 must be between 400 and 599",
        ),
        (
            rule("enhanced = \"4.7\"\naction = \"suspend\"\nduration = \"1m\"\n"),
            "2:12",
            "invalid enhanced status \"4.7\": expected class.subject.detail",
        ),
        (
            rule("enhanced = \"4.7.28 x\"\naction = \"suspend\"\nduration = \"1m\"\n"),
            "2:12",
            "invalid enhanced status",
        ),
        (
            rule("enhanced = \"2.0.0\"\naction = \"suspend\"\nduration = \"1m\"\n"),
            "2:12",
            "is of class 2: a backoff matches only class 4 or 5",
        ),
        (
            rule("code = 421\nenhanced = \"5.7.1\"\naction = \"suspend\"\nduration = \"1m\"\n"),
            "3:12",
            "is of class 5 but code = 421 is of class 4",
        ),
        (
            rule("reply = \"(too\"\naction = \"suspend\"\nduration = \"1m\"\n"),
            "2:9",
            "reply pattern \"(too\" does not compile: unclosed group",
        ),
        (
            rule("reply = \"\"\naction = \"suspend\"\nduration = \"1m\"\n"),
            "2:9",
            "reply is empty",
        ),
        (
            rule("code = 421\nduration = \"1m\"\n"),
            "1:1",
            "needs action = \"suspend\" or \"throttle\"",
        ),
        (
            rule("code = 421\naction = \"pause\"\nduration = \"1m\"\n"),
            "3:10",
            "unknown action \"pause\": expected \"suspend\" or \"throttle\"",
        ),
        (
            rule("code = 421\naction = \"suspend\"\nfactor = 0.5\nduration = \"1m\"\n"),
            "4:10",
            "factor is for action = \"throttle\"",
        ),
        (
            rule("code = 421\naction = \"throttle\"\nfactor = 1.0\nduration = \"1m\"\n"),
            "4:10",
            "factor = 1 must be above 0 and below 1",
        ),
        (
            rule("code = 421\naction = \"throttle\"\nfactor = 0.0\nduration = \"1m\"\n"),
            "4:10",
            "must be above 0 and below 1",
        ),
        (
            rule("code = 421\naction = \"throttle\"\nfactor = nan\nduration = \"1m\"\n"),
            "4:10",
            "must be above 0 and below 1",
        ),
        (
            rule("code = 421\naction = \"suspend\"\n"),
            "1:1",
            "needs a duration",
        ),
        (
            rule("code = 421\naction = \"suspend\"\nduration = \"0s\"\n"),
            "4:12",
            "duration = \"0s\" must be above zero and at most \"7d\"",
        ),
        (
            rule("code = 421\naction = \"suspend\"\nduration = \"8d\"\n"),
            "4:12",
            "at most \"7d\"",
        ),
        (
            rule("code = 421\naction = \"throttle\"\nduration = \"1m\"\nreroute = true\n"),
            "5:11",
            "reroute is for action = \"suspend\"",
        ),
        (
            rule("code = 421\naction = \"suspend\"\nduration = \"1m\"\nreroute = \"yes\"\n"),
            "5:11",
            "invalid type",
        ),
        (
            "[delivery]\ndefault_backoff = \"yes\"\n".to_owned(),
            "2:19",
            "invalid type",
        ),
    ] {
        assert_error(&text, location, contains);
    }
}
