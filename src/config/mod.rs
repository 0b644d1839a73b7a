//! Configuration: a TOML file read once into typed, validated sections.
//!
//! Every key has a default (documented in `config.example.toml`), except `server.server_name`,
//! which a config file must set. Unknown keys are refused so that a typo does not silently
//! fall back to a default. Errors name the key and, where the file has it, the line.
//! Relative paths are taken relative to the directory of the config file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ruma::OwnedServerName;
use serde::{Deserialize, Serialize};

mod features;
mod retention;
pub(crate) use features::{MediaConfig, MetricsConfig, PushConfig, UrlPreviewConfig, VoipConfig};
use features::{validate_media, validate_url_preview, validate_voip};
pub(crate) use retention::RetentionConfig;
use retention::validate_retention;

/// The whole configuration, validated.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) listeners: Vec<ListenerConfig>,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) database: DatabaseConfig,
    pub(crate) limits: LimitsConfig,
    pub(crate) registration: RegistrationConfig,
    pub(crate) federation: FederationConfig,
    pub(crate) well_known: WellKnownConfig,
    pub(crate) url_preview: UrlPreviewConfig,
    pub(crate) logging: LoggingConfig,
    pub(crate) media: MediaConfig,
    pub(crate) push: PushConfig,
    pub(crate) voip: VoipConfig,
    pub(crate) retention: RetentionConfig,
    pub(crate) metrics: MetricsConfig,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServerConfig {
    /// The name in every user ID (`@alice:server_name`) and room alias. Cannot change later.
    pub(crate) server_name: OwnedServerName,
    /// The ed25519 key that signs our events and federation requests.
    pub(crate) signing_key: PathBuf,
    /// HTTP worker threads.
    pub(crate) workers: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerConfig {
    pub(crate) address: SocketAddr,
    #[serde(default)]
    pub(crate) tls: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub(crate) certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) private_key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DatabaseConfig {
    /// The data directory: the database, the signing key and the lock file live here.
    pub(crate) path: PathBuf,
    /// Memory sled may use for its page cache, in MiB.
    pub(crate) cache_capacity_mb: u64,
}

impl DatabaseConfig {
    /// The page cache size in bytes (validated to at most 64 GiB, so this cannot overflow).
    pub(crate) fn cache_capacity_bytes(&self) -> u64 {
        self.cache_capacity_mb.saturating_mul(1024 * 1024)
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            path: PathBuf::from("hearth-data"),
            cache_capacity_mb: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsConfig {
    /// Largest request body accepted, in bytes (`413 M_TOO_LARGE` above it).
    pub(crate) max_request_body_bytes: usize,
    /// Seconds in-flight requests get to finish when Hearth is asked to stop.
    pub(crate) shutdown_grace_seconds: u64,
    /// Seconds an idle HTTP connection is kept open for the client's next request.
    pub(crate) keep_alive_seconds: u64,
    /// Open connections accepted at once, across all workers; more wait in the backlog.
    pub(crate) max_connections: usize,
    /// Login and registration attempts allowed per client address and minute.
    pub(crate) auth_attempts_per_minute: u32,
    /// Trust `X-Forwarded-For` from a reverse proxy on this machine (loopback peers only).
    pub(crate) trust_forwarded_for: bool,
    /// Bytes of request bodies held at once, across the server, for requests nobody has
    /// authenticated yet (federation requests before their signature is checked, `/login`,
    /// `/register`): more get `429 M_LIMIT_EXCEEDED` instead of more memory.
    pub(crate) unauthenticated_body_bytes: usize,
    /// Seconds a request body has to arrive in full (`408` and the connection closed after).
    pub(crate) body_timeout_seconds: u64,
    /// Requests in flight at once from one client address (an IPv6 /64); more get `429` and
    /// the connection closed.
    pub(crate) max_requests_per_address: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            // A federation transaction may carry 50 PDUs of up to 64 KiB plus 100 EDUs.
            max_request_body_bytes: 8 * 1024 * 1024,
            shutdown_grace_seconds: 10,
            keep_alive_seconds: 75,
            max_connections: 1024,
            auth_attempts_per_minute: 10,
            trust_forwarded_for: true,
            // Four transactions of the largest size, or thousands of logins, at once.
            unauthenticated_body_bytes: 32 * 1024 * 1024,
            // A 8 MiB transaction needs 2.2 Mbit/s to arrive in time.
            body_timeout_seconds: 30,
            // A household behind one address: a few devices, each with a long-polling /sync
            // and a few requests, stay far below it.
            max_requests_per_address: 64,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RegistrationConfig {
    /// Allow `/register` at all (with a registration token unless `open`).
    pub(crate) enabled: bool,
    /// Allow anyone to register without a token. Dangerous on a public server.
    pub(crate) open: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FederationConfig {
    pub(crate) enabled: bool,
    /// Notary servers asked for other servers' keys.
    pub(crate) trusted_key_servers: Vec<String>,
    /// Extra PEM CA bundle trusted for outbound federation, besides the system's roots.
    pub(crate) extra_ca_file: Option<PathBuf>,
    /// Tell other servers our users' presence (costly: every change goes to every server
    /// sharing a room with the user).
    pub(crate) send_presence: bool,
    /// Accept other servers' presence EDUs.
    pub(crate) receive_presence: bool,
    /// Seconds before the first retry of a server that did not take a transaction; the wait
    /// doubles with each failure, up to a day.
    pub(crate) retry_initial_seconds: u64,
    /// Let outbound federation connect to loopback, LAN and other non-public addresses
    /// (off: any user could make the server probe the owner's network). For tests and
    /// LAN-only set-ups.
    pub(crate) allow_private_addresses: bool,
    /// The largest `send_join` answer taken when joining a room held elsewhere (the whole
    /// state and auth chain of the room: a 100,000-state room sends 100-200 MB). It goes to a
    /// file in the data directory, not to memory; a larger answer is refused.
    pub(crate) max_join_answer_bytes: u64,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            enabled: true,
            trusted_key_servers: vec!["matrix.org".to_owned()],
            extra_ca_file: None,
            send_presence: false,
            receive_presence: false,
            retry_initial_seconds: 30,
            allow_private_addresses: false,
            max_join_answer_bytes: 1024 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WellKnownConfig {
    /// Served as `m.homeserver.base_url` at `/.well-known/matrix/client`.
    pub(crate) client: Option<String>,
    /// Served as `m.server` at `/.well-known/matrix/server` (`host` or `host:port`).
    pub(crate) server: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LoggingConfig {
    /// A level (`info`) or a list of `target=level` directives (`info,hearth=debug`).
    /// `RUST_LOG`, when set, wins.
    pub(crate) level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".to_owned(),
        }
    }
}

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    #[serde(default = "default_listeners")]
    listeners: Vec<ListenerConfig>,
    tls: Option<TlsConfig>,
    #[serde(default)]
    database: DatabaseConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    registration: RegistrationConfig,
    #[serde(default)]
    federation: FederationConfig,
    #[serde(default)]
    well_known: WellKnownConfig,
    #[serde(default)]
    url_preview: UrlPreviewConfig,
    #[serde(default)]
    logging: LoggingConfig,
    #[serde(default)]
    media: MediaConfig,
    #[serde(default)]
    push: PushConfig,
    #[serde(default)]
    voip: VoipConfig,
    #[serde(default)]
    retention: RetentionConfig,
    #[serde(default)]
    metrics: MetricsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    server_name: String,
    signing_key: Option<PathBuf>,
    workers: Option<usize>,
}

fn default_listeners() -> Vec<ListenerConfig> {
    vec![ListenerConfig {
        address: SocketAddr::from(([127, 0, 0, 1], 8008)),
        tls: false,
    }]
}

/// A configuration problem, naming the key and the line where the file has them.
#[derive(Debug)]
pub struct ConfigError {
    pub(crate) file: Option<PathBuf>,
    pub(crate) key: Option<String>,
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration")?;
        if let Some(file) = &self.file {
            write!(f, " in {}", file.display())?;
        }
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The configuration `hearth serve` uses when there is no config file: a server named
    /// `localhost`, data in `./hearth-data`, plain HTTP on 127.0.0.1:8008.
    pub(crate) fn embedded_default() -> Config {
        let database = DatabaseConfig::default();
        Config {
            server: ServerConfig {
                server_name: OwnedServerName::try_from("localhost").expect("valid server name"),
                signing_key: database.path.join("signing.key"),
                workers: default_workers(),
            },
            listeners: default_listeners(),
            tls: None,
            database,
            limits: LimitsConfig::default(),
            registration: RegistrationConfig::default(),
            federation: FederationConfig::default(),
            well_known: WellKnownConfig::default(),
            url_preview: UrlPreviewConfig::default(),
            logging: LoggingConfig::default(),
            media: MediaConfig::default(),
            push: PushConfig::default(),
            voip: VoipConfig::default(),
            retention: RetentionConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }

    /// Parses and validates config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|err| syntax_error(text, &err))?;
        validate(raw, base).map_err(|invalid| ConfigError {
            file: None,
            line: line_of_key(text, &invalid.key),
            key: Some(invalid.key.join(".")),
            message: invalid.message,
        })
    }

    /// The effective settings as TOML, for `hearth check-config`.
    pub(crate) fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|err| format!("# cannot display: {err}\n"))
    }
}

/// One HTTP worker: it answers a family's requests with room to spare (sends wait on the
/// disk, not the processor), and each more costs its own thread, runtime, copy of the
/// routes and malloc arena (issue 14, memory at rest). `server.workers` sets more.
fn default_workers() -> usize {
    1
}

/// A validation failure: the key path (`["listeners", "0", "address"]`) and what is wrong.
struct Invalid {
    key: Vec<String>,
    message: String,
}

fn invalid(key: &[&str], message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.iter().map(|part| (*part).to_owned()).collect(),
        message: message.into(),
    }
}

fn validate(raw: RawConfig, base: &Path) -> Result<Config, Invalid> {
    let server_name = OwnedServerName::try_from(raw.server.server_name.as_str()).map_err(|_| {
        invalid(
            &["server", "server_name"],
            format!(
                "`{}` is not a valid server name (a DNS name or IP literal, optionally with :port)",
                raw.server.server_name
            ),
        )
    })?;
    let workers = raw.server.workers.unwrap_or_else(default_workers);
    if workers == 0 || workers > 64 {
        return Err(invalid(&["server", "workers"], "must be between 1 and 64"));
    }
    validate_listeners(&raw.listeners, raw.tls.is_some())?;
    check_range(
        &["database", "cache_capacity_mb"],
        raw.database.cache_capacity_mb,
        1,
        65_536,
    )?;
    let limits = &raw.limits;
    check_range(
        &["limits", "max_request_body_bytes"],
        limits.max_request_body_bytes as u64,
        1024,
        1 << 30,
    )?;
    // systemd's unit gives 30 s to stop: a longer grace would be cut by SIGKILL before the
    // final flush, so it is bounded well below that.
    check_range(
        &["limits", "shutdown_grace_seconds"],
        limits.shutdown_grace_seconds,
        1,
        25,
    )?;
    check_range(
        &["limits", "keep_alive_seconds"],
        limits.keep_alive_seconds,
        1,
        3600,
    )?;
    check_range(
        &["limits", "max_connections"],
        limits.max_connections as u64,
        16,
        1 << 20,
    )?;
    check_range(
        &["limits", "unauthenticated_body_bytes"],
        limits.unauthenticated_body_bytes as u64,
        64 * 1024,
        1 << 32,
    )?;
    check_range(
        &["limits", "body_timeout_seconds"],
        limits.body_timeout_seconds,
        1,
        600,
    )?;
    check_range(
        &["limits", "max_requests_per_address"],
        limits.max_requests_per_address as u64,
        1,
        1 << 20,
    )?;
    validate_media(&raw.media)?;
    validate_well_known(&raw.well_known)?;
    validate_federation(&raw.federation)?;
    validate_url_preview(&raw.url_preview)?;
    validate_voip(&raw.voip)?;
    validate_retention(&raw.retention)?;
    parse_filter(&raw.logging.level).map_err(|err| invalid(&["logging", "level"], err))?;

    let data_dir = resolve(base, &raw.database.path);
    let signing_key = raw
        .server
        .signing_key
        .map(|path| resolve(base, &path))
        .unwrap_or_else(|| data_dir.join("signing.key"));
    let tls = raw.tls.map(|tls| TlsConfig {
        certificate: resolve(base, &tls.certificate),
        private_key: resolve(base, &tls.private_key),
    });
    let federation = FederationConfig {
        extra_ca_file: raw
            .federation
            .extra_ca_file
            .map(|path| resolve(base, &path)),
        ..raw.federation
    };
    Ok(Config {
        server: ServerConfig {
            server_name,
            signing_key,
            workers,
        },
        listeners: raw.listeners,
        tls,
        database: DatabaseConfig {
            path: data_dir,
            ..raw.database
        },
        limits: raw.limits,
        registration: raw.registration,
        federation,
        well_known: raw.well_known,
        url_preview: raw.url_preview,
        logging: raw.logging,
        media: raw.media,
        push: raw.push,
        voip: raw.voip,
        retention: raw.retention,
        metrics: raw.metrics,
    })
}

fn check_range(key: &[&str], value: u64, min: u64, max: u64) -> Result<(), Invalid> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be between {min} and {max}, not {value}"),
        ))
    }
}

