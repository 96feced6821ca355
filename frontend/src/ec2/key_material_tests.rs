//! Key material against fixed vectors. The keys below were made once with
//! `openssl genrsa -traditional 2048` and `ssh-keygen -t ed25519 -C fixed`; every expected
//! value was computed from them with openssl and ssh-keygen on a Debian 12 machine (commands
//! beside each), never with this code.

use super::*;

const RSA_PRIVATE: &str = r#"-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEAzyV3CXc/EHUODKIOh+4HY9Z8Sq7cDoaBdPS1IC6uDNxLIFVT
qkPkwB1ZUQvU9tWfPwhIKoHNVgI4uWLitCVIz/xk/lgRY/VlkzNfFhuw+2relQgR
/fh7Wbj/BHVLtgZmPHMJfReodKU+SIkvf7fpQL0fr9Lkr6CzYNaWKbmToI9GF3M1
HREEmqOg+MnBWC2GtCsUR5Y8Xirt+n+ZldgI0KuBxlkkYIdZImRCoTSiQntOQFRJ
I3wEoEZQUzmUnWGFUl6wuoo5oroNNkOqjeSLapMx90oUy78WqdpIuWC72OUtcuY8
uNyexmLCd/8YQq1Lp7pwbH5lICvp+ZiZP3f88QIDAQABAoIBAGHRq1jI+vrmi+/j
R0FhYhP/YUpTMI+bbN6yACZmZMKl9MQcBxpMXWVrdpYTJEo7rquxWYLZMQIAopDI
5Y10XeH5qieBpxSw+Xp9s9VY1kajvOBbo0NvZ7CC78pHKa2XcAfzuvNbjK0oqzTN
s6R4UKnFpYT97ggRtyNvshGaFOCobhq/FCbKmNKkH+4LrdvHAkuZwxqLrr/6D1V9
WG8iGz+W8licKL1MKGGUBIFXMs/c95+o7brgcjXjp8nnJDFa7gu8kj2pwO7lfVdl
w8fv8zZ03lBnvf9JdRbFUwAHEt2IPa17FMiRTarHuvxqSFALBeEr2xPDmGY+s3nI
178VlxECgYEA8IF2vA5xcxH/J0ND3rxp23GDHv3aG7iiC+n6tMY92Oz/938YOyVt
dt83GIeSchPjk6jt4F8TEzfYXf3ZzPBFcbnifh5vKgJ9e6pR+2iY4sg+WJXOXyL/
dAMLiSLl82FEEYv2OVWuCMiMGy2tkNnRFd9+RxWkrd0rfsfTiobQXm8CgYEA3H3S
htbZAxSpe8aRAONkZGXcabins6ARio0WwwY+BJi1SPd9yAgjdySZm+CxJIKBTLOn
BKUwr0/2UgsiUZT2fmn5pm56TJnuDKAzgKSvhk1chOWvVvhUQzEHP2UHg7S3e5xZ
+X9Bl8cREmTpGRNmZtmGimwBJ7Y4fP3aOJPzCp8CgYEAoqt+Sq4eL+2BPeYyNqoL
k2CQhlq+tjdIa3SDnNflJx8N9jGhiwfCpT9O/alc9QncyJfe5P6JYVtJXjF/qizt
W4GV3yXonGp4wzctIjXaCrHT8YjJv/FlBOu2Vrgi/l3Qc2nOTXNVNh2nHg7kMXAS
CpBS0fOiofJRI/w2aaDLuMMCgYEAiykyfX4OW35n9cH+dNQP4bnUYjl0Rs+JIqwn
qJFBBT+oc1QY4+4XDDRiatpmk0d2+gUNLcZgstVB/sgeMeVVqbWTJnLl54DjmL5n
oxLN4XLkKNCaWMbEz9+a1m0aUAr4HyEwPGMP8A5o/PYJlJUE9XbnDmhaVkkQ3/qM
B1eBdrsCgYApnj08YdfI8A3d//9RfXDvwqkkehYfdZSZHKt0dlIH6TtaEXCEyO3s
2SKY8w+z5QzLw5jmIntMUKA1XJcD9dzUf5RUOlFRifWknFIFxONKS929IrromPhM
ZRWnONcw0bC2MGdVt053W5yhvPPnWJxelx6xhJcRLtWShDL3a2+K6A==
-----END RSA PRIVATE KEY-----
"#;

