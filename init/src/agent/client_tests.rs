use super::*;

#[test]
fn heads_parse_and_bad_heads_are_errors() {
    let h = parse_head("HTTP/1.1 206 Partial Content\r\ncontent-length: 10\r\nX: y").unwrap();
    assert_eq!(
        (h.status, h.content_length, h.chunked),
        (206, Some(10), false)
    );
    let h = parse_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").unwrap();
    assert!(h.chunked);
    assert!(parse_head("SSH-2.0-OpenSSH").is_err());
    assert!(parse_head("HTTP/1.1 200 OK\r\nno colon").is_err());
    assert!(parse_head("HTTP/1.1 200 OK\r\nContent-Length: -1").is_err());
    for bad in [
        "HTTP/1.1 +200 OK",
        "HTTP/1.1 0 OK",
        "HTTP/1.1 099 OK",
        "HTTP/1.1 2000 OK",
    ] {
        assert!(parse_head(bad).is_err(), "{bad}");
    }
    for bad in ["+5", "", "5, 5", "1 0"] {
        let text = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}");
        assert!(parse_head(&text).is_err(), "{text}");
    }
}

#[test]
fn a_real_socket_round_trip_reads_status_and_error_body() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for (status, body) in [(200, "{\"token\":\"t1\"}"), (403, "{\"error\":\"nope\"}")] {
            let (mut s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 0 && !line.ends_with("\r\n\r\n") {}
            write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    let c = Client::new(addr);
    let t = Duration::from_secs(5);
    let r: proto::EnrollResponse = c.call::<(), _>("POST", "/x", None, t).unwrap();
    assert_eq!(r.token, "t1");
    let e = c.call::<(), proto::EnrollResponse>("POST", "/x", None, t);
    match e {
        Err(ClientError::Status { status, message }) => {
            assert_eq!((status, message.as_str()), (403, "nope"))
        }
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

// ---- TLS with a pinned key: real rustls servers on 127.0.0.1 ----

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};
use sha2::{Digest, Sha256};
use std::net::TcpListener;
use std::thread::JoinHandle;

const T: Duration = Duration::from_secs(5);

/// A server key and a certificate for it.
struct Identity {
    key: rcgen::KeyPair,
    cert: CertificateDer<'static>,
}

impl Identity {
    /// A self-signed certificate for `frontend.mallee`.
    fn self_signed() -> Identity {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["frontend.mallee".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        Identity { key, cert }
    }

    /// The pin a node's command line would carry for this key.
    fn pin(&self) -> [u8; 32] {
        Sha256::digest(self.key.public_key_der()).into()
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }
}

/// Serves `replies.len()` connections over TLS, each answered with the next reply (a status
/// and a body) after reading the request head; a connection whose handshake fails counts too.
fn serve_tls(
    id: &Identity,
    versions: &[&'static rustls::SupportedProtocolVersion],
    replies: Vec<(u16, Vec<u8>)>,
) -> (SocketAddr, JoinHandle<()>) {
    let config = (server_config(versions)
        .with_single_cert(vec![id.cert.clone()], id.private_key()))
    .unwrap();
    serve(config, replies)
}

/// A server configuration up to its certificate.
fn server_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert> {
    ServerConfig::builder_with_provider(Arc::new(mallee_proto::tls::provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
}

/// [`serve_tls`] with a ready configuration.
fn serve(config: ServerConfig, replies: Vec<(u16, Vec<u8>)>) -> (SocketAddr, JoinHandle<()>) {
    let config = Arc::new(config);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for (status, body) in replies {
            let (tcp, _) = l.accept().unwrap();
            tcp.set_read_timeout(Some(T)).unwrap();
            let conn = ServerConnection::new(config.clone()).unwrap();
            let mut tls = StreamOwned::new(conn, tcp);
            // A refused handshake shows up here as an error; the client's side is the test.
            if read_head(&mut tls).is_err() {
                continue;
            }
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(head.as_bytes());
            let _ = tls.write_all(&body);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (addr, server)
}

/// Reads a request head (up to the blank line).
fn read_head(stream: &mut impl Read) -> std::io::Result<String> {
    let mut r = BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        if r.read_line(&mut head)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(head)
}

fn enrolled(token: &str) -> Vec<u8> {
    format!("{{\"token\":\"{token}\"}}").into_bytes()
}

#[test]
fn a_pinned_call_gets_the_json_reply_over_tls_1_3_and_1_2() {
    let id = Identity::self_signed();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (addr, server) = serve_tls(&id, &[version], vec![(200, enrolled("t1"))]);
        let c = Client::pinned(addr, id.pin()).unwrap();
        let r: proto::EnrollResponse = c.call::<(), _>("POST", "/x", None, T).unwrap();
        assert_eq!(r.token, "t1", "{version:?}");
        server.join().unwrap();
    }
}

#[test]
fn a_wrong_pin_fails_with_key_mismatch_naming_both_keys() {
    let id = Identity::self_signed();
    let (addr, server) = serve_tls(&id, &[&rustls::version::TLS13], vec![(200, enrolled("t1"))]);
    let wrong = [0x5a; 32];
    let c = Client::pinned(addr, wrong).unwrap();
    let e = c
        .call::<(), proto::EnrollResponse>("POST", "/x", None, T)
        .unwrap_err();
    match &e {
        ClientError::KeyMismatch {
            addr: a,
            expected,
            got,
        } => {
            assert_eq!(*a, addr);
            assert_eq!(expected.0, wrong);
            assert_eq!(got.0, id.pin());
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains(&PublicKeyPin(wrong).to_string()), "{text}");
    assert!(text.contains(&PublicKeyPin(id.pin()).to_string()), "{text}");
    assert!(text.contains(&addr.to_string()), "{text}");
    server.join().unwrap();
}

/// The pin is the trust: a certificate for the pinned key is accepted whatever it names, whoever
/// issued it and whenever it expired.
#[test]
fn the_pinned_key_is_accepted_under_any_name_issuer_or_validity() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(vec![]).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["elsewhere.example".into()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2001, 1, 1);
    params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap().der().clone();
    let id = Identity { key, cert };
    let (addr, server) = serve_tls(&id, &[&rustls::version::TLS13], vec![(200, enrolled("t2"))]);
    let c = Client::pinned(addr, id.pin()).unwrap();
    let r: proto::EnrollResponse = c.call::<(), _>("POST", "/x", None, T).unwrap();
    assert_eq!(r.token, "t2");
    server.join().unwrap();
}

/// Presents one certificate whatever the client asks, and signs with whatever key it was given.
#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Presents {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The pin alone is not enough: a server that shows the pinned key's certificate but cannot
/// sign with that key (it holds another) fails the handshake's signature check.
#[test]
fn a_server_presenting_the_pinned_certificate_without_its_private_key_is_refused() {
    let pinned = Identity::self_signed();
    let impostor = Identity::self_signed();
    let signer = (mallee_proto::tls::provider()
        .key_provider
        .load_private_key(impostor.private_key()))
    .unwrap();
    let shown = rustls::sign::CertifiedKey::new(vec![pinned.cert.clone()], signer);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let resolver = Arc::new(Presents(Arc::new(shown.clone())));
        let config = server_config(&[version]).with_cert_resolver(resolver);
        let (addr, server) = serve(config, vec![(200, enrolled("t1"))]);
        let c = Client::pinned(addr, pinned.pin()).unwrap();
        let e = c
            .call::<(), proto::EnrollResponse>("POST", "/x", None, T)
            .unwrap_err();
        match &e {
            ClientError::Tls(a, rustls::Error::InvalidCertificate(ce)) => {
                assert_eq!(*a, addr);
                assert_eq!(*ce, rustls::CertificateError::BadSignature, "{version:?}");
            }
            other => panic!("{version:?}: {other:?}"),
        }
        server.join().unwrap();
    }
}

#[test]
fn a_plain_http_server_is_refused_when_the_key_is_pinned() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut hello = [0u8; 512];
        let _ = s.read(&mut hello).unwrap();
        let body = "{\"token\":\"plain\"}";
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(reply.as_bytes()).unwrap();
    });
    let c = Client::pinned(addr, [0x5a; 32]).unwrap();
    let e = c
        .call::<(), proto::EnrollResponse>("POST", "/x", None, T)
        .unwrap_err();
    assert!(matches!(e, ClientError::NotTls(a) if a == addr), "{e:?}");
    assert!(e.to_string().contains("plain HTTP"), "{e}");
    server.join().unwrap();
}

#[test]
fn copy_to_brings_a_mebibyte_body_intact_over_tls() {
    let id = Identity::self_signed();
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (addr, server) = serve_tls(&id, &[&rustls::version::TLS13], vec![(200, data.clone())]);
    let c = Client::pinned(addr, id.pin()).unwrap();
    let mut reply = c.send("GET", "/_node/object/b/k", &[], &[], T).unwrap();
    let mut out = Vec::new();
    assert_eq!(reply.copy_to(&mut out).unwrap(), data.len() as u64);
    assert!(out == data, "the body arrived changed");
    server.join().unwrap();
}

#[test]
fn an_error_status_over_tls_carries_the_frontends_message() {
    let id = Identity::self_signed();
    let body = b"{\"error\":\"nope\"}".to_vec();
    let (addr, server) = serve_tls(&id, &[&rustls::version::TLS13], vec![(401, body)]);
    let c = Client::pinned(addr, id.pin()).unwrap();
    let e = c
        .call::<(), proto::EnrollResponse>("POST", "/x", None, T)
        .unwrap_err();
    assert!(e.unauthorized(), "{e:?}");
    assert!(e.to_string().contains("nope"), "{e}");
    server.join().unwrap();
}

#[test]
fn a_client_without_its_token_keeps_the_same_tls_configuration() {
    let addr = "127.0.0.1:1".parse().unwrap();
    let mut c = Client::pinned(addr, [1; 32]).unwrap();
    c.token = Some("t".into());
    let fresh = c.without_token();
    assert_eq!(fresh.token, None);
    let (a, b) = (c.tls.as_ref().unwrap(), fresh.tls.as_ref().unwrap());
    assert!(
        Arc::ptr_eq(a, b),
        "one ClientConfig per client, not per request"
    );
    assert!(Client::for_frontend(addr, None).unwrap().tls.is_none());
}

#[test]
fn the_pin_is_the_sha256_of_the_certificates_subject_public_key_info() {
    let id = Identity::self_signed();
    assert_eq!(mallee_proto::tls::spki_pin(&id.cert).unwrap().0, id.pin());
    assert!(mallee_proto::tls::spki_pin(&CertificateDer::from(vec![0x30, 0x00])).is_err());
}
