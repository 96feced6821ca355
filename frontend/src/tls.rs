//! The listener's TLS identity: the frontend's own CA and the server certificate it signs, kept
//! in `<data_dir>/tls/`, renewed with the same key, and served through a swappable resolver.
//!
//! The files are `ca.key` + `ca.pem` (ten years) and `server.key` + `server.pem` (one year).
//! The rule for them: **keys are made only where none exists and never replaced;
//! certificates are derived from the keys and re-issued whenever they are missing,
//! unreadable, not for the key or CA on disk, for other names, or within `renew_days` of
//! expiry.** Re-issuing changes nothing anyone holds: clients trust the CA (same key, same
//! name), nodes pin the server key's SubjectPublicKeyInfo ([`spki_pin`]). A key that
//! cannot be read, or is missing beside its certificate, is an error naming the file and what
//! to do: a new key would silently break every CA bundle or every node's pin. Accepting
//! connections is `server`'s; where the CA bundle for clients goes is `config`'s.

use arc_swap::ArcSwap;
use mallee_proto::cmdline::PublicKeyPin;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// The directory under `data_dir` that holds the TLS files.
pub const TLS_DIR: &str = "tls";
/// The CA bundle (the CA certificate, PEM) written beside the admin credentials file.
pub const CA_BUNDLE_FILE: &str = "mallee-ca.pem";
const CA_KEY: &str = "ca.key";
const CA_CERT: &str = "ca.pem";
const SERVER_KEY: &str = "server.key";
const SERVER_CERT: &str = "server.pem";
/// How long the CA is valid: it outlives many server certificates.
pub const CA_DAYS: i64 = 3650;
/// How long a server certificate is valid; `renew_days` must be less.
pub const SERVER_CERT_DAYS: i64 = 365;
/// How often the running server checks whether its certificate is due for renewal or its
/// names changed (the machine took another address).
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// A certificate is valid from this long before it is issued, for clocks a little behind.
const BACKDATE: Duration = Duration::hours(1);

/// Why the TLS identity could not be loaded, made or served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid {what} ({why}); {remedy}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        why: String,
        remedy: String,
    },
    #[error("{missing} is missing but {present} exists; {remedy}")]
    Incomplete {
        missing: PathBuf,
        present: PathBuf,
        remedy: String,
    },
    #[error("[tls] names: {0:?} is neither an IP address nor a DNS name")]
    Name(String),
    #[error("cannot make the {what}: {source}")]
    Issue {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("not a certificate with a readable public key: {0}")]
    Certificate(webpki::Error),
    #[error("the TLS server cannot use the key and certificate in {dir}: {source}")]
    Serve { dir: PathBuf, source: rustls::Error },
}

/// SHA-256 of the SubjectPublicKeyInfo (DER, outer SEQUENCE included) of the certificate
/// `cert_der`: the pin nodes hold for the frontend (`mallee.frontend_key=sha256:<hex>`). It stays the same across
/// renewals because the server key does.
pub fn spki_pin(cert_der: &[u8]) -> Result<PublicKeyPin, TlsError> {
    mallee_proto::tls::spki_pin(&CertificateDer::from(cert_der)).map_err(TlsError::Certificate)
}