/// `ssh-keygen -y -f rsa.pem`
const RSA_OPENSSH: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDPJXcJdz8QdQ4Mog6H7gdj1nxKrtwOhoF09LUgLq4M3EsgVVOqQ+TAHVlRC9T21Z8/CEgqgc1WAji5YuK0JUjP/GT+WBFj9WWTM18WG7D7at6VCBH9+HtZuP8EdUu2BmY8cwl9F6h0pT5IiS9/t+lAvR+v0uSvoLNg1pYpuZOgj0YXczUdEQSao6D4ycFYLYa0KxRHljxeKu36f5mV2AjQq4HGWSRgh1kiZEKhNKJCe05AVEkjfASgRlBTOZSdYYVSXrC6ijmiug02Q6qN5ItqkzH3ShTLvxap2ki5YLvY5S1y5jy43J7GYsJ3/xhCrUununBsfmUgK+n5mJk/d/zx";

/// `ssh-keygen -e -f rsa.pub`
const RSA_RFC4716: &str = r#"---- BEGIN SSH2 PUBLIC KEY ----
Comment: "2048-bit RSA, converted by root@vm from OpenSSH"
AAAAB3NzaC1yc2EAAAADAQABAAABAQDPJXcJdz8QdQ4Mog6H7gdj1nxKrtwOhoF09LUgLq
4M3EsgVVOqQ+TAHVlRC9T21Z8/CEgqgc1WAji5YuK0JUjP/GT+WBFj9WWTM18WG7D7at6V
CBH9+HtZuP8EdUu2BmY8cwl9F6h0pT5IiS9/t+lAvR+v0uSvoLNg1pYpuZOgj0YXczUdEQ
Sao6D4ycFYLYa0KxRHljxeKu36f5mV2AjQq4HGWSRgh1kiZEKhNKJCe05AVEkjfASgRlBT
OZSdYYVSXrC6ijmiug02Q6qN5ItqkzH3ShTLvxap2ki5YLvY5S1y5jy43J7GYsJ3/xhCrU
ununBsfmUgK+n5mJk/d/zx
---- END SSH2 PUBLIC KEY ----
"#;

/// `openssl rsa -in rsa.pem -pubout -outform DER | base64 -w0`
const RSA_DER_BASE64: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzyV3CXc/EHUODKIOh+4HY9Z8Sq7cDoaBdPS1IC6uDNxLIFVTqkPkwB1ZUQvU9tWfPwhIKoHNVgI4uWLitCVIz/xk/lgRY/VlkzNfFhuw+2relQgR/fh7Wbj/BHVLtgZmPHMJfReodKU+SIkvf7fpQL0fr9Lkr6CzYNaWKbmToI9GF3M1HREEmqOg+MnBWC2GtCsUR5Y8Xirt+n+ZldgI0KuBxlkkYIdZImRCoTSiQntOQFRJI3wEoEZQUzmUnWGFUl6wuoo5oroNNkOqjeSLapMx90oUy78WqdpIuWC72OUtcuY8uNyexmLCd/8YQq1Lp7pwbH5lICvp+ZiZP3f88QIDAQAB";

/// `openssl pkcs8 -in rsa.pem -nocrypt -topk8 -outform DER | openssl sha1 -c`: what EC2 shows
/// for an RSA key it made.
const RSA_CREATED_FINGERPRINT: &str = "f9:0c:5c:21:34:1c:ae:d5:e2:dc:4e:2e:e8:7a:4f:49:ae:df:85:92";

/// `openssl rsa -in rsa.pem -pubout -outform DER | openssl md5 -c`: what EC2 shows for an
/// imported RSA key.
const RSA_IMPORTED_FINGERPRINT: &str = "23:86:0b:1f:36:24:3a:10:9d:c8:ca:14:0b:6f:89:48";

