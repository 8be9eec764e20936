//! A TCP connection inside the tunnel, seen from the HTTP side as an
//! ordinary `AsyncRead + AsyncWrite` stream: the tokio end of a
//! [`crate::pipe::Pipe`].
//!
//! Also the adapter that turns the driver's `Notify` into the [`Waker`] the
//! I/O-free core uses to ask for a poll.

use crate::pipe::Pipe;
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
        let mut s = self.pipe.lock();
        if !s.rx.is_empty() {
            let n = s.rx.dequeue_slice(buf.initialize_unfilled());
            buf.advance(n);
            drop(s);
            // Room freed: the netstack may move more from its socket.
            self.pipe.request_poll();
            return Poll::Ready(Ok(()));
        }
        if s.rx_eof {
            return Poll::Ready(Ok(()));
        }
        if s.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        s.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.pipe.lock();
        if s.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if s.tx_shutdown {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = s.tx.enqueue_slice(data);
        if n == 0 {
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        drop(s);
        self.pipe.request_poll();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bytes in the pipe are the netstack's to send; nothing to flush here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pipe.lock().tx_shutdown = true;
        self.pipe.request_poll();
        Poll::Ready(Ok(()))
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        self.pipe.lock().app_dropped = true;
        self.pipe.request_poll();
    }
}
