//! Minimal POP3 (RFC 1939) and IMAP (RFC 9051) clients for tests: log in
//! over plain TCP, list the mailbox, fetch whole messages as bytes.
//!
//! Small and strict: a reply that is not the one expected, or that is not
//! understood, panics with what it was. Nothing here is tolerant of a
//! server that does not follow its RFC, since the server is Dovecot.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => panic!("connect to {addr}: {e}"),
    };
    for r in [
        stream.set_read_timeout(Some(IO_TIMEOUT)),
        stream.set_write_timeout(Some(IO_TIMEOUT)),
    ] {
        if let Err(e) = r {
            panic!("socket timeout: {e}");
        }
    }
    BufReader::new(stream)
}

/// One line with its CRLF removed; a line not ended by CRLF panics.
fn read_line(reader: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut line = Vec::new();
    if let Err(e) = reader.read_until(b'\n', &mut line) {
        panic!("read: {e} (after {:?})", String::from_utf8_lossy(&line));
    }
    let Some(text) = line.strip_suffix(b"\r\n") else {
        panic!(
            "line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&line)
        );
    };
    text.to_vec()
}

fn write_line(reader: &mut BufReader<TcpStream>, line: &str) {
    if let Err(e) = reader.get_mut().write_all(format!("{line}\r\n").as_bytes()) {
        panic!("write {line:?}: {e}");
    }
}

/// Text for an atom or quoted string: only what needs no escaping.
fn quoted(s: &str) -> String {
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
        "not sent quoted by this client: {s:?}"
    );
    format!("\"{s}\"")
}

/// A POP3 session in the TRANSACTION state.
pub struct Pop3 {
    reader: BufReader<TcpStream>,
}

impl Pop3 {
    /// Connects and logs in with USER and PASS.
    pub fn login(addr: SocketAddr, user: &str, password: &str) -> Pop3 {
        let mut p = Pop3 {
            reader: connect(addr),
        };
        p.expect_ok("greeting");
        p.command(&format!("USER {user}"));
        p.command(&format!("PASS {password}"));
        p
    }

    /// The `+OK` line's text, or a panic with the reply.
    fn expect_ok(&mut self, what: &str) -> String {
        let line = read_line(&mut self.reader);
        let text = String::from_utf8_lossy(&line).into_owned();
        match text.strip_prefix("+OK") {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => rest.trim().to_string(),
            _ => panic!("POP3 {what}: expected +OK, got {text:?}"),
        }
    }

    fn command(&mut self, line: &str) -> String {
        write_line(&mut self.reader, line);
        self.expect_ok(line)
    }

    /// The lines of a multi-line reply up to its `.`, dot-unstuffed, each
    /// with its CRLF put back.
    fn multi_line(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line = read_line(&mut self.reader);
            if line == b"." {
                return out;
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// `LIST`: each message's number and size in octets.
    pub fn list(&mut self) -> Vec<(usize, usize)> {
        self.command("LIST");
        let text = String::from_utf8_lossy(&self.multi_line()).into_owned();
        text.lines()
            .map(|l| {
                let parsed = l
                    .split_once(' ')
                    .and_then(|(n, size)| Some((n.parse().ok()?, size.parse().ok()?)));
                match parsed {
                    Some(entry) => entry,
                    None => panic!("POP3 LIST: not a scan listing: {l:?}"),
                }
            })
            .collect()
    }

    /// `RETR n`: the whole message, exactly as stored (CRLF lines).
    pub fn retr(&mut self, n: usize) -> Vec<u8> {
        self.command(&format!("RETR {n}"));
        self.multi_line()
    }

    /// Every message in the maildrop, in order; each checked against the
    /// size LIST gave for it.
    pub fn all(&mut self) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        for (n, size) in self.list() {
            let message = self.retr(n);
            assert_eq!(message.len(), size, "POP3 message {n}: LIST said {size}");
            all.push(message);
        }
        all
    }

    pub fn quit(mut self) {
        self.command("QUIT");
    }
}

/// An IMAP session, logged in.
pub struct Imap {
    reader: BufReader<TcpStream>,
    tag: u32,
}

impl Imap {
    /// Connects and logs in with LOGIN.
    pub fn login(addr: SocketAddr, user: &str, password: &str) -> Imap {
        let mut i = Imap {
            reader: connect(addr),
            tag: 0,
        };
        let greeting = read_line(&mut i.reader);
        assert!(
            greeting.starts_with(b"* OK"),
            "IMAP greeting: {:?}",
            String::from_utf8_lossy(&greeting)
        );
        i.command(&format!("LOGIN {} {}", quoted(user), quoted(password)));
        i
    }

