//! The API over https (`[tls] enabled = true`) against the real binary: the AWS CLI and boto3
//! with the CA bundle the daemon writes beside the admin credentials succeed, with another
//! CA's (or none) they refuse the server; plain HTTP on the TLS port is not served; a
//! handshake that never finishes holds its client's place only until the idle limit, while
//! other clients are served.

mod common;

use common::{require_tool, Frontend};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

const TLS_ON: &str = "[tls]\nenabled = true\nnames = [\"frontend.example\"]\n";

/// A CA nobody's frontend uses, PEM.
fn other_ca() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Some other CA");
    params.self_signed(&key).unwrap().pem()
}

/// `curl` to `path` over https with the frontend's CA bundle; the HTTP status it got, or 0
/// when it got none (it prints why).
fn curl_status(fe: &Frontend, path: &str) -> u16 {
    require_tool("curl");
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .arg("--cacert")
        .arg(fe.ca_bundle())
        .arg(format!("{}{path}", fe.endpoint()))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    if status == 0 {
        eprintln!("curl: {}", String::from_utf8_lossy(&out.stderr));
    }
    status
}

/// Reads until the server closes the connection; what it sent, and when it closed, counted
/// from `started`. Panics if it is still open after 30 s.
fn until_closed(mut s: TcpStream, started: Instant) -> (Vec<u8>, Duration) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("still open after 30 s: {e}; got {out:?}"),
        }
    }
    (out, started.elapsed())
}

#[test]
fn aws_cli_and_boto3_trust_the_frontend_with_its_ca_bundle_and_refuse_it_with_another() {
    let mut fe = Frontend::start_with(TLS_ON);
    assert_eq!(fe.scheme, "https", "{}", fe.log());
    let bundle = fe.ca_bundle();
    let log = fe.log();
    assert!(
        log.contains(&format!(
            "serving https; clients verify it with the CA bundle {}",
            bundle.display()
        )),
        "{log}"
    );
    let mode = std::fs::metadata(&bundle).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "the CA bundle is public");
    let ca = std::fs::read_to_string(&bundle).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

    let other = fe.dir.path().join("other-ca.pem");
    std::fs::write(&other, other_ca()).unwrap();
    let env = [
        ("CA_BUNDLE", bundle.to_str().unwrap()),
        ("OTHER_CA", other.to_str().unwrap()),
    ];
    let out = fe.run_script("https_clients.py", &env);
    assert!(
        out.contains("ok boto3 ec2 describe_regions over https"),
        "{out}"
    );
    assert!(
        out.contains("ok boto3 refuses the server with the system CAs"),
        "{out}"
    );

    // A restart keeps the CA: the bundle clients hold stays good.
    fe.restart();
    assert_eq!(std::fs::read_to_string(&bundle).unwrap(), ca);
    assert_eq!(curl_status(&fe, "/"), 403, "{}", fe.log());
}

#[test]
fn plain_http_to_the_tls_port_is_not_served() {
    let fe = Frontend::start_with(TLS_ON);
    let mut s = TcpStream::connect(("127.0.0.1", fe.port)).unwrap();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 34\r\nConnection: close\r\n\r\nAction=DescribeRegions&Version=1.0",
    )
    .unwrap();
    let (answer, _) = until_closed(s, Instant::now());
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !text.contains("HTTP/1.") && !text.contains("DescribeRegions"),
        "{text}"
    );
    // Anonymous ListBuckets over https: answered (AccessDenied).
    assert_eq!(curl_status(&fe, "/"), 403, "{}", fe.log());
}

#[test]
fn a_handshake_that_never_finishes_holds_a_place_only_until_the_idle_limit() {
    let fe = Frontend::start_with(&format!(
        "{TLS_ON}[http]\nconnections_per_client = 2\nidle_secs = 5\n"
    ));
    // One client connects and never says hello: the others are served.
    let started = Instant::now();
    let silent = TcpStream::connect(("127.0.0.1", fe.port)).unwrap();
    let status = curl_status(&fe, "/");
    assert_eq!(status, 403, "beside a silent handshake\n{}", fe.log());
    // A second starts a record and stops: both hold a place, so a third connection from the
    // same address is answered with the API's throttling error. The server gives the request
    // above its place back just after closing it, so `partial` may connect before that and be
    // the one throttled (the request then served): it connects again until it holds a place.
    let deadline = Instant::now() + Duration::from_secs(30);
    let partial = loop {
        let mut partial = TcpStream::connect(("127.0.0.1", fe.port)).unwrap();
        partial
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .unwrap();
        match curl_status(&fe, "/some-bucket") {
            503 => break partial,
            403 if Instant::now() < deadline => {}
            other => panic!("beside two stalled handshakes: {other}\n{}", fe.log()),
        }
    };
    // Both are closed at the idle limit, and their places given back.
    let (sent, silent_after) = until_closed(silent, started);
    assert!(sent.is_empty(), "{sent:?}");
    let (_, partial_after) = until_closed(partial, started);
    eprintln!("stalled handshakes (idle limit 5 s) closed {silent_after:?} and {partial_after:?} after the first connected");
    // The server gives a place back just after it closes the connection.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match curl_status(&fe, "/") {
            403 => break,
            503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!(
                "after the stalled handshakes were closed: {other}\n{}",
                fe.log()
            ),
        }
    }
}
