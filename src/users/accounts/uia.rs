//! User-interactive authentication (spec: client-server API, "User-Interactive
//! Authentication API"). An endpoint names its flows; the first request without `auth` gets
//! `401` with the flows and a `session`; each later request completes one stage; when every
//! stage of one flow is done, the request goes through.
//!
//! Sessions live in memory (they are short-lived by nature), at most [`MAX_SESSIONS`] at a
//! time and [`SESSION_LIFETIME`] each, so a client cannot grow the server's memory. A session
//! belongs to one user and one operation (method and path): it cannot be carried over to
//! another request. A completed session stays until it expires, so a client that retries
//! after a lost answer gets the operation done, as the spec asks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::matrix::crypto::random_bytes;

pub(crate) const MAX_SESSIONS: usize = 1000;
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(15 * 60);

pub(crate) const PASSWORD: &str = "m.login.password";
pub(crate) const DUMMY: &str = "m.login.dummy";
pub(crate) const REGISTRATION_TOKEN: &str = "m.login.registration_token";

/// The flows an endpoint accepts: each a list of stage types.
pub(crate) type Flows = &'static [&'static [&'static str]];

/// The `auth` object of a request, typed: unknown fields are skipped without being kept, so
/// a hostile client cannot make the server hold a huge object.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuthData {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) session: Option<String>,
    /// `m.login.registration_token`
    pub(crate) token: Option<String>,
    /// `m.login.password`
    pub(crate) password: Option<String>,
    pub(crate) identifier: Option<Identifier>,
    /// Deprecated form of `identifier`.
    pub(crate) user: Option<String>,
}

/// A user identifier (`m.id.user`; other types are read but not supported).
#[derive(Debug, Deserialize)]
pub(crate) struct Identifier {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) user: Option<String>,
}

struct Session {
    created: Instant,
    /// The user the session authenticates (`None` for registration, before the user exists).
    owner: Option<String>,
    /// The request it authorizes: method and path.
    operation: String,
    completed: Vec<String>,
    done: bool,
    /// The registration token a completed `m.login.registration_token` stage used.
    registration_token: Option<String>,
}

#[derive(Default)]
pub(crate) struct UiaSessions {
    sessions: Mutex<HashMap<String, Session>>,
}

/// A stage the client is attempting: its type and fields (`password`, `token`, …).
pub(crate) struct Attempt {
    pub(crate) session: String,
    pub(crate) kind: String,
    pub(crate) auth: AuthData,
}

/// What [`UiaSessions::attempt`] found: a stage to check, or a session already complete.
pub(crate) enum Step {
    Check(Attempt),
    AlreadyCompleted(Completed),
}

/// A flow completed: the request may proceed.
#[derive(Debug, Default)]
pub(crate) struct Completed {
    pub(crate) registration_token: Option<String>,
}

impl UiaSessions {
    /// Reads the request's `auth` object. Without one (or without a stage `type`), answers
    /// with the `401` challenge. `owner` ties the session to the authenticated user and
    /// `operation` to the request, so a session cannot be carried over to another one.
    pub(crate) fn attempt(
        &self,
        auth: Option<AuthData>,
        flows: Flows,
        owner: Option<&str>,
        operation: &str,
    ) -> Result<Step, Error> {
        let auth = auth.unwrap_or_default();
        let mut sessions = self.lock();
        let session = match auth.session.as_deref() {
            Some(id) => {
                let session = sessions
                    .get(id)
                    .filter(|session| session.created.elapsed() < SESSION_LIFETIME)
                    .filter(|session| session.owner.as_deref() == owner)
                    .ok_or_else(|| {
                        Error::new(ErrorKind::Forbidden, "Unknown or expired auth session")
                    })?;
                if session.operation != operation {
                    return Err(Error::new(
                        ErrorKind::Forbidden,
                        "This auth session was started for another request",
                    ));
                }
                if session.done {
                    return Ok(Step::AlreadyCompleted(Completed {
                        registration_token: session.registration_token.clone(),
                    }));
                }
                id.to_owned()
            }
            None => insert_session(&mut sessions, owner, operation),
        };
        let Some(kind) = auth.kind.clone() else {
            return Err(challenge(&sessions[&session], &session, flows, None));
        };
        if !next_stage_allowed(flows, &sessions[&session].completed, &kind) {
            let error = Error::new(
                ErrorKind::Unrecognized,
                format!("Stage {kind} is not expected now"),
            );
            return Err(challenge(
                &sessions[&session],
                &session,
                flows,
                Some(&error),
            ));
        }
        Ok(Step::Check(Attempt {
            session,
            kind,
            auth,
        }))
    }

