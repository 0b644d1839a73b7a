//! The work of `hearth user …`, `hearth token …`, `hearth media …` and `hearth backup`,
//! done the same way whether the CLI opened the database itself or the running server
//! received the command on its control socket: the functions of [`crate::users::accounts`],
//! [`crate::media::admin`] and [`crate::server::backup`], a flush, and the lines the CLI
//! prints.

use std::fmt::Write as _;

use crate::config::Config;
use crate::media::admin;
use crate::media::files::MediaFiles;
use crate::storage::Storage;
use crate::users::accounts::moderation::Restriction;
use crate::users::accounts::{self, AccountError, registration};

use super::{Accounts, Reply, Request, RestrictionName};

/// Runs one command against the database and says what to print.
pub(crate) fn execute(
    storage: &Storage,
    config: &Config,
    services: &Accounts,
    request: Request,
) -> Reply {
    let mut out = Output::default();
    match run(storage, config, services, request, &mut out) {
        Ok(()) => Reply::Done {
            stdout: out.stdout,
            stderr: out.stderr,
        },
        Err(error) => Reply::Failed { error },
    }
}

#[derive(Default)]
struct Output {
    stdout: String,
    stderr: String,
}

impl Output {
    fn line(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.stdout, "{text}");
    }

    fn note(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.stderr, "{text}");
    }
}

/// An account error as the terminal shows it (a storage error with its cause).
fn describe(err: AccountError) -> String {
    match err {
        AccountError::Storage(err) => storage_failure(&err),
        other => other.to_string(),
    }
}

fn storage_failure(err: &crate::storage::StorageError) -> String {
    format!("database: {err}")
}

