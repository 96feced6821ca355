//! The HTTP server: accepts connections on the listener and hands each request to the API
//! that owns it: `/_node/...` to the node protocol, Query requests (see
//! `ec2::is_ec2_request`) to STS/IAM when their signature is scoped to `sts` or `iam`
//! (`identity::Service::claimed`) and to EC2 otherwise, everything else to Walrus.

use crate::ec2::Ec2;
use crate::http::RespBody;
use crate::identity::{Identity, Service};
use crate::nodes::NodeApi;
use crate::walrus::Walrus;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use tokio::net::TcpListener;

/// The APIs sharing the listener.
pub struct Apis {
    pub walrus: Walrus,
    pub ec2: Ec2,
    pub identity: Identity,
    pub nodes: Arc<NodeApi>,
}

impl Apis {
    async fn handle(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<RespBody> {
        let path = req.uri().path();
        if path.starts_with(mallee_proto::PATH_PREFIX) {
            return self.nodes.handle(req).await;
        }
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let query = req.uri().query().unwrap_or("");
        if crate::ec2::is_ec2_request(req.method(), path, content_type, query) {
            if let Some(service) = Service::claimed(req.headers(), query) {
                return self.identity.handle(service, req).await;
            }
            return self.ec2.handle(req).await;
        }
        self.walrus.handle(req).await
    }
}

/// Serves until `stop` resolves; then stops accepting, lets the requests in flight finish (a
/// held long poll is answered early) for up to [`DRAIN`], and returns.
pub async fn serve(
    listener: TcpListener,
    apis: Arc<Apis>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let apis = apis.clone();
        let svc = service_fn(move |req| {
            let apis = apis.clone();
            async move { Ok::<_, std::convert::Infallible>(apis.handle(req).await) }
        });
        // A client gets 30 s to send a request head; bodies stream at the client's pace.
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
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

/// How long a stopping server waits for the requests in flight.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
