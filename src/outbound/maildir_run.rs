//! The Maildir task: what a connection task is for remote mail, for a
//! hosted domain delivered into Maildirs. It takes the destination's jobs
//! from the scheduler like a connection (so the same caps, retries and
//! suspension apply), writes one file per recipient on the shard's
//! Maildir threads (`local::threads`), and hands every recipient's verdict
//! to `Outbound::settle`, the one path every outcome takes.
//!
//! Owns: the recipient's user and mailbox address (`user_of`, applied
//! again here: the spool may hold mail from before a config change), the
//! refusal of local parts that are no safe directory name (550 5.1.3) and
//! of mail already delivered to the mailbox (`Delivered-To:`, 554 5.4.6),
//! the replies each write failure defers with, and the file names'
//! per-shard count.
//! Must never: write a file on the shard's thread, call a recipient
//! delivered before its file is synced into `new/`, or lose a job taken
//! (each is settled, or goes back to the queue).

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashSet;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use super::delivery::Policy;
use super::message::{Current, Loaded};
use super::notice::Notice;
use super::report::Via;
use super::Outbound;
use crate::config::{DomainSection, LocalDelivery};
use crate::helper_pool::HelperPool;
use crate::local::maildir::{self, MaildirError, MaildirFile, Owner, Unique};
use crate::schedule::QueueKey;
use crate::smtp::client::{OutcomeKind, RcptOutcome, ServerReply};

/// Maildirs remembered as used since start (their `tmp/` cleaned); past
/// this many the memory starts over (a second cleaning costs a directory
/// read, nothing more).
const SEEN_MAX: usize = 100_000;

/// A shard's Maildir delivery state.
#[derive(Default)]
pub(super) struct Maildirs {
    /// Started on first use; `None` inside when no thread could start.
    threads: OnceCell<Option<Rc<HelperPool>>>,
    /// Files written by this shard, for unique names.
    written: Cell<u64>,
    /// The Maildirs used since start.
    seen: RefCell<HashSet<PathBuf>>,
}

impl Maildirs {
    fn threads(&self) -> Option<Rc<HelperPool>> {
        self.threads
            .get_or_init(|| crate::local::threads::start().map(Rc::new))
            .clone()
    }

    /// True the first time `dir` is used since start.
    fn first_use(&self, dir: PathBuf) -> bool {
        let mut seen = self.seen.borrow_mut();
        if seen.len() >= SEEN_MAX {
            seen.clear();
        }
        seen.insert(dir)
    }
}

/// One recipient's file, as the threads write it.
struct Planned {
    /// The transaction's index of the recipient.
    index: usize,
    user: String,
    prefix: Vec<u8>,
    clean_tmp: bool,
    counter: u64,
}

/// Delivers the jobs queued for hosted `domain` into its Maildirs; true
/// unless its root failed (then the destination is suspended as one
/// whose hosts all failed).
pub(super) async fn run(ob: &Rc<Outbound>, key: &QueueKey, domain: &str) -> bool {
    let config = ob.config();
    let section = config
        .hosted_domain(domain)
        .filter(|d| d.delivery == LocalDelivery::Maildir);
    let policy = Policy::of(&config.delivery, &config.shape(None));
    let via = Via {
        source: key.egress,
        host: Some("maildir"),
        addr: None,
    };
    let (mut spare, mut message, mut sent) = (None, Vec::new(), 0);
    while !ob.stopping.get() {
        let Some(job) = ob.take_job(key, sent) else {
            break;
        };
        let Some(d) = section else {
            // Queued before a reload changed the domain.
            let why = format!("{domain} is no longer delivered into Maildirs here");
            let until = ob.clock.monotonic_ms() + policy.suspend_ms;
            ob.defer_destination(key, job, &ServerReply::local(451, (4, 3, 0), &why), until);
            return false;
        };
        let cur = match Current::load(&ob.spool, job, spare.take()) {
            Loaded::Ready(c) => c,
            Loaded::Looping(c, reply) => {
                ob.fail_current(&c, &reply, &via);
                spare = Some(c);
                continue;
            }
            Loaded::Nothing => continue,
        };
        let (outcomes, root_failed) = deliver_message(ob, d, &cur, &mut message).await;
        ob.settle(key, &cur, &outcomes, &via, Some(Notice::Delivered));
        sent += 1;
        spare = Some(cur);
        if root_failed {
            let until = ob.clock.monotonic_ms() + policy.suspend_ms;
            ob.sched.borrow_mut().suspend(key, until);
            return false;
        }
    }
    true
}

