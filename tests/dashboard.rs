//! The Grafana dashboard in `grafana/petrel.json`: valid JSON whose every
//! query names only metrics petrel exports.

use std::collections::BTreeSet;

/// Every string under a key named `expr`, anywhere in `v`.
fn exprs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The `petrel_*` names in a PromQL expression, with the suffixes a
/// histogram's series carry taken off.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("petrel_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| petrel::metrics::NAMES.contains(b))
            .unwrap_or(name);
        names.push(base.to_owned());
        i = end;
    }
    names
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/petrel.json");
    let text = std::fs::read_to_string(path).expect("grafana/petrel.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(dashboard["panels"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(!all.is_empty(), "no queries");
    let mut queried = BTreeSet::new();
    for expr in all {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "a query of no petrel metric: {expr}");
        for name in names {
            assert!(
                petrel::metrics::NAMES.contains(&name.as_str()),
                "{name} (in {expr}) is not a metric petrel exports"
            );
            queried.insert(name);
        }
    }
    // And the dashboard shows each of them.
    let missing: Vec<&&str> = petrel::metrics::NAMES
        .iter()
        .filter(|n| !queried.contains(**n))
        .collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
}

#[test]
fn histogram_series_count_as_their_metric() {
    assert_eq!(
        metric_names("rate(petrel_spool_sync_seconds_bucket[5m]) + petrel_nope_total"),
        ["petrel_spool_sync_seconds", "petrel_nope_total"]
    );
}
