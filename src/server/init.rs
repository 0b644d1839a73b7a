//! `hearth init`: a commented config file, the server's signing key and, when asked, a
//! self-signed certificate to try HTTPS with. Nothing existing is ever overwritten silently:
//! the config only with `--force`, the signing key never (it is the server's identity).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ruma::OwnedServerName;

use crate::config::Config;
use crate::matrix::crypto::SigningKey;
use crate::server::StartupError;

#[derive(Debug, Clone)]
pub(crate) struct InitOptions {
    pub(crate) config_path: PathBuf,
    pub(crate) server_name: String,
    /// As written into the config: relative paths are relative to the config file.
    pub(crate) data_dir: PathBuf,
    pub(crate) http: Option<SocketAddr>,
    pub(crate) https: Option<SocketAddr>,
    pub(crate) self_signed_cert: bool,
    pub(crate) force: bool,
}

/// What `init` did, for the command to report.
#[derive(Debug)]
pub(crate) struct InitReport {
    pub(crate) config_path: PathBuf,
    pub(crate) signing_key: PathBuf,
    pub(crate) key_created: bool,
    pub(crate) certificate: Option<PathBuf>,
}

pub(crate) fn init(options: &InitOptions) -> Result<InitReport, StartupError> {
    let server_name = OwnedServerName::try_from(options.server_name.as_str()).map_err(|_| {
        StartupError::Usage(format!(
            "`{}` is not a valid server name: use the domain your users' IDs will end in, like example.org",
            options.server_name
        ))
    })?;
    let base = options.config_path.parent().unwrap_or(Path::new(""));
    let tls_files = options.self_signed_cert.then(|| TlsFiles {
        certificate: PathBuf::from("tls/cert.pem"),
        private_key: PathBuf::from("tls/key.pem"),
    });
    let mut would_replace = vec![options.config_path.clone()];
    if let Some(files) = &tls_files {
        would_replace.push(base.join(&files.certificate));
        would_replace.push(base.join(&files.private_key));
    }
    if let Some(existing) = would_replace.iter().find(|path| path.exists())
        && !options.force
    {
        return Err(StartupError::Usage(format!(
            "{} already exists; use --force to replace it (the signing key is always kept)",
            existing.display()
        )));
    }
    let https = options.https.or_else(|| {
        tls_files
            .is_some()
            .then(|| SocketAddr::from(([0, 0, 0, 0], 8448)))
    });
    let http = options
        .http
        .or_else(|| Some(SocketAddr::from(([127, 0, 0, 1], 8008))));
    let text = config_text(
        &server_name,
        &options.data_dir,
        http,
        https,
        tls_files.as_ref(),
    );
    // What we write must load: check before touching the disk.
    let config = Config::parse(&text, base).map_err(StartupError::Config)?;

    let certificate = match &tls_files {
        Some(files) => {
            write_self_signed(
                &server_name,
                &base.join(&files.certificate),
                &base.join(&files.private_key),
            )?;
            Some(base.join(&files.certificate))
        }
        None => None,
    };
    let signing_key = config.server.signing_key;
    let key_created = !signing_key.exists();
    if key_created {
        SigningKey::generate()
            .write_new(&signing_key)
            .map_err(|source| StartupError::WriteFile {
                path: signing_key.clone(),
                source,
            })?;
    }
    write_file(&options.config_path, text.as_bytes(), 0o640)?;
    Ok(InitReport {
        config_path: options.config_path.clone(),
        signing_key,
        key_created,
        certificate,
    })
}

struct TlsFiles {
    certificate: PathBuf,
    private_key: PathBuf,
}

