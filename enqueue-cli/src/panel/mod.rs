//! `tenantctl admin serve`: the admin panel. Server-rendered pages and plain forms over
//! the same library calls as the CLI, so the two can never disagree; templates, styles
//! and the one small script are compiled into the binary (no build step, no CDN).
//!
//! Its connection budget: one pool of [`POOL_SIZE`] connections to the control plane for
//! pages and actions, and one of [`AUDIT_POOL_SIZE`] for the actions' audit entries.

mod actions;
mod auth;
mod charts;
mod listing;
mod pages;
pub mod users;
mod web;

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use axum::{
    http::{header, HeaderValue},
    routing::{get, post},
    Router,
};
use tenant_master::Config;
use tower_http::set_header::SetResponseHeaderLayer;

/// Connections for pages and the actions' library calls: a few short queries each.
pub const POOL_SIZE: u32 = 4;
/// Connections for audit entries, apart: an action takes one before it runs (so its entry
/// can be written once it is done), and waiting for one never holds a page's connection.
/// It also bounds how many actions run at once.
pub const AUDIT_POOL_SIZE: u32 = 2;

/// What every request handler shares.
pub struct Panel {
    /// The pages' reads and the users' sessions.
    pub pool: sqlx::PgPool,
    /// Actions and their activity rows (at most [`AUDIT_POOL_SIZE`] at once).
    pub audit_pool: sqlx::PgPool,
    /// The loaded configuration.
    pub config: Config,
    /// A TLS proxy is in front: trust its X-Forwarded-For and X-Forwarded-Proto.
    pub behind_proxy: bool,
}

/// The panel's state as handlers receive it.
pub type Shared = Arc<Panel>;

/// Every page and action, with the header, CSRF and tracing layers.
pub fn router(panel: Shared) -> Router {
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/static/panel.css", get(web::stylesheet))
        .route("/tenants", get(pages::tenants).post(actions::create_tenant))
        .route("/tenants/new", get(pages::new_tenant))
        .route("/tenants/{slug}", get(pages::tenant))
        .route("/tenants/{slug}/{action}", post(actions::tenant_action))
        .route("/jobs", get(pages::jobs))
        // The confirmation carries every counted id (27 bytes each): room for 300,000.
        .route("/jobs/retry", get(pages::retry_matching).post(actions::retry_matching).layer(axum::extract::DefaultBodyLimit::max(8 << 20)))
        .route(
            "/jobs/cancel",
            get(pages::cancel_matching).post(actions::cancel_matching).layer(axum::extract::DefaultBodyLimit::max(8 << 20)),
        )
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/{action}", post(actions::job_action))
        .route("/schedules", get(pages::schedules))
        .route("/hosts", get(pages::hosts))
        .route("/activity", get(pages::activity))
        .fallback(web::not_found)
        .with_state(panel)
        // What every response carries: never framed, scripts and forms from this origin
        // only, no referrer to elsewhere, and not cached unless the handler says otherwise
        // (the stylesheet does): pages show live state and carry a CSRF proof.
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
        ))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("same-origin")))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Serves the panel on `listen` until SIGTERM or Ctrl-C.
pub async fn serve(config: Config, listen: &str, behind_proxy: bool) -> anyhow::Result<ExitCode> {
    let addr: SocketAddr =
        listen.parse().map_err(|_| tenant_master::Error::Invalid(format!("--listen '{listen}' is not an address like 127.0.0.1:8001")))?;
    let pool = tenant_master::db::connect_pool(&config.database_url, POOL_SIZE).await?;
    let audit_pool = tenant_master::db::connect_pool(&config.database_url, AUDIT_POOL_SIZE).await?;
    auth::require_users(&pool).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}; pick a free address with --listen (env TENANT_MASTER_ADMIN_LISTEN)"))?;
    let shown = listener.local_addr()?;
    if !shown.ip().is_loopback() && !behind_proxy {
        eprintln!("warning: serving plain HTTP on {shown}: passwords and cookies cross the network in the clear; put a TLS proxy in front and pass --behind-proxy");
    }
    eprintln!("admin panel on http://{shown}/ (SIGTERM or Ctrl-C stops it)");
    let app = router(Arc::new(Panel { pool, audit_pool, config, behind_proxy }));
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tenant_master::worker::shutdown_signal().await;
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}
