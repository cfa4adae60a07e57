//! Session side of AUTH (RFC 4954, PLAIN and LOGIN) and of the STARTTLS
//! hand-back.
//!
//! Must never: offer or accept AUTH over plaintext (538 5.7.11), check a
//! password itself, or keep decoded credentials longer than one attempt.

use super::{AuthCredentials, Event, Misuse, SaslStep, Session, State, TlsInfo};
use crate::smtp::parse::{self, AuthMechanism, Line};
use crate::smtp::reply;
use crate::smtp::sasl;

impl Session {
    pub(super) fn auth(
        &mut self,
        mechanism: AuthMechanism,
        initial: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        let refusal = if !self.greeted {
            Some(reply::BAD_SEQUENCE_HELO)
        } else if !self.cfg.auth_available {
            Some(reply::AUTH_UNAVAILABLE)
        } else if !self.tls_active {
            Some(reply::ENCRYPTION_REQUIRED)
        } else if self.authenticated {
            Some(reply::ALREADY_AUTHENTICATED)
        } else if self.envelope.is_active() {
            Some(reply::BAD_SEQUENCE_IN_TRANSACTION)
        } else if mechanism == AuthMechanism::Other {
            Some(reply::AUTH_UNKNOWN_MECHANISM)
        } else {
            None
        };
        if let Some(r) = refusal {
            return self.fail(r, out);
        }
        self.wipe_credentials();
        let step = match mechanism {
            AuthMechanism::Login => SaslStep::LoginUser,
            _ => SaslStep::PlainResponse,
        };
        match initial {
            Some(response) => self.sasl_response(step, response, out),
            None => {
                let challenge = match step {
                    SaslStep::LoginUser => reply::AUTH_LOGIN_USER,
                    _ => reply::AUTH_CHALLENGE_EMPTY,
                };
                challenge.write(out);
                self.state = State::Sasl(step);
                None
            }
        }
    }

    /// Frames one SASL response line.
    pub(super) fn sasl_line(
        &mut self,
        step: SaslStep,
        rest: &[u8],
        out: &mut Vec<u8>,
    ) -> (usize, Option<Event>) {
        match parse::next_line(rest, parse::MAX_AUTH_LINE) {
            Line::Complete { content, len } => {
                self.state = State::Command;
                (len, self.sasl_response(step, content, out))
            }
            Line::Incomplete => (0, None),
            Line::TooLong => {
                self.wipe_credentials();
                self.discard_line(rest, false, out)
            }
        }
    }

    /// Decodes one response and moves the exchange on.
    fn sasl_response(&mut self, step: SaslStep, line: &[u8], out: &mut Vec<u8>) -> Option<Event> {
        self.state = State::Command;
        if line == b"*" {
            self.wipe_credentials();
            return self.fail(reply::AUTH_CANCELLED, out);
        }
        // LOGIN is stored in PLAIN's layout (`\0user\0pass`, empty authzid)
        // so one splitter serves both.
        if step == SaslStep::LoginUser {
            self.sasl.push(0);
        }
        let decoded = sasl::decode_base64(line, &mut self.sasl);
        if step == SaslStep::LoginUser && decoded.is_ok() {
            self.sasl.push(0);
            reply::AUTH_LOGIN_PASS.write(out);
            self.state = State::Sasl(SaslStep::LoginPassword);
            return None;
        }
        if decoded.is_err() || sasl::split_plain(&self.sasl).is_err() {
            self.wipe_credentials();
            return self.fail(reply::AUTH_BAD_RESPONSE, out);
        }
        self.state = State::AwaitAuth;
        Some(Event::AuthAttempt)
    }

    /// The credentials of the pending `AuthAttempt`.
    pub fn auth_credentials(&self) -> Option<AuthCredentials<'_>> {
        if !matches!(self.state, State::AwaitAuth) {
            return None;
        }
        let (authzid, username, password) = sasl::split_plain(&self.sasl).ok()?;
        Some(AuthCredentials {
            authzid,
            username,
            password,
        })
    }

    /// The I/O layer's verdict on `AuthAttempt`: 235 2.7.0 or 535 5.7.8.
    pub fn auth_result(&mut self, ok: bool, out: &mut Vec<u8>) -> Result<Option<Event>, Misuse> {
        self.end_auth_attempt(ok)?;
        if ok {
            self.authenticated = true;
            reply::AUTH_OK.write(out);
            return Ok(None);
        }
        Ok(self.fail(reply::AUTH_FAILED, out))
    }

    /// The I/O layer's answer to `AuthAttempt` when the client has failed
    /// too often lately: 454 4.7.0 (try later) without a check, counted
    /// as an error.
    pub fn auth_throttled(&mut self, out: &mut Vec<u8>) -> Result<Option<Event>, Misuse> {
        self.end_auth_attempt(false)?;
        Ok(self.fail(reply::AUTH_THROTTLED, out))
    }

    /// Back to commands after `AuthAttempt`, keeping the user name if the
    /// attempt succeeded.
    fn end_auth_attempt(&mut self, ok: bool) -> Result<(), Misuse> {
        if !matches!(self.state, State::AwaitAuth) {
            return Err(Misuse);
        }
        if ok {
            if let Ok((_, user, _)) = sasl::split_plain(&self.sasl) {
                self.auth_user = user.to_vec();
            }
        }
        self.wipe_credentials();
        self.state = State::Command;
        Ok(())
    }

    /// Overwrites, then forgets, decoded credentials.
    fn wipe_credentials(&mut self) {
        self.sasl.fill(0);
        self.sasl.clear();
    }

    /// The TLS handshake after `StartTls` finished. RFC 3207 4.2: the
    /// session starts over as if just connected (the client must EHLO
    /// again); nothing learned over plaintext is kept.
    pub fn tls_established(&mut self, info: TlsInfo, now_ms: u64) -> Result<(), Misuse> {
        if !matches!(self.state, State::AwaitTls) {
            return Err(Misuse);
        }
        self.reset_transaction();
        self.wipe_credentials();
        self.helo.clear();
        self.greeted = false;
        self.esmtp = false;
        self.authenticated = false;
        self.auth_user.clear();
        self.tls = Some(info);
        self.tls_active = true;
        self.last_input_ms = now_ms;
        self.state = State::Command;
        Ok(())
    }
}
