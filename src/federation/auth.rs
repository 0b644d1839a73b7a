//! `X-Matrix` request authentication (spec: "Request Authentication"). A request is signed by
//! signing the JSON `{method, uri, origin, destination, content}` with the origin's key; the
//! signature travels in `Authorization: X-Matrix origin=…,destination=…,key=…,sig=…`.
//! Here: building that header, parsing it (RFC 9110 parameters: quoted or not, any order,
//! names in any case), and checking a signature. Fetching the key is [`super::keys`]'s job.

use serde_json::{Map, Value};

use super::FederationError;
use crate::matrix::crypto::signing::verify_signature;
use crate::matrix::crypto::{KeyId, SigningKey, VerifyError, sign_json, verify_json};

/// What a request signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    pub method: &'a str,
    /// The request target from `/_matrix/...` on, with the query string, as sent.
    pub uri: &'a str,
    pub origin: &'a str,
    pub destination: &'a str,
    /// The JSON body, for requests that have one.
    pub content: Option<&'a Value>,
}

impl RequestToSign<'_> {
    /// The object whose signature is the request's.
    fn to_json(self) -> Map<String, Value> {
        let mut object = Map::new();
        object.insert("method".into(), self.method.into());
        object.insert("uri".into(), self.uri.into());
        object.insert("origin".into(), self.origin.into());
        object.insert("destination".into(), self.destination.into());
        if let Some(content) = self.content {
            object.insert("content".into(), content.clone());
        }
        object
    }
}

/// The `Authorization` header value for `request`, signed with `key`. Written the way the
/// spec asks senders to for old servers: one space, lower-case names, quoted values, no
/// spaces around commas.
pub fn authorization_header(
    request: &RequestToSign<'_>,
    key: &SigningKey,
) -> Result<String, FederationError> {
    let mut object = request.to_json();
    sign_json(&mut object, request.origin, key)
        .map_err(|err| FederationError::Signing(err.to_string()))?;
    let signature = object["signatures"][request.origin][key.key_id().as_str()]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(format!(
        "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{}\"",
        request.origin,
        request.destination,
        key.key_id(),
        signature
    ))
}

/// The parameters of one `X-Matrix` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    pub origin: String,
    /// Absent in requests of servers older than spec v1.3.
    pub destination: Option<String>,
    pub(crate) key: KeyId,
    pub(crate) sig: String,
}

/// Why a header could not be read. The message is safe to show the requester.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedHeader(pub &'static str);

impl XMatrix {
    /// Parses an `Authorization` header value. `Ok(None)` when it is another scheme
    /// (`Bearer`), so a caller can tell "not for us" from "broken".
    pub fn parse(header: &str) -> Result<Option<XMatrix>, MalformedHeader> {
        let header = header.trim_matches([' ', '\t']);
        let (scheme, rest) = header.split_once([' ', '\t']).unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("X-Matrix") {
            return Ok(None);
        }
        let params = parse_params(rest)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let origin = get("origin").ok_or(MalformedHeader("the origin parameter is missing"))?;
        super::server_name::ServerAddress::parse(&origin)
            .map_err(|_| MalformedHeader("the origin is not a valid server name"))?;
        let key = get("key").ok_or(MalformedHeader("the key parameter is missing"))?;
        let key = key
            .strip_prefix("ed25519:")
            .and_then(KeyId::ed25519)
            .ok_or(MalformedHeader("the key is not an ed25519 key id"))?;
        let sig = get("sig").ok_or(MalformedHeader("the sig parameter is missing"))?;
        Ok(Some(XMatrix {
            origin,
            destination: get("destination"),
            key,
            sig,
        }))
    }

    /// Checks the signature over `method`, `uri` and `content`, as sent to `destination`
    /// (our name: a header's own `destination` must have been checked to be ours already).
    pub fn verify(
        &self,
        method: &str,
        uri: &str,
        destination: &str,
        content: Option<&Value>,
        public_key: &[u8],
    ) -> Result<(), VerifyError> {
        let request = RequestToSign {
            method,
            uri,
            origin: &self.origin,
            destination,
            content,
        };
        let mut object = request.to_json();
        let mut by_key = Map::new();
        by_key.insert(self.key.as_str().to_owned(), self.sig.clone().into());
        let mut signatures = Map::new();
        signatures.insert(self.origin.clone(), Value::Object(by_key));
        object.insert("signatures".into(), Value::Object(signatures));
        verify_json(&object, &self.origin, self.key.as_str(), public_key)
    }
}

