//! User-interactive authentication (spec: client-server API, "User-Interactive
//! Authentication API"). An endpoint names its flows; the first request without `auth` gets
//! `401` with the flows and a `session`; each later request completes one stage; when every
//! stage of one flow is done, the request goes through.
//!
//! Sessions live in memory (they are short-lived by nature), at most [`MAX_SESSIONS`] at a
//! time and [`SESSION_LIFETIME`] each, so a client cannot grow the server's memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::crypto::random_bytes;
use crate::error::{Error, ErrorKind};

pub const MAX_SESSIONS: usize = 1000;
pub const SESSION_LIFETIME: Duration = Duration::from_secs(15 * 60);

pub const PASSWORD: &str = "m.login.password";
pub const DUMMY: &str = "m.login.dummy";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";

/// The flows an endpoint accepts: each a list of stage types.
pub type Flows = &'static [&'static [&'static str]];

struct Session {
    created: Instant,
    /// The user the session authenticates (`None` for registration, before the user exists).
    owner: Option<String>,
    completed: Vec<String>,
    /// The registration token a completed `m.login.registration_token` stage used.
    registration_token: Option<String>,
}

#[derive(Default)]
pub struct UiaSessions {
    sessions: Mutex<HashMap<String, Session>>,
}

/// A stage the client is attempting: its type and fields (`password`, `token`, …).
#[derive(Debug)]
pub struct Attempt {
    pub session: String,
    pub kind: String,
    pub fields: Map<String, Value>,
}

/// A flow completed: the request may proceed.
#[derive(Debug, Default)]
pub struct Completed {
    pub registration_token: Option<String>,
}

impl UiaSessions {
    /// Reads the request's `auth` object. Without one (or without a stage `type`), answers
    /// with the `401` challenge. `owner` ties the session to the authenticated user, so a
    /// session cannot be carried over to someone else's request.
    pub fn attempt(
        &self,
        auth: Option<&Value>,
        flows: Flows,
        owner: Option<&str>,
    ) -> Result<Attempt, Error> {
        let auth = auth.and_then(Value::as_object);
        let given_session = auth
            .and_then(|auth| auth.get("session"))
            .and_then(Value::as_str);
        let mut sessions = self.lock();
        let session = match given_session {
            Some(id)
                if sessions
                    .get(id)
                    .is_some_and(|s| s.owner.as_deref() == owner) =>
            {
                id.to_owned()
            }
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    "Unknown or expired auth session",
                ));
            }
            None => insert_session(&mut sessions, owner),
        };
        let Some(kind) = auth
            .and_then(|auth| auth.get("type"))
            .and_then(Value::as_str)
        else {
            return Err(challenge(&sessions[&session], &session, flows, None));
        };
        if !flows.iter().any(|flow| flow.contains(&kind)) {
            let error = Error::new(
                ErrorKind::Unrecognized,
                format!("Unsupported auth stage {kind}"),
            );
            return Err(challenge(
                &sessions[&session],
                &session,
                flows,
                Some(&error),
            ));
        }
        Ok(Attempt {
            session,
            kind: kind.to_owned(),
            fields: auth.cloned().unwrap_or_default(),
        })
    }

    /// Records the outcome of checking `attempt`'s stage. Returns `Ok` once a whole flow is
    /// complete (the session then ends), else the `401` challenge for the next stage (with
    /// the failure's error code, if the stage failed).
    pub fn record(
        &self,
        attempt: Attempt,
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
        let session = sessions.remove(&attempt.session).expect("present");
        Ok(Completed {
            registration_token: session.registration_token,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

fn insert_session(sessions: &mut HashMap<String, Session>, owner: Option<&str>) -> String {
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
    let id = crate::crypto::encode_base64(&random_bytes::<18>()).replace(['+', '/'], "_");
    sessions.insert(
        id.clone(),
        Session {
            created: Instant::now(),
            owner: owner.map(str::to_owned),
            completed: Vec::new(),
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

    const FLOWS: Flows = &[&[REGISTRATION_TOKEN], &[DUMMY, PASSWORD]];

    fn body(error: &Error) -> Map<String, Value> {
        error.extra.as_deref().cloned().unwrap_or_default()
    }

    #[test]
    fn a_request_without_auth_gets_the_flows() {
        let sessions = UiaSessions::default();
        let error = sessions.attempt(None, FLOWS, None).expect_err("challenge");
        assert_eq!(error.kind, ErrorKind::UserInteractiveAuth);
        let fields = body(&error);
        assert_eq!(fields["flows"][0]["stages"][0], REGISTRATION_TOKEN);
        assert!(fields["session"].is_string());
        assert!(!fields.contains_key("errcode"));
    }

    #[test]
    fn stages_complete_a_flow_in_one_session() {
        let sessions = UiaSessions::default();
        let first = sessions.attempt(None, FLOWS, None).expect_err("challenge");
        let session = body(&first)["session"].clone();
        let auth = json!({ "type": DUMMY, "session": session });
        let attempt = sessions.attempt(Some(&auth), FLOWS, None).expect("attempt");
        let next = sessions
            .record(attempt, Ok(None), FLOWS)
            .expect_err("one more stage");
        assert_eq!(body(&next)["completed"], json!([DUMMY]));
        let auth = json!({ "type": PASSWORD, "session": session });
        let attempt = sessions.attempt(Some(&auth), FLOWS, None).expect("attempt");
        sessions
            .record(attempt, Ok(None), FLOWS)
            .expect("flow complete");
        // The session is gone once used.
        assert!(sessions.attempt(Some(&auth), FLOWS, None).is_err());
    }

    #[test]
    fn a_failed_stage_says_why_and_keeps_the_session() {
        let sessions = UiaSessions::default();
        let auth = json!({ "type": REGISTRATION_TOKEN, "token": "bad" });
        let attempt = sessions.attempt(Some(&auth), FLOWS, None).expect("attempt");
        let session = attempt.session.clone();
        let failure = Error::new(ErrorKind::Forbidden, "Invalid registration token");
        let error = sessions
            .record(attempt, Err(failure), FLOWS)
            .expect_err("failed");
        let fields = body(&error);
        assert_eq!(fields["errcode"], "M_FORBIDDEN");
        assert_eq!(fields["session"], json!(session));
        let auth = json!({ "type": REGISTRATION_TOKEN, "token": "good", "session": session });
        let attempt = sessions.attempt(Some(&auth), FLOWS, None).expect("retry");
        let done = sessions
            .record(attempt, Ok(Some("good".into())), FLOWS)
            .expect("done");
        assert_eq!(done.registration_token.as_deref(), Some("good"));
    }

    #[test]
    fn sessions_belong_to_their_user_and_stages_must_be_offered() {
        let sessions = UiaSessions::default();
        let error = sessions
            .attempt(None, FLOWS, Some("@a:x"))
            .expect_err("challenge");
        let session = body(&error)["session"].clone();
        let auth = json!({ "type": PASSWORD, "session": session });
        assert!(sessions.attempt(Some(&auth), FLOWS, Some("@b:x")).is_err());
        let odd = json!({ "type": "m.login.sso" });
        let error = sessions
            .attempt(Some(&odd), FLOWS, None)
            .expect_err("not offered");
        assert_eq!(body(&error)["errcode"], "M_UNRECOGNIZED");
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = UiaSessions::default();
        for _ in 0..MAX_SESSIONS + 50 {
            let _ = sessions.attempt(None, FLOWS, None);
        }
        assert!(sessions.lock().len() <= MAX_SESSIONS);
    }
}
