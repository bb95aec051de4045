//! Serving HTTP (and HTTPS) connections with bounds, so that one host cannot close the port.
//!
//! - Connections are counted in total and per client address (IPv6 per /64) and refused at
//!   accept beyond either cap; trusted reverse proxies count only in the total.
//! - The request head must arrive within a deadline, which also bounds a connection that never
//!   sends a request and one idling between requests (hyper's header read timeout runs from the
//!   moment the server waits for a head).
//! - A write that makes no progress for a while (a client that stopped reading) ends the
//!   connection, WebSocket or not: the socket's send buffer and the task are freed.
//! - TLS handshakes run on the connection's own task under a deadline, so a client that never
//!   finishes one delays nobody's accept.

use crate::client_addr::TrustedProxies;
use crate::http::PeerAddr;
use crate::limits::{Limit, bucket_of};
use crate::metrics::SignalingMetrics;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::debug;

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) read, bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// HTTP connections open at once, over all listeners that share a gate.
    pub max_connections: usize,
    /// HTTP connections open at once from one client address (IPv6: one /64).
    pub max_per_client: usize,
    /// Time to receive a whole request head, counted from when the server starts waiting for
    /// one: after accept, and after each response on a kept-alive connection.
    pub request_head_timeout: Duration,
    /// Time a write may go without progress before the connection is closed.
    pub write_stall_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            max_per_client: 256,
            request_head_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(10),
        }
    }
}

/// Counts open connections and admits new ones within the limits.
pub struct ConnectionGate {
    limits: ConnectionLimits,
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    trusted_proxies: Arc<TrustedProxies>,
    metrics: Arc<SignalingMetrics>,
}

/// An admitted connection; dropping it frees its place.
pub struct Admission {
    gate: Arc<ConnectionGate>,
    /// The per-client bucket it counts in (none for a trusted proxy).
    client: Option<IpAddr>,
}

impl ConnectionGate {
    pub fn new(
        limits: ConnectionLimits,
        trusted_proxies: Arc<TrustedProxies>,
        metrics: Arc<SignalingMetrics>,
    ) -> Arc<Self> {
        Arc::new(ConnectionGate {
            limits,
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            trusted_proxies,
            metrics,
        })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A place for a connection from `peer`, or `None` (counted) when a cap is reached.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Admission> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.metrics.limits.breached(Limit::HttpConnections);
            return None;
        }
        let client = (!self.trusted_proxies.trusts(peer)).then(|| bucket_of(peer));
        if let Some(client) = client {
            let mut per_client = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_client.entry(client).or_default();
            if *count >= self.limits.max_per_client {
                drop(per_client);
                self.open.fetch_sub(1, Ordering::Relaxed);
                self.metrics
                    .limits
                    .breached(Limit::HttpConnectionsPerClient);
                return None;
            }
            *count += 1;
        }
        self.metrics.http_connections.inc();
        Some(Admission {
            gate: self.clone(),
            client,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let gate = &self.gate;
        gate.open.fetch_sub(1, Ordering::Relaxed);
        gate.metrics.http_connections.dec();
        if let Some(client) = self.client {
            let mut per_client = gate.per_client.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_client.get_mut(&client) {
                *count -= 1;
                if *count == 0 {
                    per_client.remove(&client);
                }
            }
        }
    }
}

/// Accepts connections on `listener` for ever and serves `router` on them (over TLS when `tls`
/// is given), within the gate's limits.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    gate: Arc<ConnectionGate>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors or the like (the caps are set below the file limit,
                // so this should not happen): back off instead of spinning.
                debug!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admission) = gate.admit(peer.ip().to_canonical()) else {
            continue; // dropping the stream closes it
        };
        let router = router.clone();
        let tls = tls.clone();
        let limits = gate.limits;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(stream, admission, peer, router, limits).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => serve_connection(tls, admission, peer, router, limits).await,
                        Ok(Err(err)) => debug!(%peer, "TLS handshake failed: {err}"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    admission: Admission,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The admission lives in the stream, so a connection upgraded to a WebSocket (which
    // outlives this task) keeps its place until the socket closes.
    let io = TokioIo::new(StallLimit::new(stream, limits.write_stall_timeout).holding(admission));
    let service = router.map_request(move |mut request: axum::extract::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
        request
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, TowerToHyperService::new(service))
        .with_upgrades();
    if let Err(err) = connection.await {
        debug!(%peer, "HTTP connection ended: {err}");
    }
}

/// A stream whose writes fail once they have made no progress for `timeout`.
pub struct StallLimit<S> {
    inner: S,
    timeout: Duration,
    stalled_since: Option<Pin<Box<Sleep>>>,
    /// The connection's place in its gate, freed when the stream is dropped.
    _admission: Option<Admission>,
}

impl<S> StallLimit<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        StallLimit {
            inner,
            timeout,
            stalled_since: None,
            _admission: None,
        }
    }

    pub fn holding(mut self, admission: Admission) -> Self {
        self._admission = Some(admission);
        self
    }

    /// Called when a write is pending: starts the clock, or fails once it ran out.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let deadline = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        poll: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => match self.check_stall(cx) {
                Poll::Ready(err) => Poll::Ready(Err(err)),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                self.stalled_since = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallLimit<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(poll, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(poll, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progressed(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Registry;

    fn gate(
        max_connections: usize,
        max_per_client: usize,
        proxies: &[&str],
    ) -> Arc<ConnectionGate> {
        let metrics = Arc::new(SignalingMetrics::register(&Registry::new()).unwrap());
        ConnectionGate::new(
            ConnectionLimits {
                max_connections,
                max_per_client,
                ..ConnectionLimits::default()
            },
            Arc::new(TrustedProxies::parse(proxies).unwrap()),
            metrics,
        )
    }

    #[test]
    fn caps_hold_per_client_and_in_total_and_places_come_back() {
        let gate = gate(5, 2, &["10.0.0.1"]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "third from one client");
        // IPv6 hosts share their /64.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let _x = gate.admit(v6("2001:db8::1")).unwrap();
        let _y = gate.admit(v6("2001:db8::2")).unwrap();
        assert!(gate.admit(v6("2001:db8::3")).is_none());
        // A trusted proxy is only under the total cap.
        let _p = gate.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert!(
            gate.admit("10.0.0.1".parse().unwrap()).is_none(),
            "total of 5 reached"
        );
        assert_eq!(gate.open(), 5);
        drop(first);
        assert_eq!(gate.open(), 4);
        assert!(gate.admit(a).is_some(), "a place came back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_after_the_timeout() {
        use tokio::io::AsyncWriteExt;
        // A pipe whose reader never reads: writes stop once its buffer is full.
        let (near, _far) = tokio::io::duplex(1024);
        let mut limited = StallLimit::new(near, Duration::from_secs(10));
        let started = Instant::now();
        let err = limited.write_all(&[0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(10));
    }
}
