//! `[accounting]` and `[[accounting.category]]` as written, and their
//! conversion into the [`accounting`](super::accounting) model: the format
//! one of two, the rotation limits in range, the job header a field name,
//! each category rule with a known category and at least one readable
//! condition, each error at the value it is about.
//!
//! It never opens the log: whether the path can be written is found when
//! the log starts.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::accounting::{AccountingSection, CategorySection, MIN_ROTATE_INTERVAL, MIN_ROTATE_SIZE};
use super::backoff_raw::reply_conditions;
use super::duration::{self, DurationSetting};
use super::egress_raw::is_field_name;
use super::raw::{checked, error_at, parsed};
use super::Located;
use crate::accounting::category::BounceCategory;
use crate::accounting::record::Format;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccounting {
    path: Option<Spanned<PathBuf>>,
    format: Option<Spanned<String>>,
    rotate_size: Option<Spanned<u64>>,
    rotate_interval: Option<Spanned<DurationSetting>>,
    job_id_header: Option<Spanned<String>>,
    #[serde(default)]
    category: Vec<Spanned<RawCategory>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    category: Option<Spanned<String>>,
    // Wider than u16 so that 70000 gets the same message as 200.
    code: Option<Spanned<i64>>,
    enhanced: Option<Spanned<String>>,
    reply: Option<Spanned<String>>,
}

impl RawAccounting {
    pub(super) fn into_section(self) -> Result<AccountingSection, Located> {
        let defaults = AccountingSection::default();
        Ok(AccountingSection {
            path: self.path.map_or(defaults.path, Spanned::into_inner),
            format: match self.format {
                Some(text) => parsed(&text, format)?,
                None => defaults.format,
            },
            rotate_size: checked(self.rotate_size, defaults.rotate_size, rotate_size)?,
            rotate_interval: checked(
                self.rotate_interval,
                defaults.rotate_interval,
                rotate_interval,
            )?,
            job_id_header: checked(self.job_id_header, defaults.job_id_header, job_id_header)?,
            category: self
                .category
                .into_iter()
                .map(category_rule)
                .collect::<Result<_, _>>()?,
        })
    }
}

fn category_rule(raw: Spanned<RawCategory>) -> Result<CategorySection, Located> {
    let span = raw.span();
    let raw = raw.into_inner();
    let Some(name) = raw.category else {
        return error_at(
            span,
            format!(
                "an [[accounting.category]] rule needs a category: one of {}",
                names()
            ),
        );
    };
    let category = parsed(&name, |name| {
        BounceCategory::from_name(name)
            .ok_or_else(|| format!("unknown category {name:?}: expected one of {}", names()))
    })?;
    if raw.code.is_none() && raw.enhanced.is_none() && raw.reply.is_none() {
        return error_at(
            span,
            "an [[accounting.category]] rule needs at least one of code, enhanced or reply: without them it would match every reply".into(),
        );
    }
    Ok(CategorySection {
        category,
        conditions: reply_conditions(raw.code, raw.enhanced, raw.reply, "a category rule")?,
    })
}

/// The ten category names, quoted, for messages.
fn names() -> String {
    let quoted: Vec<String> = BounceCategory::ALL
        .iter()
        .map(|category| format!("{:?}", category.as_str()))
        .collect();
    quoted.join(", ")
}

fn format(text: &str) -> Result<Format, String> {
    match text {
        "csv" => Ok(Format::Csv),
        "json" => Ok(Format::Json),
        _ => Err(format!(
            "unknown format {text:?}: expected \"csv\" or \"json\""
        )),
    }
}

fn rotate_size(size: &u64) -> Result<(), String> {
    match *size >= MIN_ROTATE_SIZE {
        true => Ok(()),
        false => Err(format!(
            "rotate_size = {size} is below the minimum of {MIN_ROTATE_SIZE} (1 MiB)"
        )),
    }
}

fn rotate_interval(setting: &DurationSetting) -> Result<(), String> {
    match setting.0.is_zero() || setting.0 >= MIN_ROTATE_INTERVAL {
        true => Ok(()),
        false => Err(format!(
            "rotate_interval = \"{}\" is too short: 0 (never) or at least \"{}\"",
            duration::format(setting.0),
            duration::format(MIN_ROTATE_INTERVAL)
        )),
    }
}

fn job_id_header(name: &String) -> Result<(), String> {
    match is_field_name(name) {
        true => Ok(()),
        false => Err(format!(
            "job_id_header {name:?} is not a valid header field name: printable ASCII without spaces or ':', e.g. \"X-Job-Id\"; \"\" = no job IDs"
        )),
    }
}
