//! Logging in and out, sessions, the CSRF proof on every state change, and the rate of
//! failed logins. A session is a random cookie (HttpOnly, SameSite=Strict, Secure behind
//! TLS) whose SHA-256 is kept in `admin_sessions` with its own random CSRF proof; every
//! form that changes anything carries that proof back, and [`Act`] checks it (and the
//! role) before any handler runs, so no action can forget to.

use std::collections::HashMap;

use axum::{
    extract::{FromRequest, FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    Form,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tenant_master::{activity, error::Context as _, Error};

use super::{
    users,
    web::{over_tls, render, see, Client, PageResult, PanelError},
    Shared,
};

const COOKIE: &str = "tm_session";
/// A session ends this long after login, whatever happens.
const SESSION_HOURS: i32 = 12;
/// Failed logins are counted over this window...
const FAILURE_WINDOW_MINUTES: i32 = 15;
/// ...and a user name with this many from one address is refused there, even with the
/// right password (not from another address: a guesser cannot lock an admin out; no limit
/// per user over all addresses, which would let one),
const MAX_FAILURES_PER_USER_AND_ADDRESS: i64 = 5;
/// ...and an address with this many, over all the names it tried. An IPv6 address counts
/// as its /64, which one client usually holds whole.
const MAX_FAILURES_PER_ADDRESS: i64 = 20;

/// A logged-in user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    pub user: String,
    pub role: String,
    /// The proof every state-changing form of this session carries back.
    pub csrf: String,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Equal without saying where the first difference is.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn session_of(pool: &PgPool, headers: &HeaderMap) -> Result<Option<Session>, PanelError> {
    let Some(token) = cookie_token(headers) else { return Ok(None) };
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT s.user_name, u.role, s.csrf_token
         FROM tenant_master.admin_sessions s JOIN tenant_master.admin_users u ON u.name = s.user_name
         WHERE s.token_sha256 = $1 AND s.expires_at > now()",
    )
    .bind(token_hash(&token))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(user, role, csrf)| Session { user, role, csrf }))
}

/// A page for logged-in users; anyone else is sent to the login page.
impl FromRequestParts<Shared> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, panel: &Shared) -> Result<Session, Response> {
        match session_of(&panel.pool, &parts.headers).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(e) => Err(e.into_response()),
        }
    }
}

/// A state change: a logged-in admin, the session's CSRF proof in the form, a same-origin
/// request, and the form's fields. Viewers, forged posts and stale pages stop here.
pub struct Act {
    pub user: String,
    pub ip: String,
    pub form: HashMap<String, String>,
    /// Taken before the action runs, so the action's entry can be written once it is done
    /// even when the pool is busy.
    audit: sqlx::pool::PoolConnection<sqlx::Postgres>,
}

impl Act {
    /// The actor written to the activity log and handed to the library calls.
    pub fn actor(&self) -> String {
        format!("panel:{}", self.user)
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub fn require(&self, name: &str, what: &str) -> Result<&str, PanelError> {
        self.field(name)
            .ok_or_else(|| PanelError::new(StatusCode::BAD_REQUEST, format!("{what} is missing: fill it in and send the form again")))
    }

    /// The id of tenant `slug` for the activity log, read on the audit connection after the
    /// action took effect: none if it cannot be read (the entry still names the slug).
    pub async fn tenant_id(&mut self, slug: &str) -> Option<i64> {
        tenant_master::tenants::find(&mut self.audit, slug).await.ok().flatten().map(|t| t.id)
    }

    /// Writes this action, done, to the activity log: the admin as actor, the client's
    /// address as origin (and in the details). A failure here must not read as "try again":
    /// the action took effect.
    pub async fn audit(&mut self, tenant_id: Option<i64>, action: &str, mut details: serde_json::Value) -> Result<(), PanelError> {
        details["client_ip"] = self.ip.clone().into();
        let actor = self.actor();
        activity::record_from(&mut self.audit, &actor, tenant_id, action, details, Some(&self.ip)).await.map_err(|e| {
            tracing::error!(error = %e, action, "an action was done but not written to the activity log");
            PanelError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("done, but its activity-log entry could not be written ({e}): do not repeat it; check the tenant or job"),
            )
        })
    }
}

impl FromRequest<Shared> for Act {
    type Rejection = Response;

    async fn from_request(request: Request, panel: &Shared) -> Result<Act, Response> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, panel).await?;
        let client = Client::from_request_parts(&mut parts, panel).await.map_err(IntoResponse::into_response)?;
        let ip = client.ip.clone();
        refuse_cross_site(&parts.headers, &client).map_err(IntoResponse::into_response)?;
        let Form(fields) = Form::<Vec<(String, String)>>::from_request(Request::from_parts(parts, body), panel).await.map_err(|_| {
            PanelError::new(StatusCode::BAD_REQUEST, "the form could not be read: reload the page and try again").into_response()
        })?;
        let form: HashMap<String, String> = fields.into_iter().collect();
        if !form.get("csrf").is_some_and(|proof| same(proof, &session.csrf)) {
            return Err(PanelError::forbidden(
                "this form lacks its session's CSRF proof (a forged or stale form): reload the page and try again",
            )
            .into_response());
        }
        if !session.is_admin() {
            return Err(
                PanelError::forbidden(format!("'{}' is a viewer: viewers see everything and change nothing", session.user)).into_response()
            );
        }
        let audit = panel.audit_pool.acquire().await.map_err(|e| PanelError::from(e).into_response())?;
        Ok(Act { user: session.user, ip, form, audit })
    }
}

