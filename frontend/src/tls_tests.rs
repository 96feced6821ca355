use super::*;
use std::os::unix::fs::MetadataExt;

fn names() -> Vec<String> {
    server_names(
        &["frontend.example".to_string(), "10.0.0.1".to_string()],
        ["127.0.0.1".parse().unwrap()],
    )
}

fn files(dir: &Path) -> TlsFiles {
    TlsFiles::new(dir, names(), 30)
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(TLS_DIR).join(file)).unwrap()
}

fn params(identity: &ServerIdentity) -> CertificateParams {
    CertificateParams::from_ca_cert_der(&identity.cert_der).unwrap()
}

/// Does `cert` verify against the CA certificate `ca_pem` at `now`, for `name`, as a client
/// would check it?
fn verifies(ca_pem: &str, cert: &CertificateDer<'_>, name: &str, now: OffsetDateTime) -> bool {
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(&ca).unwrap();
    let ee = webpki::EndEntityCert::try_from(cert).unwrap();
    let time =
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.unix_timestamp() as u64));
    let anchors = [anchor];
    let chain = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    let chain = chain.is_ok();
    let name = rustls::pki_types::ServerName::try_from(name).unwrap();
    chain && ee.verify_is_valid_for_subject_name(&name).is_ok()
}

#[test]
fn first_start_makes_a_ca_and_a_server_certificate_for_every_name_with_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let id = files(dir.path()).ensure_at(now).unwrap();
    assert_eq!(id.issued, Some(Reissue::Missing));
    for name in ["frontend.example", "10.0.0.1", "127.0.0.1", "localhost"] {
        assert!(verifies(&id.ca_pem, &id.cert_der, name, now), "{name}");
    }
    assert!(!verifies(&id.ca_pem, &id.cert_der, "other.example", now));
    let days = (id.not_after - now).whole_days();
    assert!(
        (SERVER_CERT_DAYS - 1..=SERVER_CERT_DAYS).contains(&days),
        "{days}"
    );
    let ca = CertificateParams::from_ca_cert_pem(&id.ca_pem).unwrap();
    assert!(matches!(ca.is_ca, IsCa::Ca(_)));
    assert!((ca.not_after - now).whole_days() >= CA_DAYS - 1);
    let tls = dir.path().join(TLS_DIR);
    assert_eq!(std::fs::metadata(&tls).unwrap().mode() & 0o777, 0o700);
    for (file, mode) in [
        (CA_KEY, 0o600),
        (SERVER_KEY, 0o600),
        (CA_CERT, 0o644),
        (SERVER_CERT, 0o644),
    ] {
        let meta = std::fs::metadata(tls.join(file)).unwrap();
        assert_eq!(meta.mode() & 0o777, mode, "{file}");
    }
    let left: Vec<_> = std::fs::read_dir(&tls)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    // The identity serves: its key matches its certificate.
    id.certified_key().unwrap();
}

#[test]
fn a_second_start_reuses_the_ca_the_key_and_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = files(dir.path()).ensure().unwrap();
    let (ca_key, server_key) = (read(dir.path(), CA_KEY), read(dir.path(), SERVER_KEY));
    let second = files(dir.path()).ensure().unwrap();
    assert_eq!(second.issued, None);
    assert_eq!(second.ca_pem, first.ca_pem);
    assert_eq!(second.cert_der, first.cert_der);
    assert_eq!(second.pin, first.pin);
    assert_eq!(read(dir.path(), CA_KEY), ca_key);
    assert_eq!(read(dir.path(), SERVER_KEY), server_key);
}

