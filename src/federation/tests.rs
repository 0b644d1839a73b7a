//! Discovery and the HTTPS client against a real TLS server on 127.0.0.1: a test CA signs a
//! certificate for `localhost` and `127.0.0.1`, actix serves well-known files with it, and the
//! client trusts the CA through the extra bundle, as a private deployment would.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{App, HttpResponse, HttpServer, web};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::client::HttpsClient;
use super::discovery::Resolver;
use super::dns::Dns;
use super::well_known::{self, ERROR_LIFETIME};

/// A CA (its PEM) and a certificate it signed for `localhost` and `127.0.0.1`.
pub(super) struct TestCa {
    pub(super) ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

pub(super) fn test_ca() -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    TestCa {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// Serves `routes` over HTTPS on 127.0.0.1 with the CA's certificate; returns the port.
pub(super) fn serve(
    ca: &TestCa,
    routes: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    hits: Arc<AtomicUsize>,
) -> u16 {
    serve_counting(ca, routes, hits, Arc::default())
}

/// [`serve`], counting the TCP connections it accepts in `connections`.
pub(super) fn serve_counting(
    ca: &TestCa,
    routes: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
) -> u16 {
    let certs = vec![CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(ca.key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = HttpServer::new(move || {
        let hits = hits.clone();
        let routes = routes.clone();
        App::new()
            .wrap_fn(move |req, service| {
                hits.fetch_add(1, Ordering::SeqCst);
                actix_web::dev::Service::call(service, req)
            })
            .configure(move |config| routes(config))
    })
    .workers(1)
    .on_connect(move |_, _| {
        connections.fetch_add(1, Ordering::SeqCst);
    })
    .listen_rustls_0_23(listener, config)
    .expect("listen")
    .run();
    actix_web::rt::spawn(server);
    port
}

pub(super) fn client(ca: &TestCa) -> (HttpsClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, &ca.ca_pem).expect("write ca");
    (HttpsClient::new(Some(&path), true).expect("client"), dir)
}

fn delegate_with_cache_header(config: &mut web::ServiceConfig) {
    config.route(
        "/.well-known/matrix/server",
        web::get().to(|| async {
            HttpResponse::Ok()
                .insert_header(("Cache-Control", "max-age=600"))
                .body(r#"{"m.server": "localhost:4321"}"#)
        }),
    );
}

#[actix_web::test]
async fn well_known_delegation_is_followed_and_cached() {
    let ca = test_ca();
    let hits = Arc::new(AtomicUsize::new(0));
    let port = serve(&ca, delegate_with_cache_header, hits.clone());
    let (client, _dir) = client(&ca);
    let resolver = Resolver::new(Dns::from_system(), port);
    let endpoint = resolver
        .resolve(&client, "localhost")
        .await
        .expect("resolve");
    assert_eq!(endpoint.host_header, "localhost:4321", "step 3.2");
    assert!(
        endpoint
            .addresses
            .contains(&SocketAddr::from(([127, 0, 0, 1], 4321))),
        "{endpoint:?}"
    );
    assert_eq!(
        endpoint.tls_name,
        ServerName::try_from("localhost").expect("name")
    );
    resolver.resolve(&client, "LOCALHOST").await.expect("again");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the answer was cached");
}

fn redirect_then_ip(config: &mut web::ServiceConfig) {
    config
        .route(
            "/.well-known/matrix/server",
            web::get().to(|| async {
                HttpResponse::Found()
                    .insert_header(("Location", "/moved"))
                    .finish()
            }),
        )
        .route(
            "/moved",
            web::get().to(|| async { HttpResponse::Ok().body(r#"{"m.server": "127.0.0.1"}"#) }),
        );
}

#[actix_web::test]
async fn redirects_are_followed_to_a_delegated_ip_literal() {
    let ca = test_ca();
    let port = serve(&ca, redirect_then_ip, Arc::new(AtomicUsize::new(0)));
    let (client, _dir) = client(&ca);
    let resolver = Resolver::new(Dns::from_system(), port);
    let endpoint = resolver
        .resolve(&client, "localhost")
        .await
        .expect("resolve");
    assert_eq!(
        endpoint.addresses,
        [SocketAddr::from(([127, 0, 0, 1], 8448))]
    );
    assert_eq!(
        endpoint.host_header, "127.0.0.1",
        "step 3.1: the IP, no port given"
    );
    assert!(matches!(endpoint.tls_name, ServerName::IpAddress(_)));
}

fn broken(config: &mut web::ServiceConfig) {
    config
        .route(
            "/.well-known/matrix/server",
            web::get().to(|| async {
                HttpResponse::MovedPermanently()
                    .insert_header(("Location", "/loop"))
                    .finish()
            }),
        )
        .route(
            "/loop",
            web::get().to(|| async {
                HttpResponse::MovedPermanently()
                    .insert_header(("Location", "/.well-known/matrix/server"))
                    .finish()
            }),
        );
}

fn too_large(config: &mut web::ServiceConfig) {
    config.route(
        "/.well-known/matrix/server",
        web::get().to(|| async {
            let padding = " ".repeat(well_known::MAX_BODY);
            HttpResponse::Ok().body(format!(r#"{{"m.server": "a.org"{padding}}}"#))
        }),
    );
}

fn not_found(config: &mut web::ServiceConfig) {
    config.route(
        "/.well-known/matrix/server",
        web::get().to(|| async { HttpResponse::NotFound().body(r#"{"m.server": "a.org"}"#) }),
    );
}

#[actix_web::test]
async fn failures_are_errors_remembered_for_an_hour() {
    let ca = test_ca();
    let (client, _dir) = client(&ca);
    let dns = Dns::from_system();
    for routes in [broken, too_large, not_found] {
        let port = serve(&ca, routes, Arc::new(AtomicUsize::new(0)));
        let answer = well_known::fetch(&client, &dns, "localhost", port).await;
        assert_eq!(answer.delegated, None);
        assert_eq!(answer.lifetime, ERROR_LIFETIME);
    }
}

#[actix_web::test]
async fn an_untrusted_certificate_is_an_error() {
    let ca = test_ca();
    let port = serve(
        &ca,
        delegate_with_cache_header,
        Arc::new(AtomicUsize::new(0)),
    );
    let other = HttpsClient::new(None, true).expect("system roots only");
    let answer = well_known::fetch(&other, &Dns::from_system(), "localhost", port).await;
    assert_eq!(answer.delegated, None);
}

#[actix_web::test]
async fn ip_literals_and_explicit_ports_need_no_well_known() {
    let ca = test_ca();
    let (client, _dir) = client(&ca);
    // Nothing listens on this port: resolving must not try to fetch anything.
    let resolver = Resolver::new(Dns::from_system(), 1);
    let v6 = resolver.resolve(&client, "[::1]").await.expect("step 1");
    assert_eq!(
        v6.addresses,
        [SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 8448))]
    );
    assert_eq!(v6.host_header, "[::1]");
    let v4 = resolver
        .resolve(&client, "127.0.0.1:8009")
        .await
        .expect("step 1");
    assert_eq!(v4.host_header, "127.0.0.1:8009");
    let named = resolver
        .resolve(&client, "localhost:8010")
        .await
        .expect("step 2");
    assert_eq!(named.host_header, "localhost:8010");
    assert!(named.addresses.iter().all(|address| address.port() == 8010));
    assert!(resolver.resolve(&client, "bad name").await.is_err());
}

/// SRV steps, with the DNS answers given (no test can serve DNS records): `_matrix-fed._tcp`
/// wins over the deprecated `_matrix._tcp`; the certificate and `Host` stay the server
/// name's; the step that decided is reported. Well-known is asked first and finds nothing
/// (nothing listens on port 1).
#[actix_web::test]
async fn srv_records_are_followed_in_the_spec_order() {
    let ca = test_ca();
    let (client, _dir) = client(&ca);
    let dns = Dns::from_system()
        .with_srv_answer("_matrix-fed._tcp.localhost", &[("localhost", 9001)])
        .with_srv_answer("_matrix._tcp.localhost", &[("localhost", 9002)]);
    let resolver = Resolver::new(dns, 1);
    let resolution = resolver.resolve_explained(&client, "localhost").await;
    let endpoint = resolution.endpoint.expect("step 4");
    assert_eq!(
        resolution.step,
        "step 4: SRV record _matrix-fed._tcp.localhost"
    );
    assert!(
        endpoint
            .addresses
            .iter()
            .all(|address| address.port() == 9001)
    );
    assert_eq!(endpoint.host_header, "localhost");
    assert_eq!(
        endpoint.tls_name,
        ServerName::try_from("localhost").expect("name")
    );
    let well_known = resolution.well_known.expect("asked");
    assert!(well_known.delegated.is_none() && well_known.failure.is_some());

    let deprecated = Dns::from_system()
        .with_srv_answer("_matrix-fed._tcp.localhost", &[])
        .with_srv_answer("_matrix._tcp.localhost", &[("localhost", 9002)]);
    let resolution = Resolver::new(deprecated, 1)
        .resolve_explained(&client, "localhost")
        .await;
    assert_eq!(resolution.step, "step 5: SRV record _matrix._tcp.localhost");
    let endpoint = resolution.endpoint.expect("step 5");
    assert!(
        endpoint
            .addresses
            .iter()
            .all(|address| address.port() == 9002)
    );

    let none = Dns::from_system()
        .with_srv_answer("_matrix-fed._tcp.localhost", &[])
        .with_srv_answer("_matrix._tcp.localhost", &[]);
    let resolution = Resolver::new(none, 1)
        .resolve_explained(&client, "localhost")
        .await;
    assert_eq!(resolution.step, "step 6: no SRV record, default port 8448");
    let endpoint = resolution.endpoint.expect("step 6");
    assert!(
        endpoint
            .addresses
            .iter()
            .all(|address| address.port() == 8448)
    );
}

/// A delegated name without a port goes through the SRV steps as 3.3 to 3.5.
#[actix_web::test]
async fn a_delegated_name_follows_its_srv_record() {
    let ca = test_ca();
    let port = serve(
        &ca,
        |config: &mut web::ServiceConfig| {
            config.route(
                "/.well-known/matrix/server",
                web::get().to(|| async { HttpResponse::Ok().body(r#"{"m.server": "localhost"}"#) }),
            );
        },
        Arc::new(AtomicUsize::new(0)),
    );
    let (client, _dir) = client(&ca);
    let dns =
        Dns::from_system().with_srv_answer("_matrix-fed._tcp.localhost", &[("127.0.0.1", 9003)]);
    let resolution = Resolver::new(dns, port)
        .resolve_explained(&client, "localhost")
        .await;
    assert_eq!(
        resolution.step,
        "step 3.3: SRV record _matrix-fed._tcp.localhost"
    );
    let endpoint = resolution.endpoint.expect("step 3.3");
    assert_eq!(
        endpoint.addresses,
        [SocketAddr::from(([127, 0, 0, 1], 9003))]
    );
    assert_eq!(endpoint.host_header, "localhost");
}
