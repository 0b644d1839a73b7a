//! HTTPS: `hearth init --self-signed-cert` then `hearth serve` answers over TLS with that
//! certificate, and SIGHUP swaps certificates without dropping open connections.

mod common;

use std::path::Path;

use common::http::Client;
use common::{Server, hearth};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

fn certificate(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).expect("certificate PEM")
}

/// `hearth init --self-signed-cert` in a temporary directory, with both listeners on port 0.
fn init_with_tls() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = hearth(
        dir.path(),
        &[
            "init",
            "--self-signed-cert",
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
        ],
        "",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

fn replace_certificate(dir: &Path, contents: Option<(String, String)>) {
    let (cert, key) = contents.unwrap_or_else(|| {
        hearth::server::tls::self_signed(vec!["localhost".into()]).expect("generate")
    });
    std::fs::write(dir.join("tls/cert.pem"), cert).expect("write cert");
    std::fs::write(dir.join("tls/key.pem"), key).expect("write key");
}

#[test]
fn init_then_serve_answers_over_https() {
    let dir = init_with_tls();
    let server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    let cert = certificate(&dir.path().join("tls/cert.pem"));
    let mut client = Client::tls(
        server.address("https"),
        "localhost",
        std::slice::from_ref(&cert),
    );
    let response = client.get("/_matrix/client/versions");
    assert_eq!(response.status, 200);
    assert!(response.json()["versions"].is_array());
    assert_eq!(client.peer_certificate(), Some(cert));
    // The plain listener serves the same application.
    assert_eq!(server.client().get("/_matrix/client/versions").status, 200);
}

#[test]
fn an_untrusted_certificate_is_refused_by_a_verifying_client() {
    let dir = init_with_tls();
    let server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    let (other, _) = hearth::server::tls::self_signed(vec!["localhost".into()]).expect("generate");
    let other = CertificateDer::from_pem_slice(other.as_bytes()).expect("pem");
    let mut client = Client::tls(server.address("https"), "localhost", &[other]);
    let err = client
        .request("GET", "/_matrix/client/versions", &[], None)
        .expect_err("an untrusted certificate is refused");
    // Refused for its certificate, not for any other I/O failure (a closed connection, a
    // refused port): no trusted root signed it (the trusted one has the same name as its
    // issuer, so the chain is tried and its signature found wrong).
    let refusal = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            refusal,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature
            ))
        ),
        "not a certificate refusal: {err:?}"
    );
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = init_with_tls();
    let server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    let old_cert = certificate(&dir.path().join("tls/cert.pem"));
    let mut old_client = Client::tls(
        server.address("https"),
        "localhost",
        std::slice::from_ref(&old_cert),
    );
    assert_eq!(old_client.get("/_matrix/client/versions").status, 200);

    replace_certificate(dir.path(), None);
    let new_cert = certificate(&dir.path().join("tls/cert.pem"));
    assert_ne!(new_cert, old_cert);
    server.signal("HUP");
    assert!(
        server.wait_for_log("TLS certificate reloaded"),
        "{}",
        server.log_text()
    );

    // The connection opened before the reload still works, with the certificate it had.
    assert_eq!(old_client.get("/_matrix/client/versions").status, 200);
    assert_eq!(old_client.connections_opened, 1);
    assert_eq!(old_client.peer_certificate(), Some(old_cert.clone()));

    // New connections get the new certificate.
    let mut new_client = Client::tls(
        server.address("https"),
        "localhost",
        &[old_cert, new_cert.clone()],
    );
    assert_eq!(new_client.get("/_matrix/client/versions").status, 200);
    assert_eq!(new_client.peer_certificate(), Some(new_cert));
}

#[test]
fn a_broken_certificate_on_reload_keeps_the_old_one() {
    let dir = init_with_tls();
    let server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    let cert = certificate(&dir.path().join("tls/cert.pem"));
    replace_certificate(dir.path(), Some(("garbage".into(), "garbage".into())));
    server.signal("HUP");
    assert!(
        server.wait_for_log("kept the old TLS certificate"),
        "{}",
        server.log_text()
    );
    let mut client = Client::tls(
        server.address("https"),
        "localhost",
        std::slice::from_ref(&cert),
    );
    assert_eq!(client.get("/_matrix/client/versions").status, 200);
    assert_eq!(client.peer_certificate(), Some(cert));
}

#[test]
fn a_missing_certificate_stops_start_up_with_a_clear_error() {
    let dir = init_with_tls();
    std::fs::remove_file(dir.path().join("tls/cert.pem")).expect("remove");
    let error = Server::start_in(dir.path(), &[], &[])
        .err()
        .expect("refuses to start");
    assert!(error.contains("cert.pem"), "{error}");
    let output = hearth(dir.path(), &["serve", "--config", "hearth.toml"], "");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: TLS") && stderr.contains("cert.pem"),
        "{stderr}"
    );
}
