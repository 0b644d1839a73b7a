//! `hearth check` (issue 14, item 5) against loopback set-ups with real names: each test adds
//! its own names to `/etc/hosts` (removed again when it ends, failed or not), makes a test CA
//! and certificates for them, starts a real Hearth (or the fake server, for servers that
//! misbehave) with TLS on `127.0.0.1`, and runs the `hearth check` binary.
//!
//! Covered: step 2 (`name:port`) and step 3.2 (a well-known delegation, fetched from a port
//! given by the test-only `HEARTH_CHECK_WELL_KNOWN_PORT`, as no test can bind 443), the TLS
//! verification against the extra CA file, the key served, client well-known, `/versions`
//! and CORS, and the clock line. The SRV steps are unit tests (`federation::tests`), with
//! the SRV answers given: no test can serve DNS records. Needs root (CI runs as root) to
//! write `/etc/hosts`.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::fake::{FakeServer, Handler};
use common::federation::{free_port, lost_port_race};
use common::{BINARY, Server, output_within};
use hearth::matrix::crypto::{KeyId, SigningKey, encode_base64, random_bytes};
use serde_json::json;

const HOSTS: &str = "/etc/hosts";
const MARK: &str = "# hearth check test";
/// Tests run in parallel processes: changes to `/etc/hosts` take this lock exclusively, and
/// a running `hearth check` holds it shared, so no check reads the file half rewritten and
/// no rewrite drops another test's fresh names.
const HOSTS_LOCK: &str = "/tmp/hearth-check-hosts.lock";

/// The lock on `/etc/hosts` changes, held until dropped.
fn lock_hosts(exclusive: bool) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HOSTS_LOCK)
        .expect("open the hosts lock");
    let locked = if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    };
    locked.expect("lock");
    file
}

/// Names in `/etc/hosts` for 127.0.0.1, removed when dropped (also when the test fails).
struct HostsEntries {
    names: Vec<String>,
}

impl HostsEntries {
    /// Adds `count` new names, unique to this process and call.
    fn add(count: usize) -> HostsEntries {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, Ordering::SeqCst);
        let names: Vec<String> = (0..count)
            .map(|index| format!("hearth-check-{}-{call}-{index}.test", std::process::id()))
            .collect();
        let lines: String = names
            .iter()
            .map(|name| format!("127.0.0.1\t{name}\t{MARK}\n"))
            .collect();
        let _lock = lock_hosts(true);
        let mut hosts = std::fs::OpenOptions::new()
            .append(true)
            .open(HOSTS)
            .unwrap_or_else(|err| panic!("this test writes {HOSTS} and must run as root: {err}"));
        hosts
            .write_all(lines.as_bytes())
            .expect("append to /etc/hosts");
        HostsEntries { names }
    }
}

impl Drop for HostsEntries {
    fn drop(&mut self) {
        let _lock = lock_hosts(true);
        let Ok(text) = std::fs::read_to_string(HOSTS) else {
            return;
        };
        let kept: String = text
            .lines()
            .filter(|line| {
                !(line.ends_with(MARK)
                    && line
                        .split_whitespace()
                        .any(|word| self.names.iter().any(|name| name == word)))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let _ = std::fs::write(HOSTS, kept);
    }
}

/// What certificate the server presents.
#[derive(Clone, Copy)]
enum Certificate<'a> {
    /// Signed by the test CA, for this name.
    For(&'a str),
    /// For the right name, but signed by nobody we trust.
    SelfSigned(&'a str),
}

/// Writes `ca.pem` (the test CA, which the checking side trusts), `cert.pem` and `key.pem`.
fn write_certificates(dir: &Path, certificate: Certificate<'_>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Hearth check test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let name = match certificate {
        Certificate::For(name) | Certificate::SelfSigned(name) => name,
    };
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf_params = CertificateParams::new(vec![name.to_owned()]).expect("params");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, name);
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = match certificate {
        Certificate::For(_) => leaf_params.signed_by(&leaf_key, &issuer),
        Certificate::SelfSigned(_) => leaf_params.self_signed(&leaf_key),
    }
    .expect("leaf");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
    std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).expect("write");
}

/// A new signing key, and its file as `hearth` writes it.
fn new_key(version: &str) -> (SigningKey, String) {
    let seed = random_bytes::<32>();
    let key = SigningKey::from_seed(KeyId::ed25519(version).expect("id"), seed);
    (key, format!("ed25519 {version} {}\n", encode_base64(&seed)))
}

