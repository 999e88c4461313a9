//! Meridian's configuration file: its schema, loading with diagnostics that name file, line
//! and field, and every validation rule (`meridian check`).
//!
//! The file declares regions, geo mapping, clusters, probes, apps, DNS zones and the
//! settings of each process (controller, proxy, dns). [`Config::base_table`] turns it into
//! the routing table the controller starts from; the controller owns everything after that.
//!
//! What it must not do: open sockets, start anything, or know about runtime state (health,
//! overrides). It reads one file and answers whether it is right, and what it says.
//!
//! # Layout
//!
//! - [`schema`]: the types the YAML maps to, with defaults.
//! - [`controller`], [`proxy`], [`dns`]: each process's own section.
//! - `locate`: a map from a field's path (`apps[0].targets[1].cluster`) to its line and column.
//! - `validate`: the rules beyond types, each reported with the path of the offending field.

mod error;
mod locate;
mod validate;
pub mod zone;

pub mod capacity;
pub mod controller;
pub mod dns;
pub mod proxy;
pub mod schema;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, Diagnostic};
pub use schema::*;

/// The demo configuration `meridian up` runs when no file is given.
pub const DEMO_CONFIG: &str = include_str!("../../deploy/examples/demo.yaml");

/// A config file that passed every rule, with where it came from.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The file it was read from (or a label such as `<embedded demo>`).
    pub file: PathBuf,
    /// Its contents.
    pub config: Config,
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `file` names it in diagnostics and anchors relative paths.
pub fn parse(text: &str, file: &Path) -> Result<LoadedConfig, ConfigError> {
    let locations = locate::Locations::index(text);
    let deserializer = serde_norway::Deserializer::from_str(text);
    let config: Config = match serde_path_to_error::deserialize(deserializer) {
        Ok(config) => config,
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let (line, column) = match inner.location() {
                Some(loc) => (Some(loc.line()), Some(loc.column())),
                None => locations.find(&path),
            };
            let message = plain_words(&strip_path(strip_location(&inner.to_string()), &path));
            let path = if path == "." { String::new() } else { path };
            // A field reported missing is often there, indented so that YAML gives it to
            // something else: point at that line too.
            let misplaced = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .zip(line.zip(column))
                .and_then(|((field, _), (line, column))| {
                    misindented(text, line, column, field).map(|found| (field.to_string(), found))
                });
            let mut diagnostics = vec![Diagnostic {
                file: file.to_path_buf(),
                line,
                column,
                message,
                path: path.clone(),
            }];
            if let Some((field, (at, indent))) = misplaced {
                let expected = column.map_or(0, |c| c - 1);
                diagnostics.push(Diagnostic {
                    file: file.to_path_buf(),
                    line: Some(at),
                    column: Some(indent + 1),
                    path: if path.is_empty() {
                        field
                    } else {
                        format!("{path}.{field}")
                    },
                    message: format!(
                        "indented {indent} spaces where the other fields of {} are at {expected}, so it is not read as one of them",
                        if path.is_empty() { "the file" } else { &path },
                    ),
                });
            }
            return Err(ConfigError::Invalid(diagnostics));
        }
    };
    let problems = validate::validate(&config, file);
    if problems.is_empty() {
        Ok(LoadedConfig {
            file: file.to_path_buf(),
            config,
        })
    } else {
        Err(ConfigError::Invalid(
            problems
                .into_iter()
                .map(|problem| {
                    let (line, column) = locations.find(&problem.path);
                    Diagnostic {
                        file: file.to_path_buf(),
                        line,
                        column,
                        path: problem.path,
                        message: problem.message,
                    }
                })
                .collect(),
        ))
    }
}

/// Validates a config built in memory (for example from Kubernetes resources): the same rules
/// as for a file, with diagnostics that name `origin` and the field path but no line.
pub fn validate(config: Config, origin: &Path) -> Result<LoadedConfig, ConfigError> {
    let problems = validate::validate(&config, origin);
    if problems.is_empty() {
        return Ok(LoadedConfig {
            file: origin.to_path_buf(),
            config,
        });
    }
    Err(ConfigError::Invalid(
        problems
            .into_iter()
            .map(|problem| Diagnostic {
                file: origin.to_path_buf(),
                line: None,
                column: None,
                path: problem.path,
                message: problem.message,
            })
            .collect(),
    ))
}

/// The line (1-based) and indentation of a `field:` key written after the mapping that
/// starts at `line`:`column` but indented differently from its keys, within that mapping's
/// extent (up to the next line indented at or left of the mapping's parent).
fn misindented(text: &str, line: usize, column: usize, field: &str) -> Option<(usize, usize)> {
    let keys_at = column.checked_sub(1)?;
    // A mapping that is a sequence item ends at the next `- ` of its sequence, two columns
    // left of its keys; a plain nested mapping ends at its parent's keys, two left as well.
    let ends_at = keys_at.saturating_sub(2);
    for (i, raw) in text.lines().enumerate().skip(line) {
        let body = raw.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = raw.len() - body.len();
        if indent <= ends_at && (keys_at > 0 || indent == 0) {
            return None;
        }
        let key = body.strip_prefix("- ").unwrap_or(body);
        if indent != keys_at && key.strip_prefix(field).is_some_and(|r| r.starts_with(':')) {
            return Some((i + 1, indent));
        }
    }
    None
}

/// serde's messages name Rust types (`expected u32`, `struct Config`); an operator reads
/// what the field takes instead.
fn plain_words(message: &str) -> String {
    let mut out = message.replace("invalid type: ", "");
    for (rust, plain) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        (
            "expected struct Config",
            "expected a Meridian config (a mapping of sections)",
        ),
    ] {
        if let Some(rest) = out.strip_suffix(rust) {
            out = format!("{rest}{plain}");
        }
    }
    if let Some(at) = out.find("expected struct ") {
        // Any other struct: a mapping of its fields.
        out.truncate(at);
        out.push_str("expected a mapping of fields");
    }
    if let Some(at) = out.find("expected enum ") {
        out.truncate(at);
        out.push_str("expected one of the documented values");
    }
    out
}

/// serde_norway starts its message with the field's path; the diagnostic carries it itself.
fn strip_path(message: String, path: &str) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && path.starts_with(head) => rest.to_string(),
        _ => message,
    }
}

/// serde_norway appends " at line L column C"; the diagnostic carries those itself.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(pos) => message[..pos].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_speak_the_operators_words() {
        let err = parse(
            "regions:\n  - { name: eu, location: { lat: x, lon: 8.7 } }\n",
            Path::new("c.yaml"),
        )
        .unwrap_err();
        assert_eq!(
            err.diagnostics(),
            [r#"c.yaml:2:34: regions[0].location.lat: string "x", expected a number"#]
        );
        let err = parse("- a\n", Path::new("c.yaml")).unwrap_err();
        assert_eq!(
            err.diagnostics(),
            ["c.yaml:1:1: sequence, expected a Meridian config (a mapping of sections)"]
        );
        assert_eq!(
            plain_words("invalid type: integer `-5`, expected u32"),
            "integer `-5`, expected a whole number from 0 to 4294967295"
        );
    }
}