fn validate_listeners(listeners: &[ListenerConfig], have_tls: bool) -> Result<(), Invalid> {
    if listeners.is_empty() {
        return Err(invalid(&["listeners"], "at least one listener is needed"));
    }
    for (position, listener) in listeners.iter().enumerate() {
        let index = position.to_string();
        if listener.tls && !have_tls {
            return Err(invalid(
                &["listeners", &index, "tls"],
                "this listener uses TLS, but there is no [tls] section with certificate and private_key",
            ));
        }
        let listed_before = listeners[..position]
            .iter()
            .any(|other| other.address == listener.address);
        if listed_before && listener.address.port() != 0 {
            return Err(invalid(
                &["listeners", &index, "address"],
                format!("{} is listed twice", listener.address),
            ));
        }
    }
    Ok(())
}

fn validate_well_known(well_known: &WellKnownConfig) -> Result<(), Invalid> {
    if let Some(client) = &well_known.client
        && !(client.starts_with("https://") || client.starts_with("http://"))
    {
        return Err(invalid(
            &["well_known", "client"],
            "must be a URL starting with https:// (or http://)",
        ));
    }
    if let Some(server) = &well_known.server
        && OwnedServerName::try_from(server.as_str()).is_err()
    {
        return Err(invalid(
            &["well_known", "server"],
            "must be a host name with an optional port, like `matrix.example.org:443`",
        ));
    }
    Ok(())
}

