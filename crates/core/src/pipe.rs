//! The shared buffers between the netstack and one connection's HTTP side.
//!
//! The netstack owns the smoltcp socket; the application side (the shell's
//! `TunnelStream`) owns the other end of a [`Pipe`]: two ring buffers,
//! allocated small when the connection is established, under a mutex that
//! is only ever held for a copy (never across an await). The sending one
//! grows (see the netstack's buffer tuning) when the application is held
//! back by it while the socket has room. The netstack moves
//! bytes between its socket and the pipe on each poll. The application side
//! asks for a poll through the [`Waker`] the core was built with, whenever
//! it adds data or frees room; the core itself knows no runtime.

use smoltcp::iface::SocketHandle;
use smoltcp::storage::RingBuffer;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::task::{Context, Poll};

/// Bytes buffered per direction per connection at first, besides
/// smoltcp's own socket buffers: small, so that a thousand idle or stalled
/// connections cost little (issue 24).
pub(crate) const PIPE_MIN: usize = 8 * 1024;
/// What the sending buffer may grow to: 64 KiB keeps a steady stream
/// flowing between polls on a LAN.
pub(crate) const PIPE_MAX: usize = 64 * 1024;

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
    /// The application found `tx` full since the netstack last looked.
    pub(crate) tx_blocked: bool,
}

impl PipeState {
    /// Gives the pipe its buffers; called once, when the connection is
    /// established and before any byte moves.
    pub(crate) fn allocate(&mut self) {
        if self.rx.capacity() == 0 {
            self.rx = RingBuffer::new(vec![0u8; PIPE_MIN]);
            self.tx = RingBuffer::new(vec![0u8; PIPE_MIN]);
        }
    }

    /// Replaces the sending buffer with one of `capacity` bytes, keeping
    /// what it holds in order. Returns the capacity it had.
    pub(crate) fn resize_tx(&mut self, capacity: usize) -> usize {
        let old = self.tx.capacity();
        if capacity < self.tx.len() {
            return old;
        }
        let mut next = RingBuffer::new(vec![0u8; capacity]);
        while !self.tx.is_empty() {
            let n = self
                .tx
                .dequeue_many_with(|chunk| (next.enqueue_slice(chunk), ()));
            if n.0 == 0 {
                break;
            }
        }
        self.tx = next;
        old
    }

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

/// The connections whose application asked for a poll, shared by one
/// netstack's pipes: a pipe adds its handle when its `needs_pump` flag goes
/// up, so the netstack finds them without looking at every connection. A
/// handle may be in it twice, or be stale (its connection gone); the
/// netstack checks each.
pub(crate) type PumpRequests = Arc<Mutex<Vec<SocketHandle>>>;

/// The shared half of a connection.
pub struct Pipe {
    state: Mutex<PipeState>,
    /// Wakes whoever polls the netstack (the driver).
    netstack: Waker,
    /// The application added data, freed room or closed since the
    /// netstack last looked: the netstack visits only connections with
    /// work, and this is how it finds the ones the application gave some.
    needs_pump: AtomicBool,
    /// This connection's socket, and where to say that it needs a poll.
    handle: SocketHandle,
    requests: PumpRequests,
}

impl Pipe {
    /// A pipe without buffers yet: a connection gets them when its
    /// handshake completes ([`PipeState::allocate`]), so that a half-open
    /// one holds none.
    pub(crate) fn new(netstack: Waker, handle: SocketHandle, requests: PumpRequests) -> Arc<Self> {
        Arc::new(Pipe {
            state: Mutex::new(PipeState {
                rx: RingBuffer::new(Vec::new()),
                tx: RingBuffer::new(Vec::new()),
                rx_eof: false,
                reset: false,
                tx_shutdown: false,
                app_dropped: false,
                read_waker: None,
                tx_blocked: false,
                write_waker: None,
            }),
            netstack,
            needs_pump: AtomicBool::new(false),
            handle,
            requests,
        })
    }

    /// True once after the application asked for a poll, and clears it.
    pub(crate) fn take_needs_pump(&self) -> bool {
        self.needs_pump.swap(false, Ordering::AcqRel)
    }

    /// Locks the state. A poisoned lock means a panic while copying bytes,
    /// which cannot leave the buffers inconsistent, so recover the guard.
    pub(crate) fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a netstack poll: the application added data or freed room.
    fn request_poll(&self) {
        // Only the first request since the netstack last looked adds the
        // handle: a busy connection puts it there once per poll, not once
        // per write.
        if !self.needs_pump.swap(true, Ordering::AcqRel) {
            self.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.handle);
        }
        self.netstack.wake_by_ref();
    }

    // The application's side. The rules of end-of-file and reset live here,
    // next to the netstack's side, so a runtime adapter only forwards.

    /// Reads into `buf`: `Ready(Ok(0))` is end of file (the peer closed and
    /// everything it sent was read); a reset connection is an error once
    /// the bytes received before it are read.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut s = self.lock();
        if !s.rx.is_empty() {
            let n = s.rx.dequeue_slice(buf);
            drop(s);
            // Room freed: the netstack may move more from its socket.
            self.request_poll();
            return Poll::Ready(Ok(n));
        }
        if s.rx_eof {
            return Poll::Ready(Ok(0));
        }
        if s.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        s.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Queues `data` for the netstack to send; `Pending` while the pipe is full.
    pub fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut s = self.lock();
        if s.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if s.tx_shutdown {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = s.tx.enqueue_slice(data);
        if n == 0 {
            s.tx_blocked = true;
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        drop(s);
        self.request_poll();
        Poll::Ready(Ok(n))
    }

    /// The application will write no more: the netstack sends a FIN once
    /// the queued bytes are out.
    pub fn shutdown_write(&self) {
        self.lock().tx_shutdown = true;
        self.request_poll();
    }

    /// The application let go of the connection: the netstack closes it.
    pub fn release(&self) {
        self.lock().app_dropped = true;
        self.request_poll();
    }
}
