//! The GeoDNS server (being built: issue 5).