impl XMatrix {
    /// [`XMatrix::verify`] for a body already in canonical JSON (`content`), so that a large
    /// body is never held as a tree. The signed object's keys are written in their canonical
    /// order: `content`, `destination`, `method`, `origin`, `uri`.
    pub fn verify_canonical(
        &self,
        method: &str,
        uri: &str,
        destination: &str,
        content: Option<&[u8]>,
        public_key: &[u8],
    ) -> Result<(), VerifyError> {
        let text = |value: &str| Value::from(value).to_string();
        let mut message = Vec::with_capacity(content.map_or(0, <[u8]>::len) + 256);
        message.push(b'{');
        if let Some(content) = content {
            message.extend_from_slice(b"\"content\":");
            message.extend_from_slice(content);
            message.push(b',');
        }
        for (name, value) in [
            ("destination", destination),
            ("method", method),
            ("origin", self.origin.as_str()),
            ("uri", uri),
        ] {
            message.extend_from_slice(text(name).as_bytes());
            message.push(b':');
            message.extend_from_slice(text(value).as_bytes());
            message.push(b',');
        }
        message.pop();
        message.push(b'}');
        verify_signature(&message, &self.sig, public_key)
    }
}

/// The longest header we read: four parameters and a signature fit in far less.
const MAX_HEADER: usize = 4096;

/// `name=value` pairs separated by commas, with optional spaces and tabs around the commas.
/// Names are lower-cased; a name given twice is an error (which one would count?).
fn parse_params(text: &str) -> Result<Vec<(String, String)>, MalformedHeader> {
    if text.len() > MAX_HEADER {
        return Err(MalformedHeader("the header is too long"));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    let mut rest = text.trim_start_matches([' ', '\t']);
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or(MalformedHeader("a parameter has no value"))?;
        let name = name.to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(MalformedHeader("a parameter name is not a token"));
        }
        let (value, after) = parse_value(after)?;
        if params.iter().any(|(known, _)| *known == name) {
            return Err(MalformedHeader("a parameter is given twice"));
        }
        params.push((name, value));
        let after = after.trim_start_matches([' ', '\t']);
        rest = match after.strip_prefix(',') {
            Some(next) => next.trim_start_matches([' ', '\t']),
            None if after.is_empty() => after,
            None => return Err(MalformedHeader("parameters must be separated by commas")),
        };
    }
    Ok(params)
}

