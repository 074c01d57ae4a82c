//! One error type for the library, in two families:
//!
//! - **Requests refused** ([`Refusal`]): the caller asked for something malformed, in
//!   conflict with the current state, or absent. The CLI exits 2 or 1, the panel answers
//!   4xx, and a job that meets one is dead (a rerun would ask the same).
//! - **Job outcomes** ([`JobOutcome`]): everything else says, where it is made, whether a
//!   later attempt may succeed (retry with backoff), must merely wait its turn (postpone
//!   at no attempt's cost) or cannot (dead).
//!
//! Every variant's `Display` is a whole sentence that already ends with its cause, so it
//! can be printed alone; `source()` hands programs the typed cause (a SQLSTATE, an io
//! kind, the inner [`Error`] whose class a [`Error::Step`] keeps).

use std::fmt::Display;

/// A cause of any type, kept for `source()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    #[error("{message}")]
    Fatal {
        /// The whole sentence, ending with what to do.
        message: String,
        /// What caused it, when something did.
        #[source]
        source: Option<BoxError>,
    },
    /// A state a later attempt may find changed (a copy that came out different, an SMTP
    /// server that did not answer).
    #[error("{message}")]
    Transient {
        /// The whole sentence.
        message: String,
        /// What caused it, when something did.
        #[source]
        source: Option<BoxError>,
    },
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
    /// An external program (pg_dump, pg_restore) ran and failed.
    #[error("{program} failed ({}): {message}", describe_exit(*exit_code))]
    Tool {
        /// The program's name.
        program: String,
        /// Its exit code; none if a signal ended it.
        exit_code: Option<i32>,
        /// The first lines of what it wrote on stderr.
        message: String,
    },
    /// A step of a longer operation stopped: a sentence about where it stopped and what
    /// to do, around its cause, whose class (retry, dead, refusal) it keeps.
    #[error("{message}")]
    Step {
        /// The whole sentence, the cause's included.
        message: String,
        /// The error the step stopped on: always an [`Error`] (see [`Error::in_step`]),
        /// boxed as `dyn` so that `source()` yields it rather than the box around it.
        #[source]
        source: BoxError,
    },
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
    /// The control plane lacks the row of job types this build runs (a type added since it
    /// was last migrated): enqueueing them would be refused.
    #[error("this database's Tenant Master control plane does not know job type(s) {}: run `tenantctl migrate` with this build", .0.join(", "))]
    JobTypesMissing(Vec<String>),
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

/// Why a request was refused: the CLI's exit code and the panel's HTTP status follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed input: exit code 2, HTTP 400.
    BadInput,
    /// Clashes with the current state: exit code 1, HTTP 409.
    Conflict,
    /// Names something that does not exist: exit code 1, HTTP 404.
    NotFound,
}

