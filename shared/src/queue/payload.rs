//! What each job type's payload must hold, declared beside the payload and written into
//! `tenant_master.job_types.payload_fields` by `tenantctl migrate`, so that
//! `tenant_master.enqueue` refuses, in the producer's own transaction and in one sentence,
//! a payload that no worker could read. A test feeds the same payloads to this check
//! (through SQL) and to serde and requires the same verdict for every job type.

use serde::Serialize;

/// How a field may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Must be present and not null.
    Required,
    /// May be absent; present, it must not be null (`#[serde(default)]` on a plain type).
    Defaulted,
    /// May be absent or null (`Option<T>`).
    Optional,
}

/// The JSON shape of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "one_of")]
pub enum Shape {
    /// Any string.
    String,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// true or false.
    Boolean,
    /// A whole number (i64).
    Integer,
    /// A whole number from 0 to 4,294,967,295 (u32).
    Count,
    /// A whole number from 0 up (u64).
    Unsigned,
}

/// One field of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Field {
    /// The field's key in the payload.
    pub name: &'static str,
    /// What its value must look like.
    #[serde(flatten)]
    pub shape: Shape,
    /// Whether it may be absent or null.
    pub presence: Presence,
}

/// A field that must be there.
pub const fn required(name: &'static str, shape: Shape) -> Field {
    Field { name, shape, presence: Presence::Required }
}

/// A field with a default, never null.
pub const fn defaulted(name: &'static str, shape: Shape) -> Field {
    Field { name, shape, presence: Presence::Defaulted }
}

/// A field that may be absent or null.
pub const fn optional(name: &'static str, shape: Shape) -> Field {
    Field { name, shape, presence: Presence::Optional }
}

/// The fields every scheduled fan-out adds.
pub const SCHEDULED: [Field; 2] = [optional("schedule", Shape::String), optional("slot", Shape::String)];