fn write_key_file(path: &Path, line: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, line).expect("key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A config `hearth check` reads: our name, our key file, the test CA.
fn write_check_config(dir: &Path, file: &str, server_name: &str, key_file: &str) {
    let config = format!(
        "[server]\nserver_name = \"{server_name}\"\nsigning_key = \"{key_file}\"\n\n\
         [database]\npath = \"data\"\n\n\
         [federation]\nextra_ca_file = \"ca.pem\"\n"
    );
    std::fs::write(dir.join(file), config).expect("config");
}

/// Runs `hearth check --config FILE` in `dir`, fetching well-known files from `port`.
fn check(dir: &Path, file: &str, well_known_port: u16) -> (bool, String) {
    let _lock = lock_hosts(false);
    let output = output_within(
        Command::new(BINARY)
            .args(["check", "--config", file])
            .current_dir(dir)
            .env_remove("HEARTH_CONFIG")
            .env("HEARTH_CHECK_WELL_KNOWN_PORT", well_known_port.to_string()),
        Duration::from_secs(90),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Seen with `--no-capture`, and in a failing test's output.
    println!("$ hearth check --config {file}\n{text}");
    (output.status.success(), text)
}

/// The line of `step`, which must start with `mark`.
fn line<'a>(output: &'a str, step: &str) -> &'a str {
    output
        .lines()
        .find(|line| {
            line[line.find(' ').map_or(0, |space| space + 1)..].starts_with(&format!("{step}:"))
        })
        .unwrap_or_else(|| panic!("no {step} line in:\n{output}"))
}

fn assert_line(output: &str, mark: &str, step: &str, needle: &str) {
    let found = line(output, step);
    assert!(
        found.starts_with(mark) && found.contains(needle),
        "expected `{mark} {step}: …{needle}…`, got:\n{output}"
    );
}

const STEPS: [&str; 6] = [
    "resolve",
    "tls",
    "server keys",
    "client well-known",
    "client versions",
    "clock",
];

/// A real Hearth on `host`, its TLS listener on a port chosen first; `name_with_port`
/// decides whether the server name is `host:port` or `host` (then delegated by well-known
/// to `host:port`). Returns the server and the port.
fn start_hearth(host: &str, name_with_port: bool) -> (Server, u16) {
    for _ in 0..8 {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        write_certificates(dir.path(), Certificate::For(host));
        let (server_name, delegation) = if name_with_port {
            (format!("{host}:{port}"), String::new())
        } else {
            (host.to_owned(), format!("server = \"{host}:{port}\"\n"))
        };
        let config = format!(
            "[server]\nserver_name = \"{server_name}\"\nworkers = 1\n\n\
             [database]\npath = \"data\"\n\n\
             [[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
             [[listeners]]\naddress = \"127.0.0.1:{port}\"\ntls = true\n\n\
             [tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n\n\
             [federation]\nextra_ca_file = \"ca.pem\"\nallow_private_addresses = true\n\n\
             [well_known]\nclient = \"https://{host}:{port}\"\n{delegation}"
        );
        std::fs::write(dir.path().join("hearth.toml"), config).expect("config");
        match Server::start_in(dir.path(), &[], &[]) {
            Ok(mut server) => {
                server.keep_dir(dir);
                server.name = server_name;
                return (server, port);
            }
            Err(log) if lost_port_race(&log, port) => continue,
            Err(log) => panic!("hearth did not start:\n{log}"),
        }
    }
    panic!("no free port");
}

#[test]
fn a_healthy_server_named_with_its_port_passes_every_step() {
    let hosts = HostsEntries::add(1);
    let host = &hosts.names[0];
    let (server, port) = start_hearth(host, true);
    let (passed, output) = check(&server.dir, "hearth.toml", port);
    assert!(passed, "{output}");
    for step in STEPS {
        assert_line(&output, "✓", step, "");
    }
    assert_line(
        &output,
        "✓",
        "resolve",
        &format!("→ 127.0.0.1:{port} by step 2"),
    );
    assert_line(
        &output,
        "✓",
        "tls",
        &format!("certificate valid for {host}"),
    );
    assert_line(&output, "✓", "server keys", "matches");
    assert_line(
        &output,
        "✓",
        "client versions",
        "Access-Control-Allow-Origin: *",
    );

    // The same name checked with another key on disk: another server answers for it.
    let (_, other) = new_key("other");
    write_key_file(&server.dir.join("other.key"), &other);
    write_check_config(&server.dir, "other.toml", &server.name, "other.key");
    let (passed, output) = check(&server.dir, "other.toml", port);
    assert!(!passed, "{output}");
    assert_line(&output, "✗", "server keys", "not our key ed25519:other");
    assert_line(&output, "✓", "tls", "");
}

#[test]
fn a_well_known_delegation_is_followed() {
    let hosts = HostsEntries::add(1);
    let host = &hosts.names[0];
    let (server, port) = start_hearth(host, false);
    let (passed, output) = check(&server.dir, "hearth.toml", port);
    assert!(passed, "{output}");
    for step in STEPS {
        assert_line(&output, "✓", step, "");
    }
    assert_line(
        &output,
        "✓",
        "resolve",
        "by step 3.2: well-known delegation with explicit port",
    );
    assert_line(
        &output,
        "✓",
        "resolve",
        &format!("/.well-known/matrix/server delegates to {host}:{port}"),
    );
}

