//! The TLS pieces the frontend (server) and the node agent (client) share (feature `tls`): the
//! rustls crypto provider with its cipher suites ordered for this CPU, and the key pin of a
//! certificate ([`spki_pin`]), so both sides compute the pin from the same bytes.

use crate::cmdline::PublicKeyPin;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::CipherSuite;
use sha2::{Digest, Sha256};

/// Whether this CPU encrypts AES-GCM in hardware (AES-NI and carry-less multiply).
pub fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// rustls on *ring* (no C toolchain beyond ring's own; the static `image` builds link it), its
/// suites ordered for this CPU: with AES instructions AES-128-GCM first (one way, in memory:
/// 2.3 GB/s against AES-256-GCM's 1.2 and ChaCha20's 0.7); without them ChaCha20-Poly1305
/// first, as software AES-GCM is several times slower (under TCG's `qemu64`, which the test
/// nodes run: AES-128-GCM 12 MB/s, ChaCha20-Poly1305 65 MB/s). rustls 0.23.48 deprecates
/// *ring*'s provider only because it lacks post-quantum key exchange (aws-lc-rs's).
#[allow(deprecated)]
pub fn provider() -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    match aes_in_hardware() {
        true => prefer(&mut p.cipher_suites, AES_128_GCM),
        false => prefer(&mut p.cipher_suites, CHACHA20_POLY1305),
    }
    p
}

/// The AES-128-GCM suites of TLS 1.3 and 1.2.
const AES_128_GCM: &[CipherSuite] = &[
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// The ChaCha20-Poly1305 suites of TLS 1.3 and 1.2.
const CHACHA20_POLY1305: &[CipherSuite] = &[
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Moves the suites in `first` ahead of the others (the rest keep their order).
pub fn prefer(suites: &mut [rustls::SupportedCipherSuite], first: &[CipherSuite]) {
    suites.sort_by_key(|s| !first.contains(&s.suite()));
}

/// The SHA-256 of a certificate's SubjectPublicKeyInfo (DER, outer SEQUENCE included): what
/// `openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum` prints.
pub fn spki_pin(cert: &CertificateDer<'_>) -> Result<PublicKeyPin, webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(cert)?;
    Ok(PublicKeyPin(
        Sha256::digest(cert.subject_public_key_info().as_ref()).into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chacha_goes_first_and_the_rest_keep_their_order() {
        #[allow(deprecated)]
        let mut suites = rustls::crypto::ring::default_provider().cipher_suites;
        let before: Vec<_> = suites.iter().map(|s| s.suite()).collect();
        prefer(&mut suites, CHACHA20_POLY1305);
        let after: Vec<_> = suites.iter().map(|s| s.suite()).collect();
        assert_eq!(after[0], CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        assert_eq!(after.len(), before.len());
        let others = |v: &[CipherSuite]| -> Vec<CipherSuite> {
            v.iter()
                .copied()
                .filter(|s| !format!("{s:?}").contains("CHACHA"))
                .collect()
        };
        assert_eq!(others(&after), others(&before));
        assert!(after[..3]
            .iter()
            .all(|s| format!("{s:?}").contains("CHACHA")));
    }

    #[test]
    fn junk_is_not_a_certificate() {
        assert!(spki_pin(&CertificateDer::from(vec![0x30, 0x00])).is_err());
    }
}
