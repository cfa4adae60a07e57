//! Notices are parsed back with a small MIME splitter and checked field by
//! field; the line rules are checked over random originals and replies.

use proptest::prelude::*;
use spool_format::envelope::notify as bits;
use spool_format::Ret;

use super::*;

const HOST: &str = "mx.petrel.example";
const ORIGINAL: &[u8] = b"Received: from a by b; Tue, 14 Nov 2023 22:13:20 +0000\r\n\
From: Sender <sender@example.org>\r\n\
Subject: hello\r\n\
\r\n\
The body, line one.\r\n\
Line two.\r\n";

// ---- a test-only MIME reader -------------------------------------------

type Fields = Vec<(String, String)>;

/// Header fields (unfolded) and the body after the empty line.
fn split_message(msg: &[u8]) -> (Fields, Vec<u8>) {
    let text = String::from_utf8_lossy(msg).into_owned();
    let (head, body) = match text.find("\r\n\r\n") {
        Some(i) => (&text[..i + 2], &text[i + 4..]),
        None if text.starts_with("\r\n") => ("", &text[2..]),
        None => (text.as_str(), ""),
    };
    let mut fields: Fields = Vec::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = fields.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((n, v)) = line.split_once(':') {
            fields.push((n.to_string(), v.trim_start().to_string()));
        }
    }
    (fields, body.as_bytes().to_vec())
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn boundary_of(content_type: &str) -> String {
    let start = content_type
        .find("boundary=\"")
        .map(|i| i + 10)
        .unwrap_or(0);
    let rest = &content_type[start..];
    rest[..rest.find('"').unwrap_or(rest.len())].to_string()
}

/// The body parts of a multipart body: what lies between delimiter lines.
fn split_parts(body: &[u8], boundary: &str) -> Vec<Vec<u8>> {
    let delim = format!("\r\n--{boundary}");
    let text = String::from_utf8_lossy(body).into_owned();
    let pieces: Vec<&str> = text.split(delim.as_str()).collect();
    assert!(pieces.len() >= 2, "no delimiter");
    assert!(pieces[pieces.len() - 1].starts_with("--\r\n"), "no close");
    pieces[1..pieces.len() - 1]
        .iter()
        .map(|p| {
            assert!(p.starts_with("\r\n"), "delimiter line has trailing text");
            p.as_bytes()[2..].to_vec()
        })
        .collect()
}

struct Parsed {
    top: Fields,
    parts: Vec<(Fields, Vec<u8>)>,
}

fn parse(out: &[u8]) -> Parsed {
    let (top, body) = split_message(out);
    let ct = field(&top, "Content-Type").unwrap_or_default();
    let parts = split_parts(&body, &boundary_of(ct))
        .iter()
        .map(|p| split_message(p))
        .collect();
    Parsed { top, parts }
}

/// The delivery-status body as blocks of fields.
fn status_blocks(body: &[u8]) -> Vec<Fields> {
    String::from_utf8_lossy(body)
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| split_message(format!("{b}\r\n\r\n").as_bytes()).0)
        .collect()
}

fn check_lines(out: &[u8]) {
    for (i, &b) in out.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
        if b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {i}");
        }
    }
    assert!(out.ends_with(b"\r\n"));
    for line in out.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len());
    }
}

// ---- inputs --------------------------------------------------------------

fn status(s: &str) -> Status {
    Status::parse(s.as_bytes()).unwrap_or(Status::LOOP_DETECTED)
}

fn failed<'a>(addr: &'a [u8], reply: &'a [u8]) -> RecipientReport<'a> {
    RecipientReport {
        address: addr,
        orcpt: b"",
        action: Action::Failed,
        status: status("5.1.1"),
        remote_mta: Some(b"mx.remote.example"),
        diagnostic: Some(Diagnostic::Smtp(reply)),
        last_attempt: Some(1_700_000_100),
        will_retry_until: None,
    }
}

