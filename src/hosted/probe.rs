//! The LMTP probe of `verify = "lmtp"`: asks a domain's LMTP server
//! whether a user exists, in a transaction that sends no data (`LHLO`,
//! `MAIL FROM:<>`, `RCPT TO:<user@domain>`, then `RSET` and `QUIT`), over
//! TCP or a Unix socket, within a bounded time.
//!
//! Replies are framed by the SMTP client's reply parser, never by a
//! second one. Must never: block the shard (the host of an LMTP server
//! given by name is `localhost` or an IP address; another name is not
//! looked up here, see README) or wait without a limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::LmtpTarget;
use crate::smtp::client::{parse_reply, ParsedReply, ServerReply};

/// The longest a probe may take, connection included.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of replies buffered at most (a reply longer than the parser
/// allows is refused by it first).
const MAX_BUFFER: usize = 64 * 1024;

/// What the LMTP server said about a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx to RCPT.
    Exists,
    /// 5xx to RCPT.
    Unknown,
    /// A 4xx, a refusal before RCPT, a malformed reply, no connection or
    /// no answer in time: why.
    Unavailable(String),
}

/// Asks `target` whether `mailbox` exists, introducing ourselves as
/// `hostname`, within `limit`.
pub async fn probe(target: &LmtpTarget, hostname: &str, mailbox: &str, limit: Duration) -> Verdict {
    let asked = async {
        Ok::<_, glommio::GlommioError<()>>(match target {
            LmtpTarget::Tcp(host) => match tcp_address(&host.host, host.port) {
                Some(addr) => match glommio::net::TcpStream::connect(addr).await {
                    Ok(mut s) => dialogue(&mut s, hostname, mailbox).await,
                    Err(e) => Verdict::Unavailable(format!("connecting to {addr}: {e}")),
                },
                None => Verdict::Unavailable(format!(
                    "the LMTP host {:?} is not an IP address or localhost",
                    host.host
                )),
            },
            LmtpTarget::Unix(path) => match glommio::net::UnixStream::connect(path).await {
                Ok(mut s) => dialogue(&mut s, hostname, mailbox).await,
                Err(e) => Verdict::Unavailable(format!("connecting to {}: {e}", path.display())),
            },
        })
    };
    match glommio::timer::timeout(limit, asked).await {
        Ok(v) => v,
        _ => Verdict::Unavailable(format!("no answer from {target} within {limit:?}")),
    }
}

fn tcp_address(host: &str, port: u16) -> Option<SocketAddr> {
    let ip = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other.parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

/// The dialogue after the connection is made.
pub async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    hostname: &str,
    mailbox: &str,
) -> Verdict {
    let mut buf = Vec::with_capacity(1024);
    let steps = [
        None,
        Some(format!("LHLO {hostname}\r\n")),
        Some("MAIL FROM:<>\r\n".to_owned()),
    ];
    for (i, command) in steps.iter().enumerate() {
        if let Some(command) = command {
            if let Err(e) = s.write_all(command.as_bytes()).await {
                return Verdict::Unavailable(format!("writing to the LMTP server: {e}"));
            }
        }
        match read_reply(s, &mut buf).await {
            Ok(r) if r.is_positive() => {}
            Ok(r) => {
                let what = ["greeting", "LHLO", "MAIL"][i];
                return Verdict::Unavailable(format!("{what} answered {}", r.logged()));
            }
            Err(why) => return Verdict::Unavailable(why),
        }
    }
    let rcpt = format!("RCPT TO:<{mailbox}>\r\n");
    if let Err(e) = s.write_all(rcpt.as_bytes()).await {
        return Verdict::Unavailable(format!("writing to the LMTP server: {e}"));
    }
    let verdict = match read_reply(s, &mut buf).await {
        Ok(r) if r.is_positive() => Verdict::Exists,
        Ok(r) if r.class() == 5 => Verdict::Unknown,
        Ok(r) => Verdict::Unavailable(format!("RCPT answered {}", r.logged())),
        Err(why) => Verdict::Unavailable(why),
    };
    // Polite, and not waited for: the answer is in.
    let _ = s.write_all(b"RSET\r\nQUIT\r\n").await;
    let _ = s.flush().await;
    verdict
}

/// Reads until `buf` holds a whole reply; takes it out of `buf`.
async fn read_reply<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<ServerReply, String> {
    let mut chunk = [0u8; 1024];
    loop {
        match parse_reply(buf) {
            ParsedReply::Reply { len, reply } => {
                buf.drain(..len);
                return Ok(reply);
            }
            ParsedReply::Malformed => {
                return Err("the LMTP server sent a malformed reply".to_owned())
            }
            ParsedReply::Incomplete if buf.len() >= MAX_BUFFER => {
                return Err("the LMTP server's reply is too long".to_owned())
            }
            ParsedReply::Incomplete => {}
        }
        match s.read(&mut chunk).await {
            Ok(0) => return Err("the LMTP server closed the connection".to_owned()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading from the LMTP server: {e}")),
        }
    }
}
