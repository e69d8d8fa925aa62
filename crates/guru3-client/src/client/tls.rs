//! TLS settings for GURU3 (a public certificate, or a private CA given by the operator).

use std::sync::Arc;

pub use rustls::{ClientConfig, RootCertStore};
pub use rustls_pki_types::CertificateDer;

/// Mozilla's root store (the `webpki-roots` crate), compiled in; no system files are read.
pub fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The webpki roots plus extra CA certificates (e.g. parsed by the caller from a PEM file).
/// Certificates that do not parse as CAs are skipped; the count added is returned.
pub fn webpki_roots_and(
    extra: impl IntoIterator<Item = CertificateDer<'static>>,
) -> (RootCertStore, usize) {
    let mut roots = webpki_roots();
    let (added, _ignored) = roots.add_parsable_certificates(extra);
    (roots, added)
}

/// A client configuration verifying the server against `roots` (TLS 1.2 and 1.3, ring).
pub fn with_roots(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}