/// The names the server certificate is for: the configured ones, then `addrs` that are not
/// unspecified (the listen address, the node-facing address), then `localhost` and
/// `127.0.0.1`; each once.
pub fn server_names(configured: &[String], addrs: impl IntoIterator<Item = IpAddr>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let extra = addrs
        .into_iter()
        .filter(|a| !a.is_unspecified())
        .map(|a| a.to_string());
    for name in configured
        .iter()
        .map(|n| n.trim().to_string())
        .chain(extra)
        .chain(["localhost".to_string(), "127.0.0.1".to_string()])
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The machine's own addresses a client may reach it by: every interface address but loopback
/// and link-local (an appliance listening on every address serves them all).
pub fn local_addrs() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|a| {
            let addr = a.address?;
            let ip: IpAddr = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
                (Some(v4), _) => v4.ip().into(),
                (_, Some(v6)) => v6.ip().into(),
                _ => return None,
            };
            let link_local = match ip {
                IpAddr::V4(v4) => v4.is_link_local(),
                IpAddr::V6(v6) => v6.is_unicast_link_local(),
            };
            (!ip.is_loopback() && !link_local && !ip.is_unspecified()).then_some(ip)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Why the server certificate was (re-)issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reissue {
    /// There was none.
    Missing,
    /// The file could not be read as a certificate.
    Unreadable(String),
    /// It is not for the server key on disk.
    OtherKey,
    /// It is for other names than the configured ones.
    NamesChanged,
    /// It expires within `renew_days`.
    Expiring { not_after: OffsetDateTime },
    /// It does not verify against the CA (another CA's, or not yet valid).
    NotFromCa(String),
}

impl fmt::Display for Reissue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reissue::Missing => write!(f, "there was none"),
            Reissue::Unreadable(why) => write!(f, "the old one is unreadable ({why})"),
            Reissue::OtherKey => write!(f, "the old one is for another key"),
            Reissue::NamesChanged => write!(f, "the names changed"),
            Reissue::Expiring { not_after } => write!(f, "the old one expires {not_after}"),
            Reissue::NotFromCa(why) => write!(f, "the old one does not verify ({why})"),
        }
    }
}

/// The CA and server certificate as [`TlsFiles::ensure`] left them.
pub struct ServerIdentity {
    /// The CA certificate, PEM: what clients trust.
    pub ca_pem: String,
    /// The server certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// [`spki_pin`] of the server certificate.
    pub pin: PublicKeyPin,
    /// When the server certificate expires.
    pub not_after: OffsetDateTime,
    /// Set when this call issued the server certificate, with why.
    pub issued: Option<Reissue>,
    key_der: Vec<u8>,
    dir: PathBuf,
}

impl ServerIdentity {
    /// The certificate and its key as rustls serves them.
    pub fn certified_key(&self) -> Result<CertifiedKey, TlsError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let serve = |source| TlsError::Serve {
            dir: self.dir.clone(),
            source,
        };
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(serve)?;
        let ck = CertifiedKey::new(vec![self.cert_der.clone()], signing);
        ck.keys_match().map_err(serve)?;
        Ok(ck)
    }
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("dir", &self.dir)
            .field("pin", &self.pin)
            .field("not_after", &self.not_after)
            .field("issued", &self.issued)
            .finish_non_exhaustive()
    }
}

/// The CA, loaded: its key, a certificate object rcgen signs with, and the file as written.
struct Ca {
    key: KeyPair,
    signer: Certificate,
    der: CertificateDer<'static>,
    pem: String,
}

/// The TLS files of one frontend and what its server certificate must say.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    dir: PathBuf,
    names: Vec<String>,
    renew_before: Duration,
}

