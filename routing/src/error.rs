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
    /// The bytes are not a binary message of the wire format (or were cut short).
    #[error("routing table wire format: {0}")]
    Binary(#[from] postcard::Error),
    /// The bytes are a binary message that does not hold together.
    #[error("routing table wire format: {0}")]
    Malformed(String),
    /// A delta starts from a version (or a table of that version) other than the one held:
    /// out of order, or from another lineage.
    #[error("the delta applies to version {base}, not to the version held ({held})")]
    DeltaBase {
        /// The version held.
        held: u64,
        /// The version the delta starts from.
        base: u64,
    },
    /// A delta edits what the table does not have.
    #[error("corrupt delta: {0}")]
    DeltaCorrupt(String),
    /// Applying a delta did not give the table the controller made (its digest differs).
    #[error("the table built for version {version} does not have the controller's digest")]
    DigestMismatch {
        /// The version the delta makes.
        version: u64,
    },
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

impl TableError {
    /// True when the error means the subscriber should ask for a snapshot: the delta does
    /// not fit the table it holds, or applying it did not give the controller's table.
    pub fn wants_snapshot(&self) -> bool {
        matches!(
            self,
            TableError::DeltaBase { .. }
                | TableError::DeltaCorrupt(_)
                | TableError::DigestMismatch { .. }
                | TableError::Invalid(_)
        )
    }
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