/// A quoted string (backslash escapes undone) or a bare value, and the text after it. Bare
/// values may hold colons and slashes, as older servers send `key=ed25519:x` unquoted.
fn parse_value(text: &str) -> Result<(String, &str), MalformedHeader> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((index, c)) = chars.next() {
            match c {
                '"' => return Ok((value, &quoted[index + 1..])),
                '\\' => match chars.next() {
                    Some((_, escaped)) => value.push(escaped),
                    None => break,
                },
                c => value.push(c),
            }
        }
        return Err(MalformedHeader("a quoted value is not closed"));
    }
    let end = text.find([',', ' ', '\t']).unwrap_or(text.len());
    let value = &text[..end];
    if value.is_empty() || value.contains('"') || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(MalformedHeader("a value is neither a token nor quoted"));
    }
    Ok((value.to_owned(), &text[end..]))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> SigningKey {
        SigningKey::from_seed(KeyId::ed25519("k1").expect("id"), [7; 32])
    }

    fn request<'a>(content: Option<&'a Value>) -> RequestToSign<'a> {
        RequestToSign {
            method: "PUT",
            uri: "/_matrix/federation/v1/send/1?x=y",
            origin: "origin.example",
            destination: "dest.example:8448",
            content,
        }
    }

    fn parse(header: &str) -> XMatrix {
        XMatrix::parse(header).expect("valid").expect("x-matrix")
    }

    #[test]
    fn a_canonical_body_verifies_as_its_tree_does() {
        let body = json!({ "pdus": [{ "b": 1, "a": "é\n" }], "origin": "origin.example" });
        let header = authorization_header(&request(Some(&body)), &key()).expect("sign");
        let parsed = parse(&header);
        let public = key().public_key();
        let uri = "/_matrix/federation/v1/send/1?x=y";
        let written = br#"{ "origin" : "origin.example", "pdus": [{"a": "\u00e9\n", "b": 1.0}] }"#;
        let canonical =
            crate::matrix::canonical_bytes::canonical_from_slice(written).expect("canonical");
        let verify = |method, content: Option<&[u8]>| {
            parsed.verify_canonical(method, uri, "dest.example:8448", content, &public)
        };
        assert_eq!(verify("PUT", Some(&canonical)), Ok(()));
        assert!(verify("POST", Some(&canonical)).is_err());
        assert!(verify("PUT", Some(b"{}")).is_err());
        assert!(verify("PUT", None).is_err());
        let bodiless = authorization_header(&request(None), &key()).expect("sign");
        assert_eq!(
            parse(&bodiless).verify_canonical("PUT", uri, "dest.example:8448", None, &public),
            Ok(())
        );
    }

    #[test]
    fn a_signed_header_round_trips() {
        let body = json!({ "pdus": [] });
        let header = authorization_header(&request(Some(&body)), &key()).expect("sign");
        assert!(header.starts_with("X-Matrix origin=\"origin.example\",destination=\"dest.example:8448\",key=\"ed25519:k1\",sig=\""));
        let parsed = parse(&header);
        assert_eq!(parsed.destination.as_deref(), Some("dest.example:8448"));
        let public = key().public_key();
        let verify = |method, uri, dest, content: Option<&Value>| {
            parsed.verify(method, uri, dest, content, &public)
        };
        let uri = "/_matrix/federation/v1/send/1?x=y";
        assert_eq!(verify("PUT", uri, "dest.example:8448", Some(&body)), Ok(()));
        // Anything else signed differently fails.
        assert!(verify("POST", uri, "dest.example:8448", Some(&body)).is_err());
        assert!(
            verify(
                "PUT",
                "/_matrix/federation/v1/send/2",
                "dest.example:8448",
                Some(&body)
            )
            .is_err()
        );
        assert!(verify("PUT", uri, "other.example", Some(&body)).is_err());
        assert!(verify("PUT", uri, "dest.example:8448", Some(&json!({}))).is_err());
        assert!(verify("PUT", uri, "dest.example:8448", None).is_err());
        let other = SigningKey::from_seed(KeyId::ed25519("k1").expect("id"), [8; 32]);
        assert!(
            parsed
                .verify(
                    "PUT",
                    uri,
                    "dest.example:8448",
                    Some(&body),
                    &other.public_key()
                )
                .is_err()
        );
    }

    #[test]
    fn a_request_we_sign_without_a_body_verifies() {
        // A request without a body, as GET requests are: no `content` is signed.
        let header = authorization_header(&request(None), &key()).expect("sign");
        let parsed = parse(&header);
        let uri = "/_matrix/federation/v1/send/1?x=y";
        parsed
            .verify("PUT", uri, "dest.example:8448", None, &key().public_key())
            .expect("valid");
    }

    #[test]
    fn unquoted_values_any_order_and_case() {
        let parsed = parse("x-matrix  SIG=abc/def+1 , key=ed25519:k1,\torigin=origin.example:8448");
        assert_eq!(parsed.origin, "origin.example:8448");
        assert_eq!(parsed.key.as_str(), "ed25519:k1");
        assert_eq!(parsed.sig, "abc/def+1");
        assert_eq!(parsed.destination, None);
    }

    #[test]
    fn quoted_values_are_unescaped_and_unknown_parameters_ignored() {
        let parsed =
            parse(r#"X-Matrix origin="origin\.example",key="ed25519:k1",sig="s\"x",extra="1,2""#);
        assert_eq!(parsed.origin, "origin.example");
        assert_eq!(parsed.sig, "s\"x");
    }

    #[test]
    fn other_schemes_are_not_ours() {
        assert_eq!(XMatrix::parse("Bearer abc"), Ok(None));
        assert_eq!(XMatrix::parse(""), Ok(None));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for header in [
            "X-Matrix",
            "X-Matrix origin=a.org,key=ed25519:k1",
            "X-Matrix key=ed25519:k1,sig=x",
            "X-Matrix origin=a.org,key=rsa:k1,sig=x",
            "X-Matrix origin=a.org,key=ed25519:,sig=x",
            "X-Matrix origin=not valid,key=ed25519:k1,sig=x",
            "X-Matrix origin=\"a.org,key=ed25519:k1,sig=x",
            "X-Matrix origin=a.org,origin=b.org,key=ed25519:k1,sig=x",
            "X-Matrix origin=a.org key=ed25519:k1,sig=x",
            "X-Matrix origin=a.org,,key=ed25519:k1,sig=x",
            "X-Matrix origin,key=ed25519:k1,sig=x",
            "X-Matrix origin=a.org,key=ed25519:k1,sig=x\"y",
        ] {
            assert!(XMatrix::parse(header).is_err(), "{header}");
        }
        let long = format!(
            "X-Matrix origin=a.org,key=ed25519:k1,sig={}",
            "a".repeat(5000)
        );
        assert!(XMatrix::parse(&long).is_err());
    }
}

#[cfg(test)]
#[path = "auth_props.rs"]
mod props;
