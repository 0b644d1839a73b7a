//! Federation test support: a CA and a certificate for `localhost` and `127.0.0.1`, free
//! ports, real Hearth servers federating over TLS on loopback, and requests signed as one
//! of them with its real key.

use std::net::TcpListener;
use std::path::Path;

use hearth::federation::auth::{RequestToSign, authorization_header};
use hearth::matrix::crypto::SigningKey;

use super::{Server, hearth, http};

/// Writes `ca.pem`, `cert.pem` and `key.pem` (for `localhost` and `127.0.0.1`) into `dir`.
/// The certificates carry the usual extensions (key usages, names) so that strict verifiers
/// (OpenSSL, in Synapse) accept them as well as rustls.
pub fn write_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Hearth test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
    std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).expect("write");
}

/// A free port on 127.0.0.1 (free when asked: the server binds it right after).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// A federating server named `name`, with its TLS listener on `port`, trusting `ca.pem`
/// (copied from `certificates`), asking `notaries` for keys, with accounts `users`
/// (password `correct horse battery`).
pub fn start(
    certificates: &Path,
    name: &str,
    port: u16,
    notaries: &[&str],
    users: &[&str],
) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(certificates.join(file), dir.path().join(file)).expect("copy");
    }
    let notaries = notaries
        .iter()
        .map(|notary| format!("\"{notary}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "[server]\nserver_name = \"{name}\"\nworkers = 1\n\n\
         [database]\npath = \"data\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\ntls = true\n\n\
         [tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n\n\
         [federation]\ntrusted_key_servers = [{notaries}]\nextra_ca_file = \"ca.pem\"\n"
    );
    std::fs::write(dir.path().join("hearth.toml"), config).expect("config");
    for user in users {
        let output = hearth(
            dir.path(),
            &["user", "add", user],
            "correct horse battery\n",
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut server = Server::start_in(dir.path(), &[], &[]).expect("server starts");
    server.keep_dir(dir);
    server
}

/// The signing key a server made for itself in its data directory.
pub fn signing_key(server: &Server) -> SigningKey {
    SigningKey::load(&server.dir.join("data/signing.key")).expect("signing key")
}

/// Who signs a request, for whom: `origin` with `key`, to `destination`.
pub struct Signer<'a> {
    pub origin: &'a str,
    pub key: &'a SigningKey,
    pub destination: &'a str,
}

impl Signer<'_> {
    /// Sends `method path` (with a JSON `body`, if any) to `server`, signed with `X-Matrix`.
    pub fn send(
        &self,
        server: &Server,
        method: &'static str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> http::Response {
        let request = RequestToSign {
            method,
            uri: path,
            origin: self.origin,
            destination: self.destination,
            content: body,
        };
        let authorization = authorization_header(&request, self.key).expect("sign");
        let bytes = body.map(|body| serde_json::to_vec(body).expect("serialize"));
        let mut headers = vec![("Authorization", authorization.as_str())];
        if bytes.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        server
            .client()
            .request(method, path, &headers, bytes.as_deref())
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
    }

    pub fn get(&self, server: &Server, path: &str) -> http::Response {
        self.send(server, "GET", path, None)
    }

    pub fn post(&self, server: &Server, path: &str, body: &serde_json::Value) -> http::Response {
        self.send(server, "POST", path, Some(body))
    }
}
