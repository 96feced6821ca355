//! The node protocol's HTTP side (`/_node/...`, types in `mallee-proto`): enroll, register,
//! long-poll desired state, report actual state and console output; plus the task that marks
//! silent nodes down. Handlers only decode, authenticate and call the core (`cloud::admission`
//! decides who enrolls, `cloud::nodes` the rest). An enrollment not admitted is answered 403
//! with what to do; a token that was never issued, was replaced or was revoked, 401.

pub mod object;

use crate::cloud::admission;
use crate::cloud::nodes::{self as record, NodeError};
use crate::cloud::{Changes, Ec2Config};
use crate::http::{db, json_response, read_whole, RespBody};
use crate::store::Store;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use mallee_proto as proto;
use std::sync::Arc;
use std::time::Duration;

const MAX_BODY: usize = 4 << 20;

/// The node protocol service.
pub struct NodeApi {
    pub store: Arc<Store>,
    pub cfg: Ec2Config,
    pub changes: Arc<Changes>,
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, NodeError> {
    proto::decode(body).map_err(|e| NodeError::Mismatch(e.to_string()))
}

/// The HTTP status a refusal is answered with.
pub fn status(e: &NodeError) -> u16 {
    match e {
        NodeError::Unauthorized => 401,
        NodeError::BadSecret | NodeError::Forbidden(_) | NodeError::NotAdmitted(_) => 403,
        NodeError::NotFound(_) => 404,
        NodeError::Range(_) => 416,
        NodeError::Store(_) => 500,
        _ => 400,
    }
}

fn failure(e: &NodeError) -> Response<RespBody> {
    if matches!(e, NodeError::Store(_)) {
        tracing::error!(error = %e, "node request failed");
    } else if matches!(e, NodeError::NotAdmitted(_)) {
        // A waiting node asks every few seconds; the core logs each new claim once.
        tracing::debug!(error = %e, "node enrollment refused");
    } else {
        tracing::info!(error = %e, "node request refused");
    }
    json_response(
        crate::http::status(status(e)),
        &proto::ErrorBody {
            error: e.to_string(),
        },
    )
}

impl NodeApi {
    /// Answers one `/_node/...` request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<RespBody> {
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => failure(&e),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<RespBody>, NodeError> {
        let source = crate::http::client_addr(&req);
        let (parts, body) = req.into_parts();
        let bad = |m: String| NodeError::Mismatch(m);
        let body = read_whole(body, MAX_BODY).await.map_err(bad)?;
        let now = crate::store::now_ms();
        let path = parts.uri.path();
        if path == proto::PATH_ENROLL && parts.method == http::Method::POST {
            let req: proto::EnrollRequest = decode(&body)?;
            let token = db(|| admission::enroll(&self.store, &self.cfg, &req, &source, now))?;
            return Ok(json_response(
                StatusCode::OK,
                &proto::EnrollResponse { token },
            ));
        }
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(NodeError::Unauthorized)?;
        let node = db(|| record::authenticate(&self.store, token))?;
        if let Some(rest) = path.strip_prefix(object::PATH_OBJECT) {
            let range = parts.headers.get(http::header::RANGE);
            let range = range.and_then(|v| v.to_str().ok());
            return object::serve(&self.store, &node.id, rest, range);
        }
        match (parts.method.clone(), path) {
            (http::Method::POST, proto::PATH_REGISTER) => {
                let info: proto::NodeInfo = decode(&body)?;
                db(|| record::register(&self.store, &node, info, now))?;
                self.changes.bump();
                Ok(json_response(
                    StatusCode::OK,
                    &proto::RegisterResponse {
                        report_every_secs: (self.cfg.node_deadline_secs / 3).max(1),
                        long_poll_secs: self.cfg.long_poll_secs,
                    },
                ))
            }
            (http::Method::GET, proto::PATH_DESIRED) => {
                let seen = parts
                    .uri
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .find_map(|p| p.strip_prefix("generation="));
                let mut rx = self.changes.subscribe();
                if seen == Some(self.changes.generation().as_str()) {
                    let wait = Duration::from_secs(self.cfg.long_poll_secs);
                    let _ = tokio::time::timeout(wait, rx.changed()).await;
                    // A node rejected while it waited gets nothing more.
                    db(|| record::authenticate(&self.store, token))?;
                }
                let generation = self.changes.generation();
                let instances = db(|| record::desired(&self.store, &node.id))?;
                Ok(json_response(
                    StatusCode::OK,
                    &proto::DesiredState {
                        generation,
                        instances,
                    },
                ))
            }
            (http::Method::POST, proto::PATH_REPORT) => {
                let actual: proto::ActualState = decode(&body)?;
                if db(|| record::report(&self.store, &node.id, &actual, now))? {
                    self.changes.bump();
                }
                Ok(json_response(StatusCode::OK, &serde_json::json!({})))
            }
            (http::Method::POST, proto::PATH_CONSOLE) => {
                let rep: proto::ConsoleReport = decode(&body)?;
                db(|| record::console(&self.store, &node.id, &rep, now))?;
                Ok(json_response(StatusCode::OK, &serde_json::json!({})))
            }
            (m, p) => Err(bad(format!("no node endpoint {m} {p}"))),
        }
    }

    /// Marks nodes down when they stop reporting; runs until the process ends.
    pub async fn watch_liveness(self: Arc<Self>) {
        let deadline_ms = (self.cfg.node_deadline_secs * 1000) as i64;
        let every = Duration::from_millis((deadline_ms as u64 / 4).clamp(200, 5000));
        loop {
            tokio::time::sleep(every).await;
            match db(|| record::sweep(&self.store, deadline_ms, crate::store::now_ms())) {
                Ok(downed) if !downed.is_empty() => self.changes.bump(),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "node liveness sweep failed"),
            }
        }
    }
}
