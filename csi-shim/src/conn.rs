//! Bounds on the driver's connections to the gRPC socket: how many may be
//! open, how long one may take to start HTTP/2, and how long one may live.
//!
//! HTTP/2 keepalive (pings the peer must answer) and the graceful
//! `max_connection_age` GOAWAY are set on tonic's server (see
//! [`ServeOptions`]); neither covers a peer that never sends the HTTP/2
//! preface, as hyper starts both only once the preface has arrived, and
//! tonic's forced close after the grace period skips the GOAWAY (it sleeps
//! through age and grace, then drops the connection). [`Guarded`] is the
//! socket under the HTTP/2 layer and enforces both deadlines itself: the
//! handshake deadline until the preface's 24 bytes are read, then age plus
//! grace, after which reads and writes fail and hyper drops the
//! connection. It also holds the connection's slot of the
//! `max_connections` bound until it is dropped.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// The HTTP/2 client preface (RFC 9113 §3.4) is 24 bytes.
const PREFACE_LEN: usize = 24;

/// Connection bounds of the gRPC server; `Default` is what the provider runs with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections open at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// A connection must send the HTTP/2 preface within this.
    pub handshake_timeout: Duration,
    /// The provider pings an HTTP/2 connection this often …
    pub keepalive_interval: Duration,
    /// … and closes it when a ping is not answered within this.
    pub keepalive_timeout: Duration,
    /// A connection is sent GOAWAY at this age (calls in flight finish;
    /// the driver's gRPC client reconnects for the next call).
    pub max_connection_age: Duration,
    /// A connection still open this long after its GOAWAY is closed.
    pub max_connection_age_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            // The driver holds one connection per provider; 64 leave room
            // for reconnects and `kernelseal csi` clients, and bound the fds.
            max_connections: 64,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            max_connection_age: Duration::from_secs(30 * 60),
            // Longer than a Mount can take (256 objects, 16 at once, each
            // read bounded by its 10 s timeout and the cache's retries).
            max_connection_age_grace: Duration::from_secs(5 * 60),
        }
    }
}

/// A connection's place under the `max_connections` bound, counted in the
/// open-connections gauge; both are given back when it is dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Slot {
    pub fn new(permit: OwnedSemaphorePermit, open: Gauge) -> Self {
        open.inc();
        Slot {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A connection with a handshake deadline, then a lifetime deadline, and
/// its slot of the connection bound.
pub struct Guarded<S> {
    inner: S,
    deadline: Pin<Box<Sleep>>,
    /// Preface bytes still to read before the handshake deadline ends.
    preface_left: usize,
    /// When the lifetime deadline ends: accepted + age + grace.
    end_of_life: Instant,
    _slot: Slot,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, slot: Slot, opts: &ServeOptions) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(now + opts.handshake_timeout)),
            preface_left: PREFACE_LEN,
            end_of_life: now + opts.max_connection_age + opts.max_connection_age_grace,
            _slot: slot,
        }
    }

    /// An error once the current deadline has passed; registers the waker
    /// for it otherwise, so an idle connection is woken to fail.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) if self.preface_left > 0 => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within the handshake timeout",
            )),
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection open past max_connection_age and its grace period",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check(cx)?;
        let before = buf.filled().len();
        let out = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = out
            && this.preface_left > 0
        {
            let got = buf.filled().len() - before;
            this.preface_left = this.preface_left.saturating_sub(got);
            if this.preface_left == 0 {
                let end = this.end_of_life;
                this.deadline.as_mut().reset(end);
            }
        }
        out
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
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
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Semaphore;

    fn opts() -> ServeOptions {
        ServeOptions {
            handshake_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(100),
            max_connection_age_grace: Duration::from_secs(20),
            ..ServeOptions::default()
        }
    }

    fn slot() -> Slot {
        Slot::new(
            Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap(),
            Gauge::default(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_fails_at_the_handshake_deadline() {
        let (_peer, ours) = tokio::io::duplex(64);
        let mut g = Guarded::new(ours, slot(), &opts());
        let e = g.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("handshake"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_preface_the_lifetime_deadline_applies() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let mut g = Guarded::new(ours, slot(), &opts());
        peer.write_all(&[b'P'; PREFACE_LEN]).await.unwrap();
        let mut got = 0;
        while got < PREFACE_LEN {
            got += g.read(&mut [0u8; PREFACE_LEN]).await.unwrap();
        }
        // Well past the handshake deadline, the connection still reads.
        tokio::time::sleep(Duration::from_secs(60)).await;
        peer.write_all(b"x").await.unwrap();
        assert_eq!(g.read(&mut [0u8; 8]).await.unwrap(), 1);
        // Past age + grace it fails, for writes too.
        let e = g.read(&mut [0u8; 8]).await.unwrap_err();
        assert!(e.to_string().contains("max_connection_age"), "{e}");
        assert!(g.write_all(b"y").await.is_err());
    }

    #[tokio::test]
    async fn the_slot_is_held_until_the_connection_is_dropped() {
        let slots = Arc::new(Semaphore::new(1));
        let open = Gauge::default();
        let (_peer, ours) = tokio::io::duplex(64);
        let permit = slots.clone().try_acquire_owned().unwrap();
        let g = Guarded::new(ours, Slot::new(permit, open.clone()), &opts());
        assert!(slots.clone().try_acquire_owned().is_err());
        assert_eq!(open.get(), 1);
        drop(g);
        assert!(slots.try_acquire_owned().is_ok());
        assert_eq!(open.get(), 0);
    }
}
