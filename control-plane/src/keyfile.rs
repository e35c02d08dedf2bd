//! Key files the control plane makes on first start (the token signing key,
//! the secrets key). Replicas sharing a data directory may start together:
//! a key file appears whole or not at all, and the first one written wins.

use std::io::Write as _;
use std::path::Path;

/// Writes `contents` to `path` unless it exists: a temporary file next to
/// it (mode 0600, synced; the directory must exist), then moved into place without replacing a file
/// another process wrote meanwhile. `Ok(false)`: `path` was there first,
/// and its contents are the ones to use.
pub fn create_once(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let written = write_new_file(&temp, contents).and_then(|()| move_into_place(&temp, path));
    // After a hard link or a failure the temporary file is still there.
    let _ = std::fs::remove_file(&temp);
    if written? {
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(true)
    } else {
        Ok(false)
    }
}

fn write_new_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Gives `temp` the name `path`, unless `path` exists by now (then
/// `Ok(false)`). A hard link cannot replace an existing file; filesystems
/// without hard links get a plain rename.
fn move_into_place(temp: &Path, path: &Path) -> std::io::Result<bool> {
    match std::fs::hard_link(temp, path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) => std::fs::rename(temp, path).map(|()| true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_writer_wins_and_no_one_sees_half_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let writers: Vec<_> = (0..8u8)
            .map(|n| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let created = create_once(&path, &[n; 4096]).unwrap();
                    let read = std::fs::read(&path).unwrap();
                    assert_eq!(read.len(), 4096, "a reader saw a partial key file");
                    (created, read)
                })
            })
            .collect();
        let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|(created, _)| *created).count(), 1);
        assert!(results.windows(2).all(|pair| pair[0].1 == pair[1].1));
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files were left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