/// A fake server on `host` presenting `certificate`, answering client discovery with
/// `cors` or not, delegating `/.well-known/matrix/server` to `delegation` if given, with
/// `key`. Returns it and the directory holding `ca.pem` (trusted by the check).
fn start_fake(
    host: &str,
    certificate: Certificate<'_>,
    key: SigningKey,
    delegation: Option<String>,
) -> (FakeServer, tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_certificates(dir.path(), certificate);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let name = format!("{host}:{port}");
    let base_url = format!("https://{host}:{port}");
    let handler: Handler = Arc::new(move |request| match request.path.as_str() {
        "/.well-known/matrix/client" => (200, json!({"m.homeserver": {"base_url": base_url}})),
        "/.well-known/matrix/server" => match &delegation {
            Some(delegated) => (200, json!({ "m.server": delegated })),
            None => (404, json!({"errcode": "M_NOT_FOUND"})),
        },
        // The fake sets no CORS headers.
        "/_matrix/client/versions" => (200, json!({"versions": ["v1.11"]})),
        _ => (404, json!({"errcode": "M_NOT_FOUND"})),
    });
    let fake = FakeServer::start(dir.path(), (listener, name), key, handler);
    (fake, dir, port)
}

#[test]
fn another_server_on_the_name_and_missing_cors_fail() {
    let hosts = HostsEntries::add(1);
    let host = &hosts.names[0];
    let (key, key_line) = new_key("ours");
    let (fake, dir, port) = start_fake(host, Certificate::For(host), key, None);
    write_key_file(&dir.path().join("ours.key"), &key_line);
    write_check_config(dir.path(), "check.toml", &fake.name, "ours.key");
    let (passed, output) = check(dir.path(), "check.toml", port);
    assert!(!passed, "{output}");
    assert_line(&output, "✓", "server keys", "ed25519:ours matches");
    assert_line(&output, "✓", "client well-known", "m.homeserver.base_url");
    assert_line(
        &output,
        "✗",
        "client versions",
        "no `Access-Control-Allow-Origin: *` header",
    );

    let (_, other_line) = new_key("theirs");
    write_key_file(&dir.path().join("theirs.key"), &other_line);
    write_check_config(dir.path(), "theirs.toml", &fake.name, "theirs.key");
    let (passed, output) = check(dir.path(), "theirs.toml", port);
    assert!(!passed, "{output}");
    assert_line(
        &output,
        "✗",
        "server keys",
        "serves ed25519:ours, not our key ed25519:theirs",
    );
}

#[test]
fn a_certificate_for_another_name_fails() {
    let hosts = HostsEntries::add(2);
    let (host, elsewhere) = (&hosts.names[0], &hosts.names[1]);
    let (key, key_line) = new_key("a");
    let (fake, dir, port) = start_fake(host, Certificate::For(elsewhere), key, None);
    write_key_file(&dir.path().join("a.key"), &key_line);
    write_check_config(dir.path(), "check.toml", &fake.name, "a.key");
    let (passed, output) = check(dir.path(), "check.toml", port);
    assert!(!passed, "{output}");
    assert_line(&output, "✓", "resolve", "by step 2");
    assert_line(
        &output,
        "✗",
        "tls",
        &format!("the certificate is not valid for {host}"),
    );
    assert_line(&output, "✗", "server keys", "not checked");
}

#[test]
fn a_self_signed_certificate_fails() {
    let hosts = HostsEntries::add(1);
    let host = &hosts.names[0];
    let (key, key_line) = new_key("a");
    let (fake, dir, port) = start_fake(host, Certificate::SelfSigned(host), key, None);
    write_key_file(&dir.path().join("a.key"), &key_line);
    write_check_config(dir.path(), "check.toml", &fake.name, "a.key");
    let (passed, output) = check(dir.path(), "check.toml", port);
    assert!(!passed, "{output}");
    assert_line(
        &output,
        "✗",
        "tls",
        "the certificate is not signed by a trusted CA",
    );
}

#[test]
fn a_well_known_pointing_nowhere_fails() {
    let hosts = HostsEntries::add(1);
    let host = &hosts.names[0];
    let (key, key_line) = new_key("a");
    // Port 1: nothing listens there.
    let nowhere = format!("{host}:1");
    let (_fake, dir, port) = start_fake(host, Certificate::For(host), key, Some(nowhere.clone()));
    write_key_file(&dir.path().join("a.key"), &key_line);
    write_check_config(dir.path(), "check.toml", host, "a.key");
    let (passed, output) = check(dir.path(), "check.toml", port);
    assert!(!passed, "{output}");
    assert_line(
        &output,
        "✓",
        "resolve",
        &format!("/.well-known/matrix/server delegates to {nowhere}"),
    );
    assert_line(&output, "✗", "tls", "127.0.0.1:1: connection refused");
    assert_line(&output, "✗", "server keys", "not checked");
}