/// What the queue does with an attempt that ended in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Run again after the job type's backoff, counting the attempt.
    RetryLater,
    /// Run again shortly, without counting the attempt: the job waited for its turn.
    Postpone,
    /// Give up: no later attempt can succeed.
    Dead,
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
    /// A state no retry changes, with nothing underneath it.
    pub fn fatal(message: impl Into<String>) -> Error {
        Error::Fatal { message: message.into(), source: None }
    }

    /// A state no retry changes, caused by `cause` (whose text `message` should carry).
    pub fn fatal_because(message: impl Into<String>, cause: impl Into<BoxError>) -> Error {
        Error::Fatal { message: message.into(), source: Some(cause.into()) }
    }

    /// A state a later attempt may find changed.
    pub fn transient(message: impl Into<String>) -> Error {
        Error::Transient { message: message.into(), source: None }
    }

    /// A state a later attempt may find changed, caused by `cause`.
    pub fn transient_because(message: impl Into<String>, cause: impl Into<BoxError>) -> Error {
        Error::Transient { message: message.into(), source: Some(cause.into()) }
    }

    /// Wraps this error in a sentence about the step it stopped (`say` places the cause's
    /// own sentence); the result is retried, postponed or dead as this error is.
    pub fn in_step(self, say: impl FnOnce(&Error) -> String) -> Error {
        Error::Step { message: say(&self), source: Box::new(self) }
    }

    /// The error a [`Error::Step`] stopped on ([`Error::in_step`] always gives one).
    fn step_cause(source: &BoxError) -> Option<&Error> {
        source.downcast_ref::<Error>()
    }

    /// The request refusal this is, if it is one.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Invalid(_) => Some(Refusal::BadInput),
            Error::Conflict(_) => Some(Refusal::Conflict),
            Error::NotFound(_) => Some(Refusal::NotFound),
            Error::Step { source, .. } => Error::step_cause(source).and_then(Error::refusal),
            _ => None,
        }
    }

    /// What the queue does with an attempt that ended in this error.
    pub fn job_outcome(&self) -> JobOutcome {
        match self {
            Error::Busy(_) => JobOutcome::Postpone,
            Error::Transient { .. } | Error::TimedOut(_) | Error::Io { .. } | Error::Tool { .. } | Error::Injected(_) => {
                JobOutcome::RetryLater
            }
            Error::Database { source, .. } if !is_permanent_db_error(source) => JobOutcome::RetryLater,
            Error::Step { source, .. } => Error::step_cause(source).map_or(JobOutcome::RetryLater, Error::job_outcome),
            Error::Database { .. }
            | Error::Invalid(_)
            | Error::Conflict(_)
            | Error::NotFound(_)
            | Error::Fatal { .. }
            | Error::NotMigrated { .. }
            | Error::JobTypesMissing(_) => JobOutcome::Dead,
        }
    }

    /// Whether this is a test's simulated crash: callers must not clean up after it.
    pub fn is_injected(&self) -> bool {
        match self {
            Error::Injected(_) => true,
            Error::Step { source, .. } => Error::step_cause(source).is_some_and(Error::is_injected),
            _ => false,
        }
    }

    /// Whether the caller made a usage mistake (the CLI exits 2 for these, 1 otherwise).
    pub fn is_usage(&self) -> bool {
        self.refusal() == Some(Refusal::BadInput)
    }

    /// The SQLSTATE of a database error, if this is one or a step stopped on one.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            Error::Database { source, .. } => sqlstate(source),
            Error::Step { source, .. } => Error::step_cause(source).and_then(Error::sqlstate),
            _ => None,
        }
    }
}

/// `exit code N`, or `a signal` when none.
fn describe_exit(code: Option<i32>) -> String {
    code.map_or("a signal".to_owned(), |c| format!("exit code {c}"))
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_step_keeps_its_causes_class_and_type() {
        let dead = Error::fatal("role r was not made by Tenant Master").in_step(|e| format!("the delete of 'acme' stopped: {e}"));
        assert_eq!(dead.job_outcome(), JobOutcome::Dead);
        assert_eq!(dead.to_string(), "the delete of 'acme' stopped: role r was not made by Tenant Master");
        assert!(matches!(dead.source().and_then(|c| c.downcast_ref::<Error>()), Some(Error::Fatal { .. })));

        let tool = Error::Tool { program: "pg_dump".into(), exit_code: Some(1), message: "disk full".into() };
        let retried = tool.in_step(|e| format!("backup of 'acme' failed: {e}"));
        assert_eq!(retried.job_outcome(), JobOutcome::RetryLater);
        assert_eq!(retried.to_string(), "backup of 'acme' failed: pg_dump failed (exit code 1): disk full");

        let waits = Error::Busy("tenant 'acme' is busy".into()).in_step(|e| e.to_string());
        assert_eq!(waits.job_outcome(), JobOutcome::Postpone);

        let refused = Error::Invalid("bad slug".into()).in_step(|e| e.to_string());
        assert_eq!(refused.refusal(), Some(Refusal::BadInput));
        assert_eq!(refused.job_outcome(), JobOutcome::Dead, "a job meeting a refusal would meet it again");
        assert!(Error::Injected("x".into()).in_step(|e| e.to_string()).is_injected());
    }

    #[test]
    fn a_fatal_error_keeps_the_typed_cause() {
        let cause = serde_json::from_str::<u8>("x").unwrap_err();
        let err = Error::fatal_because(format!("recorded outcome is unreadable: {cause}"), cause);
        assert!(err.source().is_some_and(|c| c.is::<serde_json::Error>()));
        assert_eq!(err.refusal(), None);
    }
}