#[test]
fn near_expiry_the_certificate_is_renewed_with_the_same_ca_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let first = files(dir.path()).ensure_at(now).unwrap();
    let (ca_key, server_key) = (read(dir.path(), CA_KEY), read(dir.path(), SERVER_KEY));
    // 300 days on, 65 remain: not yet due.
    let later = files(dir.path())
        .ensure_at(now + Duration::days(300))
        .unwrap();
    assert_eq!(later.issued, None);
    // 340 days on, 25 remain, fewer than renew_days = 30.
    let at = now + Duration::days(340);
    let renewed = files(dir.path()).ensure_at(at).unwrap();
    assert!(
        matches!(renewed.issued, Some(Reissue::Expiring { .. })),
        "{:?}",
        renewed.issued
    );
    assert_eq!(renewed.ca_pem, first.ca_pem, "the CA never changes");
    assert_eq!(renewed.pin, first.pin, "the key, so the pin, stays");
    assert_eq!(read(dir.path(), CA_KEY), ca_key);
    assert_eq!(read(dir.path(), SERVER_KEY), server_key);
    assert_ne!(params(&renewed).serial_number, params(&first).serial_number);
    assert!(renewed.not_after > first.not_after + Duration::days(300));
    // A client holding the first CA bundle trusts the renewed certificate, after the old
    // one has expired.
    let after_old = first.not_after + Duration::days(1);
    assert!(verifies(
        &first.ca_pem,
        &renewed.cert_der,
        "frontend.example",
        after_old
    ));
    assert!(!verifies(
        &first.ca_pem,
        &first.cert_der,
        "frontend.example",
        after_old
    ));
}

#[test]
fn other_names_reissue_the_certificate_for_them_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = files(dir.path()).ensure().unwrap();
    let other = TlsFiles::new(
        dir.path(),
        server_names(&["api.example".to_string()], []),
        30,
    );
    let id = other.ensure().unwrap();
    assert_eq!(id.issued, Some(Reissue::NamesChanged));
    assert_eq!((id.pin, &id.ca_pem), (first.pin, &first.ca_pem));
    let now = OffsetDateTime::now_utc();
    assert!(verifies(&id.ca_pem, &id.cert_der, "api.example", now));
    assert!(!verifies(&id.ca_pem, &id.cert_der, "frontend.example", now));
    // The same names in another order and case are the same names.
    let reordered = TlsFiles::new(
        dir.path(),
        vec!["127.0.0.1".into(), "localhost".into(), "API.example".into()],
        30,
    );
    assert_eq!(reordered.ensure().unwrap().issued, None);
}

#[test]
fn a_corrupt_or_missing_server_certificate_is_reissued_from_the_kept_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = files(dir.path()).ensure().unwrap();
    let cert = dir.path().join(TLS_DIR).join(SERVER_CERT);
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    let id = files(dir.path()).ensure().unwrap();
    assert!(
        matches!(id.issued, Some(Reissue::Unreadable(_))),
        "{:?}",
        id.issued
    );
    assert_eq!(id.pin, first.pin);
    std::fs::remove_file(&cert).unwrap();
    let id = files(dir.path()).ensure().unwrap();
    assert_eq!(id.issued, Some(Reissue::Missing));
    assert_eq!(id.pin, first.pin);
}

#[test]
fn a_lost_ca_certificate_is_remade_from_its_key_and_old_bundles_still_trust_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let first = files(dir.path()).ensure().unwrap();
    let ca_cert = dir.path().join(TLS_DIR).join(CA_CERT);
    std::fs::write(&ca_cert, "garbage").unwrap();
    let id = files(dir.path()).ensure().unwrap();
    assert_ne!(id.ca_pem, first.ca_pem);
    let now = OffsetDateTime::now_utc();
    assert!(verifies(&first.ca_pem, &id.cert_der, "localhost", now));
    assert!(verifies(&id.ca_pem, &first.cert_der, "localhost", now));
}

#[test]
fn a_certificate_from_another_ca_is_reissued_by_this_one() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = files(a.path()).ensure().unwrap();
    let other = files(b.path()).ensure().unwrap();
    for file in [CA_KEY, CA_CERT] {
        std::fs::copy(
            b.path().join(TLS_DIR).join(file),
            a.path().join(TLS_DIR).join(file),
        )
        .unwrap();
    }
    let id = files(a.path()).ensure().unwrap();
    assert!(
        matches!(id.issued, Some(Reissue::NotFromCa(_))),
        "{:?}",
        id.issued
    );
    assert_eq!(id.ca_pem, other.ca_pem);
    assert_eq!(id.pin, first.pin);
    assert!(verifies(
        &other.ca_pem,
        &id.cert_der,
        "localhost",
        OffsetDateTime::now_utc()
    ));
}

