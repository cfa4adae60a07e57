//! The ends of a connection that nobody planned: 421, timeouts, the
//! connection dropping, a server that does not speak SMTP.
//!
//! Owns: the deferral of every recipient still in flight, the reason text
//! naming the phase, and the choice between `TryNextHost` and `Closed`.
//! Must never: leave a started transaction without outcomes, or call a
//! recipient delivered without the server's reply to the end of data.

use super::reply::ServerReply;
use super::transaction::Cmd;
use super::{Client, Event, Phase};

impl Client {
    /// Calls the deadline: when it has passed, defers everything in flight
    /// and closes. Nothing is written; the I/O layer drops the connection.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.deadline.is_none_or(|d| now_ms < d) {
            return;
        }
        if self.phase == Phase::Quit {
            self.close(Event::Closed);
            return;
        }
        let reason = format!("timeout {}", self.phase_label());
        self.connection_failed(ServerReply::local(451, (4, 4, 2), &reason));
    }

    /// The I/O layer saw EOF or a socket error.
    pub fn connection_lost(&mut self, _now_ms: u64) {
        match self.phase {
            Phase::Closed => {}
            Phase::Quit => self.close(Event::Closed),
            _ => {
                let reason = format!("connection lost {}", self.phase_label());
                self.connection_failed(ServerReply::local(451, (4, 4, 2), &reason));
            }
        }
    }

    /// The server sent something that is not a reply, or a reply that
    /// makes no sense here: nothing it says can be trusted any more.
    pub(super) fn protocol_error(&mut self) {
        let reason = format!("malformed or unexpected reply {}", self.phase_label());
        self.connection_failed(ServerReply::local(451, (4, 5, 0), &reason));
    }

    /// Defers what is in flight with `reason` and ends the connection. The
    /// next host is worth a try when this one never finished a transaction:
    /// the outcomes then come with `TryNextHost` (no `TransactionDone`),
    /// so that the I/O layer keeps what is not decided for that host.
    /// A pipelined transaction still waiting behind the current one is
    /// dropped without outcomes (see [`Client::dropped_pipelined`]).
    pub(super) fn connection_failed(&mut self, reason: ServerReply) {
        if self.phase == Phase::Closed {
            return;
        }
        let try_next = !self.completed_any;
        if let Some(tx) = self.tx.take() {
            self.finish_tx(tx, Some(&reason), try_next, 0);
        }
        self.dropped_next = self.next.take().is_some();
        self.failure = Some(reason);
        self.close(if try_next {
            Event::TryNextHost
        } else {
            Event::Closed
        });
    }

    /// "after <what we waited for>", for reasons that end up in bounces.
    fn phase_label(&self) -> &'static str {
        match self.phase {
            Phase::Greeting => "waiting for the greeting",
            Phase::Ehlo if self.cfg.lmtp => "after LHLO",
            Phase::Ehlo => "after EHLO",
            Phase::Helo => "after HELO",
            Phase::StartTls => "after STARTTLS",
            Phase::AwaitTls => "during the TLS handshake",
            Phase::Ready => "while idle",
            Phase::Body => "while sending the message body",
            Phase::Quit => "after QUIT",
            Phase::Closed => "after close",
            Phase::Transaction => match self.tx.as_ref().and_then(|t| t.awaited()) {
                Some(Cmd::Rset) => "after RSET",
                Some(Cmd::Mail) => "after MAIL FROM",
                Some(Cmd::Rcpt(_)) => "after RCPT TO",
                Some(Cmd::Data) => "after DATA",
                Some(Cmd::Bdat) => "after BDAT",
                Some(Cmd::EndOfData | Cmd::BdatLast | Cmd::AbortDot | Cmd::LmtpRcpt(_)) | None => {
                    "after end of data"
                }
            },
        }
    }
}