fn input<'a>(rcpts: &'a [RecipientReport<'a>], original: &'a [&'a [u8]]) -> DsnInput<'a> {
    DsnInput {
        hostname: HOST,
        unique_id: "Q7.1",
        queue_id: "0100000000000ABC",
        now_unix: 1_700_000_200,
        arrival_unix: 1_700_000_000,
        reverse_path: b"sender@example.org",
        envid: b"",
        ret: Ret::Unspecified,
        smtputf8: false,
        recipients: rcpts,
        original,
        max_full_len: DEFAULT_MAX_FULL_LEN,
    }
}

fn write(input: &DsnInput<'_>) -> (Vec<u8>, DsnSummary) {
    let mut out = Vec::new();
    let summary = write_dsn(&mut out, input);
    assert!(summary.is_ok(), "{summary:?}");
    check_lines(&out);
    match summary {
        Ok(s) => (out, s),
        Err(e) => panic!("{e}"),
    }
}

// ---- the notice ----------------------------------------------------------

/// A failure notice for one recipient with ORCPT, ENVID and a multi-line
/// remote reply.
fn full_failure() -> (Vec<u8>, DsnSummary) {
    let reply = b"550-5.1.1 <u@remote.example>: no such user\r\n550 5.1.1 try again never";
    let mut r = failed(b"u@remote.example", reply);
    r.orcpt = b"rfc822;U+2Bx@remote.example";
    let rcpts = [r];
    let chunks: [&[u8]; 1] = [ORIGINAL];
    let mut inp = input(&rcpts, &chunks);
    inp.envid = b"batch+2B42";
    write(&inp)
}

#[test]
fn failure_notice_header_and_parts() {
    let (out, summary) = full_failure();
    assert_eq!(summary.kind, NotifyKind::Failure);
    assert_eq!(summary.returned, Returned::Full);
    assert!(!summary.eight_bit && !summary.smtputf8);

    let p = parse(&out);
    let top = &p.top;
    assert_eq!(
        field(top, "From"),
        Some("Mail Delivery System <MAILER-DAEMON@mx.petrel.example>")
    );
    assert_eq!(field(top, "To"), Some("<sender@example.org>"));
    assert_eq!(
        field(top, "Subject"),
        Some("Undelivered Mail Returned to Sender")
    );
    assert_eq!(field(top, "Date"), Some("Tue, 14 Nov 2023 22:16:40 +0000"));
    assert_eq!(field(top, "Message-ID"), Some("<Q7.1@mx.petrel.example>"));
    assert_eq!(field(top, "Auto-Submitted"), Some("auto-replied"));
    assert_eq!(field(top, "MIME-Version"), Some("1.0"));
    let ct = field(top, "Content-Type").unwrap_or_default();
    assert!(ct.starts_with("multipart/report; report-type=delivery-status;"));
    assert_eq!(boundary_of(ct), summary.boundary);
    assert_eq!(p.parts.len(), 3);

    let (h1, text) = &p.parts[0];
    assert_eq!(
        field(h1, "Content-Type"),
        Some("text/plain; charset=us-ascii")
    );
    let text = String::from_utf8_lossy(text);
    assert!(text.contains("Queue ID of your message: 0100000000000ABC\r\n"));
    assert!(text.contains("<u@remote.example>: delivery failed (status 5.1.1)"));
    assert!(text.contains("The server mx.remote.example said:"));
    assert!(text.contains("      550-5.1.1 <u@remote.example>: no such user\r\n"));
    assert!(text.contains("      550 5.1.1 try again never\r\n"));

    let (h3, original) = &p.parts[2];
    assert_eq!(field(h3, "Content-Type"), Some("message/rfc822"));
    assert_eq!(original.as_slice(), ORIGINAL);
}

#[test]
fn failure_notice_status_fields() {
    let (out, _) = full_failure();
    let p = parse(&out);
    let (h2, status) = &p.parts[1];
    assert_eq!(field(h2, "Content-Type"), Some("message/delivery-status"));
    let blocks = status_blocks(status);
    assert_eq!(blocks.len(), 2);
    let m = &blocks[0];
    assert_eq!(field(m, "Reporting-MTA"), Some("dns; mx.petrel.example"));
    assert_eq!(field(m, "X-Petrel-Queue-ID"), Some("0100000000000ABC"));
    assert_eq!(field(m, "Original-Envelope-Id"), Some("batch+42"));
    assert_eq!(
        field(m, "Arrival-Date"),
        Some("Tue, 14 Nov 2023 22:13:20 +0000")
    );
    let r = &blocks[1];
    assert_eq!(
        field(r, "Original-Recipient"),
        Some("rfc822; U+x@remote.example")
    );
    assert_eq!(
        field(r, "Final-Recipient"),
        Some("rfc822; u@remote.example")
    );
    assert_eq!(field(r, "Action"), Some("failed"));
    assert_eq!(field(r, "Status"), Some("5.1.1"));
    assert_eq!(field(r, "Remote-MTA"), Some("dns; mx.remote.example"));
    assert_eq!(
        field(r, "Diagnostic-Code"),
        Some("smtp; 550-5.1.1 <u@remote.example>: no such user 550 5.1.1 try again never")
    );
    assert_eq!(
        field(r, "Last-Attempt-Date"),
        Some("Tue, 14 Nov 2023 22:15:00 +0000")
    );
    assert_eq!(field(r, "Will-Retry-Until"), None);
}

#[test]
fn ret_hdrs_returns_only_the_header_section() {
    let rcpts = [failed(b"u@remote.example", b"550 5.1.1 no")];
    let chunks: [&[u8]; 1] = [ORIGINAL];
    let mut inp = input(&rcpts, &chunks);
    inp.ret = Ret::Headers;
    let (out, summary) = write(&inp);
    assert_eq!(summary.returned, Returned::Headers);
    let p = parse(&out);
    let (h3, headers) = &p.parts[2];
    assert_eq!(field(h3, "Content-Type"), Some("text/rfc822-headers"));
    let headers = String::from_utf8_lossy(headers);
    assert!(headers.contains("Subject: hello\r\n"));
    assert!(!headers.contains("The body"));
    assert!(!String::from_utf8_lossy(&out).contains("The body"));
}

#[test]
fn ret_full_returns_the_body() {
    let rcpts = [failed(b"u@remote.example", b"550 5.1.1 no")];
    let chunks: [&[u8]; 1] = [ORIGINAL];
    let mut inp = input(&rcpts, &chunks);
    inp.ret = Ret::Full;
    let (out, summary) = write(&inp);
    assert_eq!(summary.returned, Returned::Full);
    let p = parse(&out);
    assert!(String::from_utf8_lossy(&p.parts[2].1).contains("Line two.\r\n"));
}

#[test]
fn a_large_original_returns_headers_only() {
    let rcpts = [failed(b"u@remote.example", b"550 5.1.1 no")];
    let chunks: [&[u8]; 1] = [ORIGINAL];
    let mut inp = input(&rcpts, &chunks);
    inp.ret = Ret::Full;
    inp.max_full_len = 40;
    let (out, summary) = write(&inp);
    assert_eq!(summary.returned, Returned::Headers);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("too large to return"));
    assert!(!text.contains("The body"));
}

#[test]
fn delay_notice() {
    let mut r = failed(b"u@remote.example", b"451 4.2.0 try later");
    r.action = Action::Delayed;
    r.status = status("4.2.0");
    r.will_retry_until = Some(1_700_432_000);
    let rcpts = [r];
    let chunks: [&[u8]; 1] = [ORIGINAL];
    let (out, summary) = write(&input(&rcpts, &chunks));
    assert_eq!(summary.kind, NotifyKind::Delay);
    assert_eq!(summary.returned, Returned::Headers);
    let p = parse(&out);
    assert_eq!(
        field(&p.top, "Subject"),
        Some("Delayed Mail (still being retried)")
    );
    let blocks = status_blocks(&p.parts[1].1);
    assert_eq!(field(&blocks[1], "Action"), Some("delayed"));
    assert_eq!(
        field(&blocks[1], "Will-Retry-Until"),
        Some("Sun, 19 Nov 2023 22:13:20 +0000")
    );
}

#[test]
fn success_report() {
    let mut r = failed(b"u@remote.example", b"250 2.0.0 ok");
    r.action = Action::Delivered;
    r.status = status("2.0.0");
    let rcpts = [r];
    let chunks: [&[u8]; 1] = [ORIGINAL];
    let (out, summary) = write(&input(&rcpts, &chunks));
    assert_eq!(summary.kind, NotifyKind::Success);
    let p = parse(&out);
    assert_eq!(
        field(&p.top, "Subject"),
        Some("Successful Mail Delivery Report")
    );
    assert_eq!(
        field(&status_blocks(&p.parts[1].1)[1], "Action"),
        Some("delivered")
    );
}

#[test]
fn null_sender_gets_no_notice() {
    for rp in [&b""[..], b"<>", b" <> "] {
        assert!(must_not_bounce(rp));
        let rcpts = [failed(b"u@remote.example", b"550 no")];
        let chunks: [&[u8]; 1] = [ORIGINAL];
        let mut inp = input(&rcpts, &chunks);
        inp.reverse_path = rp;
        let mut out = Vec::new();
        assert_eq!(write_dsn(&mut out, &inp), Err(DsnError::NullSender));
        assert!(out.is_empty());
    }
    assert!(!must_not_bounce(b"a@b.example"));
}

#[test]
fn bad_inputs_are_refused() {
    let chunks: [&[u8]; 1] = [ORIGINAL];
    let mut out = Vec::new();
    assert_eq!(
        write_dsn(&mut out, &input(&[], &chunks)),
        Err(DsnError::NoRecipients)
    );
    let rcpts = [failed(b"u@remote.example", b"550 no")];
    let mut inp = input(&rcpts, &chunks);
    inp.unique_id = "a>b";
    assert_eq!(write_dsn(&mut out, &inp), Err(DsnError::BadUniqueId));
    inp.unique_id = "ok";
    inp.hostname = "bad host";
    assert_eq!(write_dsn(&mut out, &inp), Err(DsnError::BadHostname));
    assert!(out.is_empty());
}

#[test]
fn notify_combinations() {
    use NotifyKind::*;
    let all = [Failure, Delay, Success];
    let allowed = |b: u8| {
        all.iter()
            .filter(|&&k| should_notify(b, k))
            .copied()
            .collect::<Vec<_>>()
    };
    assert_eq!(allowed(0), vec![Failure, Delay]);
    assert_eq!(allowed(bits::NEVER), vec![]);
    assert_eq!(allowed(bits::FAILURE), vec![Failure]);
    assert_eq!(allowed(bits::DELAY), vec![Delay]);
    assert_eq!(allowed(bits::SUCCESS), vec![Success]);
    assert_eq!(
        allowed(bits::SUCCESS | bits::FAILURE),
        vec![Failure, Success]
    );
    assert_eq!(
        allowed(bits::SUCCESS | bits::FAILURE | bits::DELAY),
        vec![Failure, Delay, Success]
    );
    assert_eq!(allowed(bits::NEVER | bits::FAILURE), vec![]);
}

#[test]
fn undecodable_parameters_are_left_out() {
    let mut r = failed(b"u@remote.example", b"550 no");
    r.orcpt = b"rfc822;bad+zz";
    let rcpts = [r];
    let chunks: [&[u8]; 1] = [ORIGINAL];
    let mut inp = input(&rcpts, &chunks);
    inp.envid = b"bad=envid";
    let (out, _) = write(&inp);
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("Original-Recipient"));
    assert!(!text.contains("Original-Envelope-Id"));
}

