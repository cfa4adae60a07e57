//! Shared by the DKIM tests: keys made with `petrel dkim keygen`, a
//! daemon that signs with them and relays everything to a capturing test
//! server, and a captured message taken apart into its signature fields,
//! header section and body.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;

use crate::common::{queued_id, Client, Daemon};
use crate::smtp_server::{Received, SmtpServer};

/// How long a message may take to reach the capturing server.
pub const ARRIVAL: Duration = Duration::from_secs(20);

/// A key pair written by `petrel dkim keygen`.
pub struct Key {
    pub domain: String,
    pub selector: String,
    pub algorithm: &'static str,
    pub path: PathBuf,
    /// The TXT record's text, its strings joined.
    pub record: String,
    /// `p=`, decoded.
    pub public: Vec<u8>,
}

/// Runs `petrel dkim keygen` into `dir`; `kind` is `rsa` or `ed25519`.
pub fn keygen(dir: &Path, kind: &str, domain: &str, selector: &str) -> Key {
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["dkim", "keygen", "--algorithm", kind, "--domain", domain])
        .args(["--selector", selector, "--out"])
        .arg(dir)
        .output()
        .expect("run petrel dkim keygen");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "keygen: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `name IN TXT "v=DKIM1; k=...; p=..." "..."`: the strings joined.
    let quoted = &stdout[stdout.find('"').expect("a quoted record")..];
    let record: String = quoted
        .split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat();
    let p = record.split("p=").nth(1).expect("p=").trim();
    let public = base64::engine::general_purpose::STANDARD
        .decode(p)
        .expect("p= is base64");
    Key {
        domain: domain.into(),
        selector: selector.into(),
        algorithm: if kind == "rsa" {
            "rsa-sha256"
        } else {
            "ed25519-sha256"
        },
        path: dir.join(domain).join(format!("{selector}.pem")),
        record,
        public,
    }
}

/// The `[[dkim]]` entry of `key`.
pub fn entry(key: &Key) -> String {
    format!(
        "[[dkim]]\ndomain = \"{}\"\nselector = \"{}\"\nprivate_key = {:?}\nalgorithm = \"{}\"\n\n",
        key.domain, key.selector, key.path, key.algorithm
    )
}

/// A daemon signing with `keys` that relays all mail to `relay`.
pub fn daemon(dir: &Path, keys: &[&Key], relay: &SmtpServer) -> Daemon {
    daemon_with(dir, keys, relay, "", "")
}

/// [`daemon`], with `listener` lines and `more` config after the keys.
pub fn daemon_with(
    dir: &Path,
    keys: &[&Key],
    relay: &SmtpServer,
    listener: &str,
    more: &str,
) -> Daemon {
    let mut extra = format!(
        "[delivery]\nretry = [\"1s\"]\n\n[[route]]\ndomain = \"*\"\nrelay = \"{}\"\n\n",
        relay.addr()
    );
    for key in keys {
        extra.push_str(&entry(key));
    }
    extra.push_str(more);
    Daemon::start_plain(dir, &dir.join("spool"), "shards = 1", listener, &extra)
}

/// Sends `message` (text as the client writes it, dot-stuffed, ending in
/// CRLF) from `from` to one recipient, with `mail_params` after MAIL FROM.
pub fn send(c: &mut Client, from: &str, mail_params: &str, message: &[u8]) -> String {
    c.cmd(&format!("MAIL FROM:<{from}>{mail_params}"), "250");
    c.cmd("RCPT TO:<rcpt@example.net>", "250");
    c.cmd("DATA", "354");
    c.send_bytes(message);
    c.send(".\r\n");
    queued_id(&c.reply())
}

/// A message as it arrived.
pub struct Captured {
    /// The whole message, as sent (unstuffed, with its last CRLF).
    pub message: Vec<u8>,
    /// Its `DKIM-Signature` fields, each with its CRLF, in order.
    pub signatures: Vec<String>,
    /// Its header section, the empty line included.
    pub header: Vec<u8>,
    pub body: Vec<u8>,
}

impl Captured {
    pub fn new(received: &Received) -> Captured {
        let mut message = received.data.clone();
        message.extend_from_slice(b"\r\n");
        let end = message
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(message.len(), |at| at + 4);
        let (header, body) = message.split_at(end);
        let signatures = petrel::dkim::fields(header)
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(b"DKIM-Signature"))
            .map(|f| String::from_utf8_lossy(f.raw).into_owned())
            .collect();
        Captured {
            signatures,
            header: header.to_vec(),
            body: body.to_vec(),
            message,
        }
    }

    /// The header section without the signatures and this server's
    /// `Received:` field (the first field after them).
    pub fn client_header(&self) -> Vec<u8> {
        let fields = petrel::dkim::fields(&self.header);
        let rest: Vec<&[u8]> = fields
            .iter()
            .skip_while(|f| f.name.eq_ignore_ascii_case(b"DKIM-Signature"))
            .skip(1)
            .map(|f| f.raw)
            .collect();
        [rest.concat(), b"\r\n".to_vec()].concat()
    }
}

/// Waits for `n` messages at `server`.
pub fn captured(server: &SmtpServer, n: usize) -> Vec<Captured> {
    let got = server.wait_for_messages(n, ARRIVAL);
    assert_eq!(got.len(), n, "messages captured");
    got.iter().map(Captured::new).collect()
}

/// Sends one message from `from` through a petrel signing with `keys`
/// to a capturing server on 127.0.0.2, and returns it as it arrived.
pub fn relay_one(dir: &Path, keys: &[&Key], from: &str, params: &str, message: &[u8]) -> Captured {
    let ip = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let relay = SmtpServer::start(ip.into(), 0, crate::smtp_server::Script::accept());
    let d = daemon(dir, keys, &relay);
    let mut c = d.connect();
    c.hello();
    send(&mut c, from, params, message);
    c.cmd("QUIT", "221");
    let m = captured(&relay, 1).remove(0);
    d.stop();
    m
}
