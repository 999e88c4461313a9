//! The controller (being built: issue 3).
