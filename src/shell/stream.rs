//! A TCP connection inside the tunnel, seen from the HTTP side as an
//! ordinary `AsyncRead + AsyncWrite` stream: a thin tokio adapter over the
//! application side of a [`promgate_core::pipe::Pipe`], which keeps the rules.
//!
//! Also the adapter that turns the driver's `Notify` into the [`Waker`] the
//! I/O-free core uses to ask for a poll.

use promgate_core::pipe::Pipe;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// A [`Waker`] that signals `notify`: how the core's connections ask the
/// driver for a netstack poll.
pub fn poll_request_waker(notify: Arc<Notify>) -> Waker {
    struct NotifyWake(Arc<Notify>);
    impl Wake for NotifyWake {
        fn wake(self: Arc<Self>) {
            self.0.notify_one();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.notify_one();
        }
    }
    Waker::from(Arc::new(NotifyWake(notify)))
}

/// The application's end of a tunnel TCP connection.
pub struct TunnelStream {
    pipe: Arc<Pipe>,
}

impl TunnelStream {
    pub fn new(pipe: Arc<Pipe>) -> Self {
        TunnelStream { pipe }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = std::task::ready!(self.pipe.poll_read(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pipe.poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bytes in the pipe are the netstack's to send; nothing to flush here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pipe.shutdown_write();
        Poll::Ready(Ok(()))
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        self.pipe.release();
    }
}
