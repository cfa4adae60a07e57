//! The admin API's queue endpoints: JSON over HTTP for `petrel queue`.
//!
//! `GET /queue` lists the queues (and the pauses in force), `GET
//! /queue/ID` shows a message, and `POST /queue/{pause,resume,flush,
//! bounce,delete}` act on a destination (`?destination=D`, narrowed by
//! `&source=S` or `&pool=P`) or a message (`?id=ID`). Each request is
//! asked of the shards through their control channels and the answers
//! merged; the admin thread waits for them, up to `ANSWER_TIMEOUT`, the
//! shards never wait for it.
//!
//! It owns the set of pauses and `<spool>/paused`, the one copy that
//! survives a restart: a pause is kept in the file before any shard
//! hears of it. Every action is logged.
//! Must never: change a pause without writing the file first, or act on
//! a request it could not read whole (a bad one is a 400 and does
//! nothing).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tiny_http::Method;

use crate::config::Config;
use crate::control::{ControlError, Controls};
use crate::queue::api::{merge_rows, parse_queue_id, QueueAnswer, QueueRequest, Scope, Target};
use crate::queue::pauses;

/// How long the admin thread waits for the shards' answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest destination a request may name.
const MAX_DESTINATION: usize = 300;

/// An HTTP status and a JSON body.
pub type Reply = (u16, Value);

/// The queue endpoints' state, owned by the admin thread.
pub struct QueueAdmin {
    controls: Controls,
    spool: PathBuf,
    pauses: Vec<Scope>,
    sources: Vec<String>,
    pools: Vec<String>,
}

impl QueueAdmin {
    /// The endpoints for the shards behind `controls`, with the pauses
    /// read from the spool at start (already sent to the shards).
    pub fn new(controls: Controls, config: &Arc<Config>, pauses: Vec<Scope>) -> QueueAdmin {
        let or_default = |names: Vec<String>| match names.is_empty() {
            true => vec!["default".to_owned()],
            false => names,
        };
        QueueAdmin {
            controls,
            spool: config.spool.path.clone(),
            pauses,
            sources: or_default(config.source.iter().map(|s| s.name.clone()).collect()),
            pools: or_default(config.pool.iter().map(|p| p.name.clone()).collect()),
        }
    }

    /// Answers a request for `url` (a path under `/queue`, with its
    /// query).
    pub fn handle(&mut self, method: &Method, url: &str) -> Reply {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let params = match Params::parse(query) {
            Ok(p) => p,
            Err(why) => return error(400, &why),
        };
        let action = path.strip_prefix("/queue").unwrap_or("");
        const ACTIONS: [&str; 5] = ["/pause", "/resume", "/flush", "/bounce", "/delete"];
        let result = match (method, action) {
            (Method::Get, "" | "/") => self.list(),
            (Method::Post, "/pause") => self.pause(&params),
            (Method::Post, "/resume") => self.resume(&params),
            (Method::Post, "/flush") => self.flush(&params),
            (Method::Post, "/bounce") => self.remove(&params, Removal::Bounce),
            (Method::Post, "/delete") => self.remove(&params, Removal::Delete),
            (_, a) if a.is_empty() || a == "/" || ACTIONS.contains(&a) => Err(error(
                405,
                "method not allowed: GET /queue and /queue/ID, POST /queue/ACTION",
            )),
            (Method::Get, id) if id.len() > 1 && !id[1..].contains('/') => self.show(&id[1..]),
            _ => Err(error(
                404,
                "not found: GET /queue, GET /queue/ID, POST /queue/{pause,resume,flush,bounce,delete}",
            )),
        };
        result.unwrap_or_else(|e| e)
    }

    fn ask(&self, shards: &[usize], request: QueueRequest) -> Result<Vec<QueueAnswer>, Reply> {
        self.controls
            .ask_queues(shards, &request, ANSWER_TIMEOUT)
            .map_err(|e: ControlError| error(503, &format!("the daemon could not answer: {e}")))
    }

    fn all_shards(&self) -> Vec<usize> {
        (0..self.controls.shards()).collect()
    }

    /// The sum of the shards' counts.
    fn count(&self, shards: &[usize], request: QueueRequest) -> Result<usize, Reply> {
        let answers = self.ask(shards, request)?;
        Ok(answers
            .iter()
            .map(|a| match a {
                QueueAnswer::Count(n) => *n,
                _ => 0,
            })
            .sum())
    }

    fn list(&self) -> Result<Reply, Reply> {
        let answers = self.ask(&self.all_shards(), QueueRequest::List)?;
        let rows = merge_rows(answers.into_iter().filter_map(|a| match a {
            QueueAnswer::List(rows) => Some(rows),
            _ => None,
        }));
        Ok((200, json!({ "queues": rows, "paused": self.pauses })))
    }

