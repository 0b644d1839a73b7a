//! `PUT /_matrix/federation/v1/send/{txnId}` (spec: server-server API, "Transactions"): the
//! PDUs and EDUs another server pushes to us. Each PDU gets its own result; the transaction
//! is answered only once every accepted PDU is stored and flushed.
//!
//! The body is never held as one JSON tree: the transaction is parsed with each PDU and EDU
//! kept as its raw text ([`RawValue`], about the size of the text), and each is turned into a
//! tree only when its turn comes, so a transaction costs about its own size plus one PDU's or
//! one batch of EDUs' tree at a time.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::origin::SignedJson;
use crate::api::app::Services;
use crate::error::{Error, ErrorKind};
use crate::federation::inbound::receive_pdu_in;
use crate::rooms::Unflushed;

/// The spec's limits on one transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

/// The largest body `/send` accepts (under `limits.max_request_body_bytes`, 8 MiB by
/// default, which is then what binds). 50 PDUs of at most 64 KiB are 3.2 MiB; the spec puts
/// no bound on EDUs, but MSC4514 proposes 64 KiB each, as Synapse now aims for when it splits
/// to-device messages, and 100 of those are 6.4 MiB more. Refusing a real transaction would
/// stop that server's traffic to us for good (it retries the same one), so the cap is what a
/// full one can need; what a stranger can make us hold is bounded elsewhere (the
/// unauthenticated budget, one transaction at a time per origin).
pub(crate) const TRANSACTION_BODY_LIMIT: usize = (MAX_PDUS + MAX_EDUS) * 64 * 1024 + 64 * 1024;

/// The longest PDU text turned into a tree: a PDU is at most 64 KiB as canonical JSON, and
/// the text may spell the same thing longer (spaces, escapes). `receive_pdu` applies the
/// exact limit.
const MAX_PDU_TEXT: usize = 2 * 64 * 1024;

/// The longest EDU text kept: the spec has no limit, MSC4514 proposes 64 KiB, Synapse has
/// sent to-device EDUs of several hundred KiB.
const MAX_EDU_TEXT: usize = 1024 * 1024;

/// EDUs are handed on in batches of about this much text, so that only one batch is held as
/// trees at a time.
const EDU_BATCH_TEXT: usize = 512 * 1024;

#[derive(Debug, Deserialize)]
pub(crate) struct Transaction {
    origin: String,
    #[allow(dead_code)]
    origin_server_ts: u64,
    pdus: Vec<Box<RawValue>>,
    #[serde(default)]
    edus: Vec<Box<RawValue>>,
}

/// # PUT /_matrix/federation/v1/send/{txnId}
pub(crate) async fn send(
    app: web::Data<Services>,
    _txn_id: web::Path<String>,
    signed: SignedJson<Transaction>,
) -> Result<HttpResponse, Error> {
    let SignedJson { origin, body } = signed;
    if body.origin != origin.as_str() {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "The transaction's origin is not the server that signed it",
        ));
    }
    // A server that sends us transactions is up: whatever waits for it goes now.
    app.federation
        .transport
        .outbound
        .server_is_back(origin.as_str());
    if body.pdus.len() > MAX_PDUS || body.edus.len() > MAX_EDUS {
        return Err(Error::new(
            ErrorKind::BadJson,
            format!("A transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"),
        ));
    }
    app.federation.inbound_counts.transaction();
    let mut results = Map::new();
    let gaps = crate::federation::inbound::GapBudget::per_transaction();
    // The PDUs are flushed once, after the last: the answer waits for it (an event we
    // answered for is never lost).
    let unflushed = Unflushed::default();
    for pdu in body.pdus {
        let Some(json) = pdu_object(&pdu) else {
            app.federation.inbound_counts.pdu(false);
            continue;
        };
        drop(pdu);
        let (event_id, outcome) = receive_pdu_in(
            &app.federation,
            origin.as_str(),
            &gaps,
            json,
            Some(&unflushed),
        )
        .await;
        app.federation.inbound_counts.pdu(outcome.is_ok());
        let Some(event_id) = event_id else {
            // Without an ID there is nothing to answer about.
            if let Err(err) = outcome {
                tracing::info!(%origin, "dropped a PDU: {err}");
            }
            continue;
        };
        let result = match outcome {
            Ok(_) => json!({}),
            Err(err) => {
                tracing::info!(%origin, event = %event_id, "refused a PDU: {err}");
                json!({ "error": err.to_string() })
            }
        };
        results.insert(event_id.to_string(), result);
    }
    app.federation
        .rooms
        .make_durable(unflushed)
        .await
        .map_err(Error::internal)?;
    // After the PDUs: a receipt may point at an event of the same transaction.
    let mut batch = Vec::new();
    let mut batch_text = 0;
    for edu in body.edus {
        let length = edu.get().len();
        if length > MAX_EDU_TEXT {
            tracing::info!(%origin, length, "dropped an EDU over the size limit");
            continue;
        }
        if batch_text + length > EDU_BATCH_TEXT && !batch.is_empty() {
            crate::federation::edu::receive_edus(&app.federation, &origin, batch).await;
            batch = Vec::new();
            batch_text = 0;
        }
        if let Ok(edu) = serde_json::from_str::<Value>(edu.get()) {
            batch.push(edu);
            batch_text += length;
        }
    }
    if !batch.is_empty() {
        crate::federation::edu::receive_edus(&app.federation, &origin, batch).await;
    }
    Ok(HttpResponse::Ok().json(json!({ "pdus": results })))
}

/// One PDU of the transaction as a canonical JSON object, or `None` when it is too long or
/// not an object of canonical JSON (nothing can be answered about it: it has no event ID).
fn pdu_object(pdu: &RawValue) -> Option<ruma::CanonicalJsonObject> {
    if pdu.get().len() > MAX_PDU_TEXT {
        return None;
    }
    let value: Value = serde_json::from_str(pdu.get()).ok()?;
    match ruma::CanonicalJsonValue::try_from(value) {
        Ok(ruma::CanonicalJsonValue::Object(json)) => Some(json),
        _ => None,
    }
}
