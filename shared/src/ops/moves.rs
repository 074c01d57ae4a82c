//! Moving a tenant: between a shared and a dedicated database,
//! between hosts, or both. Copy, then cut over; never in place.
//!
//! 0. The target is worked out from what was asked (a host, a plan) and the registry as it
//!    is when the move first runs, and recorded (`tenant_master.move_targets`): every rerun
//!    of the job copies to the same place, and a move that gives up, or a delete, knows
//!    what to clear.
//! 1. The target is made ready while the tenant still works: its role on the target host
//!    (login held), the database, an empty schema.
//! 2. The tenant is held (login taken, sessions ended and gone) and the hold recorded.
//! 3. A fresh `pre_move` backup is taken as the tenant's operator: the copy, verified and
//!    hashed like every backup, and restorable later like any other.
//! 4. It is restored into the target schema as the target's operator (tenant code runs with
//!    the tenant's rights only); the migration ledger rows go with it.
//! 5. Tables and row counts of source and target are compared.
//! 6. One control-plane transaction switches the registry (host, database, isolation and the
//!    plan, if the move was a plan change), records the kept source, and records this job's
//!    outcome. Before it, the source is the live copy; after it, the target.
//! 7. The source schema is renamed `<schema>__moved` and kept (`[moves] keep_source_hours`),
//!    the tenant's reach to the source database is revoked, and its login given back on the
//!    target. The time its login was held is the move's downtime.
//!
//! A run cut short anywhere is finished by the next: before the switch it starts the copy
//! over (the target is never live, so what is there is dropped), after it the outcome row
//! says so and only step 7 is repeated. What a move leaves behind is cleared by
//! `ops::move_cleanup`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Acquire, AssertSqlSafe, PgConnection};

use crate::{
    activity,
    backups::Kind,
    config::Config,
    context::App,
    db::{self, ddl},
    deployment,
    error::{Context as _, Error, Result},
    fault, guard, hosts, large_objects, ledger,
    lock::{HostSlot, TenantLock},
    naming::{self, aside_schema, moved_schema, operator_role, Plan},
    ops::{
        access, backup, move_cleanup,
        place::Place,
        provision::{self, Login},
    },
    outcomes,
    tenant_session::TenantAccess,
    tenants::{self, Tenant},
};

/// What a move asks for: a host, a plan, or both; the rest stays as the registry says when
/// the move first runs (so two requests made one after the other both take effect).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The tenant to move.
    pub slug: String,
    /// The tenant the move was asked for (a later tenant with the slug is left alone).
    pub tenant_id: i64,
    /// The host to move to; none: the one it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Set when the move is a plan change: the plan changes at the switch, with the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Who asked, for the activity log.
    pub actor: String,
}

/// What a move did: the job's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Moved {
    /// Where the tenant lived before.
    pub from: Place,
    /// Where it lives now.
    pub to: Place,
    /// The plan change, when the move was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSwitch>,
    /// The `pre_move` backup the copy was restored from; none when nothing was copied.
    pub pre_move_backup_id: Option<i64>,
    /// Tables copied and compared.
    pub tables: usize,
    /// Rows copied, over all tables.
    pub rows: i64,
    /// Milliseconds the tenant could not log in (from the hold to the login given back).
    #[serde(default)]
    pub downtime_ms: Option<i64>,
    /// Until when the source copy is kept.
    pub source_kept_until: Option<DateTime<Utc>>,
    /// True when this run found the move finished by an earlier run.
    #[serde(default)]
    pub already_done: bool,
}

/// The plans before and after a move that changed the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanSwitch {
    /// The plan before.
    pub from: String,
    /// The plan after.
    pub to: String,
}

