//! Session side of message bodies: DATA/BDAT progress, the minimum data
//! rate, and the hand-off to the spool.
//!
//! Must never: acknowledge a message before the I/O layer reports it
//! durable (`message_accepted`), or leave the session out of sync with the
//! client after a refused body.

use super::{DataProgress, Event, Misuse, Session, SpoolFailure, State};
use crate::smtp::data::{BdatReceiver, BodyOutcome};
use crate::smtp::reply::{self, Reply};

impl Session {
    /// Feeds body octets (after `DataStart`/`ChunkStart`), writing the
    /// body into `dst` — the spool mapping — with one copy. Call with fresh
    /// `dst` room until `event` is set; then input is commands again.
    pub fn receive_data(
        &mut self,
        input: &[u8],
        dst: &mut [u8],
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> DataProgress {
        if let Some(event) = self.check_timeout(now_ms, out) {
            return DataProgress {
                event: Some(event),
                ..DataProgress::default()
            };
        }
        if !input.is_empty() {
            self.last_input_ms = now_ms;
        }
        let (p, outcome) = match &mut self.state {
            State::Data(rx) => {
                let p = rx.receive(input, dst);
                (p, p.done.then(|| rx.outcome()))
            }
            State::Bdat { rx, last } => {
                let last = *last;
                let p = rx.receive(input, dst, &mut self.bdat_limit);
                let outcome = match (p.done, last, self.bdat_limit.is_over()) {
                    (false, _, _) => None,
                    (true, false, _) => Some(None),
                    (true, true, true) => Some(Some(BodyOutcome::TooBig)),
                    (true, true, false) => Some(Some(BodyOutcome::Accepted)),
                };
                return self.bdat_progress(p, outcome, out);
            }
            _ => return DataProgress::default(),
        };
        self.rate_window_bytes += p.consumed as u64;
        let event = outcome.map(|o| self.finish_body(o, out));
        DataProgress {
            consumed: p.consumed,
            produced: p.produced,
            event,
        }
    }

    /// `outcome`: None = chunk still open, Some(None) = non-last chunk
    /// done, Some(Some(o)) = message done.
    fn bdat_progress(
        &mut self,
        p: crate::smtp::data::BodyProgress,
        outcome: Option<Option<BodyOutcome>>,
        out: &mut Vec<u8>,
    ) -> DataProgress {
        self.rate_window_bytes += p.consumed as u64;
        let event = match outcome {
            None => None,
            Some(None) => {
                self.state = State::Command;
                reply::CHUNK_OK.write(out);
                Some(Event::ChunkEnd)
            }
            Some(Some(o)) => Some(self.finish_body(o, out)),
        };
        DataProgress {
            consumed: p.consumed,
            produced: p.produced,
            event,
        }
    }

    /// A complete body: hand it to the spool, or refuse it and reset.
    fn finish_body(&mut self, outcome: BodyOutcome, out: &mut Vec<u8>) -> Event {
        let refusal = match outcome {
            BodyOutcome::Accepted => {
                self.state = State::AwaitSpool;
                return Event::DataEnd;
            }
            BodyOutcome::TooBig => reply::MESSAGE_TOO_BIG,
            BodyOutcome::BareCrLf => reply::BARE_CR_LF,
        };
        self.state = State::Command;
        self.reset_transaction();
        match self.fail(refusal, out) {
            Some(close) => close,
            None => Event::MessageRejected(outcome),
        }
    }

    /// Starts counting the data rate afresh (at DATA and the first BDAT).
    pub(super) fn start_rate_window(&mut self) {
        self.rate_window_start_ms = self.last_input_ms;
        self.rate_window_bytes = 0;
    }

    /// At the end of each window, the client must have sent at least
    /// `min_data_rate` octets per second over it, or the session closes:
    /// a trickling client would otherwise hold a session for hours.
    pub(super) fn check_data_rate(&mut self, now_ms: u64, out: &mut Vec<u8>) -> Option<Event> {
        let elapsed = now_ms.saturating_sub(self.rate_window_start_ms);
        if !self.measuring_rate() || elapsed < self.cfg.data_rate_window_ms {
            return None;
        }
        let needed = self.cfg.min_data_rate.saturating_mul(elapsed) / 1000;
        if self.rate_window_bytes < needed {
            return self.close(reply::TOO_SLOW, out);
        }
        self.rate_window_start_ms = now_ms;
        self.rate_window_bytes = 0;
        None
    }

    /// Swallows a refused BDAT chunk, then sends its refusal.
    pub(super) fn bdat_discard(
        &mut self,
        mut rx: BdatReceiver,
        refusal: Reply,
        rest: &[u8],
        out: &mut Vec<u8>,
    ) -> (usize, Option<Event>) {
        let mut unused = crate::smtp::data::SizeLimit::new(0);
        let p = rx.receive(rest, &mut [], &mut unused);
        if !p.done {
            self.state = State::BdatDiscard { rx, reply: refusal };
            return (p.consumed, None);
        }
        self.state = State::Command;
        (p.consumed, self.fail(refusal, out))
    }

    /// The spool made the message durable: `250 2.0.0 Ok: queued as <id>`.
    pub fn message_accepted(&mut self, id: &str, out: &mut Vec<u8>) -> Result<(), Misuse> {
        if !matches!(self.state, State::AwaitSpool) {
            return Err(Misuse);
        }
        reply::QUEUED.write_with(out, id.as_bytes());
        // A message moved: the commands around it were not a flood.
        self.junk_commands = 0;
        self.state = State::Command;
        self.reset_transaction();
        Ok(())
    }

    /// The message is refused for good at the end of its data, by a rule
    /// of this server (it names an IP pool there is none of): `reply`,
    /// a 5xx, and the transaction is over.
    pub fn message_refused(&mut self, reply: &Reply, out: &mut Vec<u8>) -> Result<(), Misuse> {
        if !matches!(self.state, State::AwaitSpool) {
            return Err(Misuse);
        }
        reply.write(out);
        self.state = State::Command;
        self.reset_transaction();
        Ok(())
    }

    /// The spool could not take the message: 451 4.3.0 or 452 4.3.1.
    pub fn message_failed(&mut self, why: SpoolFailure, out: &mut Vec<u8>) -> Result<(), Misuse> {
        if !matches!(self.state, State::AwaitSpool) {
            return Err(Misuse);
        }
        match why {
            SpoolFailure::Io => reply::SPOOL_ERROR.write(out),
            SpoolFailure::NoSpace => reply::NO_STORAGE.write(out),
        }
        self.state = State::Command;
        self.reset_transaction();
        Ok(())
    }
}
