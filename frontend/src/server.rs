//! The HTTP server: accepts connections on the listener and hands each request to the API
//! that owns it: `/_node/...` to the node protocol, `/_console/...` to the web console, Query
//! requests (see `ec2::is_ec2_request`) to STS/IAM when their signature is scoped to `sts` or
//! `iam` (`identity::Service::claimed`) and to EC2 otherwise, everything else to Walrus. It bounds
//! what one client holds ([`HttpLimits`]): connections per address (more are answered with
//! the API's throttling error), the time to send a request head, and its size. Each request
//! carries its client's address ([`ClientAddr`]) to the API that answers it. A runtime per
//! core ([`Shards`]) accepts on its own listener ([`Listeners`]) and serves what it accepted.
//! With TLS on (`tls`), every connection is handshaken first and then served the same way.

use crate::config::HttpLimits;
use crate::console::Console;
use crate::ec2::Ec2;
use crate::http::{ClientAddr, RespBody};
use crate::identity::{Identity, Service};
use crate::nodes::NodeApi;
use crate::walrus::Walrus;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The APIs sharing the listener.
pub struct Apis {
    pub walrus: Walrus,
    pub ec2: Ec2,
    pub identity: Identity,
    pub nodes: Arc<NodeApi>,
    /// The web console (`/_console/`, its changes run through `ec2`); without one (benches
    /// that serve only the APIs) its paths are not found.
    pub console: Option<Arc<Console>>,
}

/// Which API a request belongs to.
enum Route {
    Nodes,
    Console,
    Identity(Service),
    Ec2,
    Walrus,
}

impl Apis {
    fn route<B>(req: &http::Request<B>) -> Route {
        let path = req.uri().path();
        if path.starts_with(mallee_proto::PATH_PREFIX) {
            return Route::Nodes;
        }
        // S3 bucket names cannot start with `_`: the prefix is no bucket's.
        if crate::console::is_console_path(path) {
            return Route::Console;
        }
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let query = req.uri().query().unwrap_or("");
        if crate::ec2::is_ec2_request(req.method(), path, content_type, query) {
            return match Service::claimed(req.headers(), query) {
                Some(service) => Route::Identity(service),
                None => Route::Ec2,
            };
        }
        Route::Walrus
    }

    async fn handle(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<RespBody> {
        match Self::route(&req) {
            Route::Nodes => self.nodes.handle(req).await,
            Route::Console => match &self.console {
                Some(console) => console.handle(&self.ec2, req).await,
                None => crate::http::empty_response(http::StatusCode::NOT_FOUND),
            },
            Route::Identity(service) => self.identity.handle(service, req).await,
            Route::Ec2 => self.ec2.handle(req).await,
            Route::Walrus => self.walrus.handle(req).await,
        }
    }

    /// The answer to a request from a client over its connection limit, in its API's words.
    fn throttled<B>(req: &http::Request<B>) -> http::Response<RespBody> {
        match Self::route(req) {
            Route::Ec2 | Route::Identity(_) => crate::ec2::throttled(),
            Route::Console => crate::console::throttled(),
            Route::Nodes | Route::Walrus => {
                crate::walrus::throttled(req.method() == http::Method::HEAD)
            }
        }
    }
}

/// Open connections per client address, each held by a [`ClientSlot`].
#[derive(Default)]
struct Clients(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of a client; gives its place back when dropped.
struct ClientSlot {
    clients: Arc<Clients>,
    addr: IpAddr,
}

impl Clients {
    /// A place for one more connection from `addr`, unless it holds `limit` already.
    fn enter(self: &Arc<Self>, addr: IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(addr).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: Arc::clone(self),
            addr,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// The listening sockets, one per core, all on one port with `SO_REUSEPORT`: the kernel
/// spreads new connections over them, and each [`Shards`] runtime accepts on its own, so a
/// connection is polled from its first byte by the runtime that serves it. Bound before root
/// is given up (the port may be a privileged one).
pub struct Listeners(Vec<std::net::TcpListener>);

impl Listeners {
    /// A listener per core on `addr` (port 0: one free port for all of them).
    pub fn bind(addr: SocketAddr) -> std::io::Result<Listeners> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Listeners::bind_n(addr, cores)
    }

    /// `n` listeners on `addr`. A port something listens on is refused, as a plain bind
    /// refuses it: one with `SO_REUSEPORT` would join another frontend run by the same user.
    fn bind_n(addr: SocketAddr, n: usize) -> std::io::Result<Listeners> {
        let port = std::net::TcpListener::bind(addr)?.local_addr()?.port();
        let addr = SocketAddr::new(addr.ip(), port);
        let listeners = (0..n.max(1))
            .map(|_| {
                let socket =
                    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
                // As std's bind: a restart need not wait for the old connections' TIME_WAIT.
                socket.set_reuse_address(true)?;
                socket.set_reuse_port(true)?;
                socket.set_nonblocking(true)?;
                socket.bind(&addr.into())?;
                socket.listen(128)?;
                Ok(socket.into())
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Listeners(listeners))
    }

    /// The address every listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0[0].local_addr()
    }
}

/// The runtimes connections are accepted and served on: one per listener (per core), each
/// with one worker and its own I/O driver, so each core polls and answers its own connections
/// (as nginx's worker processes do). Profiled on 4 KiB GETs over 8 keep-alive connections, one
/// runtime of two workers answered hardly more than one worker did: every socket's readiness
/// woke its connection's task on the worker that polled the shared driver, and the other worker
/// only stole some of them, paying for the hand-over. Work a request starts (`spawn_blocking`,
/// `block_in_place`) stays on its connection's runtime.
struct Shards {
    runtimes: Vec<tokio::runtime::Runtime>,
}

impl Shards {
    fn new(n: usize) -> std::io::Result<Shards> {
        let runtimes = (0..n)
            .map(|i| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("http-{i}"))
                    .enable_all()
                    .build()
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Shards { runtimes })
    }
}

impl Drop for Shards {
    /// Stops the runtimes without waiting (dropped from within the async server): by then the
    /// connections have drained or run out of time.
    fn drop(&mut self) {
        for rt in self.runtimes.drain(..) {
            rt.shutdown_background();
        }
    }
}

/// Serves until `stop` resolves; then stops accepting, lets the requests in flight finish (a
/// held long poll is answered early) for up to [`DRAIN`], and returns. Each of [`Shards`]
/// accepts on its own of the `listeners`. With `tls`, each connection is first handshaken
/// within the idle limit, holding its client's place while it does; a failed or stalled
/// handshake closes the connection and is logged at debug level.
pub async fn serve(
    listeners: Listeners,
    apis: Arc<Apis>,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let shards = Shards::new(listeners.0.len())?;
    let accepting = Arc::new(Accepting {
        apis,
        limits,
        tls,
        clients: Arc::new(Clients::default()),
        graceful: GracefulShutdown::new(),
    });
    let mut loops = Vec::new();
    for (rt, listener) in shards.runtimes.iter().zip(listeners.0) {
        // Registered with the I/O driver of the runtime that accepts on it.
        let listener = {
            let _shard = rt.enter();
            TcpListener::from_std(listener)?
        };
        loops.push(rt.spawn(accepting.clone().run(listener)));
    }
    stop.await;
    // Stopped at an await (an accept, or the pause after a failed one), a loop holds no
    // connection half taken in; once each has ended, its listener is closed.
    for l in &loops {
        l.abort();
    }
    for l in loops {
        let _ = l.await;
    }
    let accepting = Arc::into_inner(accepting).expect("only the ended accept loops shared it");
    if tokio::time::timeout(DRAIN, accepting.graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {} s; stopping anyway",
            DRAIN.as_secs()
        );
    }
    Ok(())
}

/// What every shard's accept loop serves its connections with.
struct Accepting {
    apis: Arc<Apis>,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    clients: Arc<Clients>,
    graceful: GracefulShutdown,
}

impl Accepting {
    /// How long a client may take to send a request head, or to finish a TLS handshake.
    fn idle(&self) -> Duration {
        Duration::from_secs(self.limits.idle_secs.max(1))
    }

