//! The panel's router without a browser or a socket (tower's `oneshot` against the real
//! control plane): who may do what, the CSRF proof and the cross-site check on every
//! form, and the headers every response carries, redirects and errors included.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{header, Request, Response, StatusCode},
};
use tenant_master_panel::{router, Panel};
use tenant_master_tests::{panel::add_user, TestEnv};
use tower::ServiceExt as _;

const PASSWORD: &str = "correct horse battery staple";
const HOST: &str = "panel.test";

fn panel(env: &TestEnv) -> axum::Router {
    router(Arc::new(Panel { pool: env.pool.clone(), audit_pool: env.pool.clone(), config: env.config.clone(), behind_proxy: false }))
}

/// A request as a browser on this origin sends it, from a loopback client.
fn request(method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path).header(header::HOST, HOST);
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, format!("tm_session={cookie}"));
    }
    let body = match form {
        Some(form) => {
            builder =
                builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").header(header::ORIGIN, format!("http://{HOST}"));
            Body::from(form.to_owned())
        }
        None => Body::empty(),
    };
    let mut request = builder.body(body).unwrap();
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50000))));
    request
}

async fn send(env: &TestEnv, request: Request<Body>) -> Response<Body> {
    panel(env).oneshot(request).await.unwrap()
}

/// Logs `user` in; returns the session cookie's value and the session's CSRF proof.
async fn log_in(env: &TestEnv, user: &str) -> (String, String) {
    let response = send(env, request("POST", "/login", None, Some(&format!("user={user}&password={}", PASSWORD.replace(' ', "+"))))).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "login of {user}");
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    let token = cookie.strip_prefix("tm_session=").unwrap().split(';').next().unwrap().to_owned();
    let csrf: String =
        sqlx::query_scalar("SELECT csrf_token FROM tenant_master.admin_sessions WHERE user_name = $1 ORDER BY created_at DESC LIMIT 1")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    (token, csrf)
}

fn assert_guarded(response: &Response<Body>, what: &str) {
    let headers = response.headers();
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{what}");
    assert!(headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("frame-ancestors 'none'"), "{what}");
    assert_eq!(headers[header::REFERRER_POLICY], "same-origin", "{what}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store", "{what}");
}

async fn audited(env: &TestEnv, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenant_master.activity_log WHERE action = $1").bind(action).fetch_one(&env.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_proofs_and_headers_hold_on_every_route() {
    let env = TestEnv::new().await;
    add_user(&env, "alice", "admin", PASSWORD);
    add_user(&env, "victor", "viewer", PASSWORD);
    let job: String = sqlx::query_scalar("SELECT tenant_master.enqueue('Noop', '{}', NULL, now() + interval '1 hour')")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let cancel = format!("/jobs/{job}/cancel");

    // No session: every page sends to the login, with the headers on the redirect too.
    let response = send(&env, request("GET", "/jobs", None, None)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/login");
    assert_guarded(&response, "a redirect");
    let response = send(&env, request("GET", "/no/such/page", None, None)).await;
    assert_guarded(&response, "an unknown path");
    // The stylesheet keeps its own caching.
    let response = send(&env, request("GET", "/static/panel.css", None, None)).await;
    assert_eq!(response.headers()[header::CACHE_CONTROL], "max-age=3600");

    // A viewer sees the jobs and may not cancel one, even with its own valid proof.
    let (viewer, viewer_csrf) = log_in(&env, "victor").await;
    let response = send(&env, request("GET", "/jobs", Some(&viewer), None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_guarded(&response, "a page");
    let response = send(&env, request("POST", &cancel, Some(&viewer), Some(&format!("csrf={viewer_csrf}")))).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "a viewer's action");

    // An admin without the proof, with another session's proof, or from another site: refused.
    let (admin, admin_csrf) = log_in(&env, "alice").await;
    for (form, what) in [("", "no proof"), (&*format!("csrf={viewer_csrf}"), "another session's proof")] {
        let response = send(&env, request("POST", &cancel, Some(&admin), Some(form))).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
    }
    let mut cross_site = request("POST", &cancel, Some(&admin), Some(&format!("csrf={admin_csrf}")));
    cross_site.headers_mut().insert(header::ORIGIN, "http://evil.test".parse().unwrap());
    assert_eq!(send(&env, cross_site).await.status(), StatusCode::FORBIDDEN, "another site's form");
    let status: String =
        sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(&job).fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "pending", "nothing refused changed the job");
    assert_eq!(audited(&env, "admin.job_cancel").await, 0);

    // The same form with the proof, same site: done, audited.
    let response = send(&env, request("POST", &cancel, Some(&admin), Some(&format!("csrf={admin_csrf}")))).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_guarded(&response, "an action's redirect");
    let status: String =
        sqlx::query_scalar("SELECT status FROM tenant_master.jobs WHERE id = $1").bind(&job).fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "cancelled");
    assert_eq!(audited(&env, "admin.job_cancel").await, 1);
}