/// Writes `cur` for each of its recipients; their outcomes, and whether
/// the domain's root failed.
async fn deliver_message(
    ob: &Outbound,
    d: &DomainSection,
    cur: &Current,
    message: &mut Vec<u8>,
) -> (Vec<RcptOutcome>, bool) {
    message.clear();
    ob.spool.with_state(|s| {
        for c in &cur.chunks {
            message.extend_from_slice(s.chunk(c).unwrap_or_default());
        }
    });
    let mut outcomes = Vec::new();
    let mut planned = Vec::new();
    let root = d.maildir_root.clone().unwrap_or_default();
    cur.with_transaction(|tx| {
        for (index, r) in tx.recipients.iter().enumerate() {
            match plan(ob, d, &root, tx.reverse_path, r.address, message) {
                Ok(mut p) => {
                    p.index = index;
                    planned.push(p);
                }
                Err(reply) => outcomes.push(outcome(index, reply)),
            }
        }
    });
    if planned.is_empty() {
        return (outcomes, false);
    }
    let written = write(ob, d, root, planned, message).await;
    let mut root_failed = false;
    for (index, result) in written {
        let reply = match result {
            Ok(path) => ServerReply::local(
                250,
                (2, 0, 0),
                &format!("delivered to Maildir as {}", path.display()),
            ),
            Err(e) => {
                root_failed |= e.is_root();
                tracing::error!(domain = %d.name, id = %ob.queue_id(cur.job.msg_id),
                    error = %e, "Maildir delivery failed; deferred");
                let (code, status) = e.reply_code();
                ServerReply::local(code, status, &e.to_string())
            }
        };
        outcomes.push(outcome(index, reply));
    }
    outcomes.sort_by_key(|o| o.index);
    (outcomes, root_failed)
}

/// The file for recipient `address`, or the reply that refuses it.
fn plan(
    ob: &Outbound,
    d: &DomainSection,
    root: &std::path::Path,
    sender: &[u8],
    address: &[u8],
    message: &[u8],
) -> Result<Planned, ServerReply> {
    let at = memchr::memrchr(b'@', address).unwrap_or(0);
    let user = std::str::from_utf8(&address[..at])
        .ok()
        .map(|local| d.user_of(local))
        .filter(|u| maildir::safe_user(u))
        .ok_or_else(|| {
            let why = "the local part cannot name a mailbox here (not a safe file name)";
            ServerReply::local(550, (5, 1, 3), why)
        })?;
    let mailbox = format!("{user}@{}", d.name);
    if maildir::delivered_before(message, mailbox.as_bytes()) {
        let why = format!("mail loop: already delivered to {mailbox} (Delivered-To:)");
        return Err(ServerReply::local(554, (5, 4, 6), &why));
    }
    let mut prefix = Vec::with_capacity(64 + sender.len() + mailbox.len());
    maildir::header_prefix(&mut prefix, sender, mailbox.as_bytes());
    let counter = ob.maildirs.written.get() + 1;
    ob.maildirs.written.set(counter);
    Ok(Planned {
        index: 0,
        clean_tmp: ob.maildirs.first_use(root.join(&*user)),
        user: user.into_owned(),
        prefix,
        counter,
    })
}

/// Writes the planned files on the Maildir threads; each index with the
/// file's path in `new/`, or why it failed.
async fn write(
    ob: &Outbound,
    d: &DomainSection,
    root: PathBuf,
    planned: Vec<Planned>,
    message: &mut Vec<u8>,
) -> Vec<(usize, Result<PathBuf, MaildirError>)> {
    let indexes: Vec<usize> = planned.iter().map(|p| p.index).collect();
    let unavailable = |why: &'static str| {
        (indexes.iter())
            .map(|&i| (i, Err(MaildirError::Unavailable(why))))
            .collect()
    };
    let Some(threads) = ob.maildirs.threads() else {
        return unavailable("no Maildir thread could start");
    };
    let host = Arc::new(maildir::host_part(&ob.config().server.hostname));
    let (mode, owner, shard) = (d.maildir_mode, d.maildir_owner.clone(), ob.shard);
    let body = std::mem::take(message);
    let work_root = root;
    let done = threads
        .run_queued(move || {
            let owner = Owner::parse(&owner);
            let results = planned
                .iter()
                .map(|p| {
                    let owner = owner.clone().map_err(MaildirError::Owner)?;
                    let unique = Unique::now(std::process::id(), shard, p.counter);
                    let size = p.prefix.len() + body.len();
                    let name = maildir::file_name(&unique, &host, size);
                    let f = MaildirFile {
                        root: &work_root,
                        user: &p.user,
                        prefix: &p.prefix,
                        name: &name,
                        mode,
                        owner,
                        clean_tmp: p.clean_tmp,
                    };
                    maildir::deliver(&f, &body)
                })
                .zip(planned.iter().map(|p| p.index))
                .map(|(r, i)| (i, r))
                .collect::<Vec<_>>();
            (results, body)
        })
        .await;
    match done {
        Some((results, body)) => {
            *message = body;
            results
        }
        None => unavailable("the Maildir threads are gone"),
    }
}

/// The outcome a local reply means for transaction recipient `index`.
fn outcome(index: usize, reply: ServerReply) -> RcptOutcome {
    let kind = match reply.class() {
        2 => OutcomeKind::Delivered,
        4 => OutcomeKind::Deferred,
        _ => OutcomeKind::Failed,
    };
    RcptOutcome {
        index,
        kind,
        reply,
        tls: false,
        tls_failed_then_plaintext: false,
        body_8bit_unannounced: false,
    }
}