/// Runs move `request` on behalf of job `job_id`. Once that job switched the registry,
/// running it again only finishes what follows the switch.
pub async fn move_tenant(app: &App, request: &Request, job_id: &str) -> Result<Moved> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let slug = request.slug.as_str();
    let tenant = tenants::get(&mut cp, slug).await?;
    if tenant.id != request.tenant_id {
        return Err(Error::fatal(format!("job {job_id} was for an earlier tenant named '{slug}', which is gone; nothing was done")));
    }
    if let Some(moved) = recorded(&mut cp, job_id).await? {
        let downtime_ms = finish(app, &mut cp, &tenant, &moved.from, job_id).await?;
        return Ok(Moved { downtime_ms: Some(downtime_ms), already_done: true, ..moved });
    }
    tenant.require_live("moved")?;
    let plan = plan_switch(&tenant, request)?;
    let from = Place::of(&tenant);
    let to = target(&mut cp, &app.config, &tenant, request, job_id).await?;
    if from == to {
        // Nothing to copy (a request for a move done meanwhile, or a plan change within
        // the isolation the tenant has): only the plan, if any, changes.
        let moved = Moved {
            from: from.clone(),
            to,
            plan,
            pre_move_backup_id: None,
            tables: 0,
            rows: 0,
            downtime_ms: Some(0),
            source_kept_until: None,
            already_done: false,
        };
        switch(&mut cp, &tenant, &moved, request, job_id, false).await?;
        return Ok(moved);
    }
    // The target host is checked again here: it may have been disabled since the enqueue.
    hosts::choose(&mut cp, Some(&to.host)).await?;
    refuse_same_server(&mut cp, &app.config, &from.host, &to.host).await?;
    // The source host's heavy slot is held by the job; the target's is taken here.
    let target_slot = match to.host != from.host {
        true => Some(HostSlot::acquire(&app.config, &to.host).await?),
        false => None,
    };
    let target = Tenant { host: to.host.clone(), database: to.database.clone(), isolation: to.isolation.clone(), ..tenant.clone() };
    let run = Copying { app, tenant: &tenant, target, from: &from, to: &to, request, job_id };
    // Boxed: the copy's future is large (a backup and a restore inside).
    let outcome = Box::pin(copy_and_switch(&run, &mut cp, plan)).await;
    if let Some(slot) = target_slot {
        slot.release().await;
    }
    let mut moved = match outcome {
        Ok(moved) => moved,
        Err(e) => {
            // Not switched: the source is still the live copy. A simulated crash leaves
            // things as a real one would; otherwise the login is given back at once.
            if !e.is_injected() {
                let mut server = hosts::connect_admin(&mut cp, &app.config, &from.host).await?;
                access::give_login_back(&mut server, &tenant).await?;
            }
            return Err(e);
        }
    };
    fault::point(slug, "move:switched")?;
    let tenant = tenants::get(&mut cp, slug).await?;
    moved.downtime_ms = Some(finish(app, &mut cp, &tenant, &from, job_id).await?);
    Ok(moved)
}

/// Step 0: the target of job `job_id`, worked out on its first run and recorded, so every
/// rerun copies to the same place (a shared database with room may be another one by then).
async fn target(cp: &mut PgConnection, config: &Config, tenant: &Tenant, request: &Request, job_id: &str) -> Result<Place> {
    if let Some(place) = move_cleanup::copying_target(cp, job_id).await? {
        return Ok(place);
    }
    let host = request.host.clone().unwrap_or_else(|| tenant.host.clone());
    let plan = Plan::parse(request.plan.as_deref().unwrap_or(&tenant.plan))?;
    let to = Place::resolve(cp, config, tenant, &host, plan.isolation()).await?;
    // A move given up and retried later (`jobs retry`) starts from the registry of now.
    sqlx::query(
        "INSERT INTO tenant_master.move_targets (job_id, tenant_id, host, database_name, isolation) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (job_id) DO UPDATE SET host = $3, database_name = $4, isolation = $5, state = 'copying', updated_at = now()",
    )
    .bind(job_id)
    .bind(tenant.id)
    .bind(&to.host)
    .bind(&to.database)
    .bind(&to.isolation)
    .execute(&mut *cp)
    .await
    .context("failed to record the move's target")?;
    Ok(to)
}

/// What move job `job_id` did, once it switched the registry (downtime once it finished).
pub async fn outcome(cp: &mut PgConnection, job_id: &str) -> Result<Option<Moved>> {
    let Some(mut moved) = recorded(cp, job_id).await? else { return Ok(None) };
    moved.downtime_ms = recorded_downtime(cp, job_id).await?;
    Ok(Some(moved))
}

async fn recorded(cp: &mut PgConnection, job_id: &str) -> Result<Option<Moved>> {
    let Some((_, done)) = outcomes::finished(cp, job_id).await? else { return Ok(None) };
    serde_json::from_value(done).map(Some).map_err(|e| Error::fatal_because(format!("recorded move outcome is unreadable: {e}"), e))
}