// ---- the original across chunks -------------------------------------------

/// `msg` cut at `a` and `b` (a <= b).
fn cut(msg: &[u8], a: usize, b: usize) -> [&[u8]; 3] {
    [&msg[..a], &msg[a..b], &msg[b..]]
}

#[test]
fn header_body_boundary_split_at_every_position() {
    let headers_end = ORIGINAL.len() - b"The body, line one.\r\nLine two.\r\n".len() - 2;
    for a in 0..=ORIGINAL.len() {
        for b in [a, (a + 1).min(ORIGINAL.len()), ORIGINAL.len()] {
            let chunks = cut(ORIGINAL, a, b);
            let rcpts = [failed(b"u@remote.example", b"550 no")];
            let mut inp = input(&rcpts, &chunks);
            inp.ret = Ret::Headers;
            let (out, _) = write(&inp);
            assert_eq!(
                parse(&out).parts[2].1,
                &ORIGINAL[..headers_end],
                "cut {a} {b}"
            );
            inp.ret = Ret::Full;
            let (out, _) = write(&inp);
            assert_eq!(parse(&out).parts[2].1, ORIGINAL, "cut {a} {b}");
        }
    }
}

#[test]
fn bare_line_ends_are_normalized() {
    let original: &[u8] = b"A: 1\nB: 2\rC: 3\r\n\nbody\rmore\n\nend";
    for a in 0..=original.len() {
        let chunks = cut(original, a, a);
        let rcpts = [failed(b"u@remote.example", b"550 no")];
        let mut inp = input(&rcpts, &chunks);
        inp.ret = Ret::Full;
        let (out, _) = write(&inp);
        let p = parse(&out);
        assert_eq!(
            p.parts[2].1, b"A: 1\r\nB: 2\r\nC: 3\r\n\r\nbody\r\nmore\r\n\r\nend\r\n",
            "cut {a}"
        );
        inp.ret = Ret::Headers;
        let (out, _) = write(&inp);
        assert_eq!(parse(&out).parts[2].1, b"A: 1\r\nB: 2\r\nC: 3\r\n");
    }
}

