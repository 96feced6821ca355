//! What one client may hold of the server (`[http]`), tried with raw connections against the
//! real binary: a request head over the size limit, a head or a body that stops coming, and
//! more connections from one address than allowed. Each is answered (or closed) within a bound,
//! and the server goes on serving everyone else.

mod common;

use common::Frontend;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

// Raw HTTP bytes on the socket, so plain HTTP; TLS (and a stalled handshake) is covered by
// https_api.
const LIMITS: &str = "[http]\nconnections_per_client = 4\nidle_secs = 2\nheader_bytes = 16384\n\
                      [tls]\nenabled = false\n";

fn connect(f: &Frontend) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", f.port)).unwrap();
    // Bounds every read below: the server must answer or close well within it.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Everything the server sends until it closes the connection (or 30 s pass: a failure).
fn answer(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no answer and no close within 30 s: {e}; got {out:?}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An EC2 DescribeRegions without credentials: served, it answers 4xx with an EC2 error code.
const EC2_CALL: &str = "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 34\r\nConnection: close\r\n\r\nAction=DescribeRegions&Version=1.0";

/// A connection the server has accepted and answered once, held open (keep-alive): each shard
/// of the server accepts on its own listener, so only an answer shows a connection counted.
fn served_and_held(f: &Frontend) -> TcpStream {
    let mut s = connect(f);
    s.write_all(EC2_CALL.replace("Connection: close\r\n", "").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before answering: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= len {
                assert!(head.starts_with("HTTP/1.1 4"), "{head}");
                return s;
            }
        }
    }
}

fn still_serves(f: &Frontend) {
    let mut s = connect(f);
    s.write_all(EC2_CALL.as_bytes()).unwrap();
    let a = answer(s);
    assert!(
        a.starts_with("HTTP/1.1 4") && a.contains("<Code>"),
        "an ordinary request afterwards: {a}"
    );
}

#[test]
fn an_oversized_head_gets_431_and_a_stalled_head_or_body_is_cut_off() {
    let f = Frontend::start_with(LIMITS);
    let mut s = connect(&f);
    let big = "a".repeat(20_000);
    s.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .unwrap();
    let a = answer(s);
    assert!(a.starts_with("HTTP/1.1 431"), "{a}");

    // A head that stops half way: the connection is closed.
    let started = Instant::now();
    let mut s = connect(&f);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let a = answer(s);
    assert!(!a.contains("200 OK"), "{a}");
    let head_cut = started.elapsed();

    // A body that stops half way: an EC2 error, not a connection held for ever.
    let mut s = connect(&f);
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nAction=Desc",
    )
    .unwrap();
    let a = answer(s);
    assert!(
        a.starts_with("HTTP/1.1 400") && a.contains("sent nothing for 2 s"),
        "{a}"
    );
    still_serves(&f);
    eprintln!("a stalled head was cut off after {head_cut:?}");
}

#[test]
fn a_client_over_its_connection_limit_is_throttled_in_its_apis_words() {
    let f = Frontend::start_with(LIMITS);
    let held: Vec<TcpStream> = (0..4).map(|_| served_and_held(&f)).collect();
    // The fifth connection from the same address: EC2 says RequestLimitExceeded...
    let mut s = connect(&f);
    s.write_all(EC2_CALL.as_bytes()).unwrap();
    let a = answer(s);
    assert!(
        a.starts_with("HTTP/1.1 503") && a.contains("<Code>RequestLimitExceeded</Code>"),
        "{a}"
    );
    // ...and S3 SlowDown.
    let mut s = connect(&f);
    s.write_all(b"GET /some-bucket HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let a = answer(s);
    assert!(
        a.starts_with("HTTP/1.1 503") && a.contains("<Code>SlowDown</Code>"),
        "{a}"
    );
    drop(held);
    // Their places are given back: served again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = connect(&f);
        s.write_all(EC2_CALL.as_bytes()).unwrap();
        let a = answer(s);
        if !a.starts_with("HTTP/1.1 503") {
            assert!(a.starts_with("HTTP/1.1 4") && a.contains("<Code>"), "{a}");
            break;
        }
        assert!(Instant::now() < deadline, "still throttled: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
