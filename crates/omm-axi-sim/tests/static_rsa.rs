//! The listener like an older OMM firmware (feature `openssl`): it offers TLS 1.2 with
//! `TLS_RSA_WITH_AES_256_GCM_SHA384` only. (hexidian's default build on it: tests/e2e/static_rsa.rs.)
#![cfg(feature = "openssl")]
#![allow(clippy::unwrap_used)]

use std::pin::Pin;

use omm_axi_sim::Sim;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use tokio::net::TcpStream;

/// A bare OpenSSL handshake offering `ciphers` (TLS ≤ 1.2) and versions up to `max`.
async fn handshake(sim: &Sim, ciphers: &str, max: SslVersion) -> Result<(String, String), String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_cipher_list(ciphers).unwrap();
    b.set_max_proto_version(Some(max)).unwrap();
    let ssl = b.build().configure().unwrap().into_ssl("omm").unwrap();
    let tcp = TcpStream::connect(sim.static_rsa_addr()).await.unwrap();
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let cipher = s.ssl().current_cipher().map(|c| c.name().to_owned());
    Ok((cipher.unwrap_or_default(), s.ssl().version_str().to_owned()))
}

#[tokio::test]
async fn the_listener_offers_only_static_rsa_with_aes256_gcm_over_tls12() {
    let sim = Sim::start().await;
    let all = "ALL:@SECLEVEL=0";
    assert_eq!(
        handshake(&sim, all, SslVersion::TLS1_3).await.unwrap(),
        ("AES256-GCM-SHA384".to_owned(), "TLSv1.2".to_owned())
    );
    // what rustls offers: forward-secret suites only
    let modern = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
                  ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305";
    assert!(handshake(&sim, modern, SslVersion::TLS1_2).await.is_err());
    assert!(
        handshake(&sim, "AES128-GCM-SHA256", SslVersion::TLS1_2)
            .await
            .is_err()
    );
}
