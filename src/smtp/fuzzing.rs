//! Fuzzing harnesses, shared by `fuzz/fuzz_targets/*` (thin shims) and the
//! unit tests, so the harness logic compiles and runs on stable.
//!
//! Owns: turning arbitrary bytes into a run of the protocol machines and
//! checking invariants that must hold for any input.
//! Must never: be used by the daemon; it panics on purpose when an
//! invariant breaks, which is how a fuzzer reports a finding.

use std::net::IpAddr;
use std::sync::Arc;

use super::data::DataReceiver;
use super::server::{Event, PeerInfo, ServerConfig, Session, SpoolFailure, TlsInfo};

/// Piece sizes for splitting the input, taken from its first bytes.
fn split_plan(data: &[u8]) -> (&[u8], &[u8]) {
    let n = data.len().min(8);
    data.split_at(n)
}

fn piece_len(plan: &[u8], i: usize) -> usize {
    plan.get(i % plan.len().max(1))
        .map_or(16, |&b| usize::from(b % 64) + 1)
}

/// Checks that server output is well-formed reply lines.
fn assert_replies(out: &[u8]) {
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.ends_with(b"\r"), "reply line without CRLF");
        assert!(line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit));
        assert!(line[3] == b' ' || line[3] == b'-');
    }
}

/// Arbitrary bytes into a session, in pieces, answering every event.
pub fn smtp_server(data: &[u8]) {
    let (plan, input) = split_plan(data);
    let cfg = ServerConfig {
        hostname: "fuzz.test".into(),
        max_message_size: 256,
        max_recipients: 4,
        max_errors: 50,
        tls_available: true,
        auth_available: true,
        local_domains: vec!["example.com".into()],
        ..ServerConfig::default()
    };
    let peer = PeerInfo {
        ip: IpAddr::from([192, 0, 2, 1]),
        relay_allowed: false,
    };
    let mut s = Session::new(Arc::new(cfg), peer, None, 0);
    let mut out = Vec::new();
    s.greeting(&mut out);
    let mut pending = Vec::new();
    let mut dst = [0u8; 32];
    let (mut fed, mut now, mut i) = (0, 0u64, 0);
    while fed < input.len() || !pending.is_empty() {
        let take = piece_len(plan, i).min(input.len() - fed);
        pending.extend_from_slice(&input[fed..fed + take]);
        fed += take;
        i += 1;
        now += 1000;
        if !drive(&mut s, &mut pending, &mut dst, now, &mut out)
            || (take == 0 && fed == input.len())
        {
            break;
        }
        assert_replies(&out);
        out.clear();
    }
    assert_replies(&out);
}

/// Runs the session over `pending` until it stalls; false once closed.
fn drive(
    s: &mut Session,
    pending: &mut Vec<u8>,
    dst: &mut [u8],
    now: u64,
    out: &mut Vec<u8>,
) -> bool {
    // Each round consumes input or ends; the bound is a backstop.
    for _ in 0..10_000 {
        let (consumed, progress, event) = if s.wants_body() {
            let p = s.receive_data(pending, dst, now, out);
            (p.consumed, p.consumed + p.produced, p.event)
        } else {
            let p = s.handle_input(pending, now, out);
            (p.consumed, p.consumed, p.event)
        };
        assert!(consumed <= pending.len());
        pending.drain(..consumed);
        match event {
            Some(Event::Close) => return false,
            Some(e) => answer(s, e, now, out),
            None if progress == 0 => return !s.is_closed(),
            None => {}
        }
    }
    panic!("session made no progress");
}

fn answer(s: &mut Session, e: Event, now: u64, out: &mut Vec<u8>) {
    let r = match e {
        Event::DataEnd if s.envelope().recipient_count() & 1 == 0 => {
            s.message_failed(SpoolFailure::NoSpace, out)
        }
        Event::DataEnd => s.message_accepted("F1", out),
        Event::StartTls => s.tls_established(
            TlsInfo {
                protocol: "TLSv1.3",
                cipher: "TLS13_AES_128_GCM_SHA256",
            },
            now,
        ),
        Event::AuthAttempt => {
            let ok = s.auth_credentials().is_some_and(|c| c.username == b"user");
            s.auth_result(ok, out).map(|_| ())
        }
        _ => Ok(()),
    };
    assert!(r.is_ok(), "event {e:?} answered in the wrong state");
}

/// The DATA receiver fed in pieces must match the receiver fed at once.
pub fn data_receiver(data: &[u8]) {
    let (plan, input) = split_plan(data);
    let max = plan.first().map_or(u64::MAX, |&b| u64::from(b) * 4);
    let whole = receive_all(input, &[], max);
    let split = receive_all(input, plan, max);
    assert_eq!(whole, split, "split changed the result");
    let (_, consumed, done) = whole;
    if done {
        let end = &input[..consumed];
        assert!(
            end == b".\r\n" || end.ends_with(b"\r\n.\r\n"),
            "ended without CRLF.CRLF"
        );
    }
}

