//! Lingering close (as nginx's `lingering_close`): a connection the gateway closes while the
//! client may still be sending (a request refused before its body was read: 413, 401, 503) is
//! closed for writing first, then what the client still sends is read and dropped, up to
//! [`LINGER_BYTES`] or [`LINGER_TIME`]. Closed at once, the socket would answer the client's
//! next segments with a reset, and a client still writing its body can lose the answer that
//! was already on its way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// At most this much of an unread body is read and dropped at close.
pub const LINGER_BYTES: usize = 64 * 1024 * 1024;
/// For at most this long.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

enum Closing {
    Open,
    /// Write side shut down; draining what the client still sends.
    Draining {
        drained: usize,
        until: Pin<Box<tokio::time::Sleep>>,
    },
    Closed,
}

/// An IO whose shutdown lingers (see the module).
pub struct Lingering<IO> {
    io: IO,
    closing: Closing,
    limit_bytes: usize,
    limit_time: Duration,
}

impl<IO> Lingering<IO> {
    pub fn new(io: IO) -> Self {
        Self::with_limits(io, LINGER_BYTES, LINGER_TIME)
    }

    pub fn with_limits(io: IO, limit_bytes: usize, limit_time: Duration) -> Self {
        Self { io, closing: Closing::Open, limit_bytes, limit_time }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Lingering<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.closing {
                Closing::Open => {
                    ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                    let until = Box::pin(tokio::time::sleep(this.limit_time));
                    this.closing = Closing::Draining { drained: 0, until };
                }
                Closing::Draining { drained, until } => {
                    let mut scratch = [0_u8; 16 * 1024];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() && *drained < this.limit_bytes => {
                            *drained += buf.filled().len();
                        }
                        // The client closed (or failed, or sent too much): done.
                        Poll::Ready(_) => this.closing = Closing::Closed,
                        Poll::Pending => {
                            ready!(until.as_mut().poll(cx));
                            this.closing = Closing::Closed;
                        }
                    }
                }
                Closing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_shutdown_reads_what_the_peer_still_sends_until_it_closes() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut lingering = Lingering::new(ours);
        lingering.write_all(b"HTTP/1.1 413 Payload Too Large\r\n\r\n").await.unwrap();
        let peer = tokio::spawn(async move {
            let mut answer = vec![0_u8; 34];
            theirs.read_exact(&mut answer).await.unwrap();
            // Still sending its body after the answer: the shutdown reads it.
            theirs.write_all(&[b'x'; 10_000]).await.unwrap();
            drop(theirs);
            String::from_utf8(answer).unwrap()
        });
        tokio::time::timeout(Duration::from_secs(5), lingering.shutdown()).await.unwrap().unwrap();
        assert!(matches!(lingering.closing, Closing::Closed));
        assert_eq!(peer.await.unwrap(), "HTTP/1.1 413 Payload Too Large\r\n\r\n");
    }

    #[tokio::test]
    async fn a_peer_that_never_closes_is_given_up_on_after_the_linger_time() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut lingering = Lingering::with_limits(ours, LINGER_BYTES, Duration::from_millis(50));
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), lingering.shutdown()).await.unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_peer_that_sends_too_much_is_given_up_on_after_the_linger_bytes() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut lingering = Lingering::with_limits(ours, 4_096, Duration::from_secs(60));
        let flood = tokio::spawn(async move { while theirs.write_all(&[b'x'; 1024]).await.is_ok() {} });
        tokio::time::timeout(Duration::from_secs(5), lingering.shutdown()).await.unwrap().unwrap();
        drop(lingering);
        flood.await.unwrap();
    }
}
