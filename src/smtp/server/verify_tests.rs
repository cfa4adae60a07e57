//! RCPT for hosted domains: the tables' outcomes as replies, and the
//! pause for an LMTP server's verdict with pipelined commands behind it.

use super::*;
use crate::smtp::recipients::{RecipientTable, Refusal, Resolution, Target};

/// `hosted.test`: every mailbox asked of its LMTP server; `list@` stands
/// for `a@` and `b@`, `fwd@` for `x@remote.test` (a forward), `loop@`
/// loops, `three@` for three users. `plain.test`: `u@` only.
#[derive(Debug)]
struct Table;

impl RecipientTable for Table {
    fn resolve(
        &self,
        address: &str,
        _today: u32,
        answers: &[(String, bool)],
        out: &mut Vec<Target>,
    ) -> Result<Resolution, Refusal> {
        out.clear();
        let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
        let target = |a: &str, forward| Target {
            address: a.as_bytes().to_vec(),
            forward,
        };
        let unknown = || Refusal::Unknown {
            address: address.to_owned(),
        };
        match (local.to_ascii_lowercase().as_str(), domain) {
            ("u", "plain.test") => out.push(target("u@plain.test", false)),
            (_, "plain.test") => return Err(unknown()),
            ("loop", "hosted.test") => {
                return Err(Refusal::Loop {
                    alias: address.into(),
                })
            }
            ("deep", "hosted.test") => return Err(Refusal::TooDeep),
            ("fwd", "hosted.test") => out.push(target("x@remote.test", true)),
            ("three", "hosted.test") => {
                for u in ["u@plain.test", "v@plain.test", "w@plain.test"] {
                    out.push(target(u, false));
                }
            }
            (user, "hosted.test") => {
                let users: Vec<String> = match user {
                    "list" => vec!["a@hosted.test".into(), "b@hosted.test".into()],
                    other => vec![format!("{other}@hosted.test")],
                };
                for mailbox in users {
                    match answers.iter().find(|(m, _)| *m == mailbox) {
                        None => return Ok(Resolution::NeedsProbe { mailbox }),
                        Some((_, false)) => return Err(unknown()),
                        Some((_, true)) => out.push(target(&mailbox, false)),
                    }
                }
            }
            _ => return Ok(Resolution::NotHosted),
        }
        Ok(Resolution::Resolved)
    }

    fn forward_sender(&self, sender: &[u8], _today: u32) -> Option<Vec<u8>> {
        (!sender.is_empty()).then(|| [b"SRS0=x=", sender].concat())
    }
}

fn hosted_client() -> Client {
    let cfg = ServerConfig {
        local_domains: vec!["hosted.test".into(), "plain.test".into()],
        recipients: Some(Arc::new(Table)),
        postmaster: b"admin@plain.test".to_vec(),
        ..config()
    };
    let mut c = Client::with(cfg, false, None);
    c.send(EHLO);
    c.take();
    c
}

fn recipients(c: &Client) -> Vec<(String, Option<String>, bool)> {
    c.s.envelope()
        .recipients()
        .map(|r| {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (text(r.address), r.orcpt.map(text), r.forward)
        })
        .collect()
}

#[test]
fn a_paused_rcpt_holds_the_pipelined_commands_behind_it() {
    let mut c = hosted_client();
    let r = c.send(
        b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<Ann@hosted.test>\r\nRCPT TO:<u@plain.test>\r\nDATA\r\n",
    );
    // Only MAIL is answered: the RCPT waits, and what follows it too.
    assert_eq!(r, "250 2.1.0 Ok\r\n");
    assert_eq!(c.events, [Event::Helo, Event::MailFrom, Event::RcptVerify]);
    assert_eq!(c.s.verify_request(), Some("ann@hosted.test"));
    assert_eq!(c.s.next_deadline(), None, "the I/O layer owes the answer");
    let mut out = Vec::new();
    let p = c.s.handle_input(&c.pending, 0, &mut out);
    assert_eq!((p.consumed, p.event, out.len()), (0, None, 0));
    // The verdict comes: the RCPT is answered, then the rest runs.
    c.verdicts.push(("ann@hosted.test", Verdict::Exists));
    let r =
        c.s.rcpt_verified(Verdict::Exists, &mut c.out)
            .expect("waiting");
    assert_eq!(r, Some(Event::RcptTo { index: 0 }));
    let r = c.send(b"");
    assert_eq!(
        lines(&r),
        [
            "250 2.1.5 Ok",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>"
        ]
    );
    assert_eq!(
        recipients(&c),
        [
            (
                "ann@hosted.test".into(),
                Some("rfc822;Ann@hosted.test".into()),
                false
            ),
            ("u@plain.test".into(), None, false),
        ]
    );
    assert_eq!(c.s.verify_request(), None);
}

