//! Tenant slugs, plans and the names derived from them (DESIGN §3).
//!
//! Every name that reaches SQL is built here from a validated [`Slug`] and product name,
//! so nothing else has to re-check it; [`quote_ident`] quotes it anyway.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// PostgreSQL truncates identifiers longer than this; we refuse them instead.
const MAX_IDENT_LEN: usize = 63;

/// A tenant's slug: `^[a-z][a-z0-9_]{2,39}$`, not starting with `pg_`.
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

/// Validates a product name: the same alphabet as slugs, 2 to 20 characters.
pub fn validate_product_name(raw: &str) -> Result<()> {
    let ok = (2..=20).contains(&raw.len())
        && raw.starts_with(|c: char| c.is_ascii_lowercase())
        && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid product name '{}': use 2 to 20 characters a-z, 0-9 and '_', starting with a letter",
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
    Free,
    Starter,
    Business,
    Enterprise,
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
    pub database: String,
    pub schema: String,
    pub role: String,
}

impl TenantNames {
    /// Derives the names; `database_prefix` (usually empty) keeps test runs apart.
    pub fn derive(database_prefix: &str, product: &str, slug: &Slug, isolation: Isolation) -> Result<TenantNames> {
        validate_product_name(product)?;
        validate_database_prefix(database_prefix)?;
        let database = match isolation {
            Isolation::Schema => format!("{database_prefix}{product}_shared"),
            Isolation::Database => format!("{database_prefix}{product}_{slug}"),
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
    let ok = prefix.len() <= 20
        && prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && (prefix.is_empty() || prefix.starts_with(|c: char| c.is_ascii_lowercase()));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid database_prefix '{}': use up to 20 characters a-z, 0-9 and '_'", printable(prefix))))
    }
}

/// The comment Tenant Master puts on a tenant's role and dedicated database: a role
/// without it is never taken over or dropped.
pub fn owner_marker(slug: &str) -> String {
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
        assert_eq!(own.database, "x_demo_acme");
        let long = Slug::parse(&"a".repeat(40)).unwrap();
        assert!(TenantNames::derive("prefix_for_tests_", "product_name", &long, Isolation::Database).is_err());
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("t_acme"), "\"t_acme\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
