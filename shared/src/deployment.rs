//! This control plane's identity: the id its markers carry (see `naming::owner_marker`).

use sqlx::PgConnection;

use crate::{
    error::{Context as _, Result},
    naming,
};

/// The id `tenantctl migrate` made for this control plane.
pub async fn id(cp: &mut PgConnection) -> Result<String> {
    sqlx::query_scalar("SELECT id FROM tenant_master.deployment").fetch_one(cp).await.context("failed to read this deployment's id")
}

/// The marker of tenant `slug`'s roles and database in this deployment.
pub async fn marker(cp: &mut PgConnection, slug: &str) -> Result<String> {
    Ok(naming::owner_marker(&id(cp).await?, slug))
}
