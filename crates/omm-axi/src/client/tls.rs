//! TLS set-up for the OMM.
//!
//! OMMs present a self-signed certificate by default whose name will not match, so the
//! recommended production set-up is [`pinned`]: accept exactly the certificate(s) whose
//! SHA-256 fingerprint the operator configured. [`with_roots`] verifies a chain and the host
//! name for OMMs with an imported certificate. Anything weaker lives in [`danger`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

pub use rustls::{ClientConfig, RootCertStore};

use crate::error::ParseIdError;

/// SHA-256 fingerprint of a DER certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for Fingerprint {
    type Err = ParseIdError;

    /// 64 hex digits, optionally separated by `:` (as `openssl x509 -fingerprint` prints).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
        if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(ParseIdError::new(
                "fingerprint",
                s,
                "expected 64 hex digits",
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair)
                .map_err(|_| ParseIdError::new("fingerprint", s, "not ascii"))?;
            out[i] = u8::from_str_radix(text, 16)
                .map_err(|_| ParseIdError::new("fingerprint", s, "bad hex"))?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
}

/// Verifies the chain against `roots` and the host name (or IP) the client connects to.
pub fn with_roots(roots: RootCertStore) -> Arc<ClientConfig> {
    Arc::new(
        builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Accepts exactly the end-entity certificates with these fingerprints, whatever their name,
/// issuer or validity dates (the OMM's built-in certificate is self-signed). The handshake
/// signature is still verified, so the peer must hold the certificate's key.
pub fn pinned(fingerprints: &[Fingerprint]) -> Arc<ClientConfig> {
    custom(Policy::Pinned(fingerprints.to_vec()))
}

/// Which end-entity certificates the one custom verifier accepts.
#[derive(Debug)]
enum Policy {
    /// Exactly these.
    Pinned(Vec<Fingerprint>),
    /// Any (lab set-ups only; see [`danger`]).
    Any,
}

fn custom(policy: Policy) -> Arc<ClientConfig> {
    let verifier = Verifier {
        policy,
        algorithms: provider().signature_verification_algorithms,
    };
    Arc::new(
        builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    )
}

/// The certificate check of a [`Policy`]; handshake signatures are always verified with the
/// provider's algorithms.
#[derive(Debug)]
struct Verifier {
    policy: Policy,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let accepted = match &self.policy {
            Policy::Pinned(pins) => pins.contains(&Fingerprint::of_der(end_entity)),
            Policy::Any => true,
        };
        if accepted {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Configurations that weaken verification. Only for lab set-ups.
pub mod danger {
    use super::*;

    /// Accepts any certificate (still checks handshake signatures). Anyone on the path can
    /// impersonate the OMM and read its admin password: prefer [`pinned`].
    pub fn dangerous_accept_any_certificate() -> Arc<ClientConfig> {
        custom(Policy::Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_parsing() {
        let hex = "f4e57b93e4673658fd0f0a930ba080c98e703c62017e5a82f7acdf3008915a69";
        let fp: Fingerprint = hex.parse().unwrap();
        assert_eq!(fp.to_string(), hex);
        let colons = hex
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(colons.parse::<Fingerprint>().unwrap(), fp);
        assert!("abc".parse::<Fingerprint>().is_err());
        assert!(hex.replace('f', "g").parse::<Fingerprint>().is_err());
    }
}