    /// Records the outcome of checking `attempt`'s stage. Returns `Ok` once a whole flow is
    /// complete (the session then ends), else the `401` challenge for the next stage (with
    /// the failure's error code, if the stage failed).
    pub(crate) fn record(
        &self,
        attempt: &Attempt,
        outcome: Result<Option<String>, Error>,
        flows: Flows,
    ) -> Result<Completed, Error> {
        let mut sessions = self.lock();
        let Some(session) = sessions.get_mut(&attempt.session) else {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "Unknown or expired auth session",
            ));
        };
        match outcome {
            Err(error) => return Err(challenge(session, &attempt.session, flows, Some(&error))),
            Ok(registration_token) => {
                if !session.completed.contains(&attempt.kind) {
                    session.completed.push(attempt.kind.clone());
                }
                if registration_token.is_some() {
                    session.registration_token = registration_token;
                }
            }
        }
        let done = flows.iter().any(|flow| {
            flow.iter()
                .all(|stage| session.completed.iter().any(|c| c == stage))
        });
        if !done {
            return Err(challenge(session, &attempt.session, flows, None));
        }
        session.done = true;
        Ok(Completed {
            registration_token: session.registration_token.clone(),
        })
    }

    /// Forgets a completed session whose operation must not be repeated (a registration),
    /// so a replay starts afresh.
    pub(crate) fn forget(&self, session: &str) {
        self.lock().remove(session);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Whether `stage` may come next: some flow starts with the stages completed so far and
/// continues with `stage`.
fn next_stage_allowed(flows: Flows, completed: &[String], stage: &str) -> bool {
    flows.iter().any(|flow| {
        flow.len() > completed.len()
            && flow
                .iter()
                .zip(completed)
                .all(|(expected, done)| expected == done)
            && flow[completed.len()] == stage
    })
}

fn insert_session(
    sessions: &mut HashMap<String, Session>,
    owner: Option<&str>,
    operation: &str,
) -> String {
    sessions.retain(|_, session| session.created.elapsed() < SESSION_LIFETIME);
    if sessions.len() >= MAX_SESSIONS {
        // Full even after expiry: the oldest session makes room.
        if let Some(oldest) = sessions
            .iter()
            .min_by_key(|(_, s)| s.created)
            .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
    }
    let id = crate::matrix::crypto::encode_base64(&random_bytes::<18>()).replace(['+', '/'], "_");
    sessions.insert(
        id.clone(),
        Session {
            created: Instant::now(),
            owner: owner.map(str::to_owned),
            operation: operation.to_owned(),
            completed: Vec::new(),
            done: false,
            registration_token: None,
        },
    );
    id
}

/// The `401` answer: flows, params, session, completed stages, and the error if a stage
/// failed.
fn challenge(session: &Session, id: &str, flows: Flows, failure: Option<&Error>) -> Error {
    let mut fields = Map::new();
    let flows: Vec<Value> = flows
        .iter()
        .map(|stages| json!({ "stages": stages }))
        .collect();
    fields.insert("flows".into(), Value::Array(flows));
    fields.insert("params".into(), json!({}));
    fields.insert("session".into(), Value::String(id.to_owned()));
    fields.insert("completed".into(), json!(session.completed));
    let (errcode, message) = match failure {
        Some(error) => (error.kind.errcode(), error.message.clone()),
        None => ("", "".into()),
    };
    let mut error = Error::new(ErrorKind::UserInteractiveAuth, message).with_fields(fields);
    if !errcode.is_empty() {
        let mut code = Map::new();
        code.insert("errcode".into(), Value::String(errcode.to_owned()));
        error = error.with_fields(code);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOWS: Flows = &[&[REGISTRATION_TOKEN, DUMMY], &[DUMMY]];
    const OP: &str = "POST /register";

    fn body(error: &Error) -> Map<String, Value> {
        error.extra.as_deref().cloned().unwrap_or_default()
    }

    fn auth(value: Value) -> Option<AuthData> {
        Some(serde_json::from_value(value).expect("auth"))
    }

    fn check(step: Result<Step, Error>) -> Attempt {
        match step {
            Ok(Step::Check(attempt)) => attempt,
            Ok(Step::AlreadyCompleted(_)) => panic!("already completed"),
            Err(err) => panic!("refused: {err}"),
        }
    }

    fn session_of(sessions: &UiaSessions, owner: Option<&str>) -> Value {
        let error = sessions
            .attempt(None, FLOWS, owner, OP)
            .err()
            .expect("challenge");
        body(&error)["session"].clone()
    }

    #[test]
    fn a_request_without_auth_gets_the_flows() {
        let sessions = UiaSessions::default();
        let error = sessions
            .attempt(None, FLOWS, None, OP)
            .err()
            .expect("challenge");
        assert_eq!(error.kind, ErrorKind::UserInteractiveAuth);
        let fields = body(&error);
        assert_eq!(fields["flows"][0]["stages"][0], REGISTRATION_TOKEN);
        assert!(fields["session"].is_string());
        assert!(!fields.contains_key("errcode"));
    }

    #[test]
    fn stages_complete_a_flow_in_order_and_retries_succeed() {
        let sessions = UiaSessions::default();
        let session = session_of(&sessions, None);
        let token = auth(json!({ "type": REGISTRATION_TOKEN, "token": "t", "session": session }));
        let attempt = check(sessions.attempt(token, FLOWS, None, OP));
        let next = sessions
            .record(&attempt, Ok(Some("t".into())), FLOWS)
            .expect_err("one more");
        assert_eq!(body(&next)["completed"], json!([REGISTRATION_TOKEN]));
        let dummy = || auth(json!({ "type": DUMMY, "session": session }));
        let attempt = check(sessions.attempt(dummy(), FLOWS, None, OP));
        let done = sessions
            .record(&attempt, Ok(None), FLOWS)
            .expect("complete");
        assert_eq!(done.registration_token.as_deref(), Some("t"));
        // A retry (the answer was lost) is told the session is complete.
        match sessions.attempt(dummy(), FLOWS, None, OP) {
            Ok(Step::AlreadyCompleted(done)) => {
                assert_eq!(done.registration_token.as_deref(), Some("t"))
            }
            _ => panic!("a retry of a completed session completes"),
        }
    }

    #[test]
    fn stages_out_of_order_are_refused() {
        let sessions = UiaSessions::default();
        let only_token_flow: Flows = &[&[REGISTRATION_TOKEN, DUMMY]];
        let dummy = auth(json!({ "type": DUMMY }));
        let error = sessions
            .attempt(dummy, only_token_flow, None, OP)
            .err()
            .expect("out of order");
        assert_eq!(body(&error)["errcode"], "M_UNRECOGNIZED");
    }

    #[test]
    fn a_failed_stage_says_why_and_keeps_the_session() {
        let sessions = UiaSessions::default();
        let attempt = check(sessions.attempt(
            auth(json!({ "type": REGISTRATION_TOKEN, "token": "bad" })),
            FLOWS,
            None,
            OP,
        ));
        let session = attempt.session.clone();
        let failure = Error::new(ErrorKind::Forbidden, "Invalid registration token");
        let error = sessions
            .record(&attempt, Err(failure), FLOWS)
            .expect_err("failed");
        let fields = body(&error);
        assert_eq!(fields["errcode"], "M_FORBIDDEN");
        assert_eq!(fields["session"], json!(session));
        let retry =
            auth(json!({ "type": REGISTRATION_TOKEN, "token": "good", "session": session }));
        check(sessions.attempt(retry, FLOWS, None, OP));
    }

    #[test]
    fn sessions_belong_to_their_user_and_operation() {
        let sessions = UiaSessions::default();
        let session = session_of(&sessions, Some("@a:x"));
        let password = || auth(json!({ "type": PASSWORD, "session": session }));
        let flows: Flows = &[&[PASSWORD]];
        assert!(
            sessions
                .attempt(password(), flows, Some("@b:x"), OP)
                .is_err()
        );
        assert!(
            sessions
                .attempt(password(), flows, Some("@a:x"), "POST /other")
                .is_err()
        );
        check(sessions.attempt(password(), flows, Some("@a:x"), OP));
    }

    #[test]
    fn unknown_fields_are_skipped_and_wrong_types_refused() {
        let parsed: AuthData = serde_json::from_value(json!({
            "type": PASSWORD, "extra": [1, 2, 3], "identifier": { "type": "m.id.user", "user": "a", "x": {} }
        }))
        .expect("parses");
        assert_eq!(
            parsed.identifier.expect("identifier").user.as_deref(),
            Some("a")
        );
        assert!(serde_json::from_value::<AuthData>(json!({ "password": [1] })).is_err());
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = UiaSessions::default();
        for _ in 0..MAX_SESSIONS + 50 {
            let _ = sessions.attempt(None, FLOWS, None, OP);
        }
        assert!(sessions.lock().len() <= MAX_SESSIONS);
    }
}