/// What every step of a move's copy needs (steps 1 to 6).
struct Copying<'a> {
    app: &'a App,
    tenant: &'a Tenant,
    /// The tenant as the registry will have it once switched.
    target: Tenant,
    from: &'a Place,
    to: &'a Place,
    request: &'a Request,
    job_id: &'a str,
}

/// Steps 1 to 6: everything up to and including the switch of the registry.
async fn copy_and_switch(run: &Copying<'_>, cp: &mut PgConnection, plan: Option<PlanSwitch>) -> Result<Moved> {
    let mut source_db = hosts::connect(cp, &run.app.config, &run.from.host, &run.from.database).await?;
    refuse_after_a_cut_short_restore(&mut source_db, run.tenant).await?;
    large_objects::refuse(&mut source_db, run.tenant, "moved").await?;
    let mut target_db = run.prepare_target(cp).await?;
    run.hold(cp).await?;
    let copy = run.fresh_copy().await?;
    let target_access = run.restore_copy(cp, &mut source_db, &mut target_db, &copy).await?;
    let counts = run.verify(cp, &mut source_db, &mut target_db, &target_access).await?;
    // 6. The switch.
    let moved = Moved {
        from: run.from.clone(),
        to: run.to.clone(),
        plan,
        pre_move_backup_id: Some(copy.id),
        tables: counts.len(),
        rows: counts.iter().map(|(_, n)| n).sum(),
        downtime_ms: None,
        source_kept_until: Some(Utc::now() + chrono::Duration::hours(run.app.config.moves.keep_source_hours as i64)),
        already_done: false,
    };
    switch(cp, run.tenant, &moved, run.request, run.job_id, true).await?;
    Ok(moved)
}

/// A restore cut short keeps the live data set aside and an empty schema under the live
/// name: copying that would move an empty tenant. The restore's retry comes first.
async fn refuse_after_a_cut_short_restore(source_db: &mut PgConnection, tenant: &Tenant) -> Result<()> {
    let aside = aside_schema(&tenant.schema);
    if move_cleanup::schema_exists(source_db, &aside).await? {
        return Err(Error::Conflict(format!(
            "tenant '{}' has a restore that stopped part way (its data waits in {aside}): retry or finish that restore before moving it",
            tenant.slug
        )));
    }
    Ok(())
}

