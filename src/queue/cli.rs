//! `petrel queue`: the operator's client of the admin API's queue
//! endpoints. It turns a command into one HTTP request to `[admin]
//! address`, and the JSON answer into a table or a few lines (or prints
//! it raw with `--json`).
//!
//! It owns the commands' requests and how answers read; the decisions
//! are the daemon's.
//! Must never: act on a queue itself (a spool belongs to the running
//! daemon), or go through an HTTP proxy from the environment (the admin
//! address is this machine's).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::api::{parse_queue_id, MessageView, QueueRow, Scope};

/// How long the client waits for the daemon (which waits up to 5 s for
/// its shards).
const TIMEOUT: Duration = Duration::from_secs(15);

/// One `petrel queue` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    List,
    Show(String),
    Pause(Scope),
    Resume(Scope),
    Flush(Scope),
    /// A destination or a queue ID.
    Bounce(String),
    Delete(String),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("the admin endpoint is off ([admin] address = \"\"); petrel queue needs it")]
    NoAdmin,
    #[error("cannot reach the daemon's admin endpoint at {address}: {why}")]
    Unreachable { address: SocketAddr, why: String },
    #[error("{0}")]
    Refused(String),
    #[error("the daemon's answer is not what petrel queue expects: {0}")]
    Garbled(String),
}

impl Action {
    /// The method and the path with its query.
    pub fn request(&self) -> (&'static str, String) {
        let target = |word: &str, t: &str| match parse_queue_id(t) {
            Some(_) => format!("/queue/{word}?id={}", encode(t)),
            None => format!("/queue/{word}?destination={}", encode(t)),
        };
        match self {
            Action::List => ("GET", "/queue".to_owned()),
            Action::Show(id) => ("GET", format!("/queue/{}", encode(id))),
            Action::Pause(s) => ("POST", with_scope("/queue/pause", s)),
            Action::Resume(s) => ("POST", with_scope("/queue/resume", s)),
            Action::Flush(s) => ("POST", with_scope("/queue/flush", s)),
            Action::Bounce(t) => ("POST", target("bounce", t)),
            Action::Delete(t) => ("POST", target("delete", t)),
        }
    }
}

fn with_scope(path: &str, s: &Scope) -> String {
    let mut out = path.to_owned();
    let mut sep = '?';
    for (k, v) in [
        ("destination", &s.destination),
        ("source", &s.source),
        ("pool", &s.pool),
    ] {
        if let Some(v) = v {
            let _ = write!(out, "{sep}{k}={}", encode(v));
            sep = '&';
        }
    }
    out
}

/// Percent-encodes all but unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Runs `action` against the daemon at `address`; the JSON answer of a
/// successful request, else the daemon's error.
pub fn call(address: Option<SocketAddr>, action: &Action) -> Result<Value, CliError> {
    let address = address.ok_or(CliError::NoAdmin)?;
    let (method, path) = action.request();
    // The endpoint may listen on an unspecified address: ask loopback.
    let host = match address.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], address.port()))
        }
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, address.port()))
        }
        _ => address,
    };
    let url = format!("http://{host}{path}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .proxy(None)
        .build()
        .into();
    let unreachable = |e: ureq::Error| CliError::Unreachable {
        address: host,
        why: e.to_string(),
    };
    let mut response = match method {
        "GET" => agent.get(&url).call(),
        _ => agent.post(&url).send_empty(),
    }
    .map_err(unreachable)?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| CliError::Garbled(e.to_string()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|_| CliError::Garbled(format!("HTTP {status}: {}", text.trim())))?;
    if status != 200 {
        let why = value["error"].as_str().unwrap_or(text.trim());
        return Err(CliError::Refused(format!("HTTP {status}: {why}")));
    }
    Ok(value)
}

/// How an answer reads for a person.
pub fn render(action: &Action, value: &Value) -> Result<String, CliError> {
    let garbled = |e: serde_json::Error| CliError::Garbled(e.to_string());
    Ok(match action {
        Action::List => {
            let rows: Vec<QueueRow> =
                serde_json::from_value(value["queues"].clone()).map_err(garbled)?;
            let pauses: Vec<Scope> =
                serde_json::from_value(value["paused"].clone()).map_err(garbled)?;
            list_table(&rows, &pauses)
        }
        Action::Show(_) => {
            let view: MessageView = serde_json::from_value(value.clone()).map_err(garbled)?;
            message_text(&view)
        }
        Action::Pause(s) => format!("paused {}\n", scope_text(s)),
        Action::Resume(s) => format!(
            "resumed {}: {} pause(s) ended, {} suspension(s) lifted\n",
            scope_text(s),
            value["pauses_ended"],
            value["suspensions_lifted"]
        ),
        Action::Flush(s) => format!(
            "flushed {}: {} deferred recipient group(s) due now\n",
            scope_text(s),
            value["flushed"]
        ),
        Action::Bounce(t) => format!("bounced {t}: {} recipient(s)\n", value["bounced"]),
        Action::Delete(t) => format!("deleted {t}: {} recipient(s)\n", value["deleted"]),
    })
}

