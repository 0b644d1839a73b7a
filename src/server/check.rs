//! `hearth check`: reads the config as `serve` does, runs the federation self-test
//! ([`crate::federation::self_check`]) and prints one line per step; a failed step makes the
//! command fail.

use crate::federation::self_check::{self, Mark, Settings};
use crate::matrix::crypto::SigningKey;
use crate::server::StartupError;
use crate::server::cli::{ConfigArg, load_config};

/// Test-only: where `/.well-known/matrix/*` is fetched instead of port 443, which a test
/// cannot bind. Not a setting: a real check always asks port 443, as other servers do.
const WELL_KNOWN_PORT_VARIABLE: &str = "HEARTH_CHECK_WELL_KNOWN_PORT";

pub(super) fn run(arg: &ConfigArg) -> Result<(), StartupError> {
    let (config, _) = load_config(arg)?;
    let path = &config.server.signing_key;
    let signing_key = SigningKey::load(path).map_err(|reason| StartupError::SigningKey {
        path: path.clone(),
        reason,
    })?;
    let well_known_port = match std::env::var(WELL_KNOWN_PORT_VARIABLE) {
        Ok(port) => port.parse().map_err(|_| {
            StartupError::Usage(format!("{WELL_KNOWN_PORT_VARIABLE}: not a port: {port}"))
        })?,
        Err(_) => 443,
    };
    let server_name = config.server.server_name.as_str();
    let settings = Settings {
        server_name,
        signing_key: &signing_key,
        signing_key_path: path,
        extra_ca_file: config.federation.extra_ca_file.as_deref(),
        well_known_port,
    };
    println!("Checking {server_name} as other servers and clients see it:");
    let mut failed = 0;
    let mut print = |line: &self_check::Line| {
        if line.mark == Mark::Fail {
            failed += 1;
        }
        println!("{} {}: {}", line.mark.symbol(), line.step, line.text);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartupError::Server)?;
    runtime.block_on(self_check::run(&settings, &mut print))?;
    match failed {
        0 => Ok(()),
        failed => Err(StartupError::CheckFailed(failed)),
    }
}
