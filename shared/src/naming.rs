//! Tenant slugs, plans and the names derived from them.
//!
//! Every name that reaches SQL is built here from a validated [`Slug`] and product name,
//! so nothing else has to re-check it; [`quote_ident`] quotes it anyway.
//!
//! The names are injective: slugs and product names may not contain `__` nor end with
//! `_`, so `__` is ours alone. A dedicated database is `<product>__<slug>` (one `__`,
//! splitting at one place), a shared one `<product>_shared` (no `__`), a tenant's schema
//! and role `t_<slug>` (no `__`), and every internal name (the set-aside schema of a
//! restore, the operator role) is a tenant name plus `__<word>`, which no slug can spell.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// PostgreSQL truncates identifiers longer than this; we refuse them instead.
const MAX_IDENT_LEN: usize = 63;

/// Slugs refused because they read as a server's or our own names.
const RESERVED_SLUGS: &[&str] = &["shared", "postgres", "template0", "template1", "public", "tenant_master"];

/// A tenant's slug: `^[a-z][a-z0-9_]{2,39}$`, not starting with `pg_`, without `__`, not
/// ending with `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl Slug {
    /// Validates a slug, explaining in one sentence what is wrong with a bad one.
    pub fn parse(raw: &str) -> Result<Slug> {
        let shown = printable(raw);
        let bad = |why: &str| Err(Error::Invalid(format!("invalid slug '{shown}': {why}")));
        if raw.len() < 3 || raw.len() > 40 {
            return bad("it must be 3 to 40 characters long");
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
            return bad("it must start with a lowercase letter a-z");
        }
        if !raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return bad("only lowercase letters a-z, digits and '_' are allowed");
        }
        if raw.starts_with("pg_") {
            return bad("the prefix 'pg_' is reserved for PostgreSQL");
        }
        if raw.contains("__") || raw.ends_with('_') {
            return bad("'__' and a trailing '_' are reserved for Tenant Master's own names");
        }
        if RESERVED_SLUGS.contains(&raw) {
            return bad("it is a reserved word");
        }
        Ok(Slug(raw.to_owned()))
    }

    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Slug {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Slug::parse(&value)
    }
}

impl From<Slug> for String {
    fn from(slug: Slug) -> String {
        slug.0
    }
}

/// Validates a product name: the same alphabet as slugs, 2 to 20 characters, no `__`, no
/// trailing `_`.
pub fn validate_product_name(raw: &str) -> Result<()> {
    let ok = (2..=20).contains(&raw.len())
        && raw.starts_with(|c: char| c.is_ascii_lowercase())
        && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !raw.contains("__")
        && !raw.ends_with('_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid product name '{}': use 2 to 20 characters a-z, 0-9 and single '_' inside, starting with a letter",
            printable(raw)
        )))
    }
}

/// How a tenant's schema is separated from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A schema in the product's shared database.
    Schema,
    /// A schema in a database of its own.
    Database,
}

impl Isolation {
    /// The word stored in the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Schema => "schema",
            Isolation::Database => "database",
        }
    }

    /// Parses the registry's word.
    pub fn parse(raw: &str) -> Result<Isolation> {
        match raw {
            "schema" => Ok(Isolation::Schema),
            "database" => Ok(Isolation::Database),
            other => Err(Error::Invalid(format!("unknown isolation '{}'", printable(other)))),
        }
    }
}

/// A tenant's plan; it decides the isolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// The entry plan: a schema in a shared database.
    Free,
    /// The next plan up: a schema in a shared database.
    Starter,
    /// The top shared plan: a schema in a shared database.
    Business,
    /// A database of its own.
    Enterprise,
    /// A database of its own, as on enterprise.
    Lifetime,
}

impl Plan {
    /// All plans, in upgrade order.
    pub const ALL: [Plan; 5] = [Plan::Free, Plan::Starter, Plan::Business, Plan::Enterprise, Plan::Lifetime];

    /// Parses a plan name.
    pub fn parse(raw: &str) -> Result<Plan> {
        Plan::ALL.into_iter().find(|p| p.as_str() == raw).ok_or_else(|| {
            Error::Invalid(format!("unknown plan '{}': choose one of free, starter, business, enterprise, lifetime", printable(raw)))
        })
    }

    /// The plan's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Starter => "starter",
            Plan::Business => "business",
            Plan::Enterprise => "enterprise",
            Plan::Lifetime => "lifetime",
        }
    }

    /// Shared plans get a schema in `<product>_shared`; the others a database of their own.
    pub fn isolation(self) -> Isolation {
        match self {
            Plan::Free | Plan::Starter | Plan::Business => Isolation::Schema,
            Plan::Enterprise | Plan::Lifetime => Isolation::Database,
        }
    }
}