/// A browser names the page a POST came from in Origin (and says "cross-site" in
/// Sec-Fetch-Site); when it does, that page must be ours. The CSRF proof is the real check
/// for actions; login and logout have no session yet or any more, and rely on this one.
fn same_origin(headers: &HeaderMap, client: &Client) -> bool {
    if headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site")) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    // Behind the proxy the browser's host is the one the proxy forwards, if it says.
    let forwarded = client.via_proxy.then(|| headers.get("x-forwarded-host")).flatten();
    let Some(host) = forwarded.or_else(|| headers.get(header::HOST)).and_then(|v| v.to_str().ok()) else { return false };
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    origin_host.eq_ignore_ascii_case(host)
}

fn refuse_cross_site(headers: &HeaderMap, client: &Client) -> Result<(), PanelError> {
    if same_origin(headers, client) {
        return Ok(());
    }
    Err(PanelError::forbidden("this form was sent from another site: refused"))
}

/// Refuses to serve a panel nobody can log in to.
pub async fn require_users(pool: &PgPool) -> tenant_master::Result<()> {
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_master.admin_users WHERE role = 'admin'")
        .fetch_one(pool)
        .await
        .context("failed to read tenant_master.admin_users")?;
    if users == 0 {
        return Err(Error::Invalid(
            "the panel has no admin user yet: add the first with `tenantctl admin user add NAME --role admin` (password on stdin)".into(),
        ));
    }
    Ok(())
}

pub async fn login_page(State(panel): State<Shared>, headers: HeaderMap) -> PageResult {
    if session_of(&panel.pool, &headers).await?.is_some() {
        return Ok(see("/"));
    }
    Ok(render("login.html", minijinja::context! {}))
}

#[derive(Deserialize)]
pub struct Login {
    user: String,
    password: String,
}

/// Failed logins in the window: of this user name from this address, and from this
/// address over any names.
struct Failures {
    pair: i64,
    address: i64,
}

impl Failures {
    async fn count(tx: &mut sqlx::PgConnection, user: &str, ip: &str) -> Result<Failures, PanelError> {
        let (pair, address): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE user_name = $1 AND $1 <> '' AND client_ip = $2), count(*) FILTER (WHERE client_ip = $2)
             FROM tenant_master.admin_login_failures WHERE at > now() - make_interval(mins => $3)",
        )
        .bind(user)
        .bind(ip)
        .bind(FAILURE_WINDOW_MINUTES)
        .fetch_one(tx)
        .await?;
        Ok(Failures { pair, address })
    }

    /// Over a limit: refused, even with the right password.
    fn limited(&self) -> bool {
        self.pair >= MAX_FAILURES_PER_USER_AND_ADDRESS || self.address >= MAX_FAILURES_PER_ADDRESS
    }

    /// The first refusal of a window, the one logged.
    fn first_refusal(&self) -> bool {
        self.pair == MAX_FAILURES_PER_USER_AND_ADDRESS || self.address == MAX_FAILURES_PER_ADDRESS
    }
}

/// What the address limit counts: an IPv4 address, or an IPv6 address's /64.
fn address_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        _ => ip.to_owned(),
    }
}

async fn record_failure(tx: &mut sqlx::PgConnection, user: &str, ip: &str) -> Result<(), PanelError> {
    sqlx::query("INSERT INTO tenant_master.admin_login_failures (user_name, client_ip) VALUES ($1, $2)")
        .bind(user)
        .bind(ip)
        .execute(tx)
        .await?;
    Ok(())
}

/// Takes this address's login lock, then the user's (always in that order, so two logins
/// never wait for each other in a circle): the failure counts cannot be raced past. Returns
/// the user's password hash, if `name` is a user.
async fn lock_and_read_hash(tx: &mut sqlx::PgConnection, address: &str, name: Option<&str>) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('tenant_master.admin_login_ip:' || $1, 0))")
        .bind(address)
        .execute(&mut *tx)
        .await?;
    let Some(name) = name else { return Ok(None) };
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('tenant_master.admin_login:' || $1, 0))")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    sqlx::query_scalar("SELECT password_hash FROM tenant_master.admin_users WHERE name = $1").bind(name).fetch_optional(&mut *tx).await
}

/// A new session of `user`, its failed logins from this address forgotten; returns the
/// session's token (only its hash is stored).
async fn open_session(tx: &mut sqlx::PgConnection, user: &str, address: &str, ip: &str) -> Result<String, sqlx::Error> {
    let token = random_token();
    sqlx::query("DELETE FROM tenant_master.admin_sessions WHERE expires_at < now()").execute(&mut *tx).await?;
    sqlx::query("DELETE FROM tenant_master.admin_login_failures WHERE user_name = $1 AND client_ip = $2")
        .bind(user)
        .bind(address)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO tenant_master.admin_sessions (token_sha256, user_name, csrf_token, client_ip, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(hours => $5))",
    )
    .bind(token_hash(&token))
    .bind(user)
    .bind(random_token())
    .bind(ip)
    .bind(SESSION_HOURS)
    .execute(&mut *tx)
    .await?;
    Ok(token)
}