#[test]
fn long_lines_are_split() {
    let mut original = b"Subject: ".to_vec();
    original.extend(std::iter::repeat_n(b'h', 2500));
    original.extend_from_slice(b"\r\n\r\n");
    original.extend(std::iter::repeat_n(b'b', 2500));
    let chunks: [&[u8]; 1] = [&original];
    let rcpts = [failed(b"u@remote.example", b"550 no")];
    let (out, _) = write(&input(&rcpts, &chunks));
    let p = parse(&out);
    let (fields, body) = split_message(&p.parts[2].1);
    // The header stays one field: its long line was folded, not broken.
    assert_eq!(fields.len(), 1);
    assert_eq!(body.iter().filter(|&&b| b == b'b').count(), 2500);
}

#[test]
fn boundary_is_never_in_the_original() {
    let rcpts = [failed(b"u@remote.example", b"550 no")];
    let plain: [&[u8]; 1] = [ORIGINAL];
    let (_, first) = write(&input(&rcpts, &plain));
    // The original now holds the boundary that would have been chosen,
    // and the stem followed by every character a boundary may add.
    let stem = &first.boundary;
    let mut hostile = b"Subject: x\r\n\r\n--".to_vec();
    hostile.extend_from_slice(stem.as_bytes());
    hostile.extend_from_slice(b"--\r\n");
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._" {
        hostile.extend_from_slice(b"--");
        hostile.extend_from_slice(stem.as_bytes());
        hostile.push(*c);
        hostile.extend_from_slice(b"\r\n");
    }
    let chunks = cut(&hostile, 20, 400);
    let (out, summary) = write(&input(&rcpts, &chunks));
    assert_ne!(summary.boundary, first.boundary);
    assert!(summary.boundary.len() <= 70);
    assert!(!hostile
        .windows(summary.boundary.len())
        .any(|w| w == summary.boundary.as_bytes()));
    assert_eq!(parse(&out).parts[2].1, hostile);
}

