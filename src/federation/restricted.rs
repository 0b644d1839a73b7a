//! Joins of restricted rooms over federation (spec: server-server API, "Restricted rooms";
//! `make_join` and `send_join` v2). As the resident server we check the room's allow
//! conditions, name one of our users in `join_authorised_via_users_server` in the template,
//! and sign the join the other server sends back (the auth rules ask for our signature), then
//! return it in `send_join`'s `event`. As the joining server we take that copy only if it
//! is the very event we signed, and when we hold the room already but none of our users in
//! it may vouch, we ask another resident server to. Which user vouches, and when, is
//! [`crate::rooms::restricted`].

use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::join::{SEND_JOIN_TIME, first_server, make_and_sign, send_path};
use super::join_answer::{AUTHORISED_VIA, content_field, resident_copy};
use super::join_stream::{AnswerFile, read_join_event};
use super::outbound::follower::room_servers;
use crate::error::{Error, ErrorKind};
use crate::federation::Federation;
use crate::matrix::events::signing::add_signature;
use crate::rooms::remote::Outcome;
use crate::rooms::restricted::{JoinAuthorisation, authorise_join, may_authorise};

/// `make_join`: names in the template's content the user of ours who vouches for the join of
/// `user_id`, when the room is restricted and the user needs one; refuses the join (with the
/// spec's codes) when the user may not join that way.
pub(crate) fn vouch_in_template(
    fed: &Federation,
    room_id: &RoomId,
    user_id: &UserId,
    content: &mut Map<String, Value>,
) -> Result<(), Error> {
    let ours = &fed.transport.origin;
    if let JoinAuthorisation::Via(authoriser) =
        authorise_join(&fed.storage, room_id, user_id, ours)?
    {
        content.insert(AUTHORISED_VIA.to_owned(), json!(authoriser));
    }
    Ok(())
}

/// `send_join`: when the join names one of our users in `join_authorised_via_users_server`,
/// checks that the user may still join and that ours may still vouch, and adds our
/// signature. Returns whether we signed (the answer then carries the signed event). A join
/// naming another server's user is left to the signature checks, which want that server's.
pub(crate) fn countersign_join(
    fed: &Federation,
    origin: &str,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    event: &mut CanonicalJsonObject,
) -> Result<bool, Error> {
    let Some(named) = content_field(event, AUTHORISED_VIA) else {
        return Ok(false);
    };
    let ours = &fed.transport.origin;
    let named = named
        .as_str()
        .and_then(|text| UserId::parse(text).ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::BadJson,
                "join_authorised_via_users_server is not a user ID",
            )
        })?;
    // Before version 8 the field means nothing and needs no signature.
    if named.server_name() != ours || !rules.authorization.restricted_join_rule {
        return Ok(false);
    }
    let sender = text(event, "sender")
        .and_then(|sender| UserId::parse(sender).ok())
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "The event has no valid sender"))?;
    let is_own_join = text(event, "type") == Some("m.room.member")
        && text(event, "state_key") == Some(sender.as_str())
        && content_field(event, "membership").and_then(CanonicalJsonValue::as_str) == Some("join")
        && sender.server_name().as_str() == origin
        && text(event, "room_id") == Some(room_id.as_str());
    if !is_own_join {
        return Err(Error::new(
            ErrorKind::BadJson,
            "Only the join of a user of the sending server, in this room, is signed",
        ));
    }
    // The conditions are checked again: the user may have left the allowed room since
    // `make_join`. Invited or joined users need none, but the signature asked for is ours.
    authorise_join(&fed.storage, room_id, &sender, ours)?;
    if !may_authorise(&fed.storage, room_id, &named)? {
        return Err(Error::new(
            ErrorKind::Forbidden,
            format!("{named} is not a member of the room who may invite"),
        ));
    }
    add_signature(event, rules, ours.as_str(), &fed.signing_key)
        .map_err(|err| Error::new(ErrorKind::BadJson, err.to_string()))?;
    Ok(true)
}