pub async fn login(State(panel): State<Shared>, client: Client, headers: HeaderMap, Form(login): Form<Login>) -> PageResult {
    // A login posted from another site would log this browser in as someone else.
    refuse_cross_site(&headers, &client)?;
    let ip = client.ip.clone();
    let address = address_key(&ip);
    let pool = &panel.pool;
    // Only a well-formed name is looked up or counted: anything else (a megabyte of junk, a
    // password typed into the wrong box) is stored as nothing. Unknown well-formed names
    // count like users, so the limits do not tell which names exist.
    let typed = login.user.trim();
    let name = users::check_name(typed).is_ok().then_some(typed);
    let counted = name.unwrap_or_default();
    let mut tx = pool.begin().await?;
    let stored = lock_and_read_hash(&mut tx, &address, name).await?;
    // Only a user who exists is named in the log.
    let user = if stored.is_some() { counted } else { "" };
    let actor = if user.is_empty() { "panel:unknown-user".to_owned() } else { format!("panel:{user}") };
    let details = serde_json::json!({ "user": (!user.is_empty()).then_some(user), "client_ip": ip });
    sqlx::query("DELETE FROM tenant_master.admin_login_failures WHERE at < now() - interval '1 day'").execute(&mut *tx).await?;
    let failures = Failures::count(&mut tx, counted, &address).await?;
    if failures.limited() {
        // The first refusal of a window is logged (and counted, so the next ones are
        // not): a guesser hammering away writes nothing more.
        if failures.first_refusal() {
            record_failure(&mut tx, counted, &address).await?;
            activity::record_from(&mut tx, &actor, None, "admin.login_rate_limited", details, Some(&ip)).await?;
        }
        tx.commit().await?;
        return Err(PanelError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins for this user or from this address: wait {FAILURE_WINDOW_MINUTES} minutes (`tenantctl admin user password NAME` clears a user's count)"),
        ));
    }
    let known = stored.is_some();
    let stored = stored.unwrap_or_else(|| users::decoy_hash().to_owned());
    let password = login.password;
    let matches = tokio::task::spawn_blocking(move || users::verify(&password, &stored)).await.unwrap_or(false) && known;
    if !matches {
        record_failure(&mut tx, counted, &address).await?;
        activity::record_from(&mut tx, &actor, None, "admin.login_failed", details, Some(&ip)).await?;
        tx.commit().await?;
        let mut page = render("login.html", minijinja::context! { error => "wrong user name or password", user => name });
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(page);
    }
    let token = open_session(&mut tx, user, &address, &ip).await?;
    activity::record_from(&mut tx, &actor, None, "admin.login", details, Some(&ip)).await?;
    tx.commit().await?;
    let secure = if over_tls(&headers, &client) { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", SESSION_HOURS * 3600);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response())
}

/// Ends the session (any role may; the CSRF proof is still required).
pub async fn logout(
    State(panel): State<Shared>,
    client: Client,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> PageResult {
    refuse_cross_site(&headers, &client)?;
    let session = session_of(&panel.pool, &headers).await?;
    let (Some(session), Some(token)) = (session, cookie_token(&headers)) else { return Ok(see("/login")) };
    if !form.get("csrf").is_some_and(|p| same(p, &session.csrf)) {
        return Err(PanelError::forbidden("this form lacks its session's CSRF proof: reload the page and try again"));
    }
    sqlx::query("DELETE FROM tenant_master.admin_sessions WHERE token_sha256 = $1").bind(token_hash(&token)).execute(&panel.pool).await?;
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; tm_session=abc; tm_session_x=2".parse().unwrap());
        assert_eq!(cookie_token(&h).as_deref(), Some("abc"));
        h.insert(header::COOKIE, "tm_sessionx=abc".parse().unwrap());
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn origin_must_be_ours_when_given() {
        let direct = Client { ip: "127.0.0.1".into(), via_proxy: false };
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8001".parse().unwrap());
        assert!(same_origin(&h, &direct), "no Origin: the CSRF proof decides");
        h.insert(header::ORIGIN, "http://127.0.0.1:8001".parse().unwrap());
        assert!(same_origin(&h, &direct));
        h.insert(header::ORIGIN, "http://127.0.0.1:9999".parse().unwrap());
        assert!(!same_origin(&h, &direct));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h, &direct));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h, &direct), "a cross-site fetch without Origin");
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        assert_eq!(address_key("2001:db8:1:1::25"), "2001:db8:1:1::/64");
        assert_eq!(address_key("2001:db8:1:1:ffff::1"), address_key("2001:db8:1:1::2"));
        assert_eq!(address_key("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn proofs_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd") && !same("abc", "ab") && !same("", "a"));
    }
}
