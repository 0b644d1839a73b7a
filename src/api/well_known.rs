//! `/.well-known/matrix/*`: how clients and servers find this homeserver when it is not
//! reached at the server name's host on the default ports.
//!
//! An explicit `[well_known]` setting wins. Without one, a server with a TLS listener on
//! port 443 advertises itself there (`m.server` = `<server_name>:443`, `m.homeserver` =
//! `https://<server_name>`), the usual home set-up; otherwise the answer is `404 M_NOT_FOUND`,
//! which tells clients and servers to use the defaults.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::api::app::Services;
use crate::config::Config;
use crate::error::Error;

/// # GET /.well-known/matrix/client
pub(crate) async fn client(app: web::Data<Services>) -> Result<HttpResponse, Error> {
    let base_url = client_base_url(&app.config)
        .ok_or_else(|| Error::not_found("No client discovery information is configured"))?;
    let mut answer = json!({ "m.homeserver": { "base_url": base_url } });
    let foci = crate::api::client::voip::rtc_foci(&app.config.voip);
    if !foci.is_empty() {
        answer["org.matrix.msc4143.rtc_foci"] = foci.into();
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// # GET /.well-known/matrix/server
pub(crate) async fn server(app: web::Data<Services>) -> Result<HttpResponse, Error> {
    let delegated = server_delegation(&app.config)
        .ok_or_else(|| Error::not_found("No server delegation is configured"))?;
    Ok(HttpResponse::Ok().json(json!({ "m.server": delegated })))
}

fn serves_tls_on_443(config: &Config) -> bool {
    config
        .listeners
        .iter()
        .any(|listener| listener.tls && listener.address.port() == 443)
}

pub(crate) fn client_base_url(config: &Config) -> Option<String> {
    config.well_known.client.clone().or_else(|| {
        serves_tls_on_443(config).then(|| format!("https://{}", config.server.server_name.host()))
    })
}

pub(crate) fn server_delegation(config: &Config) -> Option<String> {
    config.well_known.server.clone().or_else(|| {
        (serves_tls_on_443(config) && config.server.server_name.port().is_none())
            .then(|| format!("{}:443", config.server.server_name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[server]\nserver_name = \"example.org\"\n[tls]\ncertificate = \"c\"\nprivate_key = \"k\"\n{extra}"
        );
        Config::parse(&text, Path::new("/")).expect("valid")
    }

    #[test]
    fn nothing_to_say_by_default() {
        let config = config("");
        assert_eq!(client_base_url(&config), None);
        assert_eq!(server_delegation(&config), None);
    }

    #[test]
    fn explicit_settings_win() {
        let config = config(
            "[[listeners]]\naddress = \"0.0.0.0:443\"\ntls = true\n[well_known]\nclient = \"https://matrix.example.org\"\nserver = \"matrix.example.org:8448\"\n",
        );
        assert_eq!(
            client_base_url(&config).as_deref(),
            Some("https://matrix.example.org")
        );
        assert_eq!(
            server_delegation(&config).as_deref(),
            Some("matrix.example.org:8448")
        );
    }

    #[test]
    fn a_tls_listener_on_443_is_advertised() {
        let config = config("[[listeners]]\naddress = \"[::]:443\"\ntls = true\n");
        assert_eq!(
            client_base_url(&config).as_deref(),
            Some("https://example.org")
        );
        assert_eq!(
            server_delegation(&config).as_deref(),
            Some("example.org:443")
        );
    }
}
