//! The metadata service's HTTP, request bytes to response bytes (no sockets).

use super::*;
use mallee_proto::{MetadataDocument, MetadataOptions, PublicKey};

fn imds(user_data: Option<&str>) -> Imds {
    Imds::new(content(user_data, MetadataOptions::default()))
}

fn content(user_data: Option<&str>, options: MetadataOptions) -> InstanceMetadata {
    InstanceMetadata {
        document: MetadataDocument {
            instance_id: "i-0123456789abcdef0".into(),
            ami_id: "emi-00000001".into(),
            local_ipv4: "172.31.0.2".into(),
            availability_zone: "cluster1".into(),
            public_keys: vec![PublicKey {
                name: "k1".into(),
                openssh: "ssh-ed25519 AAAA k1".into(),
            }],
            ..Default::default()
        },
        user_data: user_data.map(|u| B64.encode(u)),
        options,
    }
}

fn required() -> MetadataOptions {
    MetadataOptions {
        http_tokens: HttpTokens::Required,
        ..MetadataOptions::default()
    }
}

fn put_token(ttl: u32) -> String {
    format!("PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n\r\n")
}

/// (status, body) of the answer to `head`.
fn ask(i: &mut Imds, head: &str, now: Instant) -> (u16, String) {
    let out = String::from_utf8(i.answer(head.as_bytes(), now)).unwrap();
    let (top, body) = out.split_once("\r\n\r\n").unwrap();
    let status = top[9..12].parse().unwrap();
    let length: usize = (top.lines())
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "Content-Length of {head:?}");
    (status, body.to_string())
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{extra}\r\n")
}

#[test]
fn imdsv1_answers_the_ec2_paths() {
    let mut i = imds(Some("#!/bin/sh\necho hi\n"));
    let now = Instant::now();
    for (path, want) in [
        ("/latest/meta-data/instance-id", "i-0123456789abcdef0"),
        ("/latest/meta-data/local-ipv4", "172.31.0.2"),
        ("/latest/meta-data/placement/availability-zone", "cluster1"),
        (
            "/latest/meta-data/public-keys/0/openssh-key",
            "ssh-ed25519 AAAA k1",
        ),
        ("/latest/user-data", "#!/bin/sh\necho hi\n"),
        ("/latest/", "dynamic\nmeta-data\nuser-data"),
    ] {
        assert_eq!(
            ask(&mut i, &get(path, ""), now),
            (200, want.to_string()),
            "{path}"
        );
    }
    let (status, listing) = ask(&mut i, &get("/latest/meta-data/", ""), now);
    assert!(
        status == 200 && listing.contains("instance-id\n"),
        "{listing}"
    );
    let (_, identity) = ask(
        &mut i,
        &get("/latest/dynamic/instance-identity/document", ""),
        now,
    );
    let doc: serde_json::Value = serde_json::from_str(&identity).unwrap();
    assert_eq!(doc["instanceId"], "i-0123456789abcdef0");
    assert_eq!(ask(&mut i, &get("/latest/meta-data/nope", ""), now).0, 404);
    assert_eq!(
        ask(&mut imds(None), &get("/latest/user-data", ""), now).0,
        404
    );
}

/// cloud-init (22.4) asks `/2009-04-04/meta-data/instance-id`, then `/2021-03-23/`,
/// `/2018-09-24/` or `/2016-09-02/`; the AWS tools ask `/latest/`. Each dated version EC2 lists
/// answers as `latest` does; versions EC2 never had, and near misses, are 404.
#[test]
fn dated_versions_answer_as_latest_does() {
    let mut i = imds(Some("#cloud-config\n"));
    let now = Instant::now();
    let (status, root) = ask(&mut i, &get("/", ""), now);
    assert_eq!(status, 200);
    let listed: Vec<&str> = root.lines().collect();
    for v in [
        "1.0",
        "2009-04-04",
        "2016-09-02",
        "2018-09-24",
        "2021-03-23",
        "latest",
    ] {
        assert!(listed.contains(&v), "{v} not in {root:?}");
    }
    for v in &listed {
        for (rest, want) in [
            ("meta-data/instance-id", "i-0123456789abcdef0"),
            ("meta-data/public-keys/0/openssh-key", "ssh-ed25519 AAAA k1"),
            ("user-data", "#cloud-config\n"),
            ("", "dynamic\nmeta-data\nuser-data"),
        ] {
            let path = format!("/{v}/{rest}");
            assert_eq!(
                ask(&mut i, &get(&path, ""), now),
                (200, want.to_string()),
                "{path}"
            );
        }
    }
    for path in [
        "/2009-04-05/meta-data/instance-id",
        "/2009-04-04x/meta-data/instance-id",
        "/latestmeta-data/instance-id",
        "/1.0meta-data",
        "//latest/meta-data/instance-id",
    ] {
        assert_eq!(ask(&mut i, &get(path, ""), now).0, 404, "{path}");
    }
}

