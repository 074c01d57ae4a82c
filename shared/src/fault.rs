//! Fault-injection points: with the `fault-injection` feature, a test can make an
//! operation stop right after a named step, as if the process had died there.
//! Without the feature every point compiles to nothing.

use crate::error::Result;

#[cfg(feature = "fault-injection")]
static ARMED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Makes the next pass through `point` for `scope` (a tenant slug) fail once.
#[cfg(feature = "fault-injection")]
pub fn arm(scope: &str, point: &str) {
    ARMED.lock().unwrap().push((scope.to_owned(), point.to_owned()));
}

/// Fails if a test armed this point for this scope; consumes the arming.
#[cfg(feature = "fault-injection")]
pub fn point(scope: &str, point: &str) -> Result<()> {
    let mut armed = ARMED.lock().unwrap();
    match armed.iter().position(|(s, p)| s == scope && p == point) {
        Some(i) => {
            armed.remove(i);
            Err(crate::error::Error::Injected(format!("fault injected after step '{point}'")))
        }
        None => Ok(()),
    }
}

/// Without the feature, a point is a no-op.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_scope: &str, _point: &str) -> Result<()> {
    Ok(())
}
