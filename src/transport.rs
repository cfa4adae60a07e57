//! The byte streams SMTP runs over, inbound and outbound: plain TCP, or
//! TLS on top of it. A leaf module: the session and the outbound driver
//! both use it, and it uses neither.
//!
//! Owns: read deadlines on a stream, writing out what a protocol machine
//! produced, and noticing a peer that closed while the stream idled.
//! Must never: interpret the bytes it carries.

use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use rustix::net::RecvFlags;

/// A byte stream a session or an outbound connection runs over.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Bounds the next reads (the protocol machine's next deadline).
    fn set_read_deadline(&self, wait: Option<Duration>) -> std::io::Result<()>;

    /// True when the peer closed the connection or sent something unasked
    /// (a 421 before closing, a TLS alert): either way the connection is
    /// ending. Looks without waiting and without consuming anything.
    fn peer_is_closing(&self) -> bool;
}

/// A stream over a TCP connection.
trait OverTcp {
    fn tcp(&self) -> &TcpStream;
}

impl OverTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl OverTcp for futures_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl OverTcp for futures_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl<T: OverTcp + AsyncRead + AsyncWrite + Unpin> Transport for T {
    fn set_read_deadline(&self, wait: Option<Duration>) -> std::io::Result<()> {
        self.tcp()
            .set_read_timeout(wait)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn peer_is_closing(&self) -> bool {
        let mut b = [0u8; 1];
        match rustix::net::recv(self.tcp(), &mut b, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok(_) => true,
            Err(e) => !matches!(e, rustix::io::Errno::AGAIN | rustix::io::Errno::INTR),
        }
    }
}

/// Writes out and clears `out`; false when the stream failed.
pub async fn flush<S: Transport>(stream: &mut S, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    let ok = stream.write_all(out).await.is_ok() && stream.flush().await.is_ok();
    out.clear();
    ok
}
