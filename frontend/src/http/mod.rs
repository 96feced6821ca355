//! HTTP plumbing every API room shares (Walrus, EC2, the node protocol): the response body
//! type and bodies, the one XML writer, XML, JSON and empty replies, byte ranges, the client's
//! address as the listener saw it, and running a store call from a handler. It knows no API's
//! routes, errors or documents.

pub mod body;
pub mod range;
pub mod xml;

pub use body::{file_body, read_whole, RespBody};
pub use range::{parse_range, Unsatisfiable};

use http::{HeaderValue, Response, StatusCode};
use std::net::IpAddr;

/// The address a request came from: the listener puts it in each request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The address `req` came from (an IPv4 client on an IPv6 socket as IPv4), or `-` when the
/// request did not come through the listener.
pub fn client_addr<B>(req: &http::Request<B>) -> String {
    client_addr_in(req.extensions())
}

/// [`client_addr`] from a request's extensions (after `into_parts`).
pub fn client_addr_in(extensions: &http::Extensions) -> String {
    extensions
        .get::<ClientAddr>()
        .map_or_else(|| "-".to_string(), |a| a.0.to_canonical().to_string())
}

/// Runs a store change (a commit waits for fsync) without stalling the runtime's other
/// tasks. Reads go to the store directly: they are quick and never wait for a commit.
pub fn db<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// `code` as a status; an out-of-range code (a bug) answers 400.
pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

fn typed(status: StatusCode, body: RespBody, content_type: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    resp
}

/// An XML response.
pub fn xml_response(status: StatusCode, xml: String) -> Response<RespBody> {
    typed(status, body::full(xml), "application/xml")
}

/// A JSON response (the node protocol's messages, as `mallee-proto` encodes them).
pub fn json_response<T: serde::Serialize>(status: StatusCode, msg: &T) -> Response<RespBody> {
    typed(
        status,
        body::full(mallee_proto::encode(msg)),
        "application/json",
    )
}

/// An empty response with `status`.
pub fn empty_response(status: StatusCode) -> Response<RespBody> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    resp
}
