//! The crate's one error type: bad input, named precisely.

/// Input the capacity engine refuses. Every variant names the field and the value at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapacityError {
    /// A rate, factor or threshold that is negative, NaN or infinite.
    #[error("{what} must be a finite number >= 0, got {value}")]
    BadNumber {
        /// Which input.
        what: String,
        /// The value given.
        value: f64,
    },
    /// A target of requests/s per replica that is not > 0.
    #[error("{what}: target requests/s per replica must be a finite number > 0, got {value}")]
    BadTarget {
        /// Which input.
        what: String,
        /// The value given.
        value: f64,
    },
    /// A floor above its ceiling.
    #[error("{what}: min replicas {min} is above max replicas {max}")]
    MinAboveMax {
        /// Which cluster or pool.
        what: String,
        /// The floor.
        min: u32,
        /// The ceiling.
        max: u32,
    },
    /// The same cluster named twice.
    #[error("cluster {0:?} is listed twice")]
    DuplicateCluster(String),
    /// A scenario or input naming a cluster that is not in the input.
    #[error("unknown cluster {0:?}")]
    UnknownCluster(String),
    /// A cron expression croner refuses, or a window of zero length.
    #[error("schedule {expr:?}: {reason}")]
    BadSchedule {
        /// The cron expression.
        expr: String,
        /// Why it is refused.
        reason: String,
    },
    /// Any other inconsistent input, with what is wrong.
    #[error("{0}")]
    Invalid(String),
}
