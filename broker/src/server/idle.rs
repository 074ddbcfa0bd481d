//! The idle timeout of a Redis-listener connection (`idle_timeout_ms`):
//! [`IdleTimeout`] wraps an accepted socket and fails a read that has
//! waited that long without a byte arriving. (The binary protocol's
//! connection times its wait between frames itself, counting a request
//! in flight as activity: `connection.rs`.)
//!
//! A connection reads when it wants its next request, so a read that
//! waits this long means the client sent nothing for that long. A
//! request that runs long (a long-poll of at most 30 s, a Redis
//! `XREAD BLOCK`) is not idleness: the Redis listener reads nothing while
//! a command runs, and a binary-protocol client's long-polls are shorter
//! than the smallest sensible timeout. The failed read ends the
//! connection as a closed socket would: its slot, members and leases are
//! freed.
//!
//! Invariant: the clock restarts at every read that returns (bytes, end
//! of stream or error); only a read left waiting is timed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A byte stream whose reads fail with `TimedOut` after `idle` without a
/// byte.
#[derive(Debug)]
pub struct IdleTimeout<S> {
    inner: S,
    idle: Option<Duration>,
    /// When the read waiting now times out (armed while it waits).
    deadline: Pin<Box<Sleep>>,
    armed: bool,
    peer: String,
}

impl<S> IdleTimeout<S> {
    /// Wraps `inner`; `idle: None` never times out.
    pub fn new(inner: S, idle: Option<Duration>, peer: String) -> IdleTimeout<S> {
        IdleTimeout {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: false,
            peer,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Poll::Ready(result) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            this.armed = false;
            return Poll::Ready(result);
        }
        let Some(idle) = this.idle else {
            return Poll::Pending;
        };
        if !this.armed {
            this.deadline.as_mut().reset(Instant::now() + idle);
            this.armed = true;
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.armed = false;
            tracing::info!(peer = %this.peer, "closing a connection idle for {idle:?} (idle_timeout_ms)");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no request for {} ms (idle_timeout_ms)", idle.as_millis()),
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_read_waiting_longer_than_the_timeout_fails_and_bytes_restart_the_clock() {
        let (client, server) = tokio::io::duplex(64);
        let idle = Duration::from_secs(10);
        let mut server = IdleTimeout::new(server, Some(idle), "test".into());
        let mut client = client;
        let mut buf = [0u8; 8];
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(9)).await;
            client.write_all(b"a").await.expect("write");
            tokio::time::sleep(Duration::from_secs(9)).await;
            client.write_all(b"b").await.expect("write");
            // Then nothing: the next read times out 10 s later.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(client);
        });
        let started = Instant::now();
        assert_eq!(server.read(&mut buf).await.expect("a"), 1);
        assert_eq!(server.read(&mut buf).await.expect("b"), 1);
        let err = server.read(&mut buf).await.expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(28));
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_timeout_a_read_waits_for_ever() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, None, "test".into());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(86_400)).await;
            client.write_all(b"late").await.expect("write");
        });
        let mut buf = [0u8; 8];
        assert_eq!(server.read(&mut buf).await.expect("late"), 4);
    }
}
