//! The HTTP server: accepts connections on the listener and hands each request to the API
//! that owns it: `/_node/...` to the node protocol, `/_console/...` to the web console, Query
//! requests (see `ec2::is_ec2_request`) to STS/IAM when their signature is scoped to `sts` or
//! `iam` (`identity::Service::claimed`) and to EC2 otherwise, everything else to Walrus. It bounds
//! what one client holds ([`HttpLimits`]): connections per address (more are answered with
//! the API's throttling error), the time to send a request head, and its size. Each request
//! carries its client's address ([`ClientAddr`]) to the API that answers it. Connections are
//! served on a runtime per core ([`Shards`]). With TLS on (`tls`), every connection is
//! handshaken first and then served the same way.

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
use hyper_util::server::graceful::Watcher;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// The runtimes accepted connections are served on, handed out in turn: one per core, each with
/// one worker and its own I/O driver, so each core polls and answers its own connections (as
/// nginx's worker processes do). Profiled on 4 KiB GETs over 8 keep-alive connections, one
/// runtime of two workers answered hardly more than one worker did: every socket's readiness
/// woke its connection's task on the worker that polled the shared driver, and the other worker
/// only stole some of them, paying for the hand-over. Work a request starts (`spawn_blocking`,
/// `block_in_place`) stays on its connection's runtime.
struct Shards {
    runtimes: Vec<tokio::runtime::Runtime>,
    next: AtomicUsize,
}

impl Shards {
    fn new() -> std::io::Result<Shards> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtimes = (0..cores)
            .map(|i| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("http-{i}"))
                    .enable_all()
                    .build()
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Shards {
            runtimes,
            next: AtomicUsize::new(0),
        })
    }

    /// The runtime to serve the next connection on.
    fn next(&self) -> &tokio::runtime::Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.runtimes.len();
        self.runtimes[i].handle()
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
/// held long poll is answered early) for up to [`DRAIN`], and returns. Connections are served
/// on [`Shards`]. With `tls`, each connection is first handshaken within the idle limit,
/// holding its client's place while it does; a failed or stalled handshake closes the
/// connection and is logged at debug level.
pub async fn serve(
    listener: TcpListener,
    apis: Arc<Apis>,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let shards = Shards::new()?;
    let clients = Arc::new(Clients::default());
    let idle = std::time::Duration::from_secs(limits.idle_secs.max(1));
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let slot = clients.enter(peer.ip(), limits.connections_per_client.max(1));
        let over = slot.is_none();
        if over {
            tracing::warn!(%peer, limit = limits.connections_per_client, "client over its connection limit: throttled");
        }
        let conn = Connection {
            apis: apis.clone(),
            peer,
            over,
            idle,
            header_bytes: limits.header_bytes,
        };
        // Taken now, so a stop that comes during a handshake still waits for the connection.
        let watcher = graceful.watcher();
        let tls = tls.clone();
        // Registered again with the I/O driver of the runtime that serves it.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand the connection over");
                continue;
            }
        };
        shards.next().spawn(async move {
            let _slot = slot;
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => return tracing::warn!(%peer, error = %e, "cannot serve the connection"),
            };
            let Some(acceptor) = tls else {
                return conn.serve(stream, watcher).await;
            };
            match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => conn.serve(stream, watcher).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake not done within the idle limit"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
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

/// One accepted connection and what it is served with.
struct Connection {
    apis: Arc<Apis>,
    peer: SocketAddr,
    /// Its client is over the connection limit: one throttled answer, then close.
    over: bool,
    idle: std::time::Duration,
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
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
