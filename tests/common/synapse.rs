//! A real Synapse from PyPI (`.venv-synapse`, pointed at by `HEARTH_TEST_SYNAPSE_PYTHON`),
//! on loopback, trusting the test CA: started with its ports retried if another process took
//! one first, every Python helper run with a deadline, stopped (its log printed when the test
//! failed) when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::federation::{free_port, lost_port_race};
use super::http::Client;
use super::ok;

/// The password of every user registered on a test Synapse.
pub const PASSWORD: &str = "correct horse battery";

/// The Python with Synapse, or `None` (with a note) on a machine without it; CI insists.
pub fn synapse_python() -> Option<String> {
    let python =
        std::env::var("HEARTH_TEST_SYNAPSE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let present = super::succeeds_within(
        Command::new(&python).args(["-c", "import synapse"]),
        Duration::from_secs(60),
    );
    if present {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none()
            && std::env::var_os("HEARTH_TEST_SYNAPSE_PYTHON").is_none(),
        "{python} lacks Synapse: run the tests with scripts/test"
    );
    eprintln!("SKIPPED: no Synapse; scripts/test installs it into .venv-synapse");
    None
}

/// A Synapse process, stopped when dropped.
pub struct Synapse {
    child: Child,
    /// Its server name, `127.0.0.1:{port}`.
    pub name: String,
    /// Its client API (plain HTTP).
    pub client: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- Synapse log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long Synapse may take to start (it is slow on a loaded machine) and a helper of it
/// (key generation, registration) to run.
const SYNAPSE_START: Duration = Duration::from_secs(90);
const SYNAPSE_TOOL: Duration = Duration::from_secs(120);

impl Synapse {
    /// A Synapse named `127.0.0.1:{port}` trusting the test CA. Its ports are chosen before
    /// it binds them: if another process took one meanwhile, it is started again, from a new
    /// directory, on other ports.
    pub fn start(python: &str, certificates: &Path) -> Synapse {
        Synapse::start_with(python, certificates, "", |port| (port, ())).0
    }

    /// As [`Synapse::start`], with `extra_config` (YAML lines) added to its configuration,
    /// and named after the port `front` gives for its federation port (a relay in front of
    /// it, say), with what `front` returns to keep (made anew if a start is tried again).
    pub fn start_with<T>(
        python: &str,
        certificates: &Path,
        extra_config: &str,
        front: impl Fn(u16) -> (u16, T),
    ) -> (Synapse, T) {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let (federation_port, client_port) = (free_port(), free_port());
            let (named_port, kept) = front(federation_port);
            let ports = (federation_port, client_port, named_port);
            match Synapse::start_on(python, certificates, ports, extra_config) {
                Ok(synapse) => return (synapse, kept),
                Err(log)
                    if lost_port_race(&log, federation_port)
                        || lost_port_race(&log, client_port)
                        || log.contains("Address already in use") =>
                {
                    failures.push(log);
                }
                Err(log) => panic!("Synapse did not start:\n{log}"),
            }
        }
        panic!("Synapse found no free ports:\n{}", failures.join("\n---\n"));
    }

