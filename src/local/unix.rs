//! A Unix-domain stream as a [`Transport`], for LMTP servers listening on
//! a socket file (`lmtp = "unix:/run/dovecot/lmtp"`). glommio's
//! `UnixStream` has no read timeout of its own, so reads race a timer
//! here.
//! Must never: let a read wait past the deadline the protocol machine set.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::UnixStream;
use glommio::timer::Timer;

use crate::transport::Transport;

/// A connected Unix stream with read deadlines.
pub struct UnixTransport {
    stream: UnixStream,
    wait: Cell<Option<Duration>>,
    /// The running deadline of the read under way.
    timer: Option<Timer>,
}

impl UnixTransport {
    /// Connects to the socket at `path`, giving up after `timeout`.
    pub async fn connect(path: &Path, timeout: Duration) -> io::Result<UnixTransport> {
        let connect = async { Some(UnixStream::connect(path).await) };
        let expire = async {
            glommio::timer::sleep(timeout).await;
            None
        };
        match futures_lite::future::or(connect, expire).await {
            Some(Ok(stream)) => Ok(UnixTransport {
                stream,
                wait: Cell::new(None),
                timer: None,
            }),
            Some(Err(e)) => Err(io::Error::other(e.to_string())),
            None => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

impl AsyncRead for UnixTransport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if let Poll::Ready(r) = Pin::new(&mut me.stream).poll_read(cx, buf) {
            me.timer = None;
            return Poll::Ready(r);
        }
        let Some(wait) = me.wait.get() else {
            return Poll::Pending;
        };
        let timer = me.timer.get_or_insert_with(|| Timer::new(wait));
        match Pin::new(timer).poll(cx) {
            Poll::Ready(_) => {
                me.timer = None;
                Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for UnixTransport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

impl Transport for UnixTransport {
    fn set_read_deadline(&self, wait: Option<Duration>) -> io::Result<()> {
        self.wait.set(wait);
        Ok(())
    }

    /// glommio's Unix stream cannot be peeked without waiting: a server
    /// that closed an idle connection shows when the next transaction
    /// fails on it.
    fn peer_is_closing(&self) -> bool {
        false
    }
}