/// `ssh-keygen -l -E md5 -f rsa.pub`: the RFC 4716 MD5 fingerprint, which EC2 does not show.
const RSA_SSH_MD5: &str = "42:18:e5:6e:a3:68:5f:d3:b2:38:c1:0e:d9:4b:57:e3";

const ED25519_PRIVATE: &str = r#"-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBkb50TseQT8vBkNRr+8+O/6IdKCehlx3j9CBqXmpHGyAAAAIhNxeV1TcXl
dQAAAAtzc2gtZWQyNTUxOQAAACBkb50TseQT8vBkNRr+8+O/6IdKCehlx3j9CBqXmpHGyA
AAAEBZrCf4MmHkaPLInOHHZnbtZwDgaThwEDNNHdyzTGEzYGRvnROx5BPy8GQ1Gv7z47/o
h0oJ6GXHeP0IGpeakcbIAAAABWZpeGVk
-----END OPENSSH PRIVATE KEY-----
"#;

/// `cat ed.pub` (ssh-keygen wrote it with the private key)
const ED25519_OPENSSH: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGRvnROx5BPy8GQ1Gv7z47/oh0oJ6GXHeP0IGpeakcbI fixed";

/// `ssh-keygen -e -f ed.pub`
const ED25519_RFC4716: &str = r#"---- BEGIN SSH2 PUBLIC KEY ----
Comment: "256-bit ED25519, converted by root@vm from OpenSSH"
AAAAC3NzaC1lZDI1NTE5AAAAIGRvnROx5BPy8GQ1Gv7z47/oh0oJ6GXHeP0IGpeakcbI
---- END SSH2 PUBLIC KEY ----
"#;

/// `ssh-keygen -l -f ed` printed `256 SHA256:Qy8qu+lAxOTLA6dO/mZY1uRDb7iEty4Qj3mXdSgxEQE fixed
/// (ED25519)`; EC2 shows the same digest with base64's `=` padding.
const ED25519_FINGERPRINT: &str = "Qy8qu+lAxOTLA6dO/mZY1uRDb7iEty4Qj3mXdSgxEQE=";

/// `ssh-keygen -t ecdsa`
const ECDSA_OPENSSH: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPplVkzmma4EWHgHi0zD7auDmWalYpxXCv7DYQ8XX6Pf3sRmJcgMd1mickla1eSXKDWKTw6dwFbT9sHpu9eRkVw= root@vm";

fn fixed_rsa() -> RsaPrivateKey {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    RsaPrivateKey::from_pkcs1_pem(RSA_PRIVATE).unwrap()
}

