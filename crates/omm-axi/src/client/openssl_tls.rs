//! The OpenSSL TLS backend (feature `openssl`), for OMM firmwares that rustls cannot talk to:
//! older ones offer only static-RSA key exchange (`TLS_RSA_WITH_AES_256_GCM_SHA384` …) and
//! some only TLS 1.0 or 1.1 (spec §1.2). The certificate checks are the rustls backend's:
//! [`OpensslTls::pinned`] accepts exactly the end-entity certificates with the configured
//! SHA-256 fingerprints, whatever their name, issuer or dates; [`OpensslTls::with_ca_pem`]
//! verifies the chain and the host name (or IP).

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::{X509, X509VerifyResult};
use tokio::net::TcpStream;

use super::tls::Fingerprint;
use crate::error::{Error, Result};

/// The lowest protocol version the OpenSSL backend offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum MinProtocol {
    /// TLS 1.0 (some old firmwares; needs a cipher list with `@SECLEVEL=0`).
    Tls1_0,
    /// TLS 1.1.
    Tls1_1,
    /// TLS 1.2 (the default).
    Tls1_2,
    /// TLS 1.3.
    Tls1_3,
}

impl MinProtocol {
    fn version(self) -> SslVersion {
        match self {
            Self::Tls1_0 => SslVersion::TLS1,
            Self::Tls1_1 => SslVersion::TLS1_1,
            Self::Tls1_2 => SslVersion::TLS1_2,
            Self::Tls1_3 => SslVersion::TLS1_3,
        }
    }
}

impl FromStr for MinProtocol {
    type Err = String;

    /// `TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3` (OpenSSL's spelling; `1.0` … `1.3` too).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let v = s.trim();
        let v = v
            .strip_prefix("TLSv")
            .or_else(|| v.strip_prefix("tlsv"))
            .unwrap_or(v);
        match v {
            "1" | "1.0" => Ok(Self::Tls1_0),
            "1.1" => Ok(Self::Tls1_1),
            "1.2" => Ok(Self::Tls1_2),
            "1.3" => Ok(Self::Tls1_3),
            _ => Err(format!(
                "unknown TLS version {s:?} (TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3)"
            )),
        }
    }
}

/// The cipher list offered by default: OpenSSL's defaults including static-RSA suites, at
/// security level 0 so that an OMM's small or SHA-1-signed built-in key is accepted (its
/// certificate is checked by pin or chain, not by the security level).
pub const DEFAULT_CIPHERS: &str = "DEFAULT:@SECLEVEL=0";

#[derive(Clone)]
enum Verify {
    Pinned(Vec<Fingerprint>),
    Roots(Vec<X509>),
}

/// TLS through OpenSSL: how the OMM's certificate is checked, the lowest protocol version and
/// the cipher list. Give it to [`Config::openssl`](super::Config::openssl).
#[derive(Clone)]
pub struct OpensslTls {
    verify: Verify,
    min_protocol: MinProtocol,
    ciphers: String,
}

impl fmt::Debug for OpensslTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verify = match &self.verify {
            Verify::Pinned(p) => format!("Pinned({p:?})"),
            Verify::Roots(r) => format!("Roots({} certificates)", r.len()),
        };
        f.debug_struct("OpensslTls")
            .field("verify", &verify)
            .field("min_protocol", &self.min_protocol)
            .field("ciphers", &self.ciphers)
            .finish()
    }
}

impl OpensslTls {
    /// Accepts exactly the end-entity certificates with these fingerprints (as
    /// [`tls::pinned`](super::tls::pinned) does for rustls).
    pub fn pinned(fingerprints: &[Fingerprint]) -> Self {
        Self::new(Verify::Pinned(fingerprints.to_vec()))
    }

    /// Verifies the chain against the CA certificates in `pem` and the host name or IP the
    /// client connects to (as [`tls::with_roots`](super::tls::with_roots)).
    pub fn with_ca_pem(pem: &[u8]) -> Result<Self> {
        let roots = X509::stack_from_pem(pem).map_err(|e| Error::OpensslTls(e.to_string()))?;
        if roots.is_empty() {
            return Err(Error::Config("no CA certificate in the PEM data"));
        }
        Ok(Self::new(Verify::Roots(roots)))
    }

    fn new(verify: Verify) -> Self {
        Self {
            verify,
            min_protocol: MinProtocol::Tls1_2,
            ciphers: DEFAULT_CIPHERS.to_owned(),
        }
    }

