//! The outbound client against a real TLS server on 127.0.0.1 (actix, the test CA of
//! [`super::tests`]): connections kept alive and reused, a kept connection never used for an
//! address now refused, body limits, bodies streamed into a writer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{HttpResponse, web};
use rustls::pki_types::ServerName;

use super::FederationError;
use super::client::{Endpoint, Request, Scheme};
use super::tests::{client, serve_counting, test_ca};

const BIG: usize = 100_000;

fn routes(config: &mut web::ServiceConfig) {
    config
        .route(
            "/_matrix/federation/v1/version",
            web::get().to(|| async { HttpResponse::Ok().body(r#"{"server":{"name":"t"}}"#) }),
        )
        .route(
            "/big",
            web::get().to(|| async { HttpResponse::Ok().body(vec![b'x'; BIG]) }),
        )
        .route(
            // No length announced: the limit must hold while the body streams.
            "/big-streamed",
            web::get().to(|| async {
                let pieces = (0..BIG / 1000)
                    .map(|_| Ok::<_, actix_web::Error>(web::Bytes::from(vec![b'y'; 1000])));
                HttpResponse::Ok().streaming(futures_util::stream::iter(pieces))
            }),
        )
        .route(
            "/missing",
            web::get().to(|| async { HttpResponse::NotFound().body(vec![b'n'; 100]) }),
        );
}

/// A server counting its requests and connections, and the endpoint that reaches it.
fn peer() -> (
    Endpoint,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    super::tests::TestCa,
) {
    let ca = test_ca();
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let port = serve_counting(&ca, routes, hits.clone(), connections.clone());
    let endpoint = Endpoint {
        addresses: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        tls_name: ServerName::try_from("localhost").expect("name"),
        host_header: format!("localhost:{port}"),
    };
    (endpoint, hits, connections, ca)
}

fn get(path: &str) -> Request {
    Request {
        method: "GET",
        path: path.to_owned(),
        body: None,
        authorization: None,
    }
}

#[actix_web::test]
async fn requests_to_a_peer_share_one_kept_alive_connection() {
    let (endpoint, hits, connections, ca) = peer();
    let (client, _dir) = client(&ca);
    for _ in 0..5 {
        let answer = client
            .send(&endpoint, &get("/_matrix/federation/v1/version"), 1024)
            .await
            .expect("answer");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, br#"{"server":{"name":"t"}}"#);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 5);
    assert_eq!(connections.load(Ordering::SeqCst), 1, "one TLS connection");
    assert_eq!(client.kept_alive(), 1);
}

#[actix_web::test]
async fn a_kept_connection_is_not_used_once_its_address_is_refused() {
    let (endpoint, hits, connections, ca) = peer();
    let (client, _dir) = client(&ca);
    let path = "/_matrix/federation/v1/version";
    client
        .send(&endpoint, &get(path), 1024)
        .await
        .expect("answer");
    assert_eq!(client.kept_alive(), 1);
    let client = client.refusing(|ip| ip.is_loopback());
    let refused = client.send(&endpoint, &get(path), 1024).await;
    assert!(
        matches!(refused, Err(FederationError::PrivateAddress(_))),
        "{refused:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "nothing more was sent");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[actix_web::test]
async fn bodies_over_the_limit_are_refused_announced_or_not() {
    let (endpoint, _hits, _connections, ca) = peer();
    let (client, _dir) = client(&ca);
    for path in ["/big", "/big-streamed"] {
        let answer = client.send(&endpoint, &get(path), BIG - 1).await;
        assert!(
            matches!(answer, Err(FederationError::TooLarge(_))),
            "{path}: {answer:?}"
        );
        let whole = client.send(&endpoint, &get(path), BIG).await.expect(path);
        assert_eq!(whole.body.len(), BIG, "{path}");
    }
}

/// `GET path` streamed into a buffer of at most `limit` bytes.
async fn stream(
    client: &super::client::HttpsClient,
    endpoint: &Endpoint,
    path: &str,
    limit: usize,
) -> (Result<u16, FederationError>, Vec<u8>) {
    let mut written = Vec::new();
    let result = async {
        let (head, body) = client.open(endpoint, &get(path), Scheme::Https).await?;
        body.copy_to(&head, &mut written, limit).await?;
        Ok(head.status)
    }
    .await;
    (result, written)
}

#[actix_web::test]
async fn bodies_stream_into_a_writer_within_the_limit() {
    let (endpoint, _hits, connections, ca) = peer();
    let (client, _dir) = client(&ca);
    let (status, written) = stream(&client, &endpoint, "/big-streamed", BIG).await;
    assert_eq!(status.expect("streamed"), 200);
    assert_eq!(written, vec![b'y'; BIG]);
    let (over, cut) = stream(&client, &endpoint, "/big-streamed", BIG / 2).await;
    assert!(
        matches!(over, Err(FederationError::TooLarge(_))),
        "{over:?}"
    );
    assert!(cut.len() <= BIG / 2);
    let (announced, nothing) = stream(&client, &endpoint, "/big", BIG / 2).await;
    assert!(matches!(announced, Err(FederationError::TooLarge(_))));
    assert!(
        nothing.is_empty(),
        "an announced length over the limit is refused at once"
    );
    // The first connection served the whole body and was reused for the second request,
    // which the limit cut short: it was closed, and the third needed a new one.
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn signed_gets_stream_only_successful_bodies() {
    let ca = test_ca();
    let port = serve_counting(&ca, routes, Arc::default(), Arc::default());
    let (transport, _dir) = super::keys_tests::transport(&ca, true);
    let destination = format!("localhost:{port}");
    let mut written = Vec::new();
    let head = transport
        .get_to_writer(
            &destination,
            "/big-streamed",
            true,
            &mut written,
            BIG as u64,
        )
        .await
        .expect("streamed");
    assert_eq!(head.status, 200);
    assert_eq!(written.len(), BIG);
    let mut nothing = Vec::new();
    let missing = transport
        .get_to_writer(&destination, "/missing", true, &mut nothing, BIG as u64)
        .await
        .expect("an answer");
    assert_eq!(missing.status, 404);
    assert!(nothing.is_empty(), "an error's body is not written");
}