/// The PostgreSQL names of one tenant: the same schema and role name in both modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNames {
    /// The database the schema is in.
    pub database: String,
    /// The tenant's schema.
    pub schema: String,
    /// The tenant's role, which owns the schema.
    pub role: String,
}

/// The login role Tenant Master uses to run work inside a tenant's schema: a member of the
/// tenant's role and nothing else, so tenant code it triggers has the tenant's rights only,
/// while the tenant's own login can be held.
pub fn operator_role(tenant_role: &str) -> String {
    format!("{tenant_role}__op")
}

/// The name a moved tenant's source schema is kept under until `PruneJobs` drops it.
pub fn moved_schema(schema: &str) -> String {
    format!("{schema}__moved")
}

/// The name a tenant's live schema waits under while a restore runs.
pub fn aside_schema(schema: &str) -> String {
    format!("{schema}__restore_aside")
}

/// Shared database number `shard` (from 1) of `product`: `<prefix><product>_shared`, then
/// `<prefix><product>_shared_2`, `_3`, ... (a product's schema-mode tenants are spread over
/// them, `[products] tenants_per_shared_database` each). Injective: the digits after the
/// last `_` are the number, what comes before `_shared_` the product.
pub fn shared_database(database_prefix: &str, product: &str, shard: u32) -> Result<String> {
    validate_product_name(product)?;
    validate_database_prefix(database_prefix)?;
    let name = match shard {
        0 | 1 => format!("{database_prefix}{product}_shared"),
        n => format!("{database_prefix}{product}_shared_{n}"),
    };
    if name.len() > MAX_IDENT_LEN {
        return Err(Error::Invalid(format!("database name '{name}' would be longer than {MAX_IDENT_LEN} characters")));
    }
    Ok(name)
}

impl TenantNames {
    /// Derives the names (a shared plan: the first shared database; the registry may put the
    /// tenant in another, see [`shared_database`]); `database_prefix` (usually empty) keeps
    /// test runs apart.
    pub fn derive(database_prefix: &str, product: &str, slug: &Slug, isolation: Isolation) -> Result<TenantNames> {
        validate_product_name(product)?;
        validate_database_prefix(database_prefix)?;
        let database = match isolation {
            Isolation::Schema => shared_database(database_prefix, product, 1)?,
            Isolation::Database => format!("{database_prefix}{product}__{slug}"),
        };
        if database.len() > MAX_IDENT_LEN {
            return Err(Error::Invalid(format!(
                "database name '{database}' would be longer than {MAX_IDENT_LEN} characters: choose a shorter slug"
            )));
        }
        let role = format!("t_{slug}");
        Ok(TenantNames { database, schema: role.clone(), role })
    }
}

/// A database prefix may be empty or use the slug alphabet.
pub fn validate_database_prefix(prefix: &str) -> Result<()> {
    // `__` splits a dedicated database name into product and slug: the prefix may not hold
    // it, so the first `__` of every name we make is that split.
    let ok = prefix.len() <= 20
        && prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && (prefix.is_empty() || prefix.starts_with(|c: char| c.is_ascii_lowercase()))
        && !prefix.contains("__");
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid database_prefix '{}': use up to 20 characters a-z, 0-9 and '_', starting with a letter, without '__'",
            printable(prefix)
        )))
    }
}

/// The comment Tenant Master puts on a tenant's roles and dedicated database: it names
/// this control plane (`deployment`, made once by `migrate`) and the tenant, so a role or
/// database without it, or made by another deployment on the same server, is never taken
/// over or dropped.
pub fn owner_marker(deployment: &str, slug: &str) -> String {
    format!("tenant-master:{deployment}:{slug}")
}

/// The marker of the first release, which named no deployment; `migrate` upgrades it.
pub fn legacy_owner_marker(slug: &str) -> String {
    format!("tenant-master:{slug}")
}

