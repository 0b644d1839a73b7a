//! The command line: clap definitions, turned into validated settings and run, one small
//! function per command.

use std::io::{BufRead as _, IsTerminal as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::server::StartupError;
use crate::server::control::client::Transport;
use crate::server::control::{Reply, Request, RestrictionName};
use crate::server::init::{InitOptions, init};
use crate::users::accounts;

/// Hearth: a small Matrix homeserver for one person or a family.
#[derive(Debug, Parser)]
#[command(name = "hearth", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the homeserver. Without a config file (no --config, no $HEARTH_CONFIG, no
    /// ./hearth.toml) it runs on a built-in default: server name `localhost`, data in
    /// ./hearth-data, plain HTTP on 127.0.0.1:8008.
    Serve(ConfigArg),
    /// Write a commented config file and generate the server's signing key.
    Init(InitArgs),
    /// Check a config file and print the effective settings.
    CheckConfig(ConfigArg),
    /// Check from this machine what other servers and clients see: the server name resolved
    /// as they resolve it, TLS, the signing key served, client discovery and CORS, the clock.
    /// One line per step; fails if any step does.
    Check(ConfigArg),
    /// Manage local user accounts, with the server running (through its control socket) or
    /// stopped.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage registration tokens: what family members type to make an account when
    /// `registration.enabled` is on and `registration.open` is off.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the server's signing key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Media: usage per user, purging other servers' cached media, deleting a user's media
    /// (with the server running, through its control socket, or stopped).
    #[command(subcommand)]
    Media(super::media_cli::MediaCommand),
    /// Back up the database, the signing key and the media files into DIR (new or empty),
    /// with the server running (it makes the backup itself) or stopped.
    Backup {
        /// Where the backup goes: a new or empty directory.
        dir: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Restore a backup from DIR into the config's data directory, which must be new or
    /// empty; the server must be stopped.
    Restore {
        /// A directory `hearth backup` made.
        dir: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Replace the signing key with a new one; the old one stays published (as an old key)
    /// so other servers can still check what it signed. Restart the server afterwards.
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a registration token and print it.
    Add {
        /// The token (1 to 64 of A-Z a-z 0-9 . _ ~ -); random when left out.
        token: Option<String>,
        /// How many accounts it may make [default: no limit].
        #[arg(long, value_name = "N")]
        uses: Option<u64>,
        /// Days until it expires [default: never].
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u64>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List registration tokens with their uses and expiry.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete a registration token.
    Delete {
        token: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArg {
    /// The config file. Default: $HEARTH_CONFIG, else ./hearth.toml if it exists, else the
    /// built-in default.
    #[arg(long, short, env = "HEARTH_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Where to write the config file.
    #[arg(long, short, default_value = "hearth.toml", value_name = "PATH")]
    pub(crate) config: PathBuf,
    /// Your domain: user IDs will look like @you:NAME. Cannot be changed later.
    #[arg(long, default_value = "localhost", value_name = "NAME")]
    pub(crate) server_name: String,
    /// The data directory (database and signing key), relative to the config file.
    #[arg(long, default_value = "hearth-data", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// Generate a self-signed TLS certificate (for trying HTTPS, not for real federation)
    /// and add an HTTPS listener.
    #[arg(long)]
    pub(crate) self_signed_cert: bool,
    /// Address of the plain HTTP listener (for a reverse proxy).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8008")]
    pub(crate) http: SocketAddr,
    /// Address of the HTTPS listener [default with --self-signed-cert: 0.0.0.0:8448].
    #[arg(long, value_name = "ADDR")]
    pub(crate) https: Option<SocketAddr>,
    /// Replace an existing config file (the signing key is always kept).
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create an account. The password is asked for on the terminal, or read as one line
    /// from standard input when that is not a terminal.
    Add {
        /// The user name (`alice`) or full user ID (`@alice:example.org`).
        name: String,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Set a new password for an account and end all its sessions.
    Passwd {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Deactivate an account for good: it can no longer log in, and its ID is never reused.
    Deactivate {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Lock an account: every request but logout is refused until it is unlocked. Its
    /// sessions are kept.
    Lock {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Lift the lock on an account.
    Unlock {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Suspend an account: it can still read, sync and leave rooms, but not join, send,
    /// invite or change its profile.
    Suspend {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Lift the suspension of an account.
    Unsuspend {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the accounts on this server.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), StartupError> {
    match cli.command {
        Command::Serve(arg) => serve(&arg),
        Command::Init(args) => run_init(args),
        Command::CheckConfig(arg) => check_config(&arg),
        Command::Check(arg) => super::check::run(&arg),
        Command::User(command) => user(command),
        Command::Token(command) => token(command),
        Command::Media(command) => super::media_cli::run(command),
        Command::Backup { dir, config } => {
            let dir = std::path::absolute(&dir).map_err(|source| StartupError::ReadFile {
                path: dir.clone(),
                source,
            })?;
            control(&config, |_| Ok(Request::Backup { dir }))
        }
        Command::Restore { dir, config } => restore(&dir, &config),
        Command::Key(KeyCommand::Rotate { config }) => {
            let (config, _) = load_config(&config)?;
            let path = &config.server.signing_key;
            let key = crate::matrix::crypto::rotation::rotate(path, crate::matrix::time::now_ms())
                .map_err(|reason| StartupError::SigningKey {
                    path: path.clone(),
                    reason,
                })?;
            println!(
                "new signing key {}; restart the server to use it",
                key.key_id()
            );
            Ok(())
        }
        Command::Version => {
            println!(
                "{} {}",
                crate::SERVER_SOFTWARE.to_lowercase(),
                crate::VERSION
            );
            Ok(())
        }
    }
}

/// Where the configuration came from, for the first log lines.
pub(super) enum ConfigSource {
    File(PathBuf),
    Embedded,
}

pub(super) fn load_config(arg: &ConfigArg) -> Result<(Config, ConfigSource), StartupError> {
    let path = arg.config.clone().or_else(|| {
        let local = Path::new("hearth.toml");
        local.exists().then(|| local.to_owned())
    });
    match path {
        Some(path) => Ok((
            crate::server::startup_error::load_config(&path)?,
            ConfigSource::File(path),
        )),
        None => Ok((Config::embedded_default(), ConfigSource::Embedded)),
    }
}

fn serve(arg: &ConfigArg) -> Result<(), StartupError> {
    let (config, source) = load_config(arg)?;
    crate::server::logging::init(&config.logging.level);
    match source {
        ConfigSource::File(path) => tracing::info!("configuration: {}", path.display()),
        ConfigSource::Embedded => tracing::info!(
            "no config file: running on the built-in default (server name `localhost`, data in \
             ./hearth-data, plain HTTP on 127.0.0.1:8008); `hearth init --help` makes your own"
        ),
    }
    actix_web::rt::System::new().block_on(crate::server::serve(config))
}

fn run_init(args: InitArgs) -> Result<(), StartupError> {
    let report = init(&InitOptions {
        config_path: args.config,
        server_name: args.server_name,
        data_dir: args.data_dir,
        http: Some(args.http),
        https: args.https,
        self_signed_cert: args.self_signed_cert,
        force: args.force,
    })?;
    println!("wrote {}", report.config_path.display());
    if report.key_created {
        println!("generated the signing key {}", report.signing_key.display());
    } else {
        println!(
            "kept the existing signing key {}",
            report.signing_key.display()
        );
    }
    if let Some(certificate) = report.certificate {
        println!("wrote a self-signed certificate {}", certificate.display());
    }
    println!(
        "next: `hearth user add <name> --config {0}`, then `hearth serve --config {0}`",
        report.config_path.display()
    );
    Ok(())
}

fn check_config(arg: &ConfigArg) -> Result<(), StartupError> {
    let (config, source) = load_config(arg)?;
    match source {
        ConfigSource::File(path) => println!("# {} is valid. Effective settings:", path.display()),
        ConfigSource::Embedded => println!("# No config file: the built-in default settings:"),
    }
    print!("{}", config.to_toml());
    Ok(())
}

/// Runs a control command (`user`, `token`, `media`, `backup`): through the running
/// server's control socket if one answers, on the database directly otherwise; the same
/// work and output either way. A password is asked for only once the way to the database
/// is open.
pub(super) fn control(
    config: &ConfigArg,
    request: impl FnOnce(&Config) -> Result<Request, StartupError>,
) -> Result<(), StartupError> {
    let (config, _) = load_config(config)?;
    let transport = Transport::connect(&config)?;
    let request = request(&config)?;
    match transport.run(&config, request)? {
        Reply::Done { stdout, stderr } => {
            print!("{stdout}");
            eprint!("{stderr}");
            Ok(())
        }
        Reply::Failed { error } => Err(StartupError::Usage(error)),
    }
}

/// `hearth restore DIR`: never through a server (one running on the data directory is the
/// reason to refuse).
fn restore(dir: &Path, config: &ConfigArg) -> Result<(), StartupError> {
    let (config, _) = load_config(config)?;
    let socket = crate::server::control::socket_path(&config.database.path);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(StartupError::Usage(format!(
            "a Hearth server is running on {}: stop it, and restore into a new or empty data              directory",
            config.database.path.display()
        )));
    }
    let done =
        crate::server::backup::restore::restore(&config, dir).map_err(StartupError::Usage)?;
    println!("{done}");
    Ok(())
}

/// The user ID `name` stands for on this server, checked before a password is asked for.
fn user_id_of(name: &str, config: &Config) -> Result<ruma::OwnedUserId, StartupError> {
    accounts::local_user_id(name, &config.server.server_name)
        .map_err(|err| StartupError::Usage(err.to_string()))
}

fn user(command: UserCommand) -> Result<(), StartupError> {
    let restrict = |name: String, config, restriction, on| {
        control(&config, |_| {
            Ok(Request::UserRestrict {
                name,
                restriction,
                on,
            })
        })
    };
    match command {
        UserCommand::Add {
            name,
            admin,
            config,
        } => control(&config, |config| {
            let user_id = user_id_of(&name, config)?;
            let password = read_password(&format!("Password for {user_id}: "))?;
            Ok(Request::UserAdd {
                name,
                password,
                admin,
            })
        }),
        UserCommand::Passwd { name, config } => control(&config, |config| {
            let user_id = user_id_of(&name, config)?;
            let password = read_password(&format!("New password for {user_id}: "))?;
            Ok(Request::UserPasswd { name, password })
        }),
        UserCommand::Deactivate { name, config } => {
            control(&config, |_| Ok(Request::UserDeactivate { name }))
        }
        UserCommand::Lock { name, config } => restrict(name, config, RestrictionName::Lock, true),
        UserCommand::Unlock { name, config } => {
            restrict(name, config, RestrictionName::Lock, false)
        }
        UserCommand::Suspend { name, config } => {
            restrict(name, config, RestrictionName::Suspension, true)
        }
        UserCommand::Unsuspend { name, config } => {
            restrict(name, config, RestrictionName::Suspension, false)
        }
        UserCommand::List { config } => control(&config, |_| Ok(Request::UserList)),
    }
}

fn token(command: TokenCommand) -> Result<(), StartupError> {
    match command {
        TokenCommand::Add {
            token,
            uses,
            expires_in_days,
            config,
        } => control(&config, |_| {
            Ok(Request::TokenAdd {
                token,
                uses,
                expires_in_days,
            })
        }),
        TokenCommand::List { config } => control(&config, |_| Ok(Request::TokenList)),
        TokenCommand::Delete { token, config } => {
            control(&config, |_| Ok(Request::TokenDelete { token }))
        }
    }
}

/// Asks twice on a terminal; reads one line from standard input otherwise (for scripts).
fn read_password(prompt: &str) -> Result<String, StartupError> {
    let io_error = |source| StartupError::ReadFile {
        path: PathBuf::from("<stdin>"),
        source,
    };
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt).map_err(io_error)?;
        let second = rpassword::prompt_password("Repeat it: ").map_err(io_error)?;
        if first != second {
            return Err(StartupError::Usage("the passwords differ".to_owned()));
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(io_error)?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(StartupError::Usage(
            "no password on standard input".to_owned(),
        ));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