/// Returns (output, consumed, done).
fn receive_all(input: &[u8], plan: &[u8], max: u64) -> (Vec<u8>, usize, bool) {
    let mut rx = DataReceiver::new(max);
    let mut out = Vec::new();
    let mut dst = [0u8; 48];
    let (mut pos, mut i) = (0, 0);
    while pos < input.len() && !rx.is_done() {
        let len = if plan.is_empty() {
            input.len()
        } else {
            piece_len(plan, i)
        };
        let end = (pos + len).min(input.len());
        let room = if plan.is_empty() {
            dst.len()
        } else {
            piece_len(plan, i + 1).min(dst.len())
        };
        let p = rx.receive(&input[pos..end], &mut dst[..room]);
        assert!(p.consumed + p.produced > 0 || pos == end, "no progress");
        out.extend_from_slice(&dst[..p.produced]);
        pos += p.consumed;
        i += 1;
    }
    (out, pos, rx.is_done())
}

/// xtext and the ESMTP parameters of MAIL and RCPT: never a panic, and
/// what they accept holds up. Decoded xtext is never longer than its
/// encoding, and encoding it again (`+XX` for every octet) decodes back to
/// it; a value `is_xtext` accepts decodes; an accepted ENVID is xtext and
/// an ORCPT splits into a type and an address.
pub fn esmtp_params(data: &[u8]) {
    use super::xtext::{check_xtext, decode_orcpt, decode_xtext, is_xtext};
    match decode_xtext(data) {
        Ok(decoded) => {
            assert!(decoded.len() <= data.len(), "xtext grew when decoded");
            let mut again = Vec::with_capacity(decoded.len() * 3);
            for b in &decoded {
                again.extend_from_slice(format!("+{b:02X}").as_bytes());
            }
            assert_eq!(decode_xtext(&again).ok(), Some(decoded), "re-encoding");
        }
        Err(_) => assert!(!is_xtext(data), "is_xtext accepts what does not decode"),
    }
    let _ = check_xtext(data, true);
    if let Ok(o) = decode_orcpt(data) {
        assert!(o.address.len() <= data.len());
    }
    if let Ok(p) = super::params::parse_mail_params(data) {
        if let Some(envid) = p.envid {
            assert!(is_xtext(envid), "ENVID accepted that is not xtext");
        }
    }
    if let Ok(p) = super::params::parse_rcpt_params(data) {
        if let Some(orcpt) = p.orcpt {
            assert!(orcpt.contains(&b';'), "ORCPT accepted without a type");
        }
    }
}

/// `count` seeded inputs for a harness's unit test: up to `most` pieces
/// each, two in three a word the parser knows, the rest a random byte.
#[cfg(test)]
pub(crate) fn seeded_inputs(seed: u64, words: &[&[u8]], most: u64, count: usize) -> Vec<Vec<u8>> {
    let mut rng = crate::dns::XorShift::new(seed);
    (0..count)
        .map(|_| {
            let mut data = Vec::new();
            for _ in 0..rng.next_u64() % most {
                match rng.next_u64() % 3 {
                    0 => data.push(rng.next_u64() as u8),
                    _ => data.extend_from_slice(words[rng.next_u64() as usize % words.len()]),
                }
            }
            data
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn data_harness_holds(data in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()], 0..400)) {
            data_receiver(&data);
        }
    }

    #[test]
    fn server_harness_runs() {
        smtp_server(b"");
        smtp_server(b"\x05\x07\x01\x3f\x02\x03\x04\x05EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nDATA\r\nhi\r\n.\r\nSTARTTLS\r\nEHLO y\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\nBDAT 3 LAST\r\nabcQUIT\r\n");
        smtp_server(&[0xff; 100]);
    }

    #[test]
    fn params_harness_runs_over_seeded_inputs() {
        let words: [&[u8]; 12] = [
            b" ",
            b"SIZE=",
            b"BODY=8BITMIME",
            b"ENVID=",
            b"ORCPT=rfc822;",
            b"NOTIFY=",
            b"SUCCESS,DELAY",
            b"+2B",
            b"+",
            b"=",
            b"RET=HDRS",
            b"AUTH=<>",
        ];
        for data in seeded_inputs(0xE5, &words, 10, 400) {
            esmtp_params(&data);
        }
        esmtp_params(b"SIZE=100 ENVID=a+2Bb RET=FULL");
        esmtp_params(b"NOTIFY=NEVER ORCPT=rfc822;u+40x.test");
    }

    #[test]
    fn data_harness_runs() {
        data_receiver(b"");
        data_receiver(b"\x01\x02\x03\x04\x05\x06\x07\x08a\r\n..b\n.\r\n\r\n.\r\nrest");
        data_receiver(b"\x00\x00\x00\x00\x00\x00\x00\x00big body\r\n.\r\n");
    }
}