    /// The lowest protocol version offered (default TLS 1.2).
    pub fn min_protocol(mut self, v: MinProtocol) -> Self {
        self.min_protocol = v;
        self
    }

    /// The TLS ≤ 1.2 cipher list in OpenSSL's syntax (default [`DEFAULT_CIPHERS`]).
    pub fn ciphers(mut self, list: impl Into<String>) -> Self {
        self.ciphers = list.into();
        self
    }

    /// Checks the settings by building a connector (a cipher list OpenSSL does not know).
    pub fn check(&self) -> Result<()> {
        self.connector().map(drop)
    }

    fn connector(&self) -> Result<SslConnector> {
        let e = |e: openssl::error::ErrorStack| Error::OpensslTls(e.to_string());
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(e)?;
        b.set_min_proto_version(Some(self.min_protocol.version()))
            .map_err(e)?;
        b.set_cipher_list(&self.ciphers).map_err(|_| {
            Error::OpensslTls(format!(
                "OpenSSL knows no cipher in the list {:?}",
                self.ciphers
            ))
        })?;
        match &self.verify {
            Verify::Pinned(pins) => {
                let pins = Arc::new(pins.clone());
                b.set_verify_callback(SslVerifyMode::PEER, move |_, ctx| {
                    // only the end entity is pinned; the chain above it is not looked at
                    if ctx.error_depth() != 0 {
                        return true;
                    }
                    let pinned = ctx
                        .current_cert()
                        .and_then(|c| c.to_der().ok())
                        .is_some_and(|der| pins.contains(&Fingerprint::of_der(&der)));
                    if !pinned {
                        ctx.set_error(X509VerifyResult::APPLICATION_VERIFICATION);
                    }
                    pinned
                });
            }
            Verify::Roots(roots) => {
                let store = b.cert_store_mut();
                for r in roots {
                    store.add_cert(r.clone()).map_err(e)?;
                }
                b.set_verify(SslVerifyMode::PEER);
            }
        }
        Ok(b.build())
    }

    /// The handshake on `tcp`, to `host` (name or IP).
    pub(crate) async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<tokio_openssl::SslStream<TcpStream>> {
        let e = |e: openssl::error::ErrorStack| Error::OpensslTls(e.to_string());
        let mut conf = self.connector()?.configure().map_err(e)?;
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        // SNI only for names; a pinned certificate's name is never checked
        conf.set_use_server_name_indication(!is_ip);
        conf.set_verify_hostname(matches!(self.verify, Verify::Roots(_)));
        let mut ssl = conf.into_ssl(host).map_err(e)?;
        if matches!(self.verify, Verify::Roots(_)) && is_ip {
            let ip = host
                .parse::<std::net::IpAddr>()
                .map_err(|_| Error::Config("not an ip address"))?;
            ssl.param_mut().set_ip(ip).map_err(e)?;
        }
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(e)?;
        if let Err(err) = Pin::new(&mut stream).connect().await {
            let verify = stream.ssl().verify_result();
            return Err(Error::OpensslTls(
                if verify == X509VerifyResult::APPLICATION_VERIFICATION {
                    "the OMM's certificate is not one of the pinned fingerprints".to_owned()
                } else if verify != X509VerifyResult::OK {
                    format!(
                        "the OMM's certificate was refused: {}",
                        verify.error_string()
                    )
                } else {
                    match err.io_error() {
                        Some(io) => format!("handshake: {io}"),
                        None => format!("handshake: {err}"),
                    }
                },
            ));
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions_are_read_in_openssls_spelling() {
        assert_eq!("TLSv1".parse(), Ok(MinProtocol::Tls1_0));
        assert_eq!("TLSv1.2".parse(), Ok(MinProtocol::Tls1_2));
        assert_eq!("1.3".parse(), Ok(MinProtocol::Tls1_3));
        assert!("SSLv3".parse::<MinProtocol>().is_err());
        assert!(MinProtocol::Tls1_0 < MinProtocol::Tls1_2);
    }

    #[test]
    fn an_unknown_cipher_list_is_refused_when_checked() {
        let t = OpensslTls::pinned(&[]).ciphers("NO-SUCH-CIPHER");
        let e = t.check().unwrap_err().to_string();
        assert!(e.contains("NO-SUCH-CIPHER"), "{e}");
        OpensslTls::pinned(&[]).check().unwrap();
        assert!(OpensslTls::with_ca_pem(b"not pem").is_err());
    }
}
