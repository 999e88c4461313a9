//! The L7 edge proxy (being built: issue 4).