impl TlsFiles {
    /// The files in `<data_dir>/tls`; the server certificate is for `names` (see
    /// [`server_names`]) and is renewed when less than `renew_days` remain.
    pub fn new(data_dir: &Path, names: Vec<String>, renew_days: u32) -> TlsFiles {
        TlsFiles {
            dir: data_dir.join(TLS_DIR),
            names,
            renew_before: Duration::days(renew_days.into()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The same files, for `names` now.
    pub fn for_names(&self, names: Vec<String>) -> TlsFiles {
        TlsFiles {
            names,
            ..self.clone()
        }
    }

    /// Loads the CA and server certificate, making what is missing and re-issuing the server
    /// certificate when it is due (see the module's rule).
    pub fn ensure(&self) -> Result<ServerIdentity, TlsError> {
        self.ensure_at(OffsetDateTime::now_utc())
    }

    /// [`TlsFiles::ensure`] as if the time were `now`.
    pub fn ensure_at(&self, now: OffsetDateTime) -> Result<ServerIdentity, TlsError> {
        let sans = self.subject_alt_names()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io("create", &self.dir))?;
        let ca = self.ca(now)?;
        let key = self.server_key()?;
        let cert_path = self.dir.join(SERVER_CERT);
        let (cert_der, not_after, issued) = match self.server_cert(&ca, &key, &sans, now) {
            Ok((der, not_after)) => (der, not_after, None),
            Err(why) => {
                let cert = issue_server(&ca, &key, sans, now)?;
                write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
                tracing::info!(path = %cert_path.display(), why = %why, "issued the server certificate");
                (cert.der().clone(), cert.params().not_after, Some(why))
            }
        };
        let pin = spki_pin(&cert_der)?;
        Ok(ServerIdentity {
            ca_pem: ca.pem,
            cert_der,
            pin,
            not_after,
            issued,
            key_der: key.serialize_der(),
            dir: self.dir.clone(),
        })
    }

    /// The configured names as certificate entries; a name that is neither an IP address nor
    /// a DNS name is an error.
    fn subject_alt_names(&self) -> Result<Vec<SanType>, TlsError> {
        self.names
            .iter()
            .map(|name| {
                if let Ok(ip) = name.parse::<IpAddr>() {
                    return Ok(SanType::IpAddress(ip));
                }
                let dns = name.to_ascii_lowercase();
                let valid = !dns.is_empty()
                    && dns.len() <= 253
                    && dns.trim_start_matches("*.").split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                match (valid, Ia5String::try_from(dns)) {
                    (true, Ok(ia5)) => Ok(SanType::DnsName(ia5)),
                    _ => Err(TlsError::Name(name.clone())),
                }
            })
            .collect()
    }

    /// The CA: made when neither of its files exists (first start); its certificate re-made
    /// from the kept key when missing or unreadable (a crash between the two writes; the name
    /// comes from the key, so clients' bundles still verify); anything else is an error.
    fn ca(&self, now: OffsetDateTime) -> Result<Ca, TlsError> {
        let (key_path, cert_path) = (self.dir.join(CA_KEY), self.dir.join(CA_CERT));
        let start_over = format!(
            "restore it from a backup of {dir}, or remove {dir} to make a new CA (every client's CA bundle and every node's pin must then be replaced)",
            dir = self.dir.display()
        );
        let key = match read_key(&key_path, "CA key", &start_over)? {
            Some(key) => key,
            None if cert_path.exists() => {
                return Err(TlsError::Incomplete {
                    missing: key_path,
                    present: cert_path,
                    remedy: start_over,
                })
            }
            None => {
                let key = new_key("CA key")?;
                write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
                tracing::info!(path = %key_path.display(), "made a new CA key");
                key
            }
        };
        let existing = match std::fs::read(&cert_path) {
            Ok(pem) => match parse_cert(&pem) {
                Ok((der, params)) => Some((der, params, String::from_utf8_lossy(&pem).into())),
                Err(why) => {
                    tracing::warn!(path = %cert_path.display(), error = %why, "CA certificate unreadable: re-made from its key");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("read", &cert_path)(e)),
        };
        let (der, params, pem) = match existing {
            Some((der, params, pem)) => {
                if spki_of(&der) != Some(key.public_key_der()) {
                    return Err(TlsError::Corrupt {
                        path: cert_path,
                        what: "CA certificate for the key in ca.key",
                        why: "its public key is another".to_string(),
                        remedy: start_over,
                    });
                }
                (der, params, pem)
            }
            None => {
                let params = ca_params(&key, now);
                let cert = params
                    .clone()
                    .self_signed(&key)
                    .map_err(issue("CA certificate"))?;
                write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
                tracing::info!(path = %cert_path.display(), "made the CA certificate");
                (cert.der().clone(), params, cert.pem())
            }
        };
        // rcgen signs with a certificate object: one re-made from the parameters read back
        // carries the CA's name and key identifier, which is all a signature takes from it.
        let signer = params.self_signed(&key).map_err(issue("CA signer"))?;
        Ok(Ca {
            key,
            signer,
            der,
            pem,
        })
    }

    /// The server key: made when neither server file exists; an error when it is missing
    /// beside a certificate (a deletion, not a first start) or unreadable.
    fn server_key(&self) -> Result<KeyPair, TlsError> {
        let (key_path, cert_path) = (self.dir.join(SERVER_KEY), self.dir.join(SERVER_CERT));
        let remedy = format!(
            "restore it from a backup, or remove {} and {} to make a new server key (every node's pin must then be replaced)",
            key_path.display(),
            cert_path.display()
        );
        match read_key(&key_path, "server key", &remedy)? {
            Some(key) => Ok(key),
            None if cert_path.exists() => Err(TlsError::Incomplete {
                missing: key_path,
                present: cert_path,
                remedy,
            }),
            None => {
                let key = new_key("server key")?;
                write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
                tracing::info!(path = %key_path.display(), "made a new server key");
                Ok(key)
            }
        }
    }

    /// The server certificate on disk and its expiry when it may be served, else why it must
    /// be re-issued.
    fn server_cert(
        &self,
        ca: &Ca,
        key: &KeyPair,
        sans: &[SanType],
        now: OffsetDateTime,
    ) -> Result<(CertificateDer<'static>, OffsetDateTime), Reissue> {
        let (der, params) = match std::fs::read(self.dir.join(SERVER_CERT)) {
            Ok(pem) => parse_cert(&pem).map_err(Reissue::Unreadable)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Reissue::Missing),
            Err(e) => return Err(Reissue::Unreadable(e.to_string())),
        };
        if spki_of(&der) != Some(key.public_key_der()) {
            return Err(Reissue::OtherKey);
        }
        if name_set(&params.subject_alt_names) != name_set(sans) {
            return Err(Reissue::NamesChanged);
        }
        if params.not_after - now < self.renew_before {
            return Err(Reissue::Expiring {
                not_after: params.not_after,
            });
        }
        // What a client does: the chain to the CA, at this time, for a server.
        let anchor = webpki::anchor_from_trusted_cert(&ca.der)
            .map_err(|e| Reissue::NotFromCa(e.to_string()))?;
        let ee = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| Reissue::Unreadable(e.to_string()))?;
        let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| Reissue::NotFromCa(e.to_string()))?;
        Ok((der, params.not_after))
    }
}

