//! The application side of every open tunnel connection: one future per
//! connection, polled by whoever drives the gateway (the driver in
//! production, the in-process lab in tests), so both run connections
//! through the same code.
//!
//! What a connection does is the [`ConnectionHandler`]'s business (the
//! HTTP proxy in production): the shell knows no HTTP.

use crate::shell::stream::TunnelStream;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use promgate_core::gateway::{ConnInfo, Gateway};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One tunnel connection's application side.
pub type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves one accepted tunnel connection until it closes, or until
/// `shutdown` fires (then it finishes what is in flight and closes).
pub trait ConnectionHandler: Send + Sync + 'static {
    fn serve(
        self: Arc<Self>,
        info: ConnInfo,
        stream: TunnelStream,
        shutdown: CancellationToken,
    ) -> ConnFuture;
}

/// The futures of every open connection, and the handler that makes them.
pub struct Connections {
    handler: Arc<dyn ConnectionHandler>,
    open: FuturesUnordered<ConnFuture>,
    /// Tells every connection to finish: the start of the shutdown drain.
    drain: CancellationToken,
}

impl Connections {
    pub fn new(handler: Arc<dyn ConnectionHandler>) -> Self {
        Connections {
            handler,
            open: FuturesUnordered::new(),
            drain: CancellationToken::new(),
        }
    }

    /// Takes the gateway's newly accepted connections. While draining they
    /// are closed at once (dropping the stream closes it).
    pub fn accept(&mut self, gateway: &mut Gateway) {
        let draining = self.is_draining();
        for (info, pipe) in gateway.take_accepted() {
            let stream = TunnelStream::new(pipe);
            if draining {
                continue;
            }
            let conn = self.handler.clone().serve(info, stream, self.drain.clone());
            self.open.push(conn);
        }
    }

    /// Runs every connection that was woken, without waiting for any: what
    /// they write reaches the netstack before its next poll.
    pub fn run_ready(&mut self) {
        while let Some(Some(())) = self.open.next().now_or_never() {}
    }

    /// Waits until some connection ends; pending for ever when none is
    /// open, so it can sit in a `select!` unguarded.
    pub async fn next_finished(&mut self) {
        if self.open.next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Asks every open connection to finish what is in flight and close.
    pub fn start_drain(&self) {
        self.drain.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}
