//! Per-instance extra CA certificates: an upstream whose certificate is
//! signed by a private CA is refused until the instance trusts that CA.

mod common;

use std::sync::Arc;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::json;
use switchyard_runtime::InstanceSpec;
use switchyard_tests::guests;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A private CA and a leaf for 127.0.0.1 signed by it.
fn private_pki() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Switchyard Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// Serves one fixed answer per connection over TLS; returns the origin.
async fn tls_upstream(cert_pem: &str, key_pem: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nprivate",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    origin
}

#[tokio::test]
async fn private_ca_is_trusted_only_by_the_instance_that_adds_it() {
    let (ca_pem, leaf_pem, key_pem) = private_pki();
    let origin = tls_upstream(&leaf_pem, &key_pem).await;
    let echo = load(guests::PLUGIN_ECHO).await;

    let mut plain = InstanceSpec::new("acme", "no-ca");
    plain.egress.push(origin.clone());
    let plain = instance(echo.clone(), plain);
    let out = ok(&plain, "fetch", json!({"url": format!("{origin}/x")})).await;
    assert_eq!(out["error"]["kind"], "connection", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{out}"
    );

    let mut trusting = InstanceSpec::new("acme", "with-ca");
    trusting.egress.push(origin.clone());
    trusting.ca_certs_pem.push(ca_pem);
    let trusting = instance(echo.clone(), trusting);
    let out = ok(&trusting, "fetch", json!({"url": format!("{origin}/x")})).await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], "private");

    // A malformed PEM is a clear configuration error.
    let mut bad = InstanceSpec::new("acme", "bad-ca");
    bad.ca_certs_pem.push("not a certificate".into());
    let err = switchyard_runtime::Instance::new(runtime(), echo, bad, memory_store())
        .err()
        .unwrap();
    assert!(err.to_string().contains("CA certificate #1"), "{err}");
}