/// The CA's parameters; its name carries a digest of its key, so a certificate re-made from
/// the same key has the same name, and two Mallee CAs in one trust store differ.
fn ca_params(key: &KeyPair, now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let digest = hex::encode(Sha256::digest(key.public_key_der()));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Mallee");
    dn.push(DnType::CommonName, format!("Mallee CA {}", &digest[..16]));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::days(CA_DAYS);
    p.serial_number = Some(random_serial());
    p
}

/// A server certificate for `key` and `sans`, signed by the CA, valid [`SERVER_CERT_DAYS`].
fn issue_server(
    ca: &Ca,
    key: &KeyPair,
    sans: Vec<SanType>,
    now: OffsetDateTime,
) -> Result<Certificate, TlsError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Mallee");
    dn.push(DnType::CommonName, "mallee-frontend");
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::days(SERVER_CERT_DAYS);
    p.serial_number = Some(random_serial());
    p.signed_by(key, &ca.signer, &ca.key)
        .map_err(issue("server certificate"))
}

/// 16 random bytes, positive.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn new_key(what: &'static str) -> Result<KeyPair, TlsError> {
    KeyPair::generate().map_err(issue(what))
}

/// The names of certificate entries, normalized, as a sorted set.
fn name_set(sans: &[SanType]) -> Vec<String> {
    let mut names: Vec<String> = sans
        .iter()
        .map(|san| match san {
            SanType::DnsName(n) => n.as_str().to_ascii_lowercase(),
            SanType::IpAddress(ip) => ip.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The SubjectPublicKeyInfo DER of a certificate, as rcgen writes a key's.
fn spki_of(der: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let cert = webpki::EndEntityCert::try_from(der).ok()?;
    Some(cert.subject_public_key_info().as_ref().to_vec())
}

/// A key file: `None` when absent; an error naming the file and `remedy` when unreadable.
fn read_key(path: &Path, what: &'static str, remedy: &str) -> Result<Option<KeyPair>, TlsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(TlsError::Corrupt {
                path: path.to_path_buf(),
                what,
                why: "not text".to_string(),
                remedy: remedy.to_string(),
            })
        }
        Err(e) => return Err(io("read", path)(e)),
    };
    KeyPair::from_pem(&text)
        .map(Some)
        .map_err(|e| TlsError::Corrupt {
            path: path.to_path_buf(),
            what,
            why: e.to_string(),
            remedy: remedy.to_string(),
        })
}

