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

/// The password of every account made by [`start`].
pub const PASSWORD: &str = "correct horse battery";

/// How many times a server is started on a new port when the one it was given was taken.
const BIND_ATTEMPTS: usize = 8;

/// A port on 127.0.0.1 that was free when asked. Another process may take it before the
/// server binds it: whoever starts a server on it must try another port when the bind fails
/// (as [`start`] does); never use it without such a retry.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// Whether a start-up failure (the log of a process that exited) is a bind of `port` that
/// lost the race for it.
pub fn lost_port_race(log: &str, port: u16) -> bool {
    log.contains(&format!("127.0.0.1:{port}")) && log.contains("in use")
}

/// A federating server named `{host}:{port}` (`host` is `localhost` or `127.0.0.1`), with
/// its TLS listener on that port, trusting `ca.pem` (copied from `certificates`), asking
/// `notaries` for keys, with accounts `users` (password [`PASSWORD`]). Its name is in
/// `server.name`.
///
/// The name holds the port, so the port is chosen before the server binds it: if another
/// process took it meanwhile, the server exits, and it is started again from scratch (a new
/// directory: its accounts name the server) on another port.
pub fn start(certificates: &Path, host: &str, notaries: &[&str], users: &[&str]) -> Server {
    start_with(certificates, host, notaries, users, "")
}

/// As [`start`], with `extra` (TOML sections) appended to the server's config.
pub fn start_with(
    certificates: &Path,
    host: &str,
    notaries: &[&str],
    users: &[&str],
    extra: &str,
) -> Server {
    let mut failures = Vec::new();
    for _ in 0..BIND_ATTEMPTS {
        let port = free_port();
        let name = format!("{host}:{port}");
        let dir = tempfile::tempdir().expect("tempdir");
        write_config(dir.path(), certificates, &name, port, notaries);
        if !extra.is_empty() {
            let path = dir.path().join("hearth.toml");
            let config = std::fs::read_to_string(&path).expect("config");
            std::fs::write(&path, format!("{config}\n{extra}")).expect("config");
        }
        add_users(dir.path(), users);
        match Server::start_in(dir.path(), &[], &[]) {
            Ok(mut server) => {
                server.keep_dir(dir);
                server.name = name;
                return server;
            }
            Err(log) if lost_port_race(&log, port) => failures.push(log),
            Err(log) => panic!("{name} did not start:\n{log}"),
        }
    }
    panic!(
        "no free port in {BIND_ATTEMPTS} attempts:\n{}",
        failures.join("\n---\n")
    );
}

fn write_config(dir: &Path, certificates: &Path, name: &str, port: u16, notaries: &[&str]) {
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(certificates.join(file), dir.join(file)).expect("copy");
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
         [federation]\ntrusted_key_servers = [{notaries}]\nextra_ca_file = \"ca.pem\"\n\
         allow_private_addresses = true\n"
    );
    std::fs::write(dir.join("hearth.toml"), config).expect("config");
}

fn add_users(dir: &Path, users: &[&str]) {
    for user in users {
        let output = hearth(dir, &["user", "add", user], &format!("{PASSWORD}\n"));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Two Hearth servers federating over TLS on loopback, trusting the same test CA: A (with
/// accounts `users_a`) and B (with `users_b`). Their names are `{host}:{port}`.
pub struct Pair {
    pub a: Server,
    pub b: Server,
    pub name_a: String,
    pub name_b: String,
    /// The test CA and the servers' certificate, to start more servers trusting them.
    pub certificates: tempfile::TempDir,
}

impl Pair {
    /// A named by an IP literal (`127.0.0.1:port`, discovery step 1), B by a host name with
    /// a port (`localhost:port`, step 2).
    pub fn start(users_a: &[&str], users_b: &[&str]) -> Pair {
        Pair::start_on(("127.0.0.1", users_a), ("localhost", users_b))
    }

    /// A and B on the given hosts (`localhost` or `127.0.0.1`) with these accounts; B
    /// starts first.
    pub fn start_on(
        (host_a, users_a): (&str, &[&str]),
        (host_b, users_b): (&str, &[&str]),
    ) -> Pair {
        let certificates = tempfile::tempdir().expect("tempdir");
        write_certificates(certificates.path());
        let b = start(certificates.path(), host_b, &[], users_b);
        let a = start(certificates.path(), host_a, &[], users_a);
        Pair {
            name_a: a.name.clone(),
            name_b: b.name.clone(),
            a,
            b,
            certificates,
        }
    }

    /// Another server trusting the same CA, on `host`, with accounts `users`.
    pub fn start_another(&self, host: &str, users: &[&str]) -> Server {
        start(self.certificates.path(), host, &[], users)
    }

    /// Signs requests as B, to A, with B's real key (which A fetches from B).
    pub fn key_b(&self) -> SigningKey {
        signing_key(&self.b)
    }

    /// Logs `user` of A in; the access token.
    pub fn login_a(&self, user: &str) -> String {
        super::login_token(&self.a, user, PASSWORD)
    }

    /// Logs `user` of B in; the access token.
    pub fn login_b(&self, user: &str) -> String {
        super::login_token(&self.b, user, PASSWORD)
    }

    /// A room created on A by `creator` (a token of A) with the `createRoom` `body`, joined
    /// over federation by each of `joiners` (tokens of B) through A; its ID.
    pub fn shared_room(&self, creator: &str, body: &serde_json::Value, joiners: &[&str]) -> String {
        let room = create_room(&self.a, creator, body);
        for joiner in joiners {
            join(&self.b, joiner, &room, &self.name_a);
        }
        room
    }
}

/// Creates a room on `server` as `token`'s user with the `createRoom` `body`; its ID.
pub fn create_room(server: &Server, token: &str, body: &serde_json::Value) -> String {
    super::ok(
        server
            .client()
            .json("POST", "/_matrix/client/v3/createRoom", Some(token), body),
    )["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned()
}

/// `token`'s user of `server` joins `room` through `via`; the answer, whatever it is.
pub fn join_via(server: &Server, token: &str, room: &str, via: &str) -> http::Response {
    server.client().json(
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            super::query_encode(room),
            super::query_encode(via)
        ),
        Some(token),
        &serde_json::json!({}),
    )
}

/// Like [`join_via`], for a join that must succeed.
pub fn join(server: &Server, token: &str, room: &str, via: &str) {
    let response = join_via(server, token, room, via);
    assert_eq!(
        response.status,
        200,
        "join {room} via {via}: {}\n{}",
        String::from_utf8_lossy(&response.body),
        server.log_text()
    );
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