    fn show(&self, id: &str) -> Result<Reply, Reply> {
        let (shard, msg_id) = self.message(id)?;
        let answers = self.ask(&[shard], QueueRequest::Show(msg_id))?;
        match answers.into_iter().next() {
            Some(QueueAnswer::Show(Some(view))) => Ok((200, json!(view))),
            _ => Err(not_queued(id)),
        }
    }

    /// The shard and message of a queue ID the daemon could hold.
    fn message(&self, id: &str) -> Result<(usize, u64), Reply> {
        let Some((shard, msg_id)) = parse_queue_id(id) else {
            return Err(error(
                400,
                &format!("{id:?} is not a queue ID (16 hex digits)"),
            ));
        };
        if shard >= self.controls.shards() {
            return Err(not_queued(id));
        }
        Ok((shard, msg_id))
    }

    /// The scope a request names; `need_destination`: it must name one.
    fn scope(&self, params: &Params, need_destination: bool) -> Result<Scope, Reply> {
        let destination = match params.get("destination") {
            Some(d) => Some(destination(d)?),
            None if need_destination => return Err(error(400, "missing destination=DESTINATION")),
            None => None,
        };
        let known = |what: &str, name: Option<&str>, names: &[String]| match name {
            Some(n) if !names.iter().any(|k| k == n) => Err(error(
                400,
                &format!("unknown {what} {n:?}; configured: {}", names.join(", ")),
            )),
            n => Ok(n.map(str::to_owned)),
        };
        Ok(Scope {
            destination,
            source: known("source", params.get("source"), &self.sources)?,
            pool: known("pool", params.get("pool"), &self.pools)?,
        })
    }

    /// Keeps `pauses` in the file, then in force here and on every shard.
    fn set_pauses(&mut self, pauses: Vec<Scope>) -> Result<(), Reply> {
        if pauses.len() > pauses::MAX_PAUSES {
            return Err(error(
                400,
                &format!("at most {} pauses", pauses::MAX_PAUSES),
            ));
        }
        if let Err(e) = pauses::save(&self.spool, &pauses) {
            tracing::error!(error = %e, "queue: could not keep the pauses");
            return Err(error(500, &format!("could not keep the pauses: {e}")));
        }
        self.pauses = pauses;
        let set = Arc::new(self.pauses.clone());
        self.ask(&self.all_shards(), QueueRequest::Pauses(set))?;
        Ok(())
    }

    fn pause(&mut self, params: &Params) -> Result<Reply, Reply> {
        params.only(&["destination", "source", "pool"])?;
        let scope = self.scope(params, true)?;
        let mut set = self.pauses.clone();
        let added = pauses::add(&mut set, scope.clone());
        self.set_pauses(set)?;
        log_action("pause", &scope, None, usize::from(added));
        Ok((200, json!({ "paused": scope, "pauses": self.pauses })))
    }

    fn resume(&mut self, params: &Params) -> Result<Reply, Reply> {
        params.only(&["destination", "source", "pool"])?;
        let scope = self.scope(params, true)?;
        let mut set = self.pauses.clone();
        let ended = pauses::remove(&mut set, &scope);
        self.set_pauses(set)?;
        let lifted = self.count(&self.all_shards(), QueueRequest::Resume(scope.clone()))?;
        log_action("resume", &scope, None, ended + lifted);
        Ok((
            200,
            json!({ "resumed": scope, "pauses_ended": ended, "suspensions_lifted": lifted, "pauses": self.pauses }),
        ))
    }

    fn flush(&self, params: &Params) -> Result<Reply, Reply> {
        params.only(&["destination", "source", "pool"])?;
        let scope = self.scope(params, false)?;
        let n = self.count(&self.all_shards(), QueueRequest::Flush(scope.clone()))?;
        log_action("flush", &scope, None, n);
        Ok((200, json!({ "flushed": n })))
    }

    fn remove(&self, params: &Params, how: Removal) -> Result<Reply, Reply> {
        params.only(&["destination", "source", "pool", "id"])?;
        let (shards, target, scope, id) = match params.get("id") {
            Some(_) if params.get("destination").is_some() => {
                return Err(error(
                    400,
                    "give destination=DESTINATION or id=ID, not both",
                ))
            }
            Some(id) => {
                let (shard, msg_id) = self.message(id)?;
                let shown = self.ask(&[shard], QueueRequest::Show(msg_id))?;
                if !matches!(shown.first(), Some(QueueAnswer::Show(Some(_)))) {
                    return Err(not_queued(id));
                }
                (
                    vec![shard],
                    Target::Message(msg_id),
                    Scope::default(),
                    Some(id),
                )
            }
            None => {
                let scope = self.scope(params, true)?;
                (
                    self.all_shards(),
                    Target::Queues(scope.clone()),
                    scope,
                    None,
                )
            }
        };
        let request = match how {
            Removal::Bounce => QueueRequest::Bounce(target),
            Removal::Delete => QueueRequest::Delete(target),
        };
        let n = self.count(&shards, request)?;
        let word = how.word();
        log_action(word, &scope, id, n);
        Ok((200, json!({ word: n })))
    }
}