/// A certificate file's contents (PEM) as DER and as rcgen reads its fields back.
fn parse_cert(pem: &[u8]) -> Result<(CertificateDer<'static>, CertificateParams), String> {
    let der = CertificateDer::from_pem_slice(pem).map_err(|e| e.to_string())?;
    let params = CertificateParams::from_ca_cert_der(&der).map_err(|e| e.to_string())?;
    Ok((der, params))
}

/// [`mallee_proto::fsio::write_atomic`], its failure naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    mallee_proto::fsio::write_atomic(path, bytes, mode).map_err(io("write", path))
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Io {
        action,
        path,
        source,
    }
}

fn issue(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |source| TlsError::Issue { what, source }
}

/// The certificate being served; swapped for a renewed one while connections go on.
#[derive(Debug)]
pub struct ServedCert(ArcSwap<CertifiedKey>);

impl ServedCert {
    pub fn new(cert: CertifiedKey) -> ServedCert {
        ServedCert(ArcSwap::from_pointee(cert))
    }

    /// Serves `cert` to every handshake from now on.
    pub fn replace(&self, cert: CertifiedKey) {
        self.0.store(Arc::new(cert));
    }

    /// The certificate handshakes get now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.load_full()
    }
}

impl ResolvesServerCert for ServedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The names the server certificate must have now (they follow the machine's addresses).
pub type NamesNow = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// TLS on the listener: the files, the certificate served, and the acceptor for connections.
pub struct ServerTls {
    files: TlsFiles,
    names: Option<NamesNow>,
    served: Arc<ServedCert>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl ServerTls {
    /// Loads (or makes, or renews) the identity in `files` and builds the server: TLS 1.2 and
    /// 1.3, no client certificates, ALPN `http/1.1`.
    pub fn start(files: TlsFiles) -> Result<(ServerTls, ServerIdentity), TlsError> {
        let identity = files.ensure()?;
        let served = Arc::new(ServedCert::new(identity.certified_key()?));
        let serve = |source| TlsError::Serve {
            dir: files.dir.clone(),
            source,
        };
        // ChaCha20 first on a CPU without AES instructions (see `mallee_proto::tls::provider`).
        let provider = Arc::new(mallee_proto::tls::provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(serve)?
            .with_no_client_auth()
            .with_cert_resolver(served.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Without AES instructions here, this server's order (ChaCha20 first) wins over a
        // client's that puts AES-GCM first (the AWS CLI's OpenSSL does); with them, each
        // client's own preference is best for it.
        config.ignore_client_order = !mallee_proto::tls::aes_in_hardware();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Ok((
            ServerTls {
                files,
                names: None,
                served,
                acceptor,
            },
            identity,
        ))
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }

    /// Has each check ask `names` what the certificate must be for (else the names it started
    /// with).
    pub fn with_names(mut self, names: NamesNow) -> ServerTls {
        self.names = Some(names);
        self
    }

    /// Checks the certificate as a start would; a re-issued one is served from now on.
    pub fn refresh(&self) -> Result<Option<Reissue>, TlsError> {
        let identity = match &self.names {
            Some(names) => self.files.for_names(names()).ensure()?,
            None => self.files.ensure()?,
        };
        if identity.issued.is_some() {
            self.served.replace(identity.certified_key()?);
        }
        Ok(identity.issued)
    }

    /// Runs [`ServerTls::refresh`] every [`CHECK_EVERY`]; a failure is logged and the current
    /// certificate served on (it has at least `renew_days` left when the check first fails).
    pub async fn renew_periodically(self: Arc<Self>) {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let tls = self.clone();
            match tokio::task::spawn_blocking(move || tls.refresh()).await {
                Ok(Ok(Some(why))) => {
                    tracing::info!(why = %why, "renewed the server certificate; serving it now")
                }
                Ok(Ok(None)) => tracing::debug!("server certificate not due for renewal"),
                Ok(Err(e)) => tracing::error!(error = %e, "cannot renew the server certificate"),
                Err(e) => tracing::error!(error = %e, "the renewal check failed"),
            }
        }
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
