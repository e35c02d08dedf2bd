//! The last-known-good file: what the node served last, on disk, so that a
//! node restarted while the control plane is away boots and serves.
//!
//! The file is written after every applied update, atomically: a temporary
//! file in the same directory, written, flushed to disk, then renamed over
//! the old one (and the directory flushed), so a crash leaves either the
//! old file or the new one. It is a short text header followed by a
//! `ConfigUpdate` (a full one, with every workspace served):
//!
//! ```text
//! mockplane-lkg 1
//! revision 42
//! length 18233
//! sha256 6f1e…
//!
//! <length bytes: the encoded ConfigUpdate>
//! ```
//!
//! Loading checks all of it — header, length, checksum, revision, then the
//! node's usual checks of every workspace — and a file that fails any is
//! ignored with a clear log line: the node then waits for the control plane
//! as if it had none.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use mockplane_proto::v1;
use prost::Message as _;
use sha2::{Digest as _, Sha256};

use crate::table::{RoutingTable, Update};

const MAGIC: &str = "mockplane-lkg 1";
/// `ConfigUpdate.upserts`' field number (config.proto).
const UPSERTS_FIELD: u32 = 5;
const FILE_NAME: &str = "last-known-good.bin";
/// Largest file read back; far above any config the control plane sends.
const MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// Where a node keeps its last-known-good config.
#[derive(Debug, Clone)]
pub struct LastKnownGood {
    path: PathBuf,
}

impl LastKnownGood {
    /// The file in `dir`, which is created when missing.
    pub fn in_dir(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            path: dir.join(FILE_NAME),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what `table` serves (a table made by
    /// [`RoutingTable::keeping_resources`]). Blocking: run it off the async
    /// threads.
    pub fn save(&self, table: &RoutingTable) -> std::io::Result<u64> {
        let mut body = v1::ConfigUpdate {
            revision: table.revision,
            nonce: "last-known-good".into(),
            full: true,
            // What a node served is what it should serve again, even if
            // that was nothing.
            empty_is_intended: true,
            ..Default::default()
        }
        .encode_to_vec();
        // The upserts are appended as the repeated field they are, straight
        // from the table: no copy of every config into a message first.
        for resource in table.resources() {
            prost::encoding::message::encode(UPSERTS_FIELD, resource, &mut body);
        }
        let header = format!(
            "{MAGIC}\nrevision {}\nlength {}\nsha256 {}\n\n",
            table.revision,
            body.len(),
            hex::encode(Sha256::digest(&body))
        );
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let temporary = dir.join(format!(".{FILE_NAME}.tmp"));
        {
            let mut file = File::create(&temporary)?;
            file.write_all(header.as_bytes())?;
            file.write_all(&body)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &self.path)?;
        // The rename itself is durable only once the directory is.
        File::open(dir)?.sync_all()?;
        Ok(table.revision)
    }

    /// The saved config as a full update; `Ok(None)` when there is no file.
    /// Every way the file can be wrong is an `Err` saying which.
    pub fn load(&self) -> Result<Option<Update>, String> {
        let bytes = match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
            Ok(meta) if meta.len() > MAX_BYTES => {
                return Err(format!(
                    "{} is {} bytes, more than the {MAX_BYTES} a config can be",
                    self.path.display(),
                    meta.len()
                ));
            }
            Ok(_) => std::fs::read(&self.path)
                .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?,
        };
        parse(&bytes).map(Some).map_err(|e| {
            format!(
                "{} is not a valid last-known-good file: {e}",
                self.path.display()
            )
        })
    }
}

fn parse(bytes: &[u8]) -> Result<Update, String> {
    let end = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or("no header")?;
    let header =
        std::str::from_utf8(&bytes[..end]).map_err(|_| "the header is not text".to_owned())?;
    let body = &bytes[end + 2..];
    let mut lines = header.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("it does not start with `{MAGIC}`"));
    }
    let mut field = |name: &str| -> Result<String, String> {
        let line = lines.next().ok_or(format!("the header has no {name}"))?;
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(str::to_owned)
            .ok_or(format!("expected `{name} …`, found `{line}`"))
    };
    let revision: u64 = field("revision")?
        .parse()
        .map_err(|_| "the revision is not a number".to_owned())?;
    let length: usize = field("length")?
        .parse()
        .map_err(|_| "the length is not a number".to_owned())?;
    let checksum = field("sha256")?;
    if body.len() != length {
        return Err(format!(
            "it holds {} bytes of config, the header says {length} (cut short?)",
            body.len()
        ));
    }
    if hex::encode(Sha256::digest(body)) != checksum {
        return Err("its checksum does not match its content".into());
    }
    let update = v1::ConfigUpdate::decode(body).map_err(|e| format!("undecodable: {e}"))?;
    if update.revision != revision || !update.full {
        return Err(format!(
            "the content is revision {} (full: {}), the header says {revision}",
            update.revision, update.full
        ));
    }
    Ok(Update {
        revision: update.revision,
        nonce: update.nonce,
        full: true,
        base_revision: 0,
        upserts: update.upserts,
        removed: Vec::new(),
        empty_is_intended: true,
        kept: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use mockplane_shared::{Slug, WorkspaceConfig};
    use uuid::Uuid;

    use super::*;

    fn table(revision: u64) -> RoutingTable {
        let config = WorkspaceConfig::single(Uuid::new_v4(), Slug::parse("shop").unwrap(), vec![]);
        let update = Update {
            revision,
            full: true,
            upserts: vec![mockplane_proto::resource::encode(&config, revision)],
            ..Default::default()
        };
        RoutingTable::keeping_resources().apply(&update).0
    }

    #[test]
    fn a_saved_table_loads_back_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let lkg = LastKnownGood::in_dir(&dir.path().join("state")).unwrap();
        assert!(lkg.load().unwrap().is_none(), "no file yet");
        lkg.save(&table(7)).unwrap();
        let update = lkg.load().unwrap().unwrap();
        assert_eq!((update.revision, update.upserts.len()), (7, 1));
        let (loaded, errors) = RoutingTable::default().apply(&update);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(loaded.workspace("shop").is_some());
        // A newer save replaces it whole.
        lkg.save(&table(8)).unwrap();
        assert_eq!(lkg.load().unwrap().unwrap().revision, 8);

        let good = std::fs::read(lkg.path()).unwrap();
        let damaged = |bytes: &[u8]| {
            std::fs::write(lkg.path(), bytes).unwrap();
            lkg.load().unwrap_err()
        };
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(damaged(&flipped).contains("checksum"));
        assert!(damaged(&good[..good.len() - 3]).contains("cut short"));
        assert!(damaged(b"hello").contains("no header"));
        assert!(damaged(b"something else\n\n").contains("does not start with"));
        let end = good.windows(2).position(|w| w == b"\n\n").unwrap();
        let header = String::from_utf8(good[..end].to_vec()).unwrap();
        let mut renumbered = header.replacen("revision 8", "revision 9", 1).into_bytes();
        renumbered.extend_from_slice(&good[end..]);
        assert!(damaged(&renumbered).contains("the header says 9"));
    }
}
