//! What the admin API's queue endpoints ask the shards and what they
//! answer, in the shapes the JSON carries: requests name sources and
//! pools by name (each shard resolves them), answers are per shard and
//! merged here into one view.
//!
//! It owns those shapes and the merge (counts add up, the oldest message
//! is the oldest of any shard); the HTTP side is `admin`'s, the work each
//! shard does is `outbound::operator`'s.
//! Must never: hold anything a shard's mail path uses.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Queues an operator names: a destination (a domain as the queue list
/// shows it, or `relay:HOST:PORT`), or every one for a flush, narrowed
/// to one source or to the sources of one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

impl Scope {
    /// Every source's queue to `destination` (domains compare without
    /// case, so it is kept in lower case).
    pub fn destination(destination: &str) -> Scope {
        Scope {
            destination: Some(destination.to_ascii_lowercase()),
            source: None,
            pool: None,
        }
    }
}

/// What a bounce or a delete takes: the queues of a scope, or one
/// message (by its id on the shard that holds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Queues(Scope),
    Message(u64),
}

/// One request to one shard's delivery side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRequest {
    /// Every queue with mail waiting.
    List,
    /// One message of this shard.
    Show(u64),
    /// The whole set of pauses now in force.
    Pauses(Arc<Vec<Scope>>),
    /// Lift the suspensions (a backoff's too) of a scope.
    Resume(Scope),
    /// Make deferred mail of a scope due now.
    Flush(Scope),
    /// Fail the waiting recipients with a notice to the sender.
    Bounce(Target),
    /// Fail the waiting recipients without a notice.
    Delete(Target),
}

/// A shard's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueAnswer {
    List(Vec<QueueRow>),
    /// `None`: no such message queued on the shard.
    Show(Option<MessageView>),
    /// How many were affected (suspensions lifted, jobs made due,
    /// recipients bounced or deleted).
    Count(usize),
}

/// One queue (egress source × destination) as `petrel queue list` shows
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRow {
    pub destination: String,
    pub source: String,
    /// Messages waiting (ready or deferred).
    pub messages: usize,
    /// Recipient groups ready to go now.
    pub ready: usize,
    /// Recipient groups waiting for a retry.
    pub deferred: usize,
    pub connections: usize,
    /// Age of the oldest message waiting, in seconds.
    pub oldest_s: u64,
    /// `paused`, `suspended`, `active` (ready mail or a connection) or
    /// `deferred` (only retries waiting).
    pub state: String,
    /// Seconds left of a suspension; 0: none.
    pub suspended_s: u64,
    /// The last reply that deferred mail of the queue, if one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
}

/// One queued message as `petrel queue show ID` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub id: String,
    /// The envelope sender; empty for the null sender.
    pub sender: String,
    pub size: u64,
    /// When it was received, unix milliseconds.
    pub received_ms: u64,
    pub pool: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it is tried next, unix milliseconds; 0: now.
    pub next_attempt_ms: u64,
    pub recipients: Vec<RecipientView>,
}

/// One recipient of a shown message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientView {
    pub address: String,
    /// `pending` (still to deliver) or `done` (delivered or failed).
    pub state: String,
}

/// The shards' rows merged: one row per source × destination, counts
/// added, the oldest age and the longest suspension kept, a pause on any
/// shard showing, sorted by destination then source.
pub fn merge_rows(per_shard: impl IntoIterator<Item = Vec<QueueRow>>) -> Vec<QueueRow> {
    let mut merged: BTreeMap<(String, String), QueueRow> = BTreeMap::new();
    for row in per_shard.into_iter().flatten() {
        let key = (row.destination.clone(), row.source.clone());
        let Some(m) = merged.get_mut(&key) else {
            merged.insert(key, row);
            continue;
        };
        m.messages += row.messages;
        m.ready += row.ready;
        m.deferred += row.deferred;
        m.connections += row.connections;
        m.oldest_s = m.oldest_s.max(row.oldest_s);
        m.suspended_s = m.suspended_s.max(row.suspended_s);
        m.state = stronger(&m.state, &row.state).to_owned();
        if m.last_reply.is_none() {
            m.last_reply = row.last_reply;
        }
    }
    merged.into_values().collect()
}

/// The state to show of two shards' states of one queue.
fn stronger<'a>(a: &'a str, b: &'a str) -> &'a str {
    let rank = |s: &str| match s {
        "paused" => 3,
        "suspended" => 2,
        "active" => 1,
        _ => 0,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// The state of a queue: a pause first, then a suspension, then whether
/// anything can go now.
pub fn state_of(paused: bool, suspended: bool, ready: usize, connections: usize) -> &'static str {
    match () {
        _ if paused => "paused",
        _ if suspended => "suspended",
        _ if ready + connections > 0 => "active",
        _ => "deferred",
    }
}

/// A queue ID (16 hex digits: shard, then message) as shard and message
/// id; `None` when it is not one.
pub fn parse_queue_id(text: &str) -> Option<(usize, u64)> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u64::from_str_radix(text, 16).ok()?;
    Some(((v >> 56) as usize, v & 0x00FF_FFFF_FFFF_FFFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(d: &str, s: &str, messages: usize, oldest_s: u64, state: &str) -> QueueRow {
        QueueRow {
            destination: d.to_owned(),
            source: s.to_owned(),
            messages,
            ready: messages,
            deferred: 0,
            connections: 0,
            oldest_s,
            state: state.to_owned(),
            suspended_s: 0,
            last_reply: None,
        }
    }

    #[test]
    fn rows_of_one_queue_on_several_shards_add_up() {
        let mut b = row("a.example", "ip1", 2, 50, "paused");
        b.last_reply = Some("451 later".to_owned());
        let merged = merge_rows([
            vec![
                row("b.example", "ip1", 1, 5, "active"),
                row("a.example", "ip1", 3, 10, "active"),
            ],
            vec![b, row("a.example", "ip2", 1, 1, "deferred")],
        ]);
        let keys: Vec<(&str, &str)> = merged
            .iter()
            .map(|r| (r.destination.as_str(), r.source.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("a.example", "ip1"),
                ("a.example", "ip2"),
                ("b.example", "ip1")
            ]
        );
        let a = &merged[0];
        assert_eq!((a.messages, a.ready, a.oldest_s), (5, 5, 50));
        assert_eq!(a.state, "paused");
        assert_eq!(a.last_reply.as_deref(), Some("451 later"));
    }

    #[test]
    fn a_pause_shows_before_a_suspension_before_activity() {
        assert_eq!(state_of(true, true, 1, 1), "paused");
        assert_eq!(state_of(false, true, 1, 0), "suspended");
        assert_eq!(state_of(false, false, 0, 1), "active");
        assert_eq!(state_of(false, false, 0, 0), "deferred");
    }

    #[test]
    fn queue_ids_read_back_as_shard_and_message() {
        let id = crate::spool::DisplayId::new(3, 0xABCDEF);
        assert_eq!(parse_queue_id(id.as_str()), Some((3, 0xABCDEF)));
        assert_eq!(parse_queue_id("03ABC"), None);
        assert_eq!(parse_queue_id("zz00000000000001"), None);
    }
}