impl Copying<'_> {
    fn slug(&self) -> &str {
        &self.tenant.slug
    }

    /// Step 1: the target, while the tenant still works: its role (on another host), database
    /// and an empty schema; returns a session in the target database.
    async fn prepare_target(&self, cp: &mut PgConnection) -> Result<PgConnection> {
        let config = &self.app.config;
        let deployment = deployment::id(cp).await?;
        let marker = naming::owner_marker(&deployment, self.slug());
        let target_host = hosts::admin_options(cp, config, &self.to.host).await?;
        let mut target_server = hosts::connect_admin(cp, config, &self.to.host).await?;
        if self.to.host != self.from.host {
            provision::ensure_role(config, cp, &mut target_server, &self.target, &marker, Login::Held).await?;
        }
        provision::ensure_database(&mut target_server, &target_host, &self.target, &deployment).await?;
        let mut target_db = db::connect_to(&target_host, &self.to.database).await?;
        // The registry points at the source, so a schema of the tenant's name in the target is
        // what an earlier, unfinished run of a move copied there: it goes, and the copy restarts.
        guard::drop_tenant_schema(&mut target_db, &mut target_server, &self.tenant.schema, &self.target, &marker).await?;
        provision::ensure_schema(&mut target_db, &self.target).await?;
        fault::point(self.slug(), "move:target_ready")?;
        Ok(target_db)
    }

    /// Step 2: the hold: from here until the login is given back, the tenant is down. Recorded
    /// first: from here on `jobs cancel` refuses the move, whose retry gives the login back
    /// or finishes it.
    async fn hold(&self, cp: &mut PgConnection) -> Result<()> {
        held_since(cp, self.tenant, self.job_id).await?;
        let mut source_server = hosts::connect_admin(cp, &self.app.config, &self.from.host).await?;
        access::block_login(&mut source_server, self.tenant).await?;
        fault::point(self.slug(), "move:held")
    }

    /// Step 3: the copy: a fresh backup (an earlier run's copy may predate writes made while an
    /// admin had resumed the tenant in between).
    async fn fresh_copy(&self) -> Result<crate::backups::Backup> {
        let copy = Box::pin(backup::backup_fresh(self.app, self.slug(), Kind::PreMove, self.job_id)).await?;
        backup::verify_file(&copy).await?;
        fault::point(self.slug(), "move:copied")?;
        Ok(copy)
    }

    /// Step 4: into the target, with the tenant's rights, and the ledger with it.
    async fn restore_copy(
        &self,
        cp: &mut PgConnection,
        source_db: &mut PgConnection,
        target_db: &mut PgConnection,
        copy: &crate::backups::Backup,
    ) -> Result<TenantAccess> {
        let target_access = TenantAccess::prepare(&self.app.config, cp, &self.target).await?;
        ledger::ensure(target_db, target_access.role()).await?;
        target_access.restore_into_schema(&copy.path(), &self.tenant.schema).await.map_err(|e| {
            e.in_step(|e| {
                format!("the copy of '{}' into the {} failed, the tenant stays where it was: {e}", self.slug(), self.to.describe())
            })
        })?;
        ledger::copy(source_db, target_db, &self.tenant.schema).await?;
        fault::point(self.slug(), "move:restored")?;
        Ok(target_access)
    }

    /// Step 5: same tables, same rows; returns them. Counted as the operator (the tenant's
    /// rights; counting runs no tenant code), one side at a time: preparing a host's
    /// operator role ends its open sessions there.
    async fn verify(
        &self,
        cp: &mut PgConnection,
        source_db: &mut PgConnection,
        target_db: &mut PgConnection,
        target_access: &TenantAccess,
    ) -> Result<Vec<(String, i64)>> {
        let (slug, schema) = (self.slug(), &self.tenant.schema);
        let target_counts = count_rows(target_access, target_db, schema).await?;
        let source_access = TenantAccess::prepare(&self.app.config, cp, self.tenant).await?;
        let source_counts = count_rows(&source_access, source_db, schema).await?;
        if source_counts != target_counts {
            return Err(Error::transient(format!(
                "the copy of '{slug}' differs from its source (tables and row counts: {} vs {}); the tenant stays where it was and the job will copy again",
                summary(&source_counts),
                summary(&target_counts)
            )));
        }
        let migrated = ledger::applied_versions(source_db, schema).await?;
        if source_counts.is_empty() && !migrated.is_empty() {
            return Err(Error::fatal(format!(
                "tenant '{slug}' has no tables although {} product migration(s) are recorded for it: the move stopped; see `tenantctl tenant show {slug}`",
                migrated.len()
            )));
        }
        fault::point(slug, "move:verified")?;
        Ok(source_counts)
    }
}