/// Quotes an identifier for SQL (doubling embedded quotes), whatever it holds.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Shows user input in an error without letting control characters through.
fn printable(raw: &str) -> String {
    let cut: String = raw.chars().take(60).collect();
    let cut = cut.escape_debug().to_string();
    if raw.chars().count() > 60 {
        format!("{cut}...")
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_slugs_parse() {
        for s in ["acme", "abc", "a_1", "acme_corp_2026", &"a".repeat(40)] {
            assert_eq!(Slug::parse(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn bad_slugs_are_refused_with_a_reason() {
        let cases = [
            ("Acme", "lowercase"),
            ("ab", "3 to 40"),
            ("x; drop", "only lowercase"),
            (&"a".repeat(41), "3 to 40"),
            ("pg_x", "reserved"),
            ("1abc", "start with"),
            ("_abc", "start with"),
            ("abc-d", "only lowercase"),
            ("abcé", "only lowercase"),
            ("", "3 to 40"),
            ("vic__restore_aside", "reserved for Tenant Master"),
            ("acme_", "reserved for Tenant Master"),
            ("shared", "reserved word"),
            ("postgres", "reserved word"),
        ];
        for (raw, why) in cases {
            let err = Slug::parse(raw).unwrap_err();
            assert!(err.is_usage(), "{raw}");
            assert!(err.to_string().contains(why), "{raw}: {err}");
        }
    }

    #[test]
    fn plans_decide_isolation() {
        assert_eq!(Plan::parse("starter").unwrap().isolation(), Isolation::Schema);
        assert_eq!(Plan::parse("enterprise").unwrap().isolation(), Isolation::Database);
        assert!(Plan::parse("gold").unwrap_err().to_string().contains("unknown plan 'gold'"));
    }

    #[test]
    fn names_follow_the_design() {
        let slug = Slug::parse("acme").unwrap();
        let shared = TenantNames::derive("", "demo", &slug, Isolation::Schema).unwrap();
        assert_eq!((shared.database.as_str(), shared.schema.as_str(), shared.role.as_str()), ("demo_shared", "t_acme", "t_acme"));
        let own = TenantNames::derive("x_", "demo", &slug, Isolation::Database).unwrap();
        assert_eq!(own.database, "x_demo__acme");
        assert_eq!(operator_role(&own.role), "t_acme__op");
        assert_eq!(aside_schema(&own.schema), "t_acme__restore_aside");
        assert!(validate_product_name("demo_").is_err() && validate_product_name("de__mo").is_err());
        let long = Slug::parse(&"a".repeat(40)).unwrap();
        assert!(TenantNames::derive("prefix_for_tests_", "product_name", &long, Isolation::Database).is_err());
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("t_acme"), "\"t_acme\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    /// Every name of every (product, slug) over a small alphabet: no two owners share a
    /// database, schema or role name, and no internal name is anyone's tenant name.
    /// (Under the first release's `<product>_<slug>` this finds `demo`+`x_y` = `demo_x`+`y`.)
    #[test]
    fn derived_names_never_collide() {
        use std::collections::HashMap;
        fn words(len: usize) -> Vec<String> {
            let mut all = vec![String::new()];
            for _ in 0..len {
                all = all.iter().flat_map(|w| ["a", "b", "2", "_"].map(|c| format!("{w}{c}"))).collect();
            }
            all
        }
        let candidates: Vec<String> = (2..=4).flat_map(words).collect();
        let products: Vec<&String> = candidates.iter().filter(|p| validate_product_name(p).is_ok()).collect();
        let slugs: Vec<Slug> = candidates.iter().filter_map(|s| Slug::parse(s).ok()).collect();
        assert!(products.len() > 30 && slugs.len() > 30);
        let mut databases: HashMap<String, String> = HashMap::new();
        let mut schemas_and_roles: HashMap<String, String> = HashMap::new();
        let claim = |map: &mut HashMap<String, String>, name: String, owner: String| {
            if let Some(other) = map.insert(name.clone(), owner.clone()) {
                assert_eq!(other, owner, "{name} is derived for both {other} and {owner}");
            }
        };
        for product in &products {
            for shard in 1..=3 {
                claim(&mut databases, shared_database("", product, shard).unwrap(), format!("{product} shared {shard}"));
            }
            for slug in &slugs {
                let own = TenantNames::derive("", product, slug, Isolation::Database).unwrap();
                claim(&mut databases, own.database, format!("{product} {slug}"));
            }
        }
        for slug in &slugs {
            let names = TenantNames::derive("", "demo", slug, Isolation::Schema).unwrap();
            claim(&mut schemas_and_roles, names.schema.clone(), format!("tenant {slug}"));
            claim(&mut schemas_and_roles, aside_schema(&names.schema), format!("aside {slug}"));
            claim(&mut schemas_and_roles, moved_schema(&names.schema), format!("moved {slug}"));
            claim(&mut schemas_and_roles, operator_role(&names.role), format!("operator {slug}"));
        }
        for internal in ["tenant_master", "tenant_master_meta", "public", "postgres", "template1"] {
            assert!(!schemas_and_roles.contains_key(internal) && !databases.contains_key(internal), "{internal}");
        }
    }
}