#[test]
fn verdicts_unknown_and_unavailable_and_misuse() {
    let mut c = hosted_client();
    c.verdicts = vec![
        ("gone@hosted.test", Verdict::Unknown),
        ("busy@hosted.test", Verdict::Unavailable),
    ];
    let r = c.send(
        b"MAIL FROM:<>\r\nRCPT TO:<gone@hosted.test>\r\nRCPT TO:<busy@hosted.test>\r\nRCPT TO:<nobody@plain.test>\r\n",
    );
    assert_eq!(
        lines(&r),
        [
            "250 2.1.0 Ok",
            "550 5.1.1 No such user here",
            "450 4.2.0 Recipient cannot be verified now, try again later",
            "550 5.1.1 No such user here",
        ]
    );
    assert_eq!(c.s.error_count(), 3);
    assert_eq!(c.s.envelope().recipient_count(), 0);
    assert_eq!(c.s.rcpt_verified(Verdict::Exists, &mut c.out), Err(Misuse));
}

#[test]
fn an_alias_asks_about_each_target_in_turn() {
    let mut c = hosted_client();
    c.verdicts = vec![
        ("a@hosted.test", Verdict::Exists),
        ("b@hosted.test", Verdict::Exists),
    ];
    let r = c.send(
        b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<list@hosted.test> ORCPT=rfc822;list@x.test\r\n",
    );
    assert_eq!(lines(&r), ["250 2.1.0 Ok", "250 2.1.5 Ok"]);
    let asked = c.events.iter().filter(|e| **e == Event::RcptVerify).count();
    assert_eq!(asked, 2);
    let orcpt = Some("rfc822;list@x.test".to_owned());
    assert_eq!(
        recipients(&c),
        [
            ("a@hosted.test".into(), orcpt.clone(), false),
            ("b@hosted.test".into(), orcpt, false),
        ]
    );
    // The answers were for that RCPT only: the next one asks again.
    c.verdicts.clear();
    c.send(b"RCPT TO:<a@hosted.test>\r\n");
    assert_eq!(c.s.verify_request(), Some("a@hosted.test"));
}

#[test]
fn loops_depth_forwards_duplicates_and_the_recipient_limit() {
    let mut c = hosted_client();
    let r = c.send(
        b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<loop@hosted.test>\r\nRCPT TO:<deep@hosted.test>\r\n\
          RCPT TO:<fwd@hosted.test>\r\nRCPT TO:<FWD@hosted.test>\r\nRCPT TO:<three@hosted.test>\r\n\
          RCPT TO:<u@plain.test>\r\nRCPT TO:<x@elsewhere.test>\r\n",
    );
    assert_eq!(
        lines(&r),
        [
            "250 2.1.0 Ok",
            "550 5.4.6 Alias loop detected",
            "550 5.4.6 Alias expansion too deep or too large",
            "250 2.1.5 Ok",
            "250 2.1.5 Ok (duplicate recipient, accepted once)",
            // One is in; three more would pass max_recipients (3).
            "452 4.5.3 Too many recipients",
            "250 2.1.5 Ok",
            "554 5.7.1 Relay access denied",
        ]
    );
    assert_eq!(
        recipients(&c),
        [
            (
                "x@remote.test".into(),
                Some("rfc822;fwd@hosted.test".into()),
                true
            ),
            ("u@plain.test".into(), None, false),
        ]
    );
    assert_eq!(c.s.forward_sender(), Some(b"SRS0=x=s@sender.test".to_vec()));
}

#[test]
fn a_local_part_that_is_not_utf8_is_no_user_of_ours() {
    // The parser refuses it before the tables are asked (which would
    // refuse it too: see `hosted_rcpt`).
    let mut c = hosted_client();
    let r = c.send(b"MAIL FROM:<> SMTPUTF8\r\nRCPT TO:<\xff\xfe@plain.test>\r\n");
    assert_eq!(
        lines(&r),
        ["250 2.1.0 Ok", "501 5.1.3 Bad recipient address syntax"]
    );
    assert_eq!(c.s.envelope().recipient_count(), 0);
}

#[test]
fn the_domainless_postmaster_and_trusted_relaying_keep_working() {
    let mut c = hosted_client();
    let r = c.send(b"MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\n");
    assert_eq!(lines(&r), ["250 2.1.0 Ok", "250 2.1.5 Ok"]);
    assert_eq!(recipients(&c), [("admin@plain.test".into(), None, false)]);
    assert_eq!(c.s.forward_sender(), None, "no forwards");
    let cfg = ServerConfig {
        recipients: Some(Arc::new(Table)),
        ..config()
    };
    let mut c = Client::with(cfg, true, None);
    c.send(EHLO);
    c.take();
    // A relay client still relays, and still gets 550 for a typo of ours.
    let r = c.send(b"MAIL FROM:<>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<typo@plain.test>\r\n");
    assert_eq!(
        lines(&r),
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "550 5.1.1 No such user here"
        ]
    );
}