/// The registry switch, in one transaction: the tenant's place (and plan), the kept source,
/// the plan history, the activity, and this job's outcome.
async fn switch(cp: &mut PgConnection, tenant: &Tenant, moved: &Moved, request: &Request, job_id: &str, keep: bool) -> Result<()> {
    let mut tx = cp.begin().await.context("failed to start a transaction")?;
    let now: (String, String, String) =
        sqlx::query_as("SELECT host, database_name, isolation FROM tenant_master.tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant.id)
            .fetch_one(&mut *tx)
            .await
            .context("failed to lock the tenant")?;
    if now != (moved.from.host.clone(), moved.from.database.clone(), moved.from.isolation.clone()) {
        return Err(Error::fatal(format!("tenant '{}' was moved by someone else meanwhile; this move stopped", tenant.slug)));
    }
    let plan = moved.plan.as_ref().map(|p| p.to.as_str()).unwrap_or(tenant.plan.as_str());
    sqlx::query(
        "UPDATE tenant_master.tenants SET host = $2, database_name = $3, isolation = $4, plan = $5, updated_at = now() WHERE id = $1",
    )
    .bind(tenant.id)
    .bind(&moved.to.host)
    .bind(&moved.to.database)
    .bind(&moved.to.isolation)
    .bind(plan)
    .execute(&mut *tx)
    .await
    .context("failed to switch the tenant to its new place")?;
    if let Some(change) = &moved.plan {
        crate::plans::record(&mut tx, tenant.id, &change.from, &change.to, &request.actor).await?;
    }
    sqlx::query("UPDATE tenant_master.move_targets SET state = 'switched', updated_at = now() WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *tx)
        .await
        .context("failed to record the switch")?;
    if keep {
        sqlx::query(
            "INSERT INTO tenant_master.kept_sources (tenant_id, job_id, host, database_name, schema_name, isolation, kept_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant.id)
        .bind(job_id)
        .bind(&moved.from.host)
        .bind(&moved.from.database)
        .bind(moved_schema(&tenant.schema))
        .bind(&moved.from.isolation)
        .bind(moved.source_kept_until)
        .execute(&mut *tx)
        .await
        .context("failed to record the kept source")?;
        activity::record(
            &mut tx,
            "worker",
            Some(tenant.id),
            "tenant.moved",
            json!({ "job_id": job_id, "from": moved.from, "to": moved.to, "tables": moved.tables, "rows": moved.rows, "requested_by": request.actor }),
        )
        .await?;
    }
    outcomes::record(&mut tx, job_id, "MoveTenant", tenant.id, &json!(moved)).await?;
    tx.commit().await.context("failed to commit the switch")
}

/// Step 7, after the switch (again on every rerun): login given back on the target, the
/// source set aside and closed to the tenant. Returns the downtime in milliseconds.
///
/// Across hosts the tenant works again first: its login on the old host was taken at the
/// hold, so nothing can write there, and an old host that does not answer (the evacuation
/// of a failing server) must not keep the tenant out of its healthy new one. Closing the
/// old place then waits for that host: a failure there is logged and recorded, and the
/// kept source is cleared by `PruneJobs` when due, like any other. On one host the old
/// place is closed first, as the same role could otherwise log in there meanwhile.
async fn finish(app: &App, cp: &mut PgConnection, tenant: &Tenant, from: &Place, job_id: &str) -> Result<i64> {
    if from.host == tenant.host {
        close_source(app, cp, tenant, from, job_id).await?;
        fault::point(&tenant.slug, "move:source_kept")?;
        give_login_on_target(app, cp, tenant).await?;
        return downtime(cp, tenant, job_id).await;
    }
    give_login_on_target(app, cp, tenant).await?;
    let downtime = downtime(cp, tenant, job_id).await?;
    fault::point(&tenant.slug, "move:login_back")?;
    if let Err(e) = close_source_patiently(app, cp, tenant, from, job_id).await {
        if e.is_injected() {
            return Err(e);
        }
        tracing::warn!(error = %e, host = %from.host, "the tenant moved, but its old host could not be closed to it; PruneJobs clears the kept copy when due");
        let details = json!({ "job_id": job_id, "host": from.host, "database": from.database, "error": e.to_string() });
        activity::record(cp, "worker", Some(tenant.id), "tenant.move_source_left", details).await?;
    }
    fault::point(&tenant.slug, "move:source_kept")?;
    Ok(downtime)
}

/// How long closing an old host is tried again after a passing failure (a restart, a
/// dropped connection) before the kept copy is left to `PruneJobs`.
const CLOSE_SOURCE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// [`close_source`], tried again while its failures are passing ones and the patience
/// lasts: a restart of the old host during the close should not leave the old place open
/// under its own name when a moment later would have closed it.
async fn close_source_patiently(app: &App, cp: &mut PgConnection, tenant: &Tenant, from: &Place, job_id: &str) -> Result<()> {
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(500);
    let mut fresh: Option<sqlx::pool::PoolConnection<sqlx::Postgres>> = None;
    loop {
        // After a failure, a new control-plane connection: the restart may have been its server's.
        let conn: &mut PgConnection = match fresh.as_mut() {
            Some(conn) => &mut *conn,
            None => &mut *cp,
        };
        let closed = close_source(app, conn, tenant, from, job_id).await;
        if closed.is_err() {
            fresh = app.pool.acquire().await.ok();
        }
        match closed {
            Err(e)
                if !e.is_injected() && e.job_outcome() != crate::error::JobOutcome::Dead && started.elapsed() < CLOSE_SOURCE_PATIENCE =>
            {
                tracing::info!(error = %e, host = %from.host, retry_in_ms = pause.as_millis() as u64, "could not close the old place yet; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

async fn give_login_on_target(app: &App, cp: &mut PgConnection, tenant: &Tenant) -> Result<()> {
    let mut target_server = hosts::connect_admin(cp, &app.config, &tenant.host).await?;
    access::give_login_back(&mut target_server, tenant).await
}

/// The old place renamed aside (`<schema>__moved`) and closed to the tenant: CONNECT and
/// the ledger's rights revoked there, and its login taken on a host it left.
async fn close_source(app: &App, cp: &mut PgConnection, tenant: &Tenant, from: &Place, job_id: &str) -> Result<()> {
    if from.is_home_of(tenant) || move_cleanup::copying_into(cp, tenant, from, job_id).await? {
        return Ok(());
    }
    let marker = deployment::marker(cp, &tenant.slug).await?;
    let mut server = hosts::connect_admin(cp, &app.config, &from.host).await?;
    if db::database_exists(&mut server, &from.database).await? {
        let mut source_db = hosts::connect(cp, &app.config, &from.host, &from.database).await?;
        set_source_aside(cp, &mut source_db, &mut server, tenant, from, &marker, job_id).await?;
        // The operator's rights there (the migration ledger's) go; the tenant role keeps
        // owning the kept copy until it is dropped, but can no longer connect.
        ledger::revoke(&mut source_db, &operator_role(&tenant.role)).await?;
        if guard::role_is_ours(&mut server, &tenant.role, &marker).await? {
            db::ddl_on_shared_row(&mut server, "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM %I", &[&from.database, &tenant.role]).await?;
        }
    }
    if from.host != tenant.host && guard::role_is_ours(&mut server, &tenant.role, &marker).await? {
        access::block_login(&mut server, tenant).await?;
    }
    Ok(())
}

/// Renames the source schema `<schema>__moved`; an older kept copy of that name in the same
/// database (an earlier move out of it) is superseded and dropped first.
async fn set_source_aside(
    cp: &mut PgConnection,
    source_db: &mut PgConnection,
    server: &mut PgConnection,
    tenant: &Tenant,
    from: &Place,
    marker: &str,
    job_id: &str,
) -> Result<()> {
    let aside = moved_schema(&tenant.schema);
    if !move_cleanup::schema_exists(source_db, &tenant.schema).await? {
        return Ok(());
    }
    // Older kept copies here are marked gone first, so a prune never takes this one for them.
    sqlx::query(
        "UPDATE tenant_master.kept_sources SET dropped_at = now()
         WHERE tenant_id = $1 AND host = $2 AND database_name = $3 AND job_id <> $4 AND dropped_at IS NULL",
    )
    .bind(tenant.id)
    .bind(&from.host)
    .bind(&from.database)
    .bind(job_id)
    .execute(&mut *cp)
    .await
    .context("failed to record the superseded kept source")?;
    guard::drop_tenant_schema(source_db, server, &aside, tenant, marker).await?;
    ddl(source_db, "ALTER SCHEMA %I RENAME TO %I", &[&tenant.schema, &aside]).await
}

/// Records when this job first held the tenant (once per job: a rerun keeps the first).
async fn held_since(cp: &mut PgConnection, tenant: &Tenant, job_id: &str) -> Result<()> {
    if !has_held(cp, job_id).await? {
        activity::record(cp, "worker", Some(tenant.id), "tenant.move_held", json!({ "job_id": job_id })).await?;
    }
    Ok(())
}

/// Whether move `job_id` has held its tenant (then it can only be finished or undone).
pub async fn has_held(cp: &mut PgConnection, job_id: &str) -> Result<bool> {
    activity::recorded_by_job(cp, "tenant.move_held", job_id).await
}

async fn recorded_downtime(cp: &mut PgConnection, job_id: &str) -> Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT (details ->> 'downtime_ms')::bigint FROM tenant_master.activity_log
         WHERE action = 'tenant.move_finished' AND details ->> 'job_id' = $1 ORDER BY id LIMIT 1",
    )
    .bind(job_id)
    .fetch_optional(cp)
    .await
    .context("failed to read the move's downtime")
}

/// The time from this job's first hold until now, recorded once as `tenant.move_finished`
/// (a rerun after that reads the recorded figure).
async fn downtime(cp: &mut PgConnection, tenant: &Tenant, job_id: &str) -> Result<i64> {
    if let Some(ms) = recorded_downtime(cp, job_id).await? {
        return Ok(ms);
    }
    let ms: Option<i64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM clock_timestamp() - min(at)) * 1000)::bigint FROM tenant_master.activity_log
         WHERE action = 'tenant.move_held' AND details ->> 'job_id' = $1",
    )
    .bind(job_id)
    .fetch_one(&mut *cp)
    .await
    .context("failed to read the move's hold")?;
    let ms = ms.unwrap_or(0);
    activity::record(cp, "worker", Some(tenant.id), "tenant.move_finished", json!({ "job_id": job_id, "downtime_ms": ms })).await?;
    Ok(ms)
}

/// Undoes what a move that gave up left (its `on_dead`): if it switched, what follows the
/// switch is finished; if not, its copy in the target is cleared and the tenant's login
/// given back at the source, as its status says. Also for a tenant deleted meanwhile.
pub async fn recover(app: &App, request: &Request, job_id: &str) -> Result<()> {
    // The job's lock is gone by now: this takes it again, and reads the tenant under it (a
    // pause committed meanwhile must not get its login back).
    // Another job of the tenant may take the lock the moment the move's job let it go: the
    // cleanup waits for it (nothing would run it again), up to an hour.
    let started = std::time::Instant::now();
    let lock = loop {
        match TenantLock::acquire(&app.config, &request.slug).await {
            Ok(lock) => break lock,
            Err(Error::Busy(_)) if started.elapsed() < std::time::Duration::from_secs(3600) => continue,
            Err(e) => return Err(e),
        }
    };
    let result = recover_locked(app, request, job_id).await;
    lock.release().await;
    result
}

async fn recover_locked(app: &App, request: &Request, job_id: &str) -> Result<()> {
    let mut cp = app.pool.acquire().await.context("failed to connect to the control-plane database")?;
    let Some(tenant) = tenants::find_by_id(&mut cp, request.tenant_id).await? else { return Ok(()) };
    if tenant.status != "deleted" {
        if let Some(moved) = recorded(&mut cp, job_id).await? {
            finish(app, &mut cp, &tenant, &moved.from, job_id).await?;
            return Ok(());
        }
    }
    move_cleanup::abandon_target(app, &mut cp, &tenant, job_id).await?;
    if tenant.is_live() {
        let mut server = hosts::connect_admin(&mut cp, &app.config, &tenant.host).await?;
        access::give_login_back(&mut server, &tenant).await?;
    }
    Ok(())
}

/// Refuses a move between two host names of one server (registered twice by SQL): its
/// "target" database would be the tenant's live one, which the copy would drop first.
pub async fn refuse_same_server(cp: &mut PgConnection, config: &Config, from: &str, to: &str) -> Result<()> {
    if from != to && !hosts::surely_different_servers(cp, config, from, to).await? {
        return Err(Error::Conflict(format!(
            "hosts '{from}' and '{to}' may be the same PostgreSQL server (registered twice, or its identity cannot be read): a move between them is refused; see `tenantctl host list`"
        )));
    }
    Ok(())
}

/// The plan change a move carries, if any.
fn plan_switch(tenant: &Tenant, request: &Request) -> Result<Option<PlanSwitch>> {
    let Some(plan) = &request.plan else { return Ok(None) };
    let plan = Plan::parse(plan)?;
    Ok((plan.as_str() != tenant.plan).then(|| PlanSwitch { from: tenant.plan.clone(), to: plan.as_str().to_owned() }))
}

/// Every table of `schema` with its row count, by name. The table list is read over the
/// admin connection (the catalog), the counts in an operator session.
async fn count_rows(access: &TenantAccess, admin_db: &mut PgConnection, schema: &str) -> Result<Vec<(String, i64)>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *admin_db)
    .await
    .context("failed to list the tenant's tables")?;
    let mut operator = access.connect().await?;
    let mut counts = Vec::with_capacity(tables.len());
    for table in tables {
        let sql = db::compose(&mut operator, "SELECT count(*) FROM ONLY %I.%I", &[schema, &table]).await?;
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&mut operator)
            .await
            .context(format!("failed to count the rows of {schema}.{table}"))?;
        counts.push((table, n));
    }
    Ok(counts)
}

fn summary(counts: &[(String, i64)]) -> String {
    format!("{} table(s), {} row(s)", counts.len(), counts.iter().map(|(_, n)| n).sum::<i64>())
}
