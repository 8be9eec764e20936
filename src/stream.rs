//! A TCP connection inside the tunnel, seen from the HTTP side as an
//! ordinary `AsyncRead + AsyncWrite` stream.
//!
//! The netstack owns the smoltcp socket; the HTTP task owns a
//! [`TunnelStream`]. Between them sits a [`Pipe`]: two fixed ring buffers
//! allocated once per connection, under a mutex that is only ever held for a
//! copy (never across an await). The netstack moves bytes between its socket
//! and the pipe on each poll; the stream side wakes the netstack through a
//! shared `Notify` whenever it adds data or frees room.

use smoltcp::storage::RingBuffer;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Bytes buffered per direction per connection, besides smoltcp's own
/// socket buffers. 64 KiB keeps a steady stream flowing between polls.
pub const PIPE_BUFFER: usize = 64 * 1024;

pub(crate) struct PipeState {
    /// Netstack -> application.
    pub(crate) rx: RingBuffer<'static, u8>,
    /// Application -> netstack.
    pub(crate) tx: RingBuffer<'static, u8>,
    /// The peer closed its side and everything it sent is in `rx`.
    pub(crate) rx_eof: bool,
    /// The connection is gone (reset, timed out, peer removed).
    pub(crate) reset: bool,
    /// The application shut down its writing side.
    pub(crate) tx_shutdown: bool,
    /// The application dropped its stream.
    pub(crate) app_dropped: bool,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
}

impl PipeState {
    pub(crate) fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }
    pub(crate) fn wake_writer(&mut self) {
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

/// The shared half of a connection.
pub struct Pipe {
    state: Mutex<PipeState>,
    netstack: Arc<Notify>,
}

impl Pipe {
    pub(crate) fn new(netstack: Arc<Notify>) -> Arc<Self> {
        Arc::new(Pipe {
            state: Mutex::new(PipeState {
                rx: RingBuffer::new(vec![0u8; PIPE_BUFFER]),
                tx: RingBuffer::new(vec![0u8; PIPE_BUFFER]),
                rx_eof: false,
                reset: false,
                tx_shutdown: false,
                app_dropped: false,
                read_waker: None,
                write_waker: None,
            }),
            netstack,
        })
    }

    /// Locks the state. A poisoned lock means a panic while copying bytes,
    /// which cannot leave the buffers inconsistent, so recover the guard.
    pub(crate) fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The application's end of a tunnel TCP connection.
pub struct TunnelStream {
    pipe: Arc<Pipe>,
}

impl TunnelStream {
    pub(crate) fn new(pipe: Arc<Pipe>) -> Self {
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
            self.pipe.netstack.notify_one();
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
        self.pipe.netstack.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bytes in the pipe are the netstack's to send; nothing to flush here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pipe.lock().tx_shutdown = true;
        self.pipe.netstack.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        self.pipe.lock().app_dropped = true;
        self.pipe.netstack.notify_one();
    }
}
