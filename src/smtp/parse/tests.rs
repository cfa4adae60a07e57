//! Tests for command framing and parsing.

use super::*;
use crate::smtp::address::DomainKind;
use crate::smtp::params::{Body, Notify};
use proptest::prelude::*;

fn cmd(s: &[u8]) -> Result<Command<'_>, ParseError> {
    parse_command(s)
}

fn reply_of(s: &[u8]) -> String {
    let mut out = Vec::new();
    Reply::from(cmd(s).unwrap_err()).write(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn framing_needs_crlf() {
    assert_eq!(next_line(b"NOOP", 512), Line::Incomplete);
    assert_eq!(next_line(b"NOOP\r", 512), Line::Incomplete);
    assert_eq!(
        next_line(b"NOOP\r\nQUIT\r\n", 512),
        Line::Complete {
            content: b"NOOP",
            len: 6
        }
    );
}

#[test]
fn framing_bare_lf_does_not_end_line() {
    assert_eq!(next_line(b"NOOP\n", 512), Line::Incomplete);
    assert_eq!(
        next_line(b"NOOP\nQUIT\r\n", 512),
        Line::Complete {
            content: b"NOOP\nQUIT",
            len: 11
        }
    );
    assert_eq!(next_line(b"\n", 512), Line::Incomplete);
}

#[test]
fn framing_too_long() {
    let long = vec![b'a'; 512];
    assert_eq!(next_line(&long, 512), Line::TooLong);
    let mut exact = vec![b'a'; 510];
    exact.extend_from_slice(b"\r\n");
    assert!(matches!(
        next_line(&exact, 512),
        Line::Complete { len: 512, .. }
    ));
    let mut over = vec![b'a'; 511];
    over.extend_from_slice(b"\r\n");
    assert_eq!(next_line(&over, 512), Line::TooLong);
}

#[test]
fn line_limits_by_verb() {
    assert_eq!(line_limit(b"mail from"), MAX_MAIL_LINE);
    assert_eq!(line_limit(b"RCPT"), MAX_RCPT_LINE);
    assert_eq!(line_limit(b"AUTH PLAIN"), MAX_AUTH_LINE);
    assert_eq!(line_limit(b"EHLO"), MAX_COMMAND_LINE);
    assert_eq!(line_limit(b"MA"), MAX_COMMAND_LINE);
}

#[test]
fn verbs_case_insensitive() {
    assert_eq!(cmd(b"noop"), Ok(Command::Noop));
    assert_eq!(cmd(b"QuIt"), Ok(Command::Quit));
    assert_eq!(cmd(b"starttls"), Ok(Command::StartTls));
    assert_eq!(cmd(b"RSET"), Ok(Command::Rset));
    assert_eq!(cmd(b"data"), Ok(Command::Data));
    assert_eq!(cmd(b"HELP me"), Ok(Command::Help));
    assert_eq!(cmd(b"NOOP anything"), Ok(Command::Noop));
    assert_eq!(cmd(b"VRFY bob"), Ok(Command::Vrfy));
}

#[test]
fn unknown_and_bad_characters() {
    assert_eq!(cmd(b"FOO"), Err(ParseError::UnknownCommand));
    assert_eq!(cmd(b""), Err(ParseError::UnknownCommand));
    assert_eq!(cmd(b"STARTTLSX"), Err(ParseError::UnknownCommand));
    assert_eq!(cmd(b"NO\0OP"), Err(ParseError::BadCharacter));
    assert_eq!(cmd(b"NOOP\rx"), Err(ParseError::BadCharacter));
    assert_eq!(cmd(b"NOOP\nQUIT"), Err(ParseError::BadCharacter));
    assert_eq!(
        reply_of(b"FOO"),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    assert!(reply_of(b"NOOP\n").starts_with("500 5.5.2 "));
}

#[test]
fn no_arg_commands_refuse_args() {
    assert_eq!(cmd(b"DATA x"), Err(ParseError::Syntax(Verb::Data)));
    assert_eq!(cmd(b"QUIT x"), Err(ParseError::Syntax(Verb::Quit)));
    assert_eq!(cmd(b"RSET x"), Err(ParseError::Syntax(Verb::Rset)));
    assert_eq!(cmd(b"STARTTLS x"), Err(ParseError::Syntax(Verb::StartTls)));
    assert_eq!(cmd(b"VRFY"), Err(ParseError::Syntax(Verb::Vrfy)));
    assert_eq!(cmd(b"DATA  "), Ok(Command::Data));
    assert_eq!(reply_of(b"DATA x"), "501 5.5.4 Syntax: DATA\r\n");
}

#[test]
fn ehlo_helo() {
    assert_eq!(
        cmd(b"EHLO client.example"),
        Ok(Command::Ehlo {
            domain: b"client.example"
        })
    );
    assert_eq!(
        cmd(b"helo [192.0.2.1]"),
        Ok(Command::Helo {
            domain: b"[192.0.2.1]"
        })
    );
    assert_eq!(cmd(b"EHLO"), Err(ParseError::Syntax(Verb::Ehlo)));
    assert_eq!(cmd(b"EHLO a b"), Err(ParseError::Syntax(Verb::Ehlo)));
    assert_eq!(reply_of(b"EHLO"), "501 5.5.4 Syntax: EHLO hostname\r\n");
}

#[test]
fn mail_from() {
    let Ok(Command::Mail {
        reverse_path: ReversePath::Mailbox(m),
        params,
    }) = cmd(b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME")
    else {
        panic!("mail did not parse");
    };
    assert_eq!(m.address, b"a@b.example");
    assert_eq!(params.size, Some(10));
    assert_eq!(params.body, Some(Body::EightBitMime));
    assert!(matches!(
        cmd(b"mail from:<>"),
        Ok(Command::Mail {
            reverse_path: ReversePath::Null,
            ..
        })
    ));
    // One space after the colon is a common client habit.
    assert!(cmd(b"MAIL FROM: <a@b>").is_ok());
}

#[test]
fn mail_syntax_errors() {
    assert_eq!(cmd(b"MAIL"), Err(ParseError::Syntax(Verb::Mail)));
    assert_eq!(cmd(b"MAIL TO:<a@b>"), Err(ParseError::Syntax(Verb::Mail)));
    assert_eq!(cmd(b"MAIL FROM:a@b"), Err(ParseError::Syntax(Verb::Mail)));
    assert_eq!(
        cmd(b"MAIL FROM:<a@b>SIZE=1"),
        Err(ParseError::Syntax(Verb::Mail))
    );
    assert_eq!(
        cmd(b"MAIL FROM:<a@@b>"),
        Err(ParseError::BadSender(AddressError::Malformed))
    );
    assert_eq!(
        reply_of(b"MAIL FROM"),
        "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]\r\n"
    );
    assert_eq!(
        reply_of(b"MAIL FROM:<a@@b>"),
        "501 5.1.7 Bad sender address syntax\r\n"
    );
    assert_eq!(
        reply_of(b"MAIL FROM:<a@b> X=1"),
        "555 5.5.4 Unsupported parameter\r\n"
    );
    assert!(reply_of(b"MAIL FROM:<a@b> SIZE=x").starts_with("501 5.5.4 Syntax: MAIL"));
}

#[test]
fn rcpt_to() {
    let Ok(Command::Rcpt {
        forward_path,
        params,
    }) = cmd(b"RCPT TO:<@r.example:u@d.example> NOTIFY=FAILURE ORCPT=rfc822;u@d.example")
    else {
        panic!("rcpt did not parse");
    };
    assert_eq!(forward_path.address, b"u@d.example");
    assert!(forward_path.source_route);
    assert_eq!(params.notify, Some(Notify(Notify::FAILURE)));
    assert!(matches!(
        cmd(b"RCPT TO:<postmaster>"),
        Ok(Command::Rcpt {
            forward_path: Mailbox {
                domain_kind: DomainKind::None,
                ..
            },
            ..
        })
    ));
}

#[test]
fn rcpt_errors() {
    assert_eq!(
        cmd(b"RCPT TO:<>"),
        Err(ParseError::BadRecipient(AddressError::NullNotAllowed))
    );
    assert_eq!(
        reply_of(b"RCPT TO:<>"),
        "501 5.1.3 Bad recipient address syntax\r\n"
    );
    assert_eq!(
        reply_of(b"RCPT TO:<a>"),
        "501 5.1.3 Bad recipient address syntax\r\n"
    );
    assert_eq!(
        reply_of(b"RCPT FROM:<a@b>"),
        "501 5.5.4 Syntax: RCPT TO:<address> [parameters]\r\n"
    );
    let long = format!("RCPT TO:<{}@example.com>", "a".repeat(65));
    assert_eq!(
        reply_of(long.as_bytes()),
        "501 5.1.3 Local part too long\r\n"
    );
}

#[test]
fn line_length_by_verb() {
    let noop = format!("NOOP {}", "x".repeat(505));
    assert_eq!(noop.len() + 2, 512);
    assert_eq!(cmd(noop.as_bytes()), Ok(Command::Noop));
    let noop = format!("NOOP {}", "x".repeat(506));
    assert_eq!(cmd(noop.as_bytes()), Err(ParseError::LineTooLong));
    assert_eq!(
        reply_of(noop.as_bytes()),
        "500 5.5.2 Error: line too long\r\n"
    );
    // A MAIL line longer than 512 is fine thanks to the DSN allowance.
    let envid = "e".repeat(100);
    let mail = format!(
        "MAIL FROM:<{}@{}> ENVID={envid} RET=HDRS SIZE=1000",
        "l".repeat(64),
        "d".repeat(60) + "." + &"d".repeat(60) + "." + &"d".repeat(60)
    );
    assert!(mail.len() > 300);
    assert!(cmd(mail.as_bytes()).is_ok());
}

#[test]
fn bdat() {
    assert_eq!(
        cmd(b"BDAT 100"),
        Ok(Command::Bdat {
            size: 100,
            last: false
        })
    );
    assert_eq!(
        cmd(b"bdat 0 last"),
        Ok(Command::Bdat {
            size: 0,
            last: true
        })
    );
    for bad in [
        &b"BDAT"[..],
        b"BDAT x",
        b"BDAT 1 FIRST",
        b"BDAT -1",
        b"BDAT 99999999999999999999",
    ] {
        assert_eq!(cmd(bad), Err(ParseError::Syntax(Verb::Bdat)), "{bad:?}");
    }
}

#[test]
fn auth() {
    assert_eq!(
        cmd(b"AUTH PLAIN AGFAYg=="),
        Ok(Command::Auth {
            mechanism: AuthMechanism::Plain,
            initial: Some(b"AGFAYg==")
        })
    );
    assert_eq!(
        cmd(b"auth login"),
        Ok(Command::Auth {
            mechanism: AuthMechanism::Login,
            initial: None
        })
    );
    assert_eq!(
        cmd(b"AUTH CRAM-MD5"),
        Ok(Command::Auth {
            mechanism: AuthMechanism::Other,
            initial: None
        })
    );
    assert_eq!(cmd(b"AUTH"), Err(ParseError::Syntax(Verb::Auth)));
}

proptest! {
    #[test]
    fn parser_never_panics(input in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = next_line(&input, line_limit(&input));
        if let Ok(c) = parse_command(&input) {
            // A command that parsed never hides a line break.
            prop_assert!(!input.contains(&b'\n') && !input.contains(&b'\r'));
            let _ = c;
        }
    }

    #[test]
    fn parser_never_panics_on_mail_like(tail in "[<>@\\[\\]:,.\"\\\\a-zA-Z0-9 =;+é-]{0,80}") {
        for prefix in ["MAIL FROM:", "RCPT TO:", "AUTH ", "BDAT ", "EHLO "] {
            let line = format!("{prefix}{tail}");
            let _ = parse_command(line.as_bytes());
        }
    }
}