#[test]
fn imdsv2_tokens_are_issued_checked_and_expire() {
    let mut i = imds(None);
    let now = Instant::now();
    let put = |ttl: &str, extra: &str| {
        format!("PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n{extra}\r\n")
    };
    let (status, token) = ask(&mut i, &put("60", ""), now);
    assert_eq!(status, 200);
    let with = format!("X-aws-ec2-metadata-token: {token}\r\n");
    let path = "/latest/meta-data/instance-id";
    assert_eq!(ask(&mut i, &get(path, &with), now).0, 200);
    let later = now + Duration::from_secs(61);
    assert_eq!(ask(&mut i, &get(path, &with), later).0, 401, "expired");
    let forged = "X-aws-ec2-metadata-token: AAAA\r\n";
    assert_eq!(ask(&mut i, &get(path, forged), now).0, 401);
    for bad in ["0", "21601", "x", ""] {
        assert_eq!(ask(&mut i, &put(bad, ""), now).0, 400, "ttl {bad:?}");
    }
    assert_eq!(
        ask(&mut i, &put("60", "X-Forwarded-For: 10.0.0.9\r\n"), now).0,
        403
    );
    let elsewhere = "PUT /latest/meta-data/ HTTP/1.1\r\n\r\n";
    assert_eq!(ask(&mut i, elsewhere, now).0, 405);
    assert_eq!(ask(&mut i, "DELETE / HTTP/1.1\r\n\r\n", now).0, 405);
}

#[test]
fn required_tokens_refuse_imdsv1_and_answer_only_a_live_token() {
    let mut i = Imds::new(content(Some("hi"), required()));
    let now = Instant::now();
    for path in [
        "/latest/meta-data/instance-id",
        "/latest/user-data",
        "/latest/",
        "/",
    ] {
        assert_eq!(ask(&mut i, &get(path, ""), now).0, 401, "IMDSv1 {path}");
    }
    let head = String::from_utf8(i.answer(b"HEAD /latest/ HTTP/1.1\r\n\r\n", now)).unwrap();
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    let (status, token) = ask(&mut i, &put_token(30), now);
    assert_eq!(status, 200, "a token is still handed out");
    let with = format!("X-aws-ec2-metadata-token: {token}\r\n");
    assert_eq!(
        ask(&mut i, &get("/latest/user-data", &with), now),
        (200, "hi".to_string())
    );
    let later = now + Duration::from_secs(31);
    assert_eq!(ask(&mut i, &get("/latest/user-data", &with), later).0, 401);
    let forged = "X-aws-ec2-metadata-token: AAAA\r\n";
    assert_eq!(ask(&mut i, &get("/latest/user-data", forged), now).0, 401);
}

#[test]
fn an_update_serves_new_content_and_options_and_keeps_the_tokens_handed_out() {
    let mut i = imds(Some("one"));
    let now = Instant::now();
    let (_, token) = ask(&mut i, &put_token(600), now);
    let with = format!("X-aws-ec2-metadata-token: {token}\r\n");
    let mut next = content(Some("two"), required());
    next.document.public_ipv4 = Some("198.51.100.7".into());
    i.update(next);
    let ipv4 = "/latest/meta-data/public-ipv4";
    assert_eq!(ask(&mut i, &get(ipv4, ""), now).0, 401, "now required");
    assert_eq!(
        ask(&mut i, &get(ipv4, &with), now),
        (200, "198.51.100.7".to_string())
    );
    assert_eq!(
        ask(&mut i, &get("/latest/user-data", &with), now),
        (200, "two".to_string())
    );
    i.update(content(None, MetadataOptions::default()));
    assert_eq!(
        ask(&mut i, &get(ipv4, ""), now).0,
        404,
        "optional again, and gone"
    );
    assert_eq!(ask(&mut i, &get("/latest/user-data", &with), now).0, 404);
}

#[test]
fn heads_are_split_off_and_garbage_is_a_400() {
    assert_eq!(take_head(b"GET / HTTP/1.1\r\n"), Parsed::Partial);
    let two = b"GET / HTTP/1.1\r\n\r\nGET /x";
    assert_eq!(take_head(two), Parsed::Done(two[..18].to_vec(), 18));
    let long = vec![b'a'; MAX_HEAD + 1];
    assert!(matches!(take_head(&long), Parsed::Done(_, n) if n == long.len()));
    let mut i = imds(None);
    let now = Instant::now();
    assert_eq!(ask(&mut i, &String::from_utf8(long).unwrap(), now).0, 400);
    assert_eq!(ask(&mut i, "\u{1}\u{2}\r\n\r\n", now).0, 400);
    let head_only = String::from_utf8(i.answer(b"HEAD /latest/ HTTP/1.1\r\n\r\n", now)).unwrap();
    assert!(head_only.ends_with("\r\n\r\n") && head_only.contains("Content-Length: 27"));
}

#[test]
fn random_bytes_never_wait_and_differ() {
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    random_bytes(&mut a);
    random_bytes(&mut b);
    assert!(a != [0; 32] && a != b);
    let mut empty = [0u8; 0];
    random_bytes(&mut empty);
}
