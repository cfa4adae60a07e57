//! Durations as written in config files: `"500ms"`, `"30s"`, `"5m"`, `"1h"`,
//! `"5d"`, or a bare integer (TOML integer or digits in a string) meaning
//! seconds.
//!
//! This module owns the text form in both directions, so that `petrel check`
//! prints durations the way an operator would write them. It never reads a
//! clock.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a duration could not be parsed; the text says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}; write a whole number with a unit (ms, s, m, h, d), e.g. \"30s\" or \"5m\"")]
pub struct DurationError {
    text: String,
    reason: &'static str,
}

/// Unit suffixes and their length in milliseconds. `ms` comes before `m` and
/// `s` only for readability: matching is exact on the whole suffix.
const UNITS: [(&str, u64); 6] = [
    ("ms", 1),
    ("", 1_000),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses `"30s"`-style text. Fractions and spaces are rejected rather than
/// guessed at: a retry schedule that silently means something else is worse
/// than a config error.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let fail = |reason| DurationError {
        text: text.to_owned(),
        reason,
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(fail("it does not start with a number"));
    }
    let scale = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, ms)| *ms)
        .ok_or_else(|| fail("unknown unit"))?;
    let count: u64 = digits.parse().map_err(|_| fail("number too large"))?;
    let millis = count
        .checked_mul(scale)
        .ok_or_else(|| fail("number too large"))?;
    Ok(Duration::from_millis(millis))
}

/// Formats a duration with the largest unit that represents it exactly, so
/// `parse(&format(d)) == d` for every duration with whole milliseconds.
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    for (name, scale) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis % scale == 0 {
            return format!("{}{name}", millis / scale);
        }
    }
    format!("{millis}ms")
}

/// A duration setting as it appears in TOML: a string with a unit or an
/// integer number of seconds. Use it for new keys, alone or in lists
/// (`retry = ["5m", "30m"]` is a `Vec<DurationSetting>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationSetting(pub Duration);

impl DurationSetting {
    /// The duration itself, for timers and arithmetic.
    pub const fn duration(&self) -> Duration {
        self.0
    }

    /// Whole milliseconds, for clocks kept as `u64` milliseconds; saturates
    /// (a parsed setting always fits: it was written in `u64` milliseconds).
    pub fn as_millis(&self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl<'de> Deserialize<'de> for DurationSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(DurationVisitor)
            .map(DurationSetting)
    }
}

impl Serialize for DurationSetting {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(self.0))
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a duration such as \"30s\", \"5m\", \"1h\", \"5d\", \"500ms\" or a number of seconds",
        )
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(secs))
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
        u64::try_from(secs)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format_args!("invalid duration {secs}: it is negative")))
    }
}

/// `#[serde(with = "duration::serde_str")]` for plain `Duration` fields.
pub mod serde_str {
    use super::DurationSetting;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        DurationSetting(*value).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        DurationSetting::deserialize(deserializer).map(|setting| setting.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("5d"), Ok(Duration::from_secs(5 * 86_400)));
        assert_eq!(parse("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_it_cannot_read_exactly() {
        for bad in [
            "",
            "s",
            "1.5h",
            "5 m",
            " 5m",
            "5M",
            "5mm",
            "-5s",
            "5w",
            "99999999999999999999s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(
            parse("18446744073709551615d").is_err(),
            "overflow must be an error"
        );
    }

    #[test]
    fn error_text_says_what_is_accepted() {
        let message = parse("1.5h").unwrap_err().to_string();
        assert_eq!(
            message,
            "invalid duration \"1.5h\": unknown unit; write a whole number with a unit (ms, s, m, h, d), e.g. \"30s\" or \"5m\""
        );
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_secs(45)), "45s");
        assert_eq!(format(Duration::from_secs(600)), "10m");
        assert_eq!(format(Duration::from_secs(7200)), "2h");
        assert_eq!(format(Duration::from_secs(5 * 86_400)), "5d");
    }

    #[test]
    fn setting_gives_its_duration_and_milliseconds() {
        let setting = DurationSetting(Duration::from_secs(300));
        assert_eq!(setting.duration(), Duration::from_secs(300));
        assert_eq!(setting.as_millis(), 300_000);
        assert_eq!(DurationSetting(Duration::MAX).as_millis(), u64::MAX);
    }

    #[test]
    fn toml_accepts_strings_and_integers() {
        #[derive(Deserialize)]
        struct Doc {
            a: DurationSetting,
            b: DurationSetting,
            list: Vec<DurationSetting>,
        }
        let doc: Doc = match toml::from_str("a = \"5m\"\nb = 30\nlist = [\"1m\", 2]") {
            Ok(doc) => doc,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(doc.a.0, Duration::from_secs(300));
        assert_eq!(doc.b.0, Duration::from_secs(30));
        assert_eq!(
            doc.list,
            vec![
                DurationSetting(Duration::from_secs(60)),
                DurationSetting(Duration::from_secs(2))
            ]
        );
        assert!(toml::from_str::<Doc>("a = -1\nb = 1\nlist = []").is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(millis in 0u64..(1u64 << 50)) {
            let duration = Duration::from_millis(millis);
            prop_assert_eq!(parse(&format(duration)), Ok(duration));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,12}") {
            let _ = parse(&text);
        }
    }
}
