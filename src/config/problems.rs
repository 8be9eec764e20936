//! Collecting validation problems with their file, line and field.
//!
//! Validation does not stop at the first problem: each one goes into
//! [`Problems`] and the caller returns them all as [`ConfigErrors`], so that
//! `promgate check` shows the whole list at once.

use super::{ConfigError, ConfigErrors};
use promgate_core::keys::KeyError;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// The problems found so far in one file.
pub(super) struct Problems<'a> {
    pub(super) file: &'a Path,
    /// Byte offsets of each newline, to turn spans into line numbers in
    /// O(log n): counting from the start each time is quadratic at 10,000 peers.
    newlines: Vec<usize>,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Problems<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str) -> Self {
        Problems {
            file,
            newlines: text
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
            errors: Vec::new(),
        }
    }

    /// The 1-based line of a byte offset.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }

    pub(super) fn push(
        &mut self,
        span: std::ops::Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) {
        let line = self.line_of(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// How many problems so far; compare before and after a check to learn
    /// whether it found any.
    pub(super) fn count(&self) -> usize {
        self.errors.len()
    }

    /// The problems as a result: `Ok(value)` when there were none.
    pub(super) fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A TOML syntax or type error, with the line the parser points at.
pub(super) fn toml_error(file: &Path, text: &str, err: toml::de::Error) -> ConfigError {
    let line = err.span().map(|s| line_of(text, s.start)).unwrap_or(0);
    ConfigError {
        file: file.to_path_buf(),
        line,
        field: String::new(),
        message: err.message().trim().to_string(),
    }
}

/// A file or directory that could not be read.
pub(super) fn io_error(file: &Path, field: &str, err: std::io::Error) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: 0,
        field: field.to_string(),
        message: format!("cannot read: {err}"),
    }
}

/// Reads a duration like "30s"; a bad one is reported and `default` used.
pub(super) fn parse_duration(
    problems: &mut Problems<'_>,
    field: &str,
    v: Option<Spanned<String>>,
    default: Duration,
) -> Duration {
    match v {
        None => default,
        Some(s) => match humantime::parse_duration(s.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                problems.push(
                    s.span(),
                    field,
                    format!("`{}` is not a duration like \"30s\": {e}", s.get_ref()),
                );
                default
            }
        },
    }
}

/// "key is not valid base64", and the like.
pub(super) fn key_message(e: KeyError) -> String {
    format!("key {e}")
}