    /// Accepts on `listener` and serves each connection on this runtime, until aborted.
    async fn run(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let limit = self.limits.connections_per_client;
            let slot = self.clients.enter(peer.ip(), limit.max(1));
            let over = slot.is_none();
            if over {
                tracing::warn!(%peer, limit, "client over its connection limit: throttled");
            }
            let conn = Connection {
                apis: self.apis.clone(),
                peer,
                over,
                idle: self.idle(),
                header_bytes: self.limits.header_bytes,
            };
            // Taken now, so a stop that comes during a handshake still waits for the connection.
            let watcher = self.graceful.watcher();
            let (tls, idle) = (self.tls.clone(), self.idle());
            tokio::spawn(async move {
                let _slot = slot;
                let Some(acceptor) = tls else {
                    return conn.serve(stream, watcher).await;
                };
                match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => conn.serve(stream, watcher).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake not done within the idle limit")
                    }
                }
            });
        }
    }
}

/// One accepted connection and what it is served with.
struct Connection {
    apis: Arc<Apis>,
    peer: SocketAddr,
    /// Its client is over the connection limit: one throttled answer, then close.
    over: bool,
    idle: Duration,
    header_bytes: usize,
}

impl Connection {
    /// Serves HTTP/1.1 over `stream` (TCP or TLS over TCP) until either side closes it or a
    /// stop has drained it.
    async fn serve<S>(self, stream: S, watcher: Watcher)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            apis,
            peer,
            over,
            idle,
            header_bytes,
        } = self;
        let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let apis = apis.clone();
            // The APIs record it in the audit log.
            req.extensions_mut().insert(ClientAddr(peer.ip()));
            async move {
                let resp = match over {
                    true => Apis::throttled(&req),
                    false => apis.handle(req).await,
                };
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        // A client gets `idle` to send a request head (bodies: see http::body); a throttled
        // connection answers once and closes.
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(idle)
            .max_buf_size(header_bytes.max(8192))
            .keep_alive(!over)
            .serve_connection(TokioIo::new(stream), svc);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// How long a stopping server waits for the requests in flight.
pub const DRAIN: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    #[test]
    fn listeners_on_port_zero_all_get_one_port() {
        let listeners = Listeners::bind_n(loopback(0), 3).unwrap();
        let addr = listeners.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        for l in &listeners.0 {
            assert_eq!(l.local_addr().unwrap(), addr);
        }
    }

    #[test]
    fn a_port_something_listens_on_is_refused() {
        let taken = Listeners::bind_n(loopback(0), 2).unwrap();
        let e = Listeners::bind_n(taken.local_addr().unwrap(), 2)
            .err()
            .unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[test]
    fn connections_are_spread_over_every_listener() {
        let listeners = Listeners::bind_n(loopback(0), 2).unwrap();
        let addr = listeners.local_addr().unwrap();
        // Each goes to a listener by a hash of its address: 64 all to one is a 2^-63 chance.
        let _clients: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut accepted = [0; 2];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while accepted.iter().sum::<usize>() < 64 && std::time::Instant::now() < deadline {
            for (l, n) in listeners.0.iter().zip(&mut accepted) {
                *n += std::iter::from_fn(|| l.accept().ok()).count();
            }
        }
        assert_eq!(accepted.iter().sum::<usize>(), 64, "{accepted:?}");
        assert!(accepted.iter().all(|n| *n > 0), "{accepted:?}");
    }
}