#[test]
fn hostile_diagnostics_and_envid_stay_inside_their_fields() {
    let mut reply = b"550 5.1.1 bad\x00\x1b[31m\xff\rInjected: yes\n\n".to_vec();
    reply.extend(std::iter::repeat_n(b'x', 5000));
    let mut r = failed(b"u@remote.example", &reply);
    r.remote_mta = Some(b"evil\r\nX-Evil: 1");
    let rcpts = [r];
    let chunks: [&[u8]; 1] = [ORIGINAL];
    let mut inp = input(&rcpts, &chunks);
    inp.envid = b"id+0D+0AX-Evil:+201";
    let (out, _) = write(&inp);
    let p = parse(&out);
    let blocks = status_blocks(&p.parts[1].1);
    assert_eq!(
        field(&blocks[0], "Original-Envelope-Id"),
        Some("id??X-Evil: 1")
    );
    assert_eq!(
        field(&blocks[1], "Remote-MTA"),
        Some("dns; evil??X-Evil: 1")
    );
    assert!(field(&blocks[1], "X-Evil").is_none());
    assert!(field(&blocks[1], "Injected").is_none());
    let diag = field(&blocks[1], "Diagnostic-Code").unwrap_or_default();
    assert!(diag.starts_with("smtp; 550 5.1.1 bad??[31m? Injected: yes xxx"));
    assert!(diag.len() < 2200);
}