    fn send_tagged(&mut self, command: &str) -> String {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        write_line(&mut self.reader, &format!("{tag} {command}"));
        tag
    }

    /// Reads up to the tagged reply, which must be OK; returns the
    /// untagged lines (none of which may carry a literal).
    fn finish(&mut self, tag: &str, command: &str) -> Vec<String> {
        let mut untagged = Vec::new();
        loop {
            let line = String::from_utf8_lossy(&read_line(&mut self.reader)).into_owned();
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                assert!(rest.starts_with("OK"), "IMAP {command}: {line:?}");
                return untagged;
            }
            assert!(
                line.starts_with("* ") && !line.ends_with('}'),
                "IMAP {command}: not understood: {line:?}"
            );
            untagged.push(line);
        }
    }

    fn command(&mut self, command: &str) -> Vec<String> {
        let tag = self.send_tagged(command);
        self.finish(&tag, command)
    }

    /// `SELECT mailbox`: how many messages it holds (its EXISTS).
    pub fn select(&mut self, mailbox: &str) -> usize {
        let untagged = self.command(&format!("SELECT {}", quoted(mailbox)));
        let exists = untagged.iter().find_map(|l| {
            l.strip_prefix("* ")?
                .strip_suffix(" EXISTS")?
                .parse::<usize>()
                .ok()
        });
        match exists {
            Some(n) => n,
            None => panic!("IMAP SELECT: no EXISTS in {untagged:?}"),
        }
    }

    /// `FETCH n BODY.PEEK[]`: the whole message, its `{N}` literal read
    /// exactly.
    pub fn fetch(&mut self, n: usize) -> Vec<u8> {
        let command = format!("FETCH {n} BODY.PEEK[]");
        let tag = self.send_tagged(&command);
        let line = String::from_utf8_lossy(&read_line(&mut self.reader)).into_owned();
        let size = line
            .strip_prefix(&format!("* {n} FETCH (BODY[] {{"))
            .and_then(|rest| rest.strip_suffix('}'))
            .and_then(|size| size.parse::<usize>().ok());
        let Some(size) = size else {
            panic!("IMAP {command}: not understood: {line:?}");
        };
        let mut message = vec![0u8; size];
        if let Err(e) = self.reader.read_exact(&mut message) {
            panic!("IMAP {command}: literal of {size} octets: {e}");
        }
        let end = read_line(&mut self.reader);
        assert_eq!(
            end,
            b")",
            "IMAP {command}: after the literal: {:?}",
            String::from_utf8_lossy(&end)
        );
        let rest = self.finish(&tag, &command);
        assert!(rest.is_empty(), "IMAP {command}: also {rest:?}");
        message
    }

    /// Every message in `mailbox`, in order.
    pub fn all(&mut self, mailbox: &str) -> Vec<Vec<u8>> {
        let n = self.select(mailbox);
        (1..=n).map(|i| self.fetch(i)).collect()
    }

    pub fn logout(mut self) {
        let untagged = self.command("LOGOUT");
        assert!(
            untagged.iter().any(|l| l.starts_with("* BYE")),
            "IMAP LOGOUT: {untagged:?}"
        );
    }
}
