//! The wire format of a routing table: what crosses the process boundary between the
//! controller and its subscribers, and what a subscriber keeps on disk as its last good table.
//!
//! JSON, in an envelope that names the format version, so a subscriber can refuse a table it
//! would misread rather than route by it. A decoded table has passed validation.

use serde::{Deserialize, Serialize};

use crate::error::TableError;
use crate::table::{RoutingTable, TableData};

/// The wire format version this build reads and writes.
pub const WIRE_FORMAT: u32 = 1;

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: u32,
    table: &'a TableData,
}

#[derive(Deserialize)]
struct Head {
    format: u32,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    #[allow(
        dead_code,
        reason = "read by `Head` first; kept so the envelope parses whole"
    )]
    format: u32,
    table: TableData,
}

/// Encodes a table.
pub fn encode(table: &RoutingTable) -> Vec<u8> {
    let envelope = EnvelopeOut {
        format: WIRE_FORMAT,
        table: table.data(),
    };
    // Serialising plain data with string keys into memory cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// Decodes and validates a table.
pub fn decode(bytes: &[u8]) -> Result<RoutingTable, TableError> {
    let head: Head = serde_json::from_slice(bytes)?;
    if head.format != WIRE_FORMAT {
        return Err(TableError::UnsupportedFormat {
            found: head.format,
            supported: WIRE_FORMAT,
        });
    }
    let envelope: EnvelopeIn = serde_json::from_slice(bytes)?;
    RoutingTable::new(envelope.table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::sample;

    #[test]
    fn round_trip() {
        let table = RoutingTable::new(sample()).unwrap();
        let bytes = encode(&table);
        let back = decode(&bytes).unwrap();
        assert_eq!(back, table);
        assert_eq!(
            back.app_for_host("shop.example.com"),
            table.app_for_host("shop.example.com")
        );
    }

    #[test]
    fn refuses_other_formats_garbage_and_invalid_tables() {
        let table = RoutingTable::new(sample()).unwrap();
        let text = String::from_utf8(encode(&table)).unwrap();
        let future = text.replacen("\"format\":1", "\"format\":2", 1);
        assert!(matches!(
            decode(future.as_bytes()),
            Err(TableError::UnsupportedFormat {
                found: 2,
                supported: 1
            })
        ));
        assert!(matches!(decode(b"{not json"), Err(TableError::Decode(_))));
        assert!(matches!(
            decode(&text.as_bytes()[..text.len() / 2]),
            Err(TableError::Decode(_))
        ));
        let invalid = text.replacen("\"version\":1", "\"version\":0", 1);
        let err = decode(invalid.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("version: must be at least 1"), "{err}");
    }
}
