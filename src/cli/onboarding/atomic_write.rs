//! Writing config files so that a watching gateway never reads half of one
//! and nobody can plant a file or link in the way.
//!
//! A file is written to a temp file in the same directory, then renamed
//! over the old one. The temp file has an unpredictable dot-name (the
//! peers_dir reader skips it) and is created exclusively without following
//! symlinks; the result keeps the original file's mode (a 0600 config that
//! holds a key stays 0600), and a new file that holds a secret is 0600.

use super::{OnboardingError, Result};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// An I/O error, with what was being done ("reading", "writing"...) to
/// which file. Shared with the quickstart, which writes files the same way.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}", .path.display())]
pub struct FileError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// For `map_err`: wraps an I/O error with what was being done to `path`.
pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError {
        action,
        path,
        source,
    }
}

/// `O_NOFOLLOW` on Linux (all architectures we ship for): open fails on a
/// symlink instead of following it.
pub(super) const O_NOFOLLOW: i32 = 0o400000;

/// The mode a rewritten file gets: the old file's, or for a new file 0600
/// when it holds a secret (an inline or preshared key) and 0644 otherwise.
fn mode_for(path: &Path, contents: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) if holds_secret(contents) => 0o600,
        Err(_) => 0o644,
    }
}

fn holds_secret(contents: &str) -> bool {
    contents.lines().any(|l| {
        let key = l.split('=').next().unwrap_or("").trim();
        key == "private_key" || key == "preshared_key"
    })
}

pub(super) fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("peers");
    let mode = mode_for(path, contents);
    // A dot-name is skipped by the peers_dir reader, so a crash never leaves
    // a half peer behind. The name is unpredictable and the file is created
    // exclusively (O_EXCL, no symlink followed), so nobody can plant a file
    // or link there beforehand.
    let suffix = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    let tmp = dir.join(format!(".{name}.tmp-{suffix:016x}"));
    let write = || -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(O_NOFOLLOW)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        f.write_all(contents.as_bytes())
            .map_err(io("writing", &tmp))?;
        // Exactly the old mode, whatever the umask.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io("setting the mode of", &tmp))?;
        f.sync_all().map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, path).map_err(|source| OnboardingError::Rename {
            from: tmp.clone(),
            to: path.to_path_buf(),
            source,
        })?;
        Ok(())
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}