fn run(
    storage: &Storage,
    config: &Config,
    services: &Accounts,
    request: Request,
    out: &mut Output,
) -> Result<(), String> {
    let server_name = &config.server.server_name;
    let user_id = |name: &str| accounts::local_user_id(name, server_name).map_err(describe);
    let flush = || {
        storage
            .flush_blocking()
            .map_err(|err| storage_failure(&err))
    };
    match request {
        Request::UserAdd {
            name,
            password,
            admin,
        } => {
            let user_id = user_id(&name)?;
            accounts::add_user(storage, &user_id, &password, admin).map_err(describe)?;
            flush()?;
            out.line(format_args!(
                "created {user_id}{}",
                if admin { " (admin)" } else { "" }
            ));
        }
        Request::UserPasswd { name, password } => {
            let user_id = user_id(&name)?;
            accounts::set_password(storage, &user_id, &password).map_err(describe)?;
            // A reset password usually means a lost or stolen device: its sessions end too.
            let ended = block_on(
                services
                    .users()
                    .end_all_sessions(services.stream(), &user_id),
            )?
            .map_err(|err| err.to_string())?;
            out.line(format_args!(
                "changed the password of {user_id} and ended its {ended} session(s)"
            ));
        }
        Request::UserDeactivate { name } => {
            let user_id = user_id(&name)?;
            let devices = services
                .users()
                .device_ids_but(&user_id, None)
                .map_err(|err| err.to_string())?;
            accounts::deactivate(storage, &user_id).map_err(describe)?;
            block_on(
                services
                    .users()
                    .finish_deactivation(services.stream(), &user_id, &devices),
            )?
            .map_err(|err| err.to_string())?;
            out.line(format_args!("deactivated {user_id}"));
        }
        Request::UserRestrict {
            name,
            restriction,
            on,
        } => {
            let user_id = user_id(&name)?;
            let restriction = match restriction {
                RestrictionName::Lock => Restriction::Lock,
                RestrictionName::Suspension => Restriction::Suspension,
            };
            accounts::moderation::set_restricted(storage, &user_id, restriction, on)
                .map_err(describe)?;
            flush()?;
            let done = match (restriction, on) {
                (Restriction::Lock, true) => "locked",
                (Restriction::Lock, false) => "unlocked",
                (Restriction::Suspension, true) => "suspended",
                (Restriction::Suspension, false) => "unsuspended",
            };
            out.line(format_args!("{done} {user_id}"));
        }
        Request::UserList => list_users(storage, out)?,
        Request::TokenAdd {
            token,
            uses,
            expires_in_days,
        } => {
            let expiry = expires_in_days.map(|days| {
                crate::matrix::time::now_ms().saturating_add(days.saturating_mul(86_400_000))
            });
            let token = registration::create(storage, token, uses, expiry).map_err(describe)?;
            flush()?;
            out.line(token);
            if !config.registration.enabled {
                out.note(
                    "note: registration.enabled is off in the config, so tokens cannot be used yet",
                );
            }
        }
        Request::TokenList => list_tokens(storage, out)?,
        Request::TokenDelete { token } => {
            if !registration::delete(storage, &token).map_err(|err| storage_failure(&err))? {
                return Err(format!("no token {token}"));
            }
            flush()?;
            out.line(format_args!("deleted {token}"));
        }
        Request::MediaUsage => {
            for usage in admin::usage_per_user(storage).map_err(|err| storage_failure(&err))? {
                out.line(format_args!(
                    "{}\t{} files\t{} bytes",
                    usage.user, usage.count, usage.bytes
                ));
            }
            let remote = admin::remote_bytes(storage, server_name.as_str())
                .map_err(|err| storage_failure(&err))?;
            out.line(format_args!(
                "(other servers' media, cached)\t{remote} bytes"
            ));
        }
        Request::MediaPurgeRemote { older_than_secs } => {
            let files = MediaFiles::at(&config.database.path);
            let before =
                crate::matrix::time::now_ms().saturating_sub(older_than_secs.saturating_mul(1000));
            let removed = block_on(admin::purge_remote_before(
                storage,
                &files,
                server_name.as_str(),
                before,
            ))?
            .map_err(|err| storage_failure(&err))?;
            out.line(format_args!(
                "removed {} cached remote file(s), {} bytes",
                removed.count, removed.bytes
            ));
        }
        Request::MediaDeleteUser { name } => {
            let user_id = user_id(&name)?;
            let files = MediaFiles::at(&config.database.path);
            let removed = block_on(admin::delete_user_media(
                storage,
                &files,
                server_name.as_str(),
                user_id.as_str(),
            ))?
            .map_err(|err| storage_failure(&err))?;
            out.line(format_args!(
                "deleted {} file(s) of {user_id}, {} bytes",
                removed.count, removed.bytes
            ));
        }
        Request::Backup { dir } => {
            let summary = crate::server::backup::take(storage, config, &dir)?;
            out.line(format_args!("{summary} into {}", dir.display()));
        }
    }
    Ok(())
}

/// Runs the async part of a media command to its end: on the server's runtime when the
/// command came through the control socket (this is a blocking-pool thread), on a small
/// runtime of its own in the CLI.
fn block_on<F: std::future::Future>(work: F) -> Result<F::Output, String> {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        return Ok(runtime.block_on(work));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start a runtime: {err}"))?;
    Ok(runtime.block_on(work))
}

/// `hearth user list`: one account a line, its flags after a tab.
fn list_users(storage: &Storage, out: &mut Output) -> Result<(), String> {
    for account in accounts::list(storage).map_err(describe)? {
        let flags = [
            (account.admin, "admin"),
            (account.deactivated, "deactivated"),
            (account.locked, "locked"),
            (account.suspended, "suspended"),
        ];
        let flags: Vec<&str> = flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect();
        out.line(format_args!("{}\t{}", account.user_id, flags.join(",")));
    }
    Ok(())
}

/// `hearth token list`: each token with its uses and whether it can still be used.
fn list_tokens(storage: &Storage, out: &mut Output) -> Result<(), String> {
    let now = crate::matrix::time::now_ms();
    for (token, record) in registration::list(storage).map_err(|err| storage_failure(&err))? {
        let uses = record
            .uses_allowed
            .map_or("unlimited".to_owned(), |allowed| format!("{allowed}"));
        let state = if record.is_usable(now) {
            "usable"
        } else {
            "used up or expired"
        };
        out.line(format_args!(
            "{token}\tused {} of {uses}\t{state}",
            record.completed
        ));
    }
    Ok(())
}
