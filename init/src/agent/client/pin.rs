//! TLS to a server whose public key is pinned: the rustls client configuration whose
//! certificate verifier accepts the end-entity certificate iff the SHA-256 of its
//! SubjectPublicKeyInfo (DER) is the pin, and the mapping of a failed handshake to a
//! [`ClientError`] that says what went wrong.
//!
//! The pin is the whole of the trust: the certificate's names, issuer, chain and validity
//! period are not looked at (a node has no CA to check a chain against, the frontend's address
//! is an IP, and a freshly booted node's clock may be wrong). The handshake signatures still are
//! verified against the pinned key, so the peer must hold its private key. What this module does
//! not do: HTTP (that is [`super`]), or choosing whether to pin (that is the command line's
//! `mallee.frontend_key`).

use super::ClientError;
use mallee_proto::cmdline::PublicKeyPin;
use mallee_proto::tls::{provider, spki_pin};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;

/// The client configuration for a server whose key is `pin`; built once per
/// [`Client`](super::Client) and shared by its connections.
pub fn config(pin: PublicKeyPin) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(provider());
    let verifier = PinnedKey {
        pin,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The verifier's refusal, carried through rustls to [`handshake_error`].
#[derive(Debug, thiserror::Error)]
#[error("the server presented key {got}, the pin is {expected}")]
struct PinMismatch {
    expected: PublicKeyPin,
    got: PublicKeyPin,
}

/// Accepts exactly the pinned key; see the module comment.
#[derive(Debug)]
struct PinnedKey {
    pin: PublicKeyPin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = spki_pin(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if got != self.pin {
            let mismatch = PinMismatch {
                expected: self.pin,
                got,
            };
            let other = OtherError(Arc::new(mismatch));
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                other,
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What a failed TLS handshake with `addr` means: the wrong key, a server that does not speak
/// TLS, another TLS failure, or plain I/O (a timeout, a reset).
pub fn handshake_error(addr: SocketAddr, e: std::io::Error) -> ClientError {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return ClientError::Io(e);
    };
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) => {
            match other.downcast_ref::<PinMismatch>() {
                Some(m) => ClientError::KeyMismatch {
                    addr,
                    expected: m.expected,
                    got: m.got,
                },
                None => ClientError::Tls(addr, tls.clone()),
            }
        }
        // The first bytes back were no TLS record: most likely an HTTP answer.
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            ClientError::NotTls(addr)
        }
        _ => ClientError::Tls(addr, tls.clone()),
    }
}
