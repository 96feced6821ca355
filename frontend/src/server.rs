//! The HTTP server: accepts connections on the listener and hands each request to the API
//! that owns it (Walrus now; the EC2 Query API will be told apart by path or Action).

use crate::walrus::Walrus;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves until the process is stopped.
pub async fn serve(listener: TcpListener, walrus: Arc<Walrus>) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let walrus = walrus.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let walrus = walrus.clone();
                async move { Ok::<_, std::convert::Infallible>(walrus.handle(req).await) }
            });
            // A client gets 30 s to send a request head; bodies stream at the client's pace.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
