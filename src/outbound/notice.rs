//! Delivery status notifications (RFC 3464) to the sender of a message:
//! bounces for failed recipients, delay notices for long-deferred ones
//! (`[delivery] delay_notice`), and "relayed" notices for NOTIFY=SUCCESS
//! recipients handed to a server that does not offer DSN (RFC 3461 6.2).
//! Each is queued in the spool as a new message from `<>` like any other.
//! Must never: send a notice to the null sender, or about a notice.

use spool_format::envelope::{flags, notify, BodyType, ChunkRef, Envelope, Recipient, Ret};

use super::delivery::RcptReply;
use super::report::{Outcome, Via};
use super::Outbound;
use crate::dsn::{
    must_not_bounce, should_notify, write_dsn, Action, Diagnostic, DsnInput, NotifyKind,
    RecipientReport, Status, DEFAULT_MAX_FULL_LEN,
};
use crate::smtp::client::ServerReply;

/// Why a notice could not be queued.
#[derive(Debug, thiserror::Error)]
pub(super) enum NoticeError {
    #[error(transparent)]
    Dsn(#[from] crate::dsn::DsnError),
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
}

/// What a notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Notice {
    Failed,
    /// Still being retried, until this unix time.
    Delayed {
        until_unix: i64,
    },
    Relayed,
    /// Delivered into the mailbox (a Maildir written here, or an LMTP
    /// server's 250 for the recipient).
    Delivered,
}

impl Notice {
    fn kind(self) -> NotifyKind {
        match self {
            Notice::Failed => NotifyKind::Failure,
            Notice::Delayed { .. } => NotifyKind::Delay,
            Notice::Relayed | Notice::Delivered => NotifyKind::Success,
        }
    }

    fn action(self) -> Action {
        match self {
            Notice::Failed => Action::Failed,
            Notice::Delayed { .. } => Action::Delayed,
            Notice::Relayed => Action::Relayed,
            Notice::Delivered => Action::Delivered,
        }
    }

    /// The status a recipient is reported with: the server's enhanced
    /// code when it gave one, in the class of the notice (a bounce is a
    /// permanent failure even when its last reply was temporary).
    fn status(self, reply: &ServerReply) -> Status {
        let class = match self {
            Notice::Failed => 5,
            Notice::Delayed { .. } => 4,
            Notice::Relayed | Notice::Delivered => {
                return Status::new(2, 0, 0).unwrap_or(Status::LOOP_DETECTED)
            }
        };
        reply
            .status
            .and_then(|s| Status::new(class, s.subject, s.detail))
            .or(Status::new(class, 0, 0))
            .unwrap_or(Status::LOOP_DETECTED)
    }
}

/// A recipient to report, with the host whose reply it was (none when no
/// server was reached).
#[derive(Debug)]
pub(super) struct Reported {
    pub rcpt: RcptReply,
    pub remote: Option<std::rc::Rc<str>>,
}

impl Reported {
    /// Each of `rcpts`, with the host of `via`.
    pub(super) fn all(rcpts: Vec<RcptReply>, via: &Via<'_>) -> Vec<Reported> {
        let remote: Option<std::rc::Rc<str>> = via.host.map(Into::into);
        rcpts
            .into_iter()
            .map(|rcpt| Reported {
                rcpt,
                remote: remote.clone(),
            })
            .collect()
    }
}

/// Writes and queues one notice about all of `rcpts`; `Ok` also when none
/// is due (null sender, NOTIFY not asking for this kind). `via` is where
/// the connection went, for the accounting record of a delay notice.
pub(super) async fn send(
    ob: &Outbound,
    msg_id: u64,
    notice: Notice,
    rcpts: &[Reported],
    via: &Via<'_>,
) -> Result<(), NoticeError> {
    let mut notified = Vec::new();
    let now = ob.clock.wall_ms();
    let n = ob.notices.get() + 1;
    ob.notices.set(n);
    let queue_id = ob.queue_id(msg_id);
    let unique = format!("{queue_id}.{n:x}");
    let mut text = Vec::new();
    let written = ob.spool.with_state(|s| {
        let m = s.index.messages.get(&msg_id)?;
        let env = s.envelope(m.segment_id(), m.offset)?;
        if must_not_bounce(&env.reverse_path) {
            return None;
        }
        let reports: Vec<RecipientReport<'_>> = rcpts
            .iter()
            .filter_map(|Reported { rcpt: f, remote }| {
                let r = env.recipients.get(f.rcpt as usize)?;
                if !should_notify(r.notify, notice.kind()) {
                    return None;
                }
                notified.push((f.rcpt, &f.reply));
                Some(RecipientReport {
                    address: &r.address,
                    orcpt: &r.orcpt,
                    action: notice.action(),
                    status: notice.status(&f.reply),
                    remote_mta: if f.reply.local {
                        None
                    } else {
                        remote.as_deref().map(str::as_bytes)
                    },
                    diagnostic: Some(if f.reply.local {
                        Diagnostic::Local(&f.reply.text)
                    } else {
                        Diagnostic::Smtp(&f.reply.text)
                    }),
                    last_attempt: Some((now / 1000) as i64),
                    will_retry_until: match notice {
                        Notice::Delayed { until_unix } => Some(until_unix),
                        _ => None,
                    },
                })
            })
            .collect();
        if reports.is_empty() {
            return None;
        }
        let parts: Vec<&[u8]> = env
            .body
            .iter()
            .filter_map(|c| s.chunk(&ChunkRef::from(c)))
            .collect();
        let input = DsnInput {
            hostname: &ob.config().server.hostname,
            unique_id: &unique,
            queue_id: queue_id.as_str(),
            now_unix: (now / 1000) as i64,
            arrival_unix: (env.received_ms.to_native() / 1000) as i64,
            reverse_path: &env.reverse_path,
            envid: &env.envid,
            ret: if env.flags.to_native() & flags::UNTRUSTED != 0 {
                Ret::Headers
            } else {
                Ret::from(env.ret)
            },
            smtputf8: env.flags.to_native() & flags::SMTPUTF8 != 0,
            recipients: &reports,
            original: &parts,
            max_full_len: DEFAULT_MAX_FULL_LEN,
        };
        Some(write_dsn(&mut text, &input).map(|summary| (summary, env.reverse_path.to_vec())))
    });
    let Some(written) = written else {
        return Ok(());
    };
    let (summary, sender) = written?;
    let spool = &ob.spool;
    let _pin = spool.pin_for_write();
    let mut env = Envelope {
        msg_id: 0,
        received_ms: now,
        reverse_path: Vec::new(),
        flags: if summary.smtputf8 { flags::SMTPUTF8 } else { 0 },
        body_type: if summary.eight_bit {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        }
        .into(),
        ret: Ret::Unspecified.into(),
        pool: 0,
        envid: Vec::new(),
        body_len: text.len() as u64,
        recipients: vec![Recipient::new(&sender, notify::NEVER, b"")],
        body: Vec::new(),
    };
    for piece in text.chunks(spool.max_chunk()) {
        env.body.push(spool.append_chunk(piece)?);
    }
    spool.commit_message(&mut env).await?;
    tracing::info!(id = %ob.queue_id(msg_id), notice = %ob.queue_id(env.msg_id), kind = ?notice,
        "delivery status notice queued");
    ob.queue_new(&env);
    if let Notice::Delayed { .. } = notice {
        ob.report(msg_id, Outcome::DelayNotice, notified, via);
    }
    Ok(())
}
