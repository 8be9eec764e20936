//! Where the gateway's private key comes from: exactly one of a file, an
//! environment variable, or (discouraged, with a warning) the config itself.
//!
//! A key file that group or others can read draws a warning, not an error:
//! Kubernetes mounts Secrets with modes the operator does not always choose.

use super::problems::{Problems, key_message};
use super::raw::RawGateway;
use promgate_core::keys::PrivateKey;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// The gateway's key comes from exactly one of a file, an environment
/// variable, or (discouraged, with a warning) the config itself.
pub(super) fn resolve_private_key(
    problems: &mut Problems<'_>,
    base_dir: &Path,
    table: Range<usize>,
    raw: &RawGateway,
) -> Option<PrivateKey> {
    match (
        &raw.private_key_file,
        &raw.private_key_env,
        &raw.private_key,
    ) {
        (Some(file), None, None) => key_from_file(problems, base_dir, file),
        (None, Some(var), None) => key_from_env(problems, var),
        (None, None, Some(inline)) => key_inline(problems, inline),
        _ => {
            problems.push(
                table,
                "gateway.private_key_file",
                "set exactly one of private_key_file, private_key_env or private_key",
            );
            None
        }
    }
}

fn key_from_file(
    problems: &mut Problems<'_>,
    base_dir: &Path,
    f: &Spanned<String>,
) -> Option<PrivateKey> {
    let field = "gateway.private_key_file";
    let file = base_dir.join(f.get_ref());
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) => {
            problems.push(
                f.span(),
                field,
                format!("cannot read {}: {e}", file.display()),
            );
            return None;
        }
    };
    let key = decode(problems, f, field, &format!("{}: ", file.display()), &text)?;
    warn_if_key_file_readable_by_others(&file);
    Some(key)
}

fn key_from_env(problems: &mut Problems<'_>, var: &Spanned<String>) -> Option<PrivateKey> {
    let field = "gateway.private_key_env";
    let Ok(text) = std::env::var(var.get_ref()) else {
        problems.push(
            var.span(),
            field,
            format!("environment variable {} is not set", var.get_ref()),
        );
        return None;
    };
    decode(
        problems,
        var,
        field,
        &format!("${}: ", var.get_ref()),
        &text,
    )
}

fn key_inline(problems: &mut Problems<'_>, inline: &Spanned<String>) -> Option<PrivateKey> {
    let key = decode(
        problems,
        inline,
        "gateway.private_key",
        "",
        inline.get_ref(),
    )?;
    tracing::warn!(
        file = %problems.file.display(),
        line = problems.line_of(inline.span().start),
        "the private key is inline in the config; prefer private_key_file with a mode 0600 file or a Secret"
    );
    Some(key)
}

/// Decodes the key text; a bad key is reported at `at` under `field`, its
/// message after `origin` (which file or variable held it).
fn decode<T>(
    problems: &mut Problems<'_>,
    at: &Spanned<T>,
    field: &str,
    origin: &str,
    text: &str,
) -> Option<PrivateKey> {
    match PrivateKey::from_base64(text) {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push(at.span(), field, format!("{origin}{}", key_message(e)));
            None
        }
    }
}

#[cfg(unix)]
fn warn_if_key_file_readable_by_others(file: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(file) else {
        return;
    };
    let mode = meta.permissions().mode();
    // Group access is only a risk when the group is not our own: Kubernetes
    // gives Secret files to the pod's fsGroup, which is the gateway itself.
    let group_is_ours = own_gid() == Some(meta.gid());
    if mode & 0o007 != 0 || (mode & 0o070 != 0 && !group_is_ours) {
        tracing::warn!(
            file = %file.display(),
            mode = format!("{:o}", mode & 0o777),
            "the private key file can be read by group or others; chmod 600 it"
        );
    }
}

/// The process's effective group id, from /proc (no unsafe libc call).
#[cfg(unix)]
fn own_gid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Gid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(not(unix))]
fn warn_if_key_file_readable_by_others(_file: &Path) {}
