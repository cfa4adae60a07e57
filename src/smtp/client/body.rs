//! The message body on the wire: after a 354, dot-stuffed DATA ended by
//! `.CRLF`; with CHUNKING, BDAT chunks counted in octets (RFC 3030).
//!
//! Owns: framing each chunk the I/O layer hands over, and the end of
//! the body.
//! Must never: send a BDAT chunk after one was refused (RFC 3030 2), send
//! body octets before the server asked for them, or emit a bare CR or LF
//! (only a BINARYMIME body, which is binary by definition, goes untouched).

use super::transaction::Cmd;
use super::{BodyEncoder, Client, Event, Misuse, Phase};
use crate::smtp::reply::format_u64;

impl Client {
    /// Enters the body phase and asks the I/O layer for the body.
    pub(super) fn start_body(&mut self, now_ms: u64) {
        let chunking = match self.tx.as_mut() {
            Some(tx) => {
                tx.body_started = true;
                tx.chunking
            }
            None => false,
        };
        self.encoder = if chunking {
            BodyEncoder::for_bdat()
        } else {
            BodyEncoder::new()
        };
        self.phase = Phase::Body;
        self.deadline = Some(now_ms.saturating_add(self.cfg.timeouts.data_block_ms));
        self.events.push_back(Event::SendBody);
    }

    /// Appends one body chunk (after `SendBody`): stuffed for DATA, or as
    /// one `BDAT n` chunk.
    pub fn encode_body(
        &mut self,
        chunk: &[u8],
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), Misuse> {
        if self.phase != Phase::Body {
            return Err(Misuse::NotWaiting);
        }
        self.deadline = Some(now_ms.saturating_add(self.cfg.timeouts.data_block_ms));
        let Some(tx) = self.tx.as_mut() else {
            return Ok(());
        };
        if !tx.chunking {
            self.encoder.encode(chunk, out);
            return Ok(());
        }
        if tx.bdat_failed || chunk.is_empty() {
            return Ok(());
        }
        let content = if tx.binary {
            chunk
        } else {
            self.scratch.clear();
            self.encoder.encode(chunk, &mut self.scratch);
            &self.scratch
        };
        write_bdat(out, content, false);
        tx.cmds.push((Cmd::Bdat, 0, 0));
        tx.sent = tx.cmds.len();
        Ok(())
    }

    /// Ends the body (`.CRLF`, or `BDAT n LAST`) and waits for the verdict.
    pub fn finish_body(&mut self, now_ms: u64, out: &mut Vec<u8>) -> Result<(), Misuse> {
        if self.phase != Phase::Body {
            return Err(Misuse::NotWaiting);
        }
        if let Some(tx) = self.tx.as_mut() {
            if !tx.chunking && self.cfg.lmtp {
                self.encoder.finish(out);
                tx.await_lmtp_replies();
            } else if !tx.chunking {
                self.encoder.finish(out);
                tx.cmds.push((Cmd::EndOfData, 0, 0));
            } else if !tx.bdat_failed {
                self.scratch.clear();
                if !tx.binary {
                    self.encoder.finish(&mut self.scratch);
                }
                write_bdat(out, &self.scratch, true);
                tx.cmds.push((Cmd::BdatLast, 0, 0));
            }
            tx.body_done = true;
            tx.sent = tx.cmds.len();
        }
        self.phase = Phase::Transaction;
        self.deadline = Some(now_ms.saturating_add(self.cfg.timeouts.data_end_ms));
        // After a refused chunk the verdict may already be complete.
        self.advance(now_ms, out);
        Ok(())
    }
}

/// Appends `BDAT n [LAST] CRLF` and the chunk.
fn write_bdat(out: &mut Vec<u8>, content: &[u8], last: bool) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(b"BDAT ");
    out.extend_from_slice(format_u64(content.len() as u64, &mut digits));
    if last {
        out.extend_from_slice(b" LAST");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(content);
}
