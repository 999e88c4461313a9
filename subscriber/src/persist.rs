//! The last good table on disk: written atomically (temp file, fsync, rename, fsync of the
//! directory), so a crash at any point leaves either the old table or the new one, whole.

use std::io::Write;
use std::path::{Path, PathBuf};

use meridian_routing::{RoutingTable, wire};

use crate::error::Error;

/// The file name of the last good table inside a state directory.
pub const TABLE_FILE: &str = "routing-table.json";

/// The path of the last good table in `dir`.
pub fn table_path(dir: &Path) -> PathBuf {
    dir.join(TABLE_FILE)
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |error| Error::Io {
        action,
        path: path.to_path_buf(),
        error,
    }
}

/// Writes `table` as the last good table in `dir`, creating `dir` if needed.
pub fn save(dir: &Path, table: &RoutingTable) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let path = table_path(dir);
    let tmp = dir.join(format!(".{TABLE_FILE}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        file.write_all(&wire::encode(table))
            .map_err(io("writing", &tmp))?;
        file.sync_all().map_err(io("syncing", &tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io("renaming into place", &path))?;
    // The rename is only durable once the directory entry is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))?;
    Ok(())
}

/// Reads the last good table from `dir`: `Ok(None)` when there is none yet; an error when the
/// file exists but cannot be read or fails validation.
pub fn load(dir: &Path) -> Result<Option<RoutingTable>, Error> {
    let path = table_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", &path)(e)),
    };
    wire::decode(&bytes)
        .map(Some)
        .map_err(|error| Error::Table {
            source_name: path.display().to_string(),
            error,
        })
}
