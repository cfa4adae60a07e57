//! `[accounting]` as the config states it: where the accounting log goes,
//! in which format, when it rotates, which header names a job, and the
//! operator's `[[accounting.category]]` rules.
//!
//! This module owns the validated model and its defaults, and the one
//! place that turns a category rule as written into a [`CategoryRule`].
//! It never opens the log or categorizes a reply: `accounting` does. Of
//! `accounting` it uses only the parts free of I/O (the categories and
//! their rules, the format's names). The file format and its checks live
//! in `accounting_raw`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::backoff::ReplyConditions;
use super::duration::DurationSetting;
use crate::accounting::category::{BounceCategory, CategoryRule, CategoryRules, StatusPattern};
use crate::accounting::record::Format;
use crate::accounting::Rotation;

/// `rotate_size` default: 1 GiB.
pub const DEFAULT_ROTATE_SIZE: u64 = 1 << 30;
/// Smallest `rotate_size`: 1 MiB.
pub const MIN_ROTATE_SIZE: u64 = 1 << 20;
/// `rotate_interval` default: a day.
pub const DEFAULT_ROTATE_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Shortest `rotate_interval` other than 0: a minute. Shorter makes a file
/// a second, and the rotated names count seconds.
pub const MIN_ROTATE_INTERVAL: Duration = Duration::from_secs(60);
/// `job_id_header` default.
pub const DEFAULT_JOB_ID_HEADER: &str = "X-Job-Id";

/// `[accounting]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountingSection {
    /// The log file; empty: no accounting log.
    pub path: PathBuf,
    pub format: Format,
    /// Bytes at which the file is rotated.
    pub rotate_size: u64,
    /// Age at which the file is rotated; zero: never.
    pub rotate_interval: DurationSetting,
    /// The header whose value is a record's `jobId`; empty: none.
    pub job_id_header: String,
    /// `[[accounting.category]]` rules in file order, tried before the
    /// shipped ones. Not printed when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<CategorySection>,
}

/// One `[[accounting.category]]`: the replies it matches and their
/// category.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategorySection {
    pub category: BounceCategory,
    #[serde(flatten)]
    pub conditions: ReplyConditions,
}

impl Default for AccountingSection {
    fn default() -> AccountingSection {
        AccountingSection {
            path: PathBuf::new(),
            format: Format::Csv,
            rotate_size: DEFAULT_ROTATE_SIZE,
            rotate_interval: DurationSetting(DEFAULT_ROTATE_INTERVAL),
            job_id_header: DEFAULT_JOB_ID_HEADER.to_owned(),
            category: Vec::new(),
        }
    }
}

impl AccountingSection {
    /// Whether there is a log to write.
    /// When the writer rotates the file.
    pub fn rotation(&self) -> Rotation {
        Rotation {
            size: self.rotate_size,
            interval_ms: self.rotate_interval.as_millis(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.path.as_os_str().is_empty()
    }

    /// The header naming a message's job, if any.
    pub fn job_id_header(&self) -> Option<&str> {
        Some(self.job_id_header.as_str()).filter(|name| !name.is_empty())
    }

    /// The file's category rules before the shipped ones. Compiles the
    /// shipped patterns: build once, with the configuration.
    pub fn category_rules(&self) -> CategoryRules {
        CategoryRules::new(self.category.iter().map(CategorySection::rule).collect())
    }
}

impl CategorySection {
    /// The rule replies are matched against.
    pub fn rule(&self) -> CategoryRule {
        let conditions = &self.conditions;
        CategoryRule {
            code: conditions.code,
            enhanced: conditions.enhanced.map(StatusPattern::exact),
            text: conditions.pattern.0.clone(),
            category: self.category,
        }
    }
}