#[test]
fn smtputf8_uses_the_global_types() {
    let mut r = failed("jérôme@exemple.fr".as_bytes(), b"550 5.1.1 no");
    r.orcpt = b"utf-8;j\\x{E9}r\\x{F4}me@exemple.fr";
    let rcpts = [r];
    let original = "Subject: caf\u{e9}\r\n\r\nbody\r\n".as_bytes();
    let chunks: [&[u8]; 1] = [original];
    let mut inp = input(&rcpts, &chunks);
    inp.smtputf8 = true;
    let (out, summary) = write(&inp);
    assert!(summary.smtputf8 && summary.eight_bit);
    let p = parse(&out);
    let ct = field(&p.top, "Content-Type").unwrap_or_default();
    assert!(ct.contains("report-type=global-delivery-status"));
    assert_eq!(field(&p.top, "Content-Transfer-Encoding"), Some("8bit"));
    assert_eq!(
        field(&p.parts[0].0, "Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        field(&p.parts[1].0, "Content-Type"),
        Some("message/global-delivery-status")
    );
    assert_eq!(field(&p.parts[2].0, "Content-Type"), Some("message/global"));
    let blocks = status_blocks(&p.parts[1].1);
    assert_eq!(
        field(&blocks[1], "Final-Recipient"),
        Some("utf-8; jérôme@exemple.fr")
    );
    assert_eq!(
        field(&blocks[1], "Original-Recipient"),
        Some("utf-8; jérôme@exemple.fr")
    );

    inp.ret = Ret::Headers;
    let (out, _) = write(&inp);
    let p = parse(&out);
    assert_eq!(
        field(&p.parts[2].0, "Content-Type"),
        Some("message/global-headers")
    );
}

#[test]
fn non_global_notices_stay_ascii() {
    let mut r = failed(b"u@remote.example", b"550 5.1.1 no");
    r.orcpt = b"utf-8;j\\x{E9}r+2Bme@exemple.fr";
    let rcpts = [r];
    let chunks: [&[u8]; 1] = [ORIGINAL];
    let (out, summary) = write(&input(&rcpts, &chunks));
    assert!(!summary.smtputf8 && !summary.eight_bit);
    assert!(out.is_ascii());
    let p = parse(&out);
    let blocks = status_blocks(&p.parts[1].1);
    assert_eq!(
        field(&blocks[1], "Original-Recipient"),
        Some("utf-8; j\\x{E9}r\\x{2B}me@exemple.fr")
    );
}

#[test]
fn eight_bit_original_is_declared() {
    let original = b"Subject: x\r\n\r\n\xe9t\xe9\r\n";
    let chunks: [&[u8]; 1] = [original];
    let rcpts = [failed(b"u@remote.example", b"550 no")];
    let (out, summary) = write(&input(&rcpts, &chunks));
    assert!(summary.eight_bit && !summary.smtputf8);
    let p = parse(&out);
    assert_eq!(field(&p.top, "Content-Transfer-Encoding"), Some("8bit"));
    assert_eq!(
        field(&p.parts[2].0, "Content-Transfer-Encoding"),
        Some("8bit")
    );
}

#[test]
fn empty_original_has_no_third_part() {
    let rcpts = [failed(b"u@remote.example", b"550 no")];
    let (out, summary) = write(&input(&rcpts, &[]));
    assert_eq!(summary.returned, Returned::Nothing);
    assert_eq!(parse(&out).parts.len(), 2);
}

#[test]
fn status_codes() {
    assert_eq!(status("5.1.10").to_string(), "5.1.10");
    assert!(Status::parse(b"3.1.1").is_none());
    assert!(Status::parse(b"5.1").is_none());
    assert!(Status::parse(b"5.1.1.1").is_none());
    assert!(Status::parse(b"5.1.1000").is_none());
    assert!(Status::parse(b"5.+1.1").is_none());
    assert_eq!(Status::LOOP_DETECTED.to_string(), "5.4.6");
}

// ---- loops -----------------------------------------------------------------

fn with_received(n: usize) -> Vec<u8> {
    let mut m = Vec::new();
    for i in 0..n {
        let name: &[u8] = if i % 3 == 0 {
            b"Received"
        } else if i % 3 == 1 {
            b"RECEIVED "
        } else {
            b"received"
        };
        m.extend_from_slice(name);
        m.extend_from_slice(format!(": from h{i}\r\n\tby x; date\r\n").as_bytes());
    }
    m.extend_from_slice(b"X-Received: not one\r\nSubject: s\r\n\r\n");
    // The body does not count.
    m.extend_from_slice(b"Received: from quoted\r\nReceived: again\r\n");
    m
}

#[test]
fn loops_counted_across_chunks() {
    let fifty = with_received(50);
    let fifty_one = with_received(51);
    for a in 0..fifty.len() {
        assert!(!is_looping(&cut(&fifty, a, a), 50), "cut {a}");
    }
    for a in 0..fifty_one.len() {
        assert!(is_looping(&cut(&fifty_one, a, a), 50), "cut {a}");
    }
    assert!(!is_looping(&[b"Receivedx: a\r\n\r\n"], 0));
    assert!(is_looping(&[b"Received : a\r\n\r\n"], 0));
    assert!(!is_looping(&[], 0));
}

// ---- properties -------------------------------------------------------------

fn chunked(data: Vec<u8>, cuts: Vec<usize>) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points {
        out.push(data[start..p].to_vec());
        start = p;
    }
    out.push(data[start..].to_vec());
    out
}

fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"Received: x\r\n".to_vec()),
        Just(b"--=_".to_vec()),
        Just(b" ".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(b'a'..=b'z', 900..1200),
    ];
    proptest::collection::vec(piece, 0..20).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn every_notice_is_well_formed(
        original in message_bytes(),
        cuts in proptest::collection::vec(any::<usize>(), 0..5),
        reply in message_bytes(),
        address in proptest::collection::vec(any::<u8>(), 1..300),
        ret in 0u8..3,
        smtputf8 in any::<bool>(),
    ) {
        let chunks = chunked(original.clone(), cuts);
        let chunk_refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        let mut r = failed(&address, &reply);
        r.orcpt = &address;
        r.remote_mta = Some(&reply);
        let rcpts = [r];
        let mut inp = input(&rcpts, &chunk_refs);
        inp.ret = Ret::from(ret);
        inp.smtputf8 = smtputf8;
        inp.envid = &reply;
        inp.reverse_path = &address;
        let mut out = Vec::new();
        let res = write_dsn(&mut out, &inp);
        if must_not_bounce(&address) {
            prop_assert_eq!(res, Err(DsnError::NullSender));
            return Ok(());
        }
        let summary = match res {
            Ok(s) => s,
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        };
        check_lines(&out);
        if !summary.eight_bit {
            prop_assert!(out.is_ascii());
        }
        let p = parse(&out);
        let expect = if summary.returned == Returned::Nothing { 2 } else { 3 };
        prop_assert_eq!(p.parts.len(), expect);
        prop_assert_eq!(status_blocks(&p.parts[1].1).len(), 2);
        prop_assert!(!original
            .windows(summary.boundary.len())
            .any(|w| w == summary.boundary.as_bytes()));
    }
}

#[test]
fn a_trailing_space_after_a_full_line_does_not_overflow_it() {
    // A remote host name that ends in a space, after a word that fills a
    // folded line exactly: the space once made a line of 999 octets.
    let mut value = b"dns; Received: ".to_vec();
    value.extend(std::iter::repeat_n(b'y', 997));
    value.push(b' ');
    let mut out = Vec::new();
    super::fields::write_field(&mut out, "Remote-MTA", &value);
    check_lines(&out);
    assert!(!out.windows(3).any(|w| w == b" \r\n"), "no trailing space");
}