#[derive(Clone, Copy)]
enum Removal {
    Bounce,
    Delete,
}

impl Removal {
    fn word(self) -> &'static str {
        match self {
            Removal::Bounce => "bounced",
            Removal::Delete => "deleted",
        }
    }
}

fn log_action(action: &str, scope: &Scope, id: Option<&str>, count: usize) {
    tracing::info!(
        action,
        destination = scope.destination.as_deref().unwrap_or("*"),
        source = scope.source.as_deref().unwrap_or("*"),
        pool = scope.pool.as_deref().unwrap_or("*"),
        id = id.unwrap_or(""),
        count,
        "queue: operator action"
    );
}

fn error(status: u16, why: &str) -> Reply {
    (status, json!({ "error": why }))
}

fn not_queued(id: &str) -> Reply {
    error(404, &format!("no message {id} is queued"))
}

/// A destination as a request names it: checked and in lower case.
fn destination(text: &str) -> Result<String, Reply> {
    let ok = !text.is_empty()
        && text.len() <= MAX_DESTINATION
        && text.bytes().all(|b| b.is_ascii_graphic());
    match ok {
        true => Ok(text.to_ascii_lowercase()),
        false => Err(error(400, &format!("{text:?} is not a destination"))),
    }
}

/// A request's query parameters, each once.
#[derive(Debug, Default, PartialEq, Eq)]
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str) -> Result<Params, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k)?, percent_decode(v)?);
            if out.iter().any(|(seen, _)| *seen == k) {
                return Err(format!("{k} given twice"));
            }
            out.push((k, v));
        }
        Ok(Params(out))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A 400 for a parameter the endpoint does not take.
    fn only(&self, keys: &[&str]) -> Result<(), Reply> {
        match self.0.iter().find(|(k, _)| !keys.contains(&k.as_str())) {
            Some((k, _)) => Err(error(
                400,
                &format!("unknown parameter {k:?}; this takes {}", keys.join(", ")),
            )),
            None => Ok(()),
        }
    }
}

/// `%XX` and `+` decoded (a query's form encoding); the result must be
/// UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(v.ok_or_else(|| format!("bad %-escape in {text:?}"))?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_decode_and_repeats_are_refused() {
        let p = Params::parse("destination=relay%3Ahost.example%3A587&source=ip+1").unwrap();
        assert_eq!(p.get("destination"), Some("relay:host.example:587"));
        assert_eq!(p.get("source"), Some("ip 1"));
        assert_eq!(p.get("pool"), None);
        assert!(Params::parse("a=1&a=2").is_err());
        assert!(Params::parse("a=%G1").is_err());
        assert!(Params::parse("a=%4").is_err());
        assert!(Params::parse("a=%FF").is_err(), "not UTF-8");
        assert_eq!(Params::parse(""), Ok(Params::default()));
    }

    #[test]
    fn destinations_are_lower_cased_and_checked() {
        assert_eq!(destination("Example.COM"), Ok("example.com".to_owned()));
        assert_eq!(destination("").unwrap_err().0, 400);
        assert_eq!(destination("a b").unwrap_err().0, 400);
        assert_eq!(destination(&"a".repeat(301)).unwrap_err().0, 400);
    }

    #[test]
    fn requests_the_api_does_not_know_get_404_or_405_and_bad_ones_400() {
        let (controls, _shards) = crate::control::channels(0);
        let config = Arc::new(Config::embedded_default());
        let mut admin = QueueAdmin::new(controls, &config, Vec::new());
        assert_eq!(admin.handle(&Method::Get, "/queue/pause").0, 405);
        assert_eq!(admin.handle(&Method::Delete, "/queue").0, 405);
        assert_eq!(admin.handle(&Method::Post, "/queue/explode").0, 404);
        assert_eq!(admin.handle(&Method::Get, "/queue/nothex").0, 400);
        assert_eq!(admin.handle(&Method::Get, "/queue/0000000000000001").0, 404);
        assert_eq!(admin.handle(&Method::Post, "/queue/pause").0, 400);
        let (status, body) = admin.handle(
            &Method::Post,
            "/queue/pause?destination=a.example&source=nope",
        );
        assert_eq!(status, 400);
        assert!(
            body["error"].as_str().unwrap().contains("unknown source"),
            "{body}"
        );
        assert_eq!(
            admin.handle(&Method::Post, "/queue/flush?colour=red").0,
            400
        );
        assert_eq!(
            admin
                .handle(
                    &Method::Post,
                    "/queue/bounce?destination=a.example&id=0000000000000001"
                )
                .0,
            400
        );
    }
}