fn write_self_signed(
    server_name: &OwnedServerName,
    certificate: &Path,
    private_key: &Path,
) -> Result<(), StartupError> {
    let mut names = vec![server_name.host().to_owned()];
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|name| name == extra) {
            names.push(extra.to_owned());
        }
    }
    let (cert_pem, key_pem) =
        crate::server::tls::self_signed(names).map_err(StartupError::Usage)?;
    write_file(certificate, cert_pem.as_bytes(), 0o644)?;
    write_file(private_key, key_pem.as_bytes(), 0o600)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), StartupError> {
    crate::storage::files::replace(path, contents, mode).map_err(|source| StartupError::WriteFile {
        path: path.to_owned(),
        source,
    })
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn config_text(
    server_name: &OwnedServerName,
    data_dir: &Path,
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
    tls: Option<&TlsFiles>,
) -> String {
    let mut text = format!(
        "# Hearth configuration, written by `hearth init`.\n\
         # Every key, with its default, is described in config.example.toml.\n\
         # Check this file with `hearth check-config --config <this file>`.\n\
         # Relative paths are relative to the directory of this file.\n\n\
         [server]\n\
         # The name in your users' IDs (@you:{server_name}). It cannot change later.\n\
         server_name = {}\n\n\
         [database]\n\
         # The data directory: database, signing key, lock file. Back it up.\n\
         path = {}\n",
        toml_string(server_name.as_str()),
        toml_string(&data_dir.to_string_lossy()),
    );
    if let Some(address) = http {
        text.push_str(&format!(
            "\n# Plain HTTP, for a reverse proxy on this machine.\n\
             [[listeners]]\naddress = \"{address}\"\ntls = false\n"
        ));
    }
    if let Some(address) = https {
        text.push_str(&format!(
            "\n# HTTPS with the certificate in [tls] (8448 is the default federation port).\n\
             [[listeners]]\naddress = \"{address}\"\ntls = true\n"
        ));
    }
    match tls {
        Some(files) => text.push_str(&format!(
            "\n# A self-signed certificate, for trying HTTPS: other servers and most clients will\n\
             # not trust it. Point these at your real certificate (e.g. from certbot) and run\n\
             # `systemctl reload hearth` (SIGHUP) after each renewal.\n\
             [tls]\ncertificate = {}\nprivate_key = {}\n",
            toml_string(&files.certificate.to_string_lossy()),
            toml_string(&files.private_key.to_string_lossy()),
        )),
        None => text.push_str(
            "\n# To serve HTTPS yourself, add a listener with `tls = true` and:\n\
             # [tls]\n# certificate = \"/etc/hearth/tls/fullchain.pem\"\n\
             # private_key = \"/etc/hearth/tls/privkey.pem\"\n",
        ),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> InitOptions {
        InitOptions {
            config_path: dir.join("hearth.toml"),
            server_name: "example.org".to_owned(),
            data_dir: PathBuf::from("hearth-data"),
            http: None,
            https: None,
            self_signed_cert: true,
            force: false,
        }
    }

    #[test]
    fn writes_a_loadable_config_key_and_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = init(&options(dir.path())).expect("init");
        assert!(report.key_created);
        let config = crate::server::startup_error::load_config(&report.config_path).expect("loads");
        assert_eq!(config.server.server_name.as_str(), "example.org");
        assert_eq!(config.listeners.len(), 2);
        let tls = config.tls.expect("tls section");
        crate::server::tls::CertificateStore::load(&tls).expect("certificate loads");
        SigningKey::load(&report.signing_key).expect("key loads");
    }

    #[test]
    fn refuses_to_overwrite_without_force_and_keeps_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = init(&options(dir.path())).expect("init");
        let key_before = std::fs::read(&first.signing_key).expect("key");
        assert!(init(&options(dir.path())).is_err());
        let again = init(&InitOptions {
            force: true,
            ..options(dir.path())
        })
        .expect("forced");
        assert!(!again.key_created);
        assert_eq!(std::fs::read(&again.signing_key).expect("key"), key_before);
    }

    #[test]
    fn never_replaces_a_certificate_without_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tls")).expect("mkdir");
        std::fs::write(dir.path().join("tls/key.pem"), "a real key").expect("write");
        let err = init(&options(dir.path())).expect_err("refused");
        assert!(err.to_string().contains("key.pem"), "{err}");
        assert!(!dir.path().join("hearth.toml").exists(), "nothing written");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("tls/key.pem")).expect("read"),
            "a real key"
        );
    }

    #[test]
    fn refuses_an_invalid_server_name_before_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = InitOptions {
            server_name: "not a name".to_owned(),
            ..options(dir.path())
        };
        assert!(init(&bad).is_err());
        assert!(!dir.path().join("hearth.toml").exists());
    }
}
