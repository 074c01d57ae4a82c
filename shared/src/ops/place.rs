//! Where a tenant's data lives: a host, a database, and whether it shares it.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::{
    config::Config,
    error::Result,
    naming::{Isolation, Slug, TenantNames},
    tenants::{self, Tenant},
};

/// Where a tenant's data lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Place {
    /// The database host's name.
    pub host: String,
    /// The database on that host.
    #[sqlx(rename = "database_name")]
    pub database: String,
    /// `schema` (a shared database) or `database` (its own).
    pub isolation: String,
}

impl Place {
    /// Where the registry says `tenant` lives.
    pub fn of(tenant: &Tenant) -> Place {
        Place { host: tenant.host.clone(), database: tenant.database.clone(), isolation: tenant.isolation.clone() }
    }

    /// Where `tenant` goes when moved to `host` with `isolation`: its own database, or where
    /// it is if it shares one there already, else the product's shared database with room.
    pub async fn resolve(cp: &mut PgConnection, config: &Config, tenant: &Tenant, host: &str, isolation: Isolation) -> Result<Place> {
        let here = Place::of(tenant);
        let database = match isolation {
            Isolation::Database => {
                TenantNames::derive(&config.database_prefix, &tenant.product, &Slug::parse(&tenant.slug)?, isolation)?.database
            }
            Isolation::Schema if here.host == host && here.isolation == isolation.as_str() => here.database,
            Isolation::Schema => tenants::shared_database_with_room(cp, config, &tenant.product, host).await?,
        };
        Ok(Place { host: host.to_owned(), database, isolation: isolation.as_str().to_owned() })
    }

    /// Whether `tenant` lives in this database of this host.
    pub fn is_home_of(&self, tenant: &Tenant) -> bool {
        tenant.status != "deleted" && self.host == tenant.host && self.database == tenant.database
    }

    /// In words, e.g. `shared database tm_demo_shared on host 'main'`.
    pub fn describe(&self) -> String {
        let kind = if self.isolation == "database" { "dedicated database" } else { "shared database" };
        format!("{kind} {} on host '{}'", self.database, self.host)
    }
}