fn scope_text(s: &Scope) -> String {
    let mut out = s
        .destination
        .clone()
        .unwrap_or_else(|| "every destination".to_owned());
    if let Some(v) = &s.source {
        let _ = write!(out, " from source {v}");
    }
    if let Some(v) = &s.pool {
        let _ = write!(out, " from pool {v}");
    }
    out
}

/// The queue list as a table, then the pauses in force.
pub fn list_table(rows: &[QueueRow], pauses: &[Scope]) -> String {
    let head = [
        "DESTINATION",
        "SOURCE",
        "MSGS",
        "READY",
        "DEFERRED",
        "CONNS",
        "OLDEST",
        "STATE",
        "LAST REPLY",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let state = match r.suspended_s {
                0 => r.state.clone(),
                s => format!("{} {}", r.state, age(s)),
            };
            [
                r.destination.clone(),
                r.source.clone(),
                r.messages.to_string(),
                r.ready.to_string(),
                r.deferred.to_string(),
                r.connections.to_string(),
                age(r.oldest_s),
                state,
                r.last_reply.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = head.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[&str]| {
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c:<w$}  ");
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    if rows.is_empty() {
        out.push_str("no mail waiting\n");
    } else {
        line(&mut out, &head);
        for row in &cells {
            line(&mut out, &row.each_ref().map(String::as_str));
        }
    }
    for p in pauses {
        let _ = writeln!(out, "paused: {}", scope_text(p));
    }
    out
}

/// A message as a few lines.
pub fn message_text(m: &MessageView) -> String {
    let mut out = String::new();
    let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
    let _ = writeln!(out, "id:           {}", m.id);
    let _ = writeln!(out, "sender:       {sender}");
    let _ = writeln!(out, "size:         {} bytes", m.size);
    let _ = writeln!(out, "received:     {} (unix ms)", m.received_ms);
    let _ = writeln!(out, "pool:         {}", m.pool);
    let _ = writeln!(out, "attempts:     {}", m.attempts);
    let next = match m.next_attempt_ms {
        0 => "now".to_owned(),
        t => format!("{t} (unix ms)"),
    };
    let _ = writeln!(out, "next attempt: {next}");
    for r in &m.recipients {
        let _ = writeln!(out, "recipient:    {} ({})", r.address, r.state);
    }
    out
}

/// Seconds as the largest whole unit or two: `45s`, `3m12s`, `2h5m`,
/// `4d3h`.
fn age(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_requests_with_encoded_queries() {
        let scope = Scope {
            destination: Some("relay:smart.example:587".to_owned()),
            source: None,
            pool: Some("bulk mail".to_owned()),
        };
        assert_eq!(
            Action::Pause(scope).request(),
            (
                "POST",
                "/queue/pause?destination=relay%3Asmart.example%3A587&pool=bulk%20mail".to_owned()
            )
        );
        assert_eq!(
            Action::Flush(Scope::default()).request(),
            ("POST", "/queue/flush".to_owned())
        );
        assert_eq!(
            Action::Bounce("0100000000000ABC".to_owned()).request(),
            ("POST", "/queue/bounce?id=0100000000000ABC".to_owned())
        );
        assert_eq!(
            Action::Delete("example.com".to_owned()).request(),
            ("POST", "/queue/delete?destination=example.com".to_owned())
        );
        assert_eq!(Action::List.request(), ("GET", "/queue".to_owned()));
    }

    #[test]
    fn the_list_is_a_table_with_the_pauses_under_it() {
        let row = QueueRow {
            destination: "example.com".to_owned(),
            source: "ip1".to_owned(),
            messages: 3,
            ready: 1,
            deferred: 2,
            connections: 0,
            oldest_s: 192,
            state: "suspended".to_owned(),
            suspended_s: 3600,
            last_reply: Some("421 4.7.0 try later".to_owned()),
        };
        let text = list_table(&[row], &[Scope::destination("example.net")]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("DESTINATION  SOURCE  MSGS"), "{text}");
        assert!(lines[1].starts_with("example.com  ip1     3"), "{text}");
        assert!(lines[1].contains("3m12s"), "{text}");
        assert!(lines[1].contains("suspended 1h0m"), "{text}");
        assert!(lines[1].ends_with("421 4.7.0 try later"), "{text}");
        assert_eq!(lines[2], "paused: example.net");
        assert_eq!(list_table(&[], &[]), "no mail waiting\n");
    }

    #[test]
    fn ages_read_in_two_units() {
        assert_eq!(age(45), "45s");
        assert_eq!(age(7_500), "2h5m");
        assert_eq!(age(4 * 86_400 + 3 * 3600), "4d3h");
    }

    #[test]
    fn a_daemon_that_is_not_there_is_a_clear_error() {
        assert!(matches!(call(None, &Action::List), Err(CliError::NoAdmin)));
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let e = call(
            Some(SocketAddr::from(([127, 0, 0, 1], port))),
            &Action::List,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot reach the daemon's admin endpoint at 127.0.0.1:"),
            "{e}"
        );
    }
}
