//! Which versions of the client-server spec this server supports.

use actix_web::HttpResponse;
use serde_json::json;

/// The spec versions advertised: the client-server API of each, as far as one server's
/// everyday chat goes, is built and tested. Two modules are not yet: end-to-end encryption
/// (device keys, key backup, to-device) and media; their endpoints answer
/// `404 M_UNRECOGNIZED`, as the spec lets a server answer for what it does not offer, and
/// clients fall back to unencrypted rooms without attachments. Without a version here,
/// clients such as Element refuse to log in at all.
pub(crate) const SUPPORTED_VERSIONS: &[&str] = &[
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
    "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
];

/// # GET /_matrix/client/versions
pub(crate) async fn get() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "versions": all_versions(),
        // Dehydrated devices, as Synapse names them (Element X looks for it).
        "unstable_features": { "org.matrix.msc3814": true },
    }))
}

/// The r0 releases first (their paths are served too, see [`crate::api::legacy`]), then the
/// versions of the spec.
fn all_versions() -> Vec<&'static str> {
    let r0 = crate::api::legacy::R0_VERSIONS.iter();
    r0.chain(SUPPORTED_VERSIONS).copied().collect()
}
