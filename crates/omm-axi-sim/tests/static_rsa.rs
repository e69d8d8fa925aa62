//! The listener like an older OMM firmware (feature `openssl`): it offers TLS 1.2 with
//! `TLS_RSA_WITH_AES_256_GCM_SHA384` only, and hexidian's client in its default build (rustls)
//! fails on it with an error that names the cipher problem and the way out.
#![cfg(feature = "openssl")]
#![allow(clippy::unwrap_used)]

use std::pin::Pin;

use omm_axi::Error;
use omm_axi::client::{Config, connect, tls};
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

#[tokio::test]
async fn the_default_rustls_client_names_the_cipher_problem_and_the_way_out() {
    let sim = Sim::start().await;
    let fp = hexidian_testkit::fingerprint_hex("omm-selfsigned")
        .parse()
        .unwrap();
    let cfg = Config::new("127.0.0.1", "omm", "omm")
        .port(sim.static_rsa_addr().port())
        .tls(tls::pinned(&[fp]));
    let err = connect(&cfg).await.unwrap_err();
    assert!(matches!(err, Error::TlsLegacyPeer(_)), "{err:?}");
    let text = err.to_string();
    for want in [
        "static-RSA",
        "TLS_RSA_WITH_AES_256_GCM_SHA384",
        "`openssl`",
        "tls_backend",
    ] {
        assert!(text.contains(want), "{want:?} missing from: {text}");
    }
    // the same client on the simulator's modern listener works
    let cfg = Config::new("127.0.0.1", "omm", "omm")
        .port(sim.addr().port())
        .tls(tls::pinned(&[hexidian_testkit::fingerprint_hex("server")
            .parse()
            .unwrap()]));
    let (c, conn, _events) = connect(&cfg).await.unwrap();
    tokio::spawn(conn);
    c.ping().await.unwrap();
}
