//! What every page shares: the templates, rendering, errors as pages, the client's address.

use std::{net::SocketAddr, sync::OnceLock};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
};
use minijinja::Environment;
use serde::Serialize;
use tenant_master::{error::Refusal, Error};

use super::Shared;

/// Every template, compiled into the binary; `.html` names are auto-escaped.
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("error.html", include_str!("templates/error.html")),
            ("dashboard.html", include_str!("templates/dashboard.html")),
            ("tenants.html", include_str!("templates/tenants.html")),
            ("tenant.html", include_str!("templates/tenant.html")),
            ("new_tenant.html", include_str!("templates/new_tenant.html")),
            ("jobs.html", include_str!("templates/jobs.html")),
            ("job.html", include_str!("templates/job.html")),
            ("retry.html", include_str!("templates/retry.html")),
            ("cancel.html", include_str!("templates/cancel.html")),
            ("activity.html", include_str!("templates/activity.html")),
            ("pager.html", include_str!("templates/pager.html")),
            ("schedules.html", include_str!("templates/schedules.html")),
            ("hosts.html", include_str!("templates/hosts.html")),
        ] {
            env.add_template(name, source).unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        env.add_filter("when", when);
        env.add_filter("bytes", bytes);
        env
    })
}

/// An RFC 3339 time as `2026-11-24 23:17:02 UTC`; anything else as it is.
fn when(value: String) -> String {
    chrono::DateTime::parse_from_rfc3339(&value)
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or(value)
}

fn bytes(value: i64) -> String {
    match value {
        v if v >= 1 << 30 => format!("{:.1} GiB", v as f64 / (1u64 << 30) as f64),
        v if v >= 1 << 20 => format!("{:.1} MiB", v as f64 / (1u64 << 20) as f64),
        v if v >= 1 << 10 => format!("{:.1} KiB", v as f64 / 1024.0),
        v => format!("{v} B"),
    }
}

/// Renders template `name` with `context`; a template error is a bug, shown as a 500.
pub fn render(name: &str, context: impl Serialize) -> Response {
    match templates().get_template(name).and_then(|t| t.render(context)) {
        Ok(html) => page(StatusCode::OK, html),
        Err(e) => {
            tracing::error!(template = name, error = %e, "template failed");
            page(StatusCode::INTERNAL_SERVER_ERROR, "<h1>The page could not be drawn</h1><p>See the panel's log.</p>".into())
        }
    }
}

/// A page (its headers come from the router's layers).
fn page(status: StatusCode, html: String) -> Response {
    (status, Html(html)).into_response()
}

/// A failure shown to the user: one sentence, with the status it deserves.
#[derive(Debug)]
pub struct PanelError {
    pub status: StatusCode,
    pub message: String,
}

impl PanelError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PanelError {
        PanelError { status, message: message.into() }
    }

    pub fn forbidden(message: impl Into<String>) -> PanelError {
        PanelError::new(StatusCode::FORBIDDEN, message)
    }
}

/// SQLSTATE 22021 or 22P05 (a NUL byte or bad encoding in a value, in text or JSON) is
/// the client's input, not our fault.
const BAD_INPUT: &str = "the request holds a character the database cannot store (such as a NUL byte): check what was typed";

fn is_bad_input(sqlstate: Option<String>) -> bool {
    matches!(sqlstate.as_deref(), Some("22021" | "22P05"))
}

impl From<Error> for PanelError {
    fn from(e: Error) -> PanelError {
        if is_bad_input(e.sqlstate()) {
            return PanelError::new(StatusCode::BAD_REQUEST, BAD_INPUT);
        }
        let status = match e.refusal() {
            Some(Refusal::NotFound) => StatusCode::NOT_FOUND,
            Some(Refusal::Conflict) => StatusCode::CONFLICT,
            Some(Refusal::BadInput) => StatusCode::BAD_REQUEST,
            None => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "panel request failed");
        }
        PanelError { status, message: e.to_string() }
    }
}

impl From<sqlx::Error> for PanelError {
    fn from(e: sqlx::Error) -> PanelError {
        if is_bad_input(tenant_master::error::sqlstate(&e)) {
            return PanelError::new(StatusCode::BAD_REQUEST, BAD_INPUT);
        }
        tracing::error!(error = %e, "panel query failed");
        PanelError::new(StatusCode::SERVICE_UNAVAILABLE, "the control-plane database did not answer: try again, and see the panel's log")
    }
}

impl IntoResponse for PanelError {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let mut response = render("error.html", minijinja::context! { message => self.message, status => self.status.as_u16(), reason });
        *response.status_mut() = self.status;
        response
    }
}

pub type PageResult = Result<Response, PanelError>;

/// Where to go after a form: a 303, so a reload does not post again.
pub fn see(path: &str) -> Response {
    Redirect::to(path).into_response()
}

/// Who is asking: the peer's address, or, with `--behind-proxy` and a request that came
/// from a proxy on this machine (a loopback peer), the address the proxy appended last to
/// X-Forwarded-For (earlier entries are the client's own word). A client that reaches the
/// port directly cannot choose its address that way.
#[derive(Debug, Clone)]
pub struct Client {
    pub ip: String,
    /// The request came through the trusted proxy: its X-Forwarded-* headers count.
    pub via_proxy: bool,
}

impl FromRequestParts<Shared> for Client {
    type Rejection = PanelError;

    async fn from_request_parts(parts: &mut Parts, panel: &Shared) -> Result<Client, PanelError> {
        // An IPv4 client of a dual-stack [::] listener shows as ::ffff:a.b.c.d: as itself.
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_canonical());
        let via_proxy = panel.behind_proxy && peer.is_some_and(|ip| ip.is_loopback());
        if via_proxy {
            if let Some(ip) = forwarded_for(&parts.headers) {
                return Ok(Client { ip, via_proxy });
            }
        }
        Ok(Client { ip: peer.map(|ip| ip.to_string()).unwrap_or_else(|| "unknown".into()), via_proxy })
    }
}

fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let all = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let last = all.rsplit(',').map(str::trim).find(|s| !s.is_empty())?;
    last.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string())
}

/// Whether the browser reached us over https (only the trusted proxy can say so).
pub fn over_tls(headers: &HeaderMap, client: &Client) -> bool {
    client.via_proxy && headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

pub async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css"), (header::CACHE_CONTROL, "max-age=3600")], include_str!("templates/panel.css")).into_response()
}

pub async fn not_found() -> PanelError {
    PanelError::new(StatusCode::NOT_FOUND, "there is no such page")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let env = templates();
        assert!(env.templates().count() >= 12);
    }

    #[test]
    fn forwarded_for_takes_the_proxy_entry() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "6.6.6.6, 10.0.0.7".parse().unwrap());
        assert_eq!(forwarded_for(&h).as_deref(), Some("10.0.0.7"));
        h.append("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(forwarded_for(&h), None);
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(when("2026-11-24T23:17:02.5+00:00".into()), "2026-11-24 23:17:02 UTC");
    }
}
