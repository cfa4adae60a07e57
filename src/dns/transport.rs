//! One DNS exchange with one server, over glommio UDP or TCP.
//!
//! Owns: sockets for a single query, its deadline, and skipping stray
//! datagrams. Must never: reuse a UDP socket across queries, or let
//! datagrams that are not the reply end an exchange early or make it
//! last past its deadline. Each query
//! binds a fresh socket to port 0 so that the kernel picks a new ephemeral
//! source port; with the random transaction id that is the defence against
//! spoofed replies (RFC 5452), and a connected socket drops datagrams from
//! other addresses.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpStream, UdpSocket};
use hickory_proto::rr::{Name, RecordType};

use super::wire::{parse_response, CaseMatch, Parsed, WireError};

/// Largest reply we read over UDP (more than the advertised EDNS size, so
/// a server that ignores it still parses).
const UDP_BUFFER: usize = 4096;

/// Mismatched or malformed datagrams read before giving up on a server:
/// enough that junk does not abort a lookup that would succeed, few enough
/// to bound the parsing a flood can cause.
pub(crate) const MAX_STRAY_REPLIES: usize = 64;

/// How one exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    Io(io::Error),
    Wire(WireError),
}

/// The query being asked: its bytes and what a reply must match.
pub(crate) struct Question<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) id: u16,
    pub(crate) name: &'a Name,
    pub(crate) rtype: RecordType,
    pub(crate) case: CaseMatch,
}

fn io_err(e: glommio::GlommioError<()>) -> ExchangeError {
    ExchangeError::Io(e.into())
}

/// Sends the query over UDP and waits up to `timeout` for a matching
/// reply, skipping stray datagrams: the deadline is fixed when the query
/// is sent, so they neither end nor extend the wait.
pub(crate) async fn udp(
    server: SocketAddr,
    q: &Question<'_>,
    timeout: Duration,
) -> Result<Parsed, ExchangeError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(io_err)?;
    socket.connect(server).await.map_err(io_err)?;
    let deadline = Instant::now() + timeout;
    socket.send(q.bytes).await.map_err(io_err)?;
    let mut buf = vec![0u8; UDP_BUFFER];
    let mut last = WireError::Malformed;
    for _ in 0..=MAX_STRAY_REPLIES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ExchangeError::Io(io::ErrorKind::TimedOut.into()));
        }
        socket.set_read_timeout(Some(left)).map_err(io_err)?;
        let n = socket.recv(&mut buf).await.map_err(io_err)?;
        let reply = buf.get(..n).unwrap_or_default();
        match parse_response(reply, q.id, q.name, q.rtype, q.case) {
            // Someone else's datagram (or a spoofing attempt): keep waiting
            // for the real reply.
            Err(
                e @ (WireError::IdMismatch | WireError::QuestionMismatch | WireError::Malformed),
            ) => {
                last = e;
            }
            other => return other.map_err(ExchangeError::Wire),
        }
    }
    Err(ExchangeError::Wire(last))
}

/// The same exchange over TCP with the 2-byte length prefix (RFC 1035
/// 4.2.2), used after a truncated UDP reply.
pub(crate) async fn tcp(
    server: SocketAddr,
    q: &Question<'_>,
    timeout: Duration,
) -> Result<Parsed, ExchangeError> {
    let Ok(len) = u16::try_from(q.bytes.len()) else {
        return Err(ExchangeError::Wire(WireError::Encode));
    };
    let mut stream = TcpStream::connect_timeout(server, timeout)
        .await
        .map_err(io_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut framed = Vec::with_capacity(q.bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(q.bytes);
    stream.write_all(&framed).await.map_err(ExchangeError::Io)?;
    stream.flush().await.map_err(ExchangeError::Io)?;
    let mut prefix = [0u8; 2];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(ExchangeError::Io)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream
        .read_exact(&mut reply)
        .await
        .map_err(ExchangeError::Io)?;
    parse_response(&reply, q.id, q.name, q.rtype, q.case).map_err(ExchangeError::Wire)
}
