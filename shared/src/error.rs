//! One error type for the library, split into what a retry can fix and what it cannot.

use std::fmt::Display;

/// Everything that can go wrong in Tenant Master, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller asked for something malformed (bad slug, unknown plan): exit code 2.
    #[error("{0}")]
    Invalid(String),
    /// The request is well-formed but clashes with the current state (slug taken, wrong status).
    #[error("{0}")]
    Conflict(String),
    /// A tenant, job, product or host that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A state that retrying will not change (foreign role in the way, changed migration).
    #[error("{0}")]
    Fatal(String),
    /// Another job holds the tenant, or the host has no free heavy slot: retry later,
    /// at no attempt's cost.
    #[error("{0}")]
    Busy(String),
    /// A run took longer than its job type allows.
    #[error("{0}")]
    TimedOut(String),
    /// A test stopped the operation here, as if the process had died (see `fault`).
    #[error("{0}")]
    Injected(String),
    /// An external tool (pg_dump, pg_restore) failed; its own message follows.
    #[error("{0}")]
    Tool(String),
    /// A database call failed.
    #[error("{context}: {}", describe_db_error(source))]
    Database {
        /// What was being done, e.g. `failed to list jobs`.
        context: String,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// The control-plane database lacks migrations this build needs: never migrated,
    /// another database, or a control plane older than this binary.
    #[error("this database's Tenant Master control plane is {}: run `tenantctl migrate`, or check DATABASE_URL", describe_level(*found, *needed))]
    NotMigrated {
        /// The newest migration the control plane has; none if it was never migrated.
        found: Option<i32>,
        /// The migration this build needs.
        needed: i32,
    },
    /// A file or process call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and to which file or program.
        context: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// A filter or argument value outside `choices`, in one sentence naming the valid ones
/// (and where they come from, if `hint` says): a typo must not read as "nothing matched".
pub fn unknown_value(what: &str, value: &str, choices: &[impl AsRef<str>], hint: Option<&str>) -> Error {
    let choices: Vec<&str> = choices.iter().map(AsRef::as_ref).collect();
    let hint = hint.map(|h| format!(" ({h})")).unwrap_or_default();
    Error::Invalid(format!("unknown {what} '{}': use one of {}{hint}", value.escape_debug(), choices.join(", ")))
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether running the same job again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Busy(_) | Error::TimedOut(_) | Error::Io { .. } | Error::Tool(_) | Error::Injected(_) => true,
            Error::Database { source, .. } => !is_permanent_db_error(source),
            Error::Invalid(_) | Error::Conflict(_) | Error::NotFound(_) | Error::Fatal(_) | Error::NotMigrated { .. } => false,
        }
    }

    /// Whether this is a test's simulated crash: callers must not clean up after it.
    pub fn is_injected(&self) -> bool {
        matches!(self, Error::Injected(_))
    }

    /// Whether the caller made a usage mistake (the CLI exits 2 for these, 1 otherwise).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Invalid(_))
    }

    /// The SQLSTATE of a database error, if this is one.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            Error::Database { source, .. } => sqlstate(source),
            _ => None,
        }
    }
}

/// How far a control plane is migrated, in words.
fn describe_level(found: Option<i32>, needed: i32) -> String {
    match found {
        None => "missing".to_owned(),
        Some(version) => format!("at migration {version}, older than this build (which needs {needed})"),
    }
}

/// The server's own message for database errors (without sqlx's decorations), else sqlx's.
fn describe_db_error(err: &sqlx::Error) -> String {
    match err.as_database_error() {
        Some(db) => db.message().to_owned(),
        None => err.to_string(),
    }
}

/// The SQLSTATE code of a sqlx error, if the server sent one.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
}

/// Syntax errors, undefined objects and privilege errors do not heal by waiting.
fn is_permanent_db_error(err: &sqlx::Error) -> bool {
    match sqlstate(err) {
        // 42xxx: syntax error or access rule violation.
        Some(code) => code.starts_with("42"),
        None => matches!(err, sqlx::Error::Configuration(_) | sqlx::Error::ColumnDecode { .. }),
    }
}

/// Adds a "failed to ..." context to fallible database and file calls.
pub trait Context<T> {
    /// Wraps the error with a description of what was being done.
    fn context(self, what: impl Display) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, sqlx::Error> {
    fn context(self, what: impl Display) -> Result<T> {
        self.map_err(|source| Error::Database { context: what.to_string(), source })
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, what: impl Display) -> Result<T> {
        self.map_err(|source| Error::Io { context: what.to_string(), source })
    }
}
