//! Files only the service's own account may read: backups hold every row of a tenant and
//! welcome mails name its login, so folders are made 0700 and files 0600, whatever the
//! process's umask, and the client tools' children get umask 077.

use std::path::Path;

use crate::error::{Context as _, Result};

/// Creates `dir` (and missing parents) readable by the owner only. With `ours`, an
/// existing `dir` is narrowed to 0700 too (a tenant's backup folder); a configured root
/// that exists already keeps its mode (it may be shared with other tools).
pub async fn create_dir(dir: &Path, ours: bool) -> Result<()> {
    let path = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&path)?;
        match ours {
            true => std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)),
            false => Ok(()),
        }
    })
    .await
    .expect("folder task panicked")
    .context(format!("failed to create the folder {}", dir.display()))
}

/// Writes `bytes` to a new file `path` readable by the owner only.
pub async fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let (path_buf, bytes) = (path.to_owned(), bytes.to_owned());
    tokio::task::spawn_blocking(move || {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path_buf)?;
        file.write_all(&bytes)
    })
    .await
    .expect("write task panicked")
    .context(format!("failed to write {}", path.display()))
}

/// Files under `dir` (recursively) that others than the owner may read: what `tenantctl
/// check` warns about.
pub fn readable_by_others(dir: &Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.permissions().mode() & 0o077 != 0 {
                found.push(entry.path());
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    found
}