/// Joins our user to a restricted room we hold when none of our members there may vouch
/// for the join (`M_UNABLE_TO_GRANT_JOIN` here): a resident server elsewhere, `via` first,
/// then each server in the room, makes the join and signs it (`make_join`, `send_join`),
/// and the signed join comes in like any event of the room.
pub(crate) async fn join_through_resident(
    fed: &Federation,
    user_id: &UserId,
    room_id: &RoomId,
    via: &[String],
) -> Result<OwnedEventId, Error> {
    let mut servers = via.to_vec();
    servers.extend(room_servers(
        &fed.storage,
        room_id.as_str(),
        &fed.transport.origin,
    )?);
    let mut seen = std::collections::HashSet::new();
    servers.retain(|server| seen.insert(server.clone()) && server != fed.transport.origin.as_str());
    if servers.is_empty() {
        return Err(Error::new(
            ErrorKind::UnableToGrantJoin,
            "No user of this server in the room may invite you, and no other server is in it",
        ));
    }
    first_server(fed, room_id, &servers, "joining", async |server: &str| {
        let made = make_and_sign(fed, user_id, room_id, server, "join").await?;
        let body = serde_json::to_value(&made.event).map_err(Error::internal)?;
        let path = send_path("v2/send_join", room_id, &made.event_id);
        // The answer holds the room's whole state, as for a first join: to a file, then
        // only `event` is taken from it.
        let (answer, mut file) = AnswerFile::create(&fed.config.database.path)
            .await
            .map_err(Error::internal)?;
        let bound = (fed.config.federation.max_join_answer_bytes, SEND_JOIN_TIME);
        fed.transport
            .put_to_writer(server, &path, &body, &mut file, bound)
            .await?;
        drop(file);
        let bad =
            |why: String| Error::new(ErrorKind::BadJson, format!("Bad send_join answer: {why}"));
        let signed = read_join_event(&answer.path).await.map_err(bad)?;
        drop(answer);
        let join = match signed {
            Some(raw) => {
                let signed = serde_json::from_str::<CanonicalJsonObject>(raw.get())
                    .map_err(|err| bad(format!("its event: {err}")))?;
                resident_copy(&made.event, &signed)?
            }
            None => made.event,
        };
        match super::inbound::receive_pdu(
            fed,
            server,
            &super::inbound::GapBudget::per_transaction(),
            join,
        )
        .await
        .1
        {
            Ok(Outcome::Accepted | Outcome::Known) => Ok(made.event_id),
            Ok(Outcome::SoftFailed) => Err(Error::new(
                ErrorKind::Forbidden,
                "The join is not allowed by the room's current state",
            )),
            Err(refused) => Err(refused.into()),
        }
    })
    .await
}

fn text<'a>(event: &'a CanonicalJsonObject, key: &str) -> Option<&'a str> {
    event.get(key).and_then(CanonicalJsonValue::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> CanonicalJsonObject {
        match CanonicalJsonValue::try_from(value).expect("canonical") {
            CanonicalJsonValue::Object(object) => object,
            _ => panic!("not an object"),
        }
    }

    fn signatures(value: Value) -> CanonicalJsonValue {
        CanonicalJsonValue::try_from(value).expect("canonical")
    }

    #[test]
    fn only_our_own_join_with_signatures_added_is_taken_back() {
        let ours = object(json!({
            "type": "m.room.member", "state_key": "@b:b.example", "sender": "@b:b.example",
            "content": { "membership": "join", AUTHORISED_VIA: "@a:a.example" },
            "signatures": { "b.example": { "ed25519:1": "sig" } },
        }));
        let mut signed = ours.clone();
        signed.insert(
            "signatures".to_owned(),
            signatures(json!({
                "b.example": { "ed25519:1": "sig" }, "a.example": { "ed25519:1": "sig2" }
            })),
        );
        assert_eq!(resident_copy(&ours, &signed.clone()).expect("same"), signed);
        let mut changed = signed;
        changed.insert("depth".to_owned(), CanonicalJsonValue::Integer(7u32.into()));
        assert!(resident_copy(&ours, &changed).is_err());
    }

    #[test]
    fn only_the_authorising_servers_signature_is_taken_from_the_residents_copy() {
        let ours = object(json!({
            "type": "m.room.member", "state_key": "@b:b.example", "sender": "@b:b.example",
            "content": { "membership": "join", AUTHORISED_VIA: "@a:a.example" },
            "signatures": { "b.example": { "ed25519:1": "sig" } },
        }));
        // The resident drops our signature, forges another of ours, adds a third server's
        // and `unsigned` data: only a.example's signature is taken.
        let mut theirs = ours.clone();
        theirs.insert(
            "signatures".to_owned(),
            signatures(json!({
                "b.example": { "ed25519:2": "forged" },
                "a.example": { "ed25519:1": "sig2" },
                "c.example": { "ed25519:1": "sig3" },
            })),
        );
        theirs.insert(
            "unsigned".to_owned(),
            signatures(json!({ "age": 1, "org.example.extra": "stored and served" })),
        );
        let mut expected = ours.clone();
        expected.insert(
            "signatures".to_owned(),
            signatures(json!({
                "b.example": { "ed25519:1": "sig" }, "a.example": { "ed25519:1": "sig2" }
            })),
        );
        assert_eq!(
            resident_copy(&ours, &theirs.clone()).expect("taken"),
            expected
        );

        // Without the authorising server's signature there is nothing to take.
        let mut unsigned_copy = theirs;
        unsigned_copy.insert(
            "signatures".to_owned(),
            signatures(json!({ "c.example": { "ed25519:1": "sig3" } })),
        );
        let err = resident_copy(&ours, &unsigned_copy).expect_err("refused");
        assert_eq!(err.kind, ErrorKind::Forbidden);
    }
}
