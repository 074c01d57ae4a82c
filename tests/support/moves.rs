//! What the move tests share: requests, kept copies made due, payloads, a second name for
//! the test server.

use tenant_master::{jobs::move_tenant::MoveTenant, ops::moves::Request, tenants::Tenant};

use crate::TestEnv;

/// A move of `t` to `host` and/or `plan`, as `test`.
pub fn request(t: &Tenant, host: Option<&str>, plan: Option<&str>) -> Request {
    Request { slug: t.slug.clone(), tenant_id: t.id, host: host.map(str::to_owned), plan: plan.map(str::to_owned), actor: "test".into() }
}

/// Every kept source of this control plane due now, for the next prune.
pub async fn kept_sources_due_now(env: &TestEnv) {
    sqlx::query("UPDATE tenant_master.kept_sources SET kept_until = now() - interval '1 second' WHERE dropped_at IS NULL")
        .execute(&env.pool)
        .await
        .unwrap();
}

/// The payload of queued move job `job_id`.
pub async fn payload(env: &TestEnv, job_id: &str) -> MoveTenant {
    let v: serde_json::Value = sqlx::query_scalar("SELECT convert_from(job, 'UTF8')::jsonb FROM apalis.jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// Registers the test server a second time, as host `alias`, by SQL (`host add` refuses
/// the same server twice): one server under two names.
pub async fn add_alias_of_the_test_server(env: &TestEnv) {
    let url = crate::url_with_database(&crate::server_url(), "postgres");
    sqlx::query("INSERT INTO tenant_master.db_hosts (name, admin_url, capacity, enabled) VALUES ('alias', $1, 10, true)")
        .bind(&url)
        .execute(&env.pool)
        .await
        .unwrap();
}
