use std::fmt;

/// One thing wrong with a table, located by a path in the table's data
/// (for example `apps[2].targets[0].cluster`), so a config loader can map it to a file line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where the problem is, as a path into [`crate::TableData`].
    pub path: String,
    /// What is wrong, in words an operator understands.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The table's data breaks one or more rules; every problem found is listed.
    #[error("invalid routing table: {}", join(.0))]
    Invalid(Vec<Problem>),
    /// The bytes are not a table in the wire format.
    #[error("routing table wire format: {0}")]
    Decode(#[from] serde_json::Error),
    /// The bytes are a table in a wire format version this build does not understand.
    #[error(
        "routing table wire format version {found} is not supported (this build reads {supported})"
    )]
    UnsupportedFormat {
        /// The version found in the message.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
