//! Session setup: greeting, EHLO with fallback to HELO, STARTTLS per policy
//! and the EHLO that follows it.
//!
//! Owns: deciding whether this host can take mail at all, and on what
//! terms (plaintext, TLS, or "TLS required, so defer everything").
//! Must never: continue in plaintext on a connection whose TLS handshake
//! failed (the stream is in an unknown state, and a silent downgrade must
//! be visible in the outcomes), or keep extensions learnt before TLS.

use super::ehlo::Extensions;
use super::reply::ServerReply;
use super::{Client, Event, Misuse, Phase, TlsPolicy};

impl Client {
    pub(super) fn on_greeting(&mut self, r: ServerReply, now_ms: u64, out: &mut Vec<u8>) {
        if r.code == 220 {
            self.send_hello(self.hello_verb(), Phase::Ehlo, now_ms, out);
            return;
        }
        // RFC 5321 3.1: after a 554 greeting the client should QUIT; other
        // codes in a greeting are just as final for this host.
        out.extend_from_slice(b"QUIT\r\n");
        self.connection_failed(r);
    }

    /// `LHLO` in LMTP mode (RFC 2033 4.1), else `EHLO`.
    fn hello_verb(&self) -> &'static [u8] {
        match self.cfg.lmtp {
            true => b"LHLO ",
            false => b"EHLO ",
        }
    }

    fn send_hello(&mut self, verb: &[u8], phase: Phase, now_ms: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(verb);
        out.extend_from_slice(self.cfg.helo_name.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.phase = phase;
        self.deadline = Some(now_ms.saturating_add(self.cfg.timeouts.command_ms));
    }

    pub(super) fn on_ehlo(&mut self, r: ServerReply, now_ms: u64, out: &mut Vec<u8>) {
        match r.class() {
            2 => {
                self.ext = Extensions::parse(&r);
                self.after_hello(now_ms, out);
            }
            // RFC 5321 3.2: a server that does not know EHLO says 5xx; HELO
            // gets a session without extensions. LMTP has no HELO.
            5 if !self.cfg.lmtp => self.send_hello(b"HELO ", Phase::Helo, now_ms, out),
            _ => self.hello_refused(r, out),
        }
    }

    pub(super) fn on_helo(&mut self, r: ServerReply, now_ms: u64, out: &mut Vec<u8>) {
        if r.class() == 2 {
            self.ext = Extensions::default();
            self.after_hello(now_ms, out);
        } else {
            self.hello_refused(r, out);
        }
    }

    fn hello_refused(&mut self, r: ServerReply, out: &mut Vec<u8>) {
        out.extend_from_slice(b"QUIT\r\n");
        self.connection_failed(r);
    }

    /// STARTTLS if the policy and the server allow it, else ready (or
    /// refusing, when TLS is required and cannot be had).
    fn after_hello(&mut self, now_ms: u64, out: &mut Vec<u8>) {
        let policy = self.cfg.tls;
        let wants_tls = !self.tls_active && !self.plaintext_retry && policy != TlsPolicy::Disabled;
        if wants_tls && self.ext.starttls {
            out.extend_from_slice(b"STARTTLS\r\n");
            self.phase = Phase::StartTls;
            self.deadline = Some(now_ms.saturating_add(self.cfg.timeouts.command_ms));
            return;
        }
        if policy == TlsPolicy::Required && !self.tls_active {
            self.refuse("TLS required but not offered");
        }
        self.ready();
    }

    pub(super) fn on_starttls(&mut self, r: ServerReply, _now_ms: u64, _out: &mut Vec<u8>) {
        if r.code == 220 {
            self.phase = Phase::AwaitTls;
            // The handshake has its own timeout in the I/O layer.
            self.deadline = None;
            self.events.push_back(Event::StartTls);
            return;
        }
        // Refused before any handshake: the plaintext session is intact.
        if self.cfg.tls == TlsPolicy::Required {
            self.refuse("TLS required but STARTTLS was refused");
        }
        self.ready();
    }

    /// The handshake succeeded: EHLO again (RFC 3207 4.2), forgetting
    /// everything the server said in plaintext.
    pub fn tls_established(&mut self, now_ms: u64, out: &mut Vec<u8>) -> Result<(), Misuse> {
        if self.phase != Phase::AwaitTls {
            return Err(Misuse::NotWaiting);
        }
        self.tls_active = true;
        self.ext = Extensions::default();
        self.send_hello(self.hello_verb(), Phase::Ehlo, now_ms, out);
        Ok(())
    }

    /// The handshake failed. Opportunistic: the connection closes and
    /// [`Client::needs_plaintext_retry`] asks for a fresh plaintext one.
    /// Required: every transaction is deferred; nothing more is written.
    pub fn tls_failed(&mut self, _now_ms: u64) -> Result<(), Misuse> {
        if self.phase != Phase::AwaitTls {
            return Err(Misuse::NotWaiting);
        }
        self.broken = true;
        if self.cfg.tls == TlsPolicy::Required {
            self.refuse("TLS required but the handshake failed");
            self.ready();
        } else {
            self.plaintext_retry_needed = true;
            self.close(Event::Closed);
        }
        Ok(())
    }

    fn refuse(&mut self, reason: &str) {
        // X.7.10: encryption needed (RFC 5248 registry).
        self.refusal = Some(ServerReply::local(451, (4, 7, 10), reason));
    }
}
