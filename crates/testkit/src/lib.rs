//! Test support shared by the simulators, integration tests and examples: the committed test
//! CA in `fixtures/tls/`, and tracing initialisation for tests.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// `fixtures/` at the workspace root, or where `HEXIDIAN_FIXTURES` says (a simulator installed
/// without the source tree, as in the container image).
pub fn fixtures_dir() -> PathBuf {
    #[allow(clippy::disallowed_methods)] // testkit reads the environment
    if let Some(dir) = std::env::var_os("HEXIDIAN_FIXTURES") {
        return PathBuf::from(dir);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

fn tls_file(name: &str) -> PathBuf {
    fixtures_dir().join("tls").join(name)
}

/// The certificate chain and key the simulators serve (`server.pem`, issued by the test CA
/// for `localhost` and `127.0.0.1`).
pub fn server_identity() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    identity("server")
}

/// A self-signed RSA certificate like the OMM's built-in one (`omm-selfsigned.pem`).
pub fn omm_selfsigned_identity() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    identity("omm-selfsigned")
}

fn identity(stem: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let certs = CertificateDer::pem_file_iter(tls_file(&format!("{stem}.pem")))
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| panic!("reading fixtures/tls/{stem}.pem: {e}"));
    let key = PrivateKeyDer::from_pem_file(tls_file(&format!("{stem}.key")))
        .unwrap_or_else(|e| panic!("reading fixtures/tls/{stem}.key: {e}"));
    (certs, key)
}

/// The SHA-256 fingerprint (hex) of a fixture certificate, as committed next to it.
pub fn fingerprint_hex(stem: &str) -> String {
    std::fs::read_to_string(tls_file(&format!("{stem}.sha256")))
        .unwrap_or_else(|e| panic!("reading fixtures/tls/{stem}.sha256: {e}"))
        .trim()
        .to_owned()
}

/// A root store holding only the test CA.
pub fn ca_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(tls_file("ca.pem")).expect("reading fixtures/tls/ca.pem")
    {
        roots
            .add(cert.expect("parsing the test CA"))
            .expect("adding the test CA");
    }
    roots
}

/// A rustls server config for the given identity (TLS 1.2 and 1.3, ring provider).
pub fn server_config(
    identity: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(identity.0, identity.1)
        .expect("fixture certificate and key match");
    Arc::new(config)
}

/// Installs a test-friendly tracing subscriber once (output captured by the test harness).
/// The filter comes from `RUST_LOG`, default `warn`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
}

#[cfg(test)]
mod tidy;

pub mod control;
pub mod pg;

/// Identifiers of a generated event that both simulators agree on: the `n`-th handset's
/// IPEI and UAK, so that the handsets GURU3's extensions name are the ones the OMM holds.
pub mod ids {
    /// An IPEI (`DDDDD DDDDDDD C`) with a valid ETSI check digit, distinct for every `n`
    /// below 1,048,576,000.
    pub fn ipei(n: u32) -> String {
        let digits = format!("{:05}{:07}", 3000 + n / 1_000_000, n % 1_000_000);
        let sum: u32 = digits
            .bytes()
            .zip(1u32..)
            .map(|(d, i)| u32::from(d - b'0') * i)
            .sum();
        let check = match sum % 11 {
            10 => '*',
            c => char::from(b'0' + c as u8),
        };
        format!("{} {} {check}", &digits[..5], &digits[5..])
    }

    /// Whether the `i`-th extension of a generated event (`guru3_sim::seed_event`) is a DECT
    /// extension with a handset: the ones `omm_axi_sim::Sim::seed_event` subscribes.
    pub fn seeded_handset(i: usize) -> bool {
        matches!(i % 20, 6..=19) && i % 3 == 0
    }

    /// The `n`-th handset's UAK: 32 hex digits.
    pub fn uak(n: u32) -> String {
        format!("{n:08X}{:024X}", u128::from(n) * 0x9E37_79B9)
    }
}
