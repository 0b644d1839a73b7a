//! Property tests of the `X-Matrix` header parser (issue 10): the header is the first thing
//! read from an unauthenticated stranger, so no text may panic it, and every well-formed
//! header (parameters in any order, quoted or bare, names in any case, spaces and tabs around
//! commas) must read back as what was written.
//!
//! Cases: 256, or `PROPTEST_CASES` (proptest's default config reads it; `scripts/test`
//! raises it under a time bound).

use proptest::prelude::*;

use super::{MAX_HEADER, RequestToSign, XMatrix, authorization_header};
use crate::matrix::crypto::{KeyId, SigningKey};

/// Header-ish text: the scheme, parameter names, separators and quotes in any order.
fn header_ish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("X-Matrix ".to_owned()),
        Just("x-matrix\t".to_owned()),
        Just("origin=".to_owned()),
        Just("destination=".to_owned()),
        Just("key=".to_owned()),
        Just("sig=".to_owned()),
        Just("ed25519:".to_owned()),
        Just(",".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just(" ".to_owned()),
        Just("\t".to_owned()),
        Just("=".to_owned()),
        Just("example.org".to_owned()),
        Just("[::1]:8448".to_owned()),
        Just("é".to_owned()),
        "[ -~]{0,6}",
        ".{0,3}",
    ];
    prop::collection::vec(token, 0..20).prop_map(|tokens| tokens.concat())
}

/// A valid server name: a DNS name, an IPv4 or a bracketed IPv6 literal, with an optional port.
fn server_name() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,3}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        any::<u128>().prop_map(|bits| format!("[{}]", std::net::Ipv6Addr::from(bits))),
    ];
    (host, prop::option::of(1_u16..)).prop_map(|(host, port)| match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// How one parameter is written: its name's case, quoted or bare.
#[derive(Debug, Clone, Copy)]
struct Style {
    upper: bool,
    quoted: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), any::<bool>()).prop_map(|(upper, quoted)| Style { upper, quoted })
}

fn param(name: &str, value: &str, style: Style) -> String {
    let name = if style.upper {
        name.to_ascii_uppercase()
    } else {
        name.to_owned()
    };
    if style.quoted {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("{name}=\"{escaped}\"")
    } else {
        format!("{name}={value}")
    }
}

proptest! {
    #[test]
    fn prop_any_text_never_panics(text in ".{0,64}") {
        let _ = XMatrix::parse(&text);
        let _ = XMatrix::parse(&format!("X-Matrix {text}"));
    }

    #[test]
    fn prop_header_ish_text_never_panics(text in header_ish()) {
        let _ = XMatrix::parse(&text);
    }

    #[test]
    fn prop_long_headers_are_refused_not_read(extra in 0_usize..2048) {
        let header = format!(
            "X-Matrix origin=a.org,key=ed25519:k,sig={}",
            "s".repeat(MAX_HEADER + extra)
        );
        prop_assert!(XMatrix::parse(&header).is_err());
    }

    /// A well-formed header, written in any of the ways RFC 9110 allows, reads back as the
    /// parameters it carries.
    #[test]
    fn prop_well_formed_headers_round_trip(
        origin in server_name(),
        destination in prop::option::of(server_name()),
        version in "[a-zA-Z0-9_]{1,12}",
        sig in "[A-Za-z0-9+/]{1,86}",
        styles in prop::collection::vec(style(), 4),
        order in Just(vec![0_usize, 1, 2, 3]).prop_shuffle(),
        separators in prop::collection::vec(
            prop::sample::select(vec![",", ", ", " ,", "\t,\t", " , "]),
            4,
        ),
        scheme in prop::sample::select(vec!["X-Matrix", "x-matrix", "X-MATRIX"]),
    ) {
        let key = format!("ed25519:{version}");
        let mut params = [
            Some(param("origin", &origin, styles[0])),
            destination.as_ref().map(|d| param("destination", d, styles[1])),
            Some(param("key", &key, styles[2])),
            Some(param("sig", &sig, styles[3])),
        ];
        let mut written = Vec::new();
        for index in order {
            if let Some(param) = params[index].take() {
                written.push(param);
            }
        }
        let mut header = format!("{scheme} ");
        for (index, param) in written.iter().enumerate() {
            if index > 0 {
                header.push_str(separators[index]);
            }
            header.push_str(param);
        }
        let parsed = XMatrix::parse(&header)
            .map_err(|err| TestCaseError::fail(format!("{header}: {err}")))?
            .ok_or_else(|| TestCaseError::fail(format!("{header}: not X-Matrix")))?;
        prop_assert_eq!(parsed.origin, origin);
        prop_assert_eq!(parsed.destination, destination);
        prop_assert_eq!(parsed.key.as_str(), key.as_str());
        prop_assert_eq!(parsed.sig, sig);
    }

    /// What we sign, we read back and verify, whatever the request target and body.
    #[test]
    fn prop_signed_headers_verify(
        seed in any::<[u8; 32]>(),
        origin in server_name(),
        destination in server_name(),
        uri in "/_matrix/federation/v1/[ -~]{0,40}",
        body in prop::option::of(crate::matrix::canonical_json::props::canonical_value()),
    ) {
        let key = SigningKey::from_seed(KeyId::ed25519("k1").expect("id"), seed);
        let request = RequestToSign {
            method: "PUT",
            uri: &uri,
            origin: &origin,
            destination: &destination,
            content: body.as_ref(),
        };
        let header = authorization_header(&request, &key).expect("sign");
        let parsed = XMatrix::parse(&header).expect("valid").expect("X-Matrix");
        prop_assert_eq!(
            parsed.verify("PUT", &uri, &destination, body.as_ref(), &key.public_key()),
            Ok(())
        );
    }
}