fn without_comment(line: &str) -> String {
    line.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

#[test]
fn a_created_rsa_key_is_fingerprinted_by_the_sha1_of_its_pkcs8_private_key() {
    let pair = rsa_pair(&fixed_rsa()).unwrap();
    assert_eq!(pair.public.fingerprint, RSA_CREATED_FINGERPRINT);
    assert_eq!(pair.public.key_type, KeyType::Rsa);
    assert_eq!(pair.public.openssh, RSA_OPENSSH);
}

#[test]
fn a_created_rsa_key_is_returned_as_pkcs1_pem() {
    let pair = rsa_pair(&fixed_rsa()).unwrap();
    assert!(pair
        .private_pem
        .starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    assert!(pair
        .private_pem
        .ends_with("-----END RSA PRIVATE KEY-----\n"));
    // DER is canonical: the same key encodes to the same text openssl wrote.
    assert_eq!(pair.private_pem, RSA_PRIVATE);
}

#[test]
fn an_imported_rsa_key_is_fingerprinted_by_the_md5_of_its_der_public_key_in_every_format() {
    let der = B64.decode(RSA_DER_BASE64).unwrap();
    let pem = format!("-----BEGIN PUBLIC KEY-----\n{RSA_DER_BASE64}\n-----END PUBLIC KEY-----\n");
    let forms: [&[u8]; 5] = [
        RSA_OPENSSH.as_bytes(),
        RSA_RFC4716.as_bytes(),
        &der,
        RSA_DER_BASE64.as_bytes(),
        pem.as_bytes(),
    ];
    for form in forms {
        let key = read_public(form).unwrap();
        assert_eq!(key.fingerprint, RSA_IMPORTED_FINGERPRINT);
        assert_ne!(key.fingerprint, RSA_SSH_MD5);
        assert_eq!(
            (key.key_type, key.openssh.as_str()),
            (KeyType::Rsa, RSA_OPENSSH)
        );
    }
}

#[test]
fn an_ed25519_key_is_fingerprinted_by_the_padded_base64_sha256_of_its_blob_made_or_imported() {
    let private = ssh_key::PrivateKey::from_openssh(ED25519_PRIVATE).unwrap();
    let made = ed25519_pair(&private).unwrap();
    assert_eq!(made.public.fingerprint, ED25519_FINGERPRINT);
    assert_eq!(made.public.openssh, without_comment(ED25519_OPENSSH));
    for form in [ED25519_OPENSSH, ED25519_RFC4716] {
        let key = read_public(form.as_bytes()).unwrap();
        assert_eq!(key.key_type, KeyType::Ed25519);
        assert_eq!(key.fingerprint, ED25519_FINGERPRINT);
        assert_eq!(key.openssh, without_comment(ED25519_OPENSSH));
    }
}

#[test]
fn a_created_ed25519_key_is_returned_in_openssh_format_and_reads_back() {
    let pair = generate(KeyType::Ed25519, "k1").unwrap();
    assert!(pair
        .private_pem
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
    let back = ssh_key::PrivateKey::from_openssh(&pair.private_pem).unwrap();
    assert_eq!(back.comment(), "k1");
    let public = read_key_data(back.public_key().key_data()).unwrap();
    assert_eq!(public, pair.public);
}

#[test]
fn a_generated_rsa_key_has_2048_bits_and_its_fingerprint_is_its_own() {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    let pair = generate(KeyType::Rsa, "k").unwrap();
    let back = RsaPrivateKey::from_pkcs1_pem(&pair.private_pem).unwrap();
    assert_eq!(back.n().bits(), RSA_BITS);
    let der = back.to_pkcs8_der().unwrap();
    assert_eq!(
        pair.public.fingerprint,
        colon_hex(&Sha1::digest(der.as_bytes()))
    );
    // Imported, the same public key gets the other (MD5) fingerprint.
    let imported = read_public(pair.public.openssh.as_bytes()).unwrap();
    assert_eq!(imported.openssh, pair.public.openssh);
    assert_ne!(imported.fingerprint, pair.public.fingerprint);
}

#[test]
fn ecdsa_keys_and_keys_whose_blob_disagrees_with_their_type_are_refused() {
    assert_eq!(
        read_public(ECDSA_OPENSSH.as_bytes()),
        Err(KeyError::UnsupportedAlgorithm("ecdsa-sha2-nistp256".into()))
    );
    let ed_blob = ED25519_OPENSSH.split(' ').nth(1).unwrap();
    assert_eq!(
        read_public(format!("ssh-rsa {ed_blob}").as_bytes()),
        Err(KeyError::Unreadable)
    );
    for junk in [
        "",
        "ssh-ed25519 !!!",
        "ssh-rsa",
        "---- BEGIN SSH2 PUBLIC KEY ----\nAAAA",
    ] {
        assert_eq!(
            read_public(junk.as_bytes()),
            Err(KeyError::Unreadable),
            "{junk:?}"
        );
    }
    assert_eq!(
        read_public(&[0x30, 0x03, 0x02, 0x01, 0x00]),
        Err(KeyError::Unreadable)
    );
}

#[test]
fn rsa_keys_outside_1024_to_4096_bits_are_refused() {
    let small = RsaPrivateKey::new(&mut rand::rngs::OsRng, 512).unwrap();
    let line = rsa_openssh(&small.to_public_key()).unwrap();
    assert_eq!(read_public(line.as_bytes()), Err(KeyError::RsaSize(512)));
}

#[test]
fn rsa_fingerprints_are_colon_separated_lower_case_hex() {
    assert_eq!(colon_hex(&[0x0a, 0xff, 0x10]), "0a:ff:10");
}
