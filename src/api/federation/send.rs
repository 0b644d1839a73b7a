//! `PUT /_matrix/federation/v1/send/{txnId}` (spec: server-server API, "Transactions"): the
//! PDUs and EDUs another server pushes to us. Each PDU gets its own result; the transaction
//! is answered only once every accepted PDU is stored and flushed.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::origin::SignedJson;
use crate::api::app::Services;
use crate::error::{Error, ErrorKind};
use crate::federation::inbound::receive_pdu;

/// The spec's limits on one transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

#[derive(Debug, Deserialize)]
pub(crate) struct Transaction {
    origin: String,
    #[allow(dead_code)]
    origin_server_ts: u64,
    pdus: Vec<Value>,
    #[serde(default)]
    edus: Vec<Value>,
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
    let mut results = Map::new();
    let gaps = crate::federation::inbound::GapBudget::per_transaction();
    for pdu in body.pdus {
        let (event_id, outcome) = match ruma::CanonicalJsonValue::try_from(pdu) {
            Ok(ruma::CanonicalJsonValue::Object(json)) => {
                receive_pdu(&app.federation, origin.as_str(), &gaps, json).await
            }
            _ => continue,
        };
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
    // After the PDUs: a receipt may point at an event of the same transaction.
    crate::federation::edu::receive_edus(&app.federation, &origin, body.edus).await;
    Ok(HttpResponse::Ok().json(json!({ "pdus": results })))
}