    /// Starts Synapse on these ports; its log if it exits (or does not answer in time).
    fn start_on(
        python: &str,
        certificates: &Path,
        (federation_port, client_port, named_port): (u16, u16, u16),
        extra_config: &str,
    ) -> Result<Synapse, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!("127.0.0.1:{named_port}");
        let path = |file: &str| dir.path().join(file).display().to_string();
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::copy(certificates.join(file), dir.path().join(file)).expect("copy");
        }
        let log_config = format!(
            "version: 1\nformatters:\n  plain:\n    format: '%(asctime)s %(levelname)s %(name)s %(message)s'\n\
             handlers:\n  file:\n    class: logging.FileHandler\n    formatter: plain\n    filename: {}\n\
             root:\n  level: INFO\n  handlers: [file]\ndisable_existing_loggers: false\n",
            path("synapse.log")
        );
        std::fs::write(dir.path().join("log.yaml"), log_config).expect("log config");
        let limits = "{per_second: 1000, burst_count: 1000}";
        let config = format!(
            "server_name: \"{name}\"\n\
             pid_file: {pid}\n\
             listeners:\n\
             \x20 - {{port: {federation_port}, bind_addresses: ['127.0.0.1'], type: http, tls: true, resources: [{{names: [federation], compress: false}}]}}\n\
             \x20 - {{port: {client_port}, bind_addresses: ['127.0.0.1'], type: http, tls: false, resources: [{{names: [client], compress: false}}]}}\n\
             tls_certificate_path: {cert}\n\
             tls_private_key_path: {key}\n\
             federation_custom_ca_list: [{ca}]\n\
             federation_verify_certificates: true\n\
             ip_range_blacklist: []\n\
             ip_range_whitelist: ['127.0.0.0/8']\n\
             database: {{name: sqlite3, args: {{database: {db}}}}}\n\
             log_config: {log}\n\
             media_store_path: {media}\n\
             registration_shared_secret: \"test-secret\"\n\
             report_stats: false\n\
             macaroon_secret_key: \"test-macaroon\"\n\
             form_secret: \"test-form\"\n\
             signing_key_path: {signing}\n\
             trusted_key_servers: []\n\
             suppress_key_server_warning: true\n\
             rc_message: {limits}\n\
             rc_joins: {{local: {limits}, remote: {limits}}}\n\
             rc_login: {{address: {limits}, account: {limits}}}\n\
             rc_invites: {{per_room: {limits}, per_user: {limits}}}\n\
             {extra_config}",
            pid = path("synapse.pid"),
            cert = path("cert.pem"),
            key = path("key.pem"),
            ca = path("ca.pem"),
            db = path("homeserver.db"),
            log = path("log.yaml"),
            media = path("media"),
            signing = path("signing.key"),
        );
        std::fs::write(dir.path().join("homeserver.yaml"), config).expect("config");
        let keys = super::output_within(
            Command::new(python)
                .args(["-m", "synapse.app.homeserver", "-c"])
                .arg(dir.path().join("homeserver.yaml"))
                .arg("--generate-keys"),
            SYNAPSE_TOOL,
        );
        assert!(
            keys.status.success(),
            "{}",
            String::from_utf8_lossy(&keys.stderr)
        );
        let child = spawn(python, dir.path());
        let mut synapse = Synapse {
            child,
            name,
            client: SocketAddr::from(([127, 0, 0, 1], client_port)),
            dir,
        };
        synapse.wait_until_up()?;
        Ok(synapse)
    }

    /// Waits until Synapse answers on its client port; its log if it exits first or does
    /// not answer in time (it is then stopped when dropped).
    fn wait_until_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + SYNAPSE_START;
        while Instant::now() < deadline {
            if Client::plain(self.client)
                .request("GET", "/_matrix/client/versions", &[], None)
                .is_ok_and(|response| response.status == 200)
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("Synapse exited with {status}:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!("Synapse did not answer in time:\n{}", self.log()))
    }

    /// The process ID of its Python process (for its resident memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its directory: configuration, `homeserver.db` (SQLite) and `media/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops it (`SIGTERM`) and starts it again on the same database: the time from the
    /// start to its first `200` on `/_matrix/client/versions` (a cold start).
    pub fn restart(&mut self, python: &str) -> Duration {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let started = Instant::now();
        self.child = spawn(python, self.dir.path());
        while started.elapsed() < SYNAPSE_START {
            if Client::plain(self.client)
                .request("GET", "/_matrix/client/versions", &[], None)
                .is_ok_and(|response| response.status == 200)
            {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("Synapse did not come back:\n{}", self.log());
    }

    /// Its standard error and its log, for a test to look for a line or show on failure.
    pub fn log(&self) -> String {
        let read =
            |file: &str| std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
        format!("{}\n{}", read("stderr.log"), read("synapse.log"))
    }

    /// Registers `user` (password [`PASSWORD`]) and logs them in: their access token.
    pub fn register(&self, python: &str, user: &str) -> String {
        let script = PathBuf::from(python)
            .parent()
            .expect("venv bin")
            .join("register_new_matrix_user");
        let output = super::output_within(
            Command::new(script)
                .args([
                    "-u",
                    user,
                    "-p",
                    PASSWORD,
                    "--no-admin",
                    "-k",
                    "test-secret",
                ])
                .arg(format!("http://{}", self.client)),
            SYNAPSE_TOOL,
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer = Client::plain(self.client).json(
            "POST",
            "/_matrix/client/v3/login",
            None,
            &json!({ "type": "m.login.password",
                     "identifier": { "type": "m.id.user", "user": user },
                     "password": PASSWORD }),
        );
        ok(answer)["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }
}

/// Starts `synapse.app.homeserver` on the configuration in `dir`.
fn spawn(python: &str, dir: &Path) -> Child {
    Command::new(python)
        .args(["-m", "synapse.app.homeserver", "-c"])
        .arg(dir.join("homeserver.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("stderr.log")).expect("stderr"),
        ))
        .spawn()
        .expect("synapse starts")
}