#[test]
fn a_corrupt_key_is_an_error_naming_the_file_and_what_to_do_and_nothing_is_replaced() {
    for (file, says) in [(CA_KEY, "CA key"), (SERVER_KEY, "server key")] {
        let dir = tempfile::tempdir().unwrap();
        files(dir.path()).ensure().unwrap();
        let path = dir.path().join(TLS_DIR).join(file);
        std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
        let before: Vec<_> = [CA_KEY, CA_CERT, SERVER_KEY, SERVER_CERT]
            .map(|f| read(dir.path(), f))
            .into();
        let e = files(dir.path()).ensure().unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains(says),
            "{e}"
        );
        assert!(e.contains("restore it from a backup"), "{e}");
        assert!(e.contains("pin must then be replaced"), "{e}");
        let after: Vec<_> = [CA_KEY, CA_CERT, SERVER_KEY, SERVER_CERT]
            .map(|f| read(dir.path(), f))
            .into();
        assert_eq!(before, after, "{file}: a file changed");
    }
}

#[test]
fn a_key_missing_beside_its_certificate_is_an_error_not_a_new_key() {
    for (key, cert) in [(CA_KEY, CA_CERT), (SERVER_KEY, SERVER_CERT)] {
        let dir = tempfile::tempdir().unwrap();
        files(dir.path()).ensure().unwrap();
        std::fs::remove_file(dir.path().join(TLS_DIR).join(key)).unwrap();
        let e = files(dir.path()).ensure().unwrap_err().to_string();
        assert!(
            e.contains(&format!("{key} is missing but")) && e.contains(cert),
            "{e}"
        );
        assert!(!dir.path().join(TLS_DIR).join(key).exists());
    }
    // Both server files gone: a new key, and the pin changes.
    let dir = tempfile::tempdir().unwrap();
    let first = files(dir.path()).ensure().unwrap();
    for file in [SERVER_KEY, SERVER_CERT] {
        std::fs::remove_file(dir.path().join(TLS_DIR).join(file)).unwrap();
    }
    let id = files(dir.path()).ensure().unwrap();
    assert_ne!(id.pin, first.pin);
    assert_eq!(id.ca_pem, first.ca_pem);
}

#[test]
fn the_pin_is_the_sha256_of_the_server_keys_subject_public_key_info() {
    let dir = tempfile::tempdir().unwrap();
    let id = files(dir.path()).ensure().unwrap();
    let text = String::from_utf8(read(dir.path(), SERVER_KEY)).unwrap();
    let key = KeyPair::from_pem(&text).unwrap();
    let want = PublicKeyPin(Sha256::digest(key.public_key_der()).into());
    assert_eq!(id.pin, want);
    assert_eq!(spki_pin(&id.cert_der).unwrap(), want);
    assert!(spki_pin(b"not a certificate").is_err());
}

#[test]
fn names_are_deduplicated_unspecified_addresses_left_out_and_bad_names_refused() {
    let names = server_names(
        &["localhost".to_string(), " api.example ".to_string()],
        ["0.0.0.0".parse().unwrap(), "10.1.2.3".parse().unwrap()],
    );
    assert_eq!(names, ["localhost", "api.example", "10.1.2.3", "127.0.0.1"]);
    for bad in ["under_score.example", "a..b", "", "é.example"] {
        let dir = tempfile::tempdir().unwrap();
        let e = TlsFiles::new(dir.path(), vec![bad.to_string()], 30)
            .ensure()
            .unwrap_err();
        assert!(matches!(e, TlsError::Name(_)), "{bad}: {e}");
    }
}

#[test]
fn refresh_serves_a_reissued_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, id) = ServerTls::start(files(dir.path())).unwrap();
    assert_eq!(tls.served.current().cert[0], id.cert_der);
    assert_eq!(tls.refresh().unwrap(), None);
    assert_eq!(tls.served.current().cert[0], id.cert_der);
    std::fs::remove_file(dir.path().join(TLS_DIR).join(SERVER_CERT)).unwrap();
    assert_eq!(tls.refresh().unwrap(), Some(Reissue::Missing));
    let served = tls.served.current();
    assert_ne!(served.cert[0], id.cert_der);
    assert_eq!(spki_pin(&served.cert[0]).unwrap(), id.pin);
}

#[test]
fn a_ca_certificate_for_another_key_is_an_error_not_a_new_ca() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    files(a.path()).ensure().unwrap();
    let other = files(b.path()).ensure().unwrap();
    let path = a.path().join(TLS_DIR).join(CA_CERT);
    std::fs::copy(b.path().join(TLS_DIR).join(CA_CERT), &path).unwrap();
    let e = files(a.path()).ensure().unwrap_err().to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("for the key in ca.key"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        other.ca_pem,
        "left as it was"
    );
}