fn validate_federation(federation: &FederationConfig) -> Result<(), Invalid> {
    if !(1..=3600).contains(&federation.retry_initial_seconds) {
        return Err(invalid(
            &["federation", "retry_initial_seconds"],
            "must be from 1 to 3600",
        ));
    }
    if federation.max_join_answer_bytes < 1024 * 1024 {
        return Err(invalid(
            &["federation", "max_join_answer_bytes"],
            "must be at least 1 MiB (1048576): a small room's answer takes that much",
        ));
    }
    for (position, server) in federation.trusted_key_servers.iter().enumerate() {
        if OwnedServerName::try_from(server.as_str()).is_err() {
            return Err(invalid(
                &["federation", "trusted_key_servers", &position.to_string()],
                format!(
                    "`{server}` is not a server name (like `matrix.org` or `example.org:8448`)"
                ),
            ));
        }
    }
    Ok(())
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || base.as_os_str().is_empty() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// Turns a TOML parse or type error into a [`ConfigError`] with its line.
fn syntax_error(text: &str, err: &toml::de::Error) -> ConfigError {
    ConfigError {
        file: None,
        key: None,
        line: err.span().map(|span| line_at(text, span.start)),
        message: err.message().trim().to_owned(),
    }
}

/// The 1-based line of the key at `path`, found by parsing the text again with spans.
fn line_of_key(text: &str, path: &[String]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let table = DeTable::parse(text).ok()?.into_inner();
    let mut value = DeValue::Table(table);
    let mut span = None;
    for part in path {
        let next = match part.parse::<usize>() {
            Ok(index) => value.get(index),
            Err(_) => value.get(part.as_str()),
        }?;
        span = Some(next.span());
        value = next.get_ref().clone();
    }
    span.map(|span| line_at(text, span.start))
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Parses `info` or `warn,hearth=debug`: each directive a level, or `target=level`.
pub(crate) fn parse_filter(text: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    for directive in text.split(',').map(str::trim) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}` is not a log level; use one of {} or `target=level`",
                LEVELS.join(", ")
            ));
        }
    }
    let targets = <tracing_subscriber::filter::Targets as std::str::FromStr>::from_str(text)
        .map_err(|err| err.to_string())?;
    // actix logs every malformed request it cannot parse (a URI over 64 KiB, a header over
    // its buffer) at ERROR, one line per request: a stranger could fill the disk with them.
    // It has already answered 400 or 431; nothing there is ours to act on.
    let targets = if text.contains("actix_http") {
        targets
    } else {
        targets.with_target(
            "actix_http::h1::dispatcher",
            tracing::level_filters::LevelFilter::OFF,
        )
    };
    // ruma's auth checks log every rule at INFO: a line per event. Quiet unless asked for.
    let quiet_already =
        ["off", "error", "warn"].contains(&text.trim().to_ascii_lowercase().as_str());
    if text.contains("ruma") || quiet_already {
        return Ok(targets);
    }
    Ok(targets.with_target("ruma_state_res", tracing::Level::WARN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/hearth"))
    }

    #[test]
    fn minimal_file_takes_defaults() {
        let config = parse("[server]\nserver_name = \"example.org\"\n").expect("valid");
        assert_eq!(config.server.server_name.as_str(), "example.org");
        assert_eq!(config.listeners, default_listeners());
        assert_eq!(config.database.path, Path::new("/etc/hearth/hearth-data"));
        assert_eq!(
            config.server.signing_key,
            Path::new("/etc/hearth/hearth-data/signing.key")
        );
        assert!(!config.registration.enabled);
        // Sized for a Pi at rest (issue 14): one HTTP worker, sled's cache at 8 MiB.
        assert_eq!(config.server.workers, 1);
        assert_eq!(config.database.cache_capacity_mb, 8);
    }

    #[test]
    fn server_name_is_required() {
        let err = parse("[database]\npath = \"/var/lib/hearth\"\n").expect_err("invalid");
        assert!(err.message.contains("server"), "{err}");
    }

    #[test]
    fn invalid_server_name_names_key_and_line() {
        let err =
            parse("# comment\n[server]\nserver_name = \"not a name\"\n").expect_err("invalid");
        assert_eq!(err.key.as_deref(), Some("server.server_name"));
        assert_eq!(err.line, Some(3));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let err =
            parse("[server]\nserver_name = \"a.org\"\nservername = \"b\"\n").expect_err("typo");
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("servername"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let err =
            parse("[server]\nserver_name = \"a.org\"\n[database]\ncache_capacity_mb = \"big\"\n")
                .expect_err("wrong type");
        assert_eq!(err.line, Some(4));
    }

    #[test]
    fn tls_listener_needs_tls_section() {
        let text = "[server]\nserver_name = \"a.org\"\n[[listeners]]\naddress = \"127.0.0.1:8448\"\ntls = true\n";
        let err = parse(text).expect_err("no tls section");
        assert_eq!(err.key.as_deref(), Some("listeners.0.tls"));
        assert_eq!(err.line, Some(5));
    }

    #[test]
    fn relative_tls_paths_follow_the_config_file() {
        let text = "[server]\nserver_name = \"a.org\"\n[tls]\ncertificate = \"tls/cert.pem\"\nprivate_key = \"/k.pem\"\n";
        let config = parse(text).expect("valid");
        let tls = config.tls.expect("tls");
        assert_eq!(tls.certificate, Path::new("/etc/hearth/tls/cert.pem"));
        assert_eq!(tls.private_key, Path::new("/k.pem"));
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        for (section, key, value) in [
            ("database", "cache_capacity_mb", "0"),
            ("database", "cache_capacity_mb", "99999999999999"),
            ("limits", "shutdown_grace_seconds", "60"),
            ("limits", "max_request_body_bytes", "10"),
            ("limits", "max_connections", "0"),
        ] {
            let text = format!("[server]\nserver_name = \"a.org\"\n[{section}]\n{key} = {value}\n");
            let err = parse(&text).expect_err("out of range");
            assert_eq!(
                err.key.as_deref(),
                Some(format!("{section}.{key}").as_str())
            );
            assert_eq!(err.line, Some(4));
        }
    }

    #[test]
    fn bad_log_level_is_refused() {
        let err = parse("[server]\nserver_name = \"a.org\"\n[logging]\nlevel = \"loud\"\n")
            .expect_err("bad level");
        assert_eq!(err.key.as_deref(), Some("logging.level"));
    }

    #[test]
    fn well_known_server_must_be_a_server_name() {
        let err =
            parse("[server]\nserver_name = \"a.org\"\n[well_known]\nserver = \"https://x\"\n")
                .expect_err("url is not a server name");
        assert_eq!(err.key.as_deref(), Some("well_known.server"));
    }

    #[test]
    fn notaries_must_be_server_names() {
        let err = parse(
            "[server]\nserver_name = \"a.org\"\n[federation]\ntrusted_key_servers = [\"matrix.org\", \"https://x\"]\n",
        )
        .expect_err("url is not a server name");
        assert_eq!(err.key.as_deref(), Some("federation.trusted_key_servers.1"));
        let config =
            parse("[server]\nserver_name = \"a.org\"\n[federation]\ntrusted_key_servers = []\n")
                .expect("an empty list is allowed");
        assert!(config.federation.trusted_key_servers.is_empty());
        let defaults = parse("[server]\nserver_name = \"a.org\"\n").expect("valid");
        assert_eq!(defaults.federation.trusted_key_servers, ["matrix.org"]);
    }

    #[test]
    fn presence_is_off_by_default_and_the_retry_wait_is_checked() {
        let defaults = parse("[server]\nserver_name = \"a.org\"\n").expect("valid");
        assert!(!defaults.federation.send_presence);
        assert!(!defaults.federation.receive_presence);
        assert_eq!(defaults.federation.retry_initial_seconds, 30);
        let err =
            parse("[server]\nserver_name = \"a.org\"\n[federation]\nretry_initial_seconds = 0\n")
                .expect_err("invalid");
        assert_eq!(err.key.as_deref(), Some("federation.retry_initial_seconds"));
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../config.example.toml");
        parse(text).expect("config.example.toml must be valid");
    }

    #[test]
    fn effective_settings_display_as_toml() {
        let shown = Config::embedded_default().to_toml();
        assert!(shown.contains("server_name = \"localhost\""), "{shown}");
    }
}
