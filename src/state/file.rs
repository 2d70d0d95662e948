//! The file backend: one file per key in `state.dir`, replaced atomically (a temporary file written and
//! fsynced, renamed over the old one, the directory fsynced), so a crash at any moment leaves either the
//! old value or the new one, whole. The directory is locked for the process's life: two processes
//! writing one directory would fork a rotating token's lineage.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub struct FileState {
    dir: PathBuf,
    /// Held (an exclusive `flock`) until the process ends.
    _lock: File,
}

impl FileState {
    /// Creates `dir` (mode 0700) if needed and locks it.
    pub fn open(dir: &Path) -> Result<FileState, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "{} is in use by another running patchbay: give each process its own \
                     state.dir, or share state between replicas with state.backend = \"redis\"",
                    dir.display()
                ))
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(format!("cannot lock {}: {error}", path.display()))
            }
        }
        Ok(FileState {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `key` is kept.
    pub fn path(&self, key: &str) -> PathBuf {
        let name: String = key
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
                _ => '_',
            })
            .collect();
        self.dir.join(format!("{name}.json"))
    }

    pub fn get(path: &Path) -> Result<Option<String>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(format!("cannot read {}: {error}", path.display())),
        }
    }

    /// Returns once the value is gone from disk (whether there was one: `true`).
    pub fn delete(path: &Path) -> Result<bool, String> {
        let dir = path.parent().unwrap_or(Path::new("."));
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(format!("cannot remove {}: {error}", path.display())),
        }
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| format!("cannot sync {}: {error}", dir.display()))?;
        Ok(true)
    }

    /// Returns once the new value is on disk under its name.
    pub fn put(path: &Path, value: &str) -> Result<(), String> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let temporary = path.with_extension("json.tmp");
        let failed = |what: &str, error: std::io::Error| format!("cannot {what}: {error}");
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| failed(&format!("create {}", temporary.display()), e))?;
        file.write_all(value.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| failed(&format!("write {}", temporary.display()), e))?;
        std::fs::rename(&temporary, path)
            .map_err(|e| failed(&format!("rename to {}", path.display()), e))?;
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| failed(&format!("sync {}", dir.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "patchbay-state-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_value_is_replaced_whole_and_read_back() {
        let dir = scratch("put");
        let state = FileState::open(&dir).unwrap();
        let path = state.path("tokens.count.ab:cd/ef");
        assert_eq!(path.file_name().unwrap(), "tokens.count.ab_cd_ef.json");
        assert_eq!(FileState::get(&path).unwrap(), None);
        FileState::put(&path, "first").unwrap();
        FileState::put(&path, "second").unwrap();
        assert_eq!(FileState::get(&path).unwrap().as_deref(), Some("second"));
        assert!(!path.with_extension("json.tmp").exists());
        assert_eq!(FileState::delete(&path), Ok(true));
        assert_eq!(FileState::get(&path).unwrap(), None);
        assert_eq!(FileState::delete(&path), Ok(false));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_in_use_is_refused() {
        let dir = scratch("lock");
        let first = FileState::open(&dir).unwrap();
        let second = FileState::open(&dir).err().unwrap();
        assert!(
            second.contains("in use by another running patchbay"),
            "{second}"
        );
        drop(first);
        assert!(
            FileState::open(&dir).is_ok(),
            "the lock ends with its holder"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
