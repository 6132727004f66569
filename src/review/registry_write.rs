//! Every registry write goes through one [`RegistryWrite`]: one writer at a time (an exclusive
//! `flock` on the registry directory, which [`Registry::load`] shares), the change
//! staged in memory and validated whole against the registry as it is now, then each file
//! replaced atomically (written beside it, flushed, renamed). A refused change writes nothing —
//! there is never an older file "restored" over another reviewer's decision — and a running
//! stream never loads half of a change.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::ReviewError;
use crate::deid::registry::{ParseCache, Registry, Staged, lock_dir};

/// A change to the registry in progress (holds the writer's lock until dropped).
pub struct RegistryWrite {
    dir: PathBuf,
    _lock: std::fs::File,
    staged: Staged,
    /// Files parsed so far (a writer checks its registry after every staged decision).
    cache: std::cell::RefCell<ParseCache>,
    /// The registry as it was when the writer took the lock.
    base: Registry,
}

impl RegistryWrite {
    /// Waits for the registry's writer lock.
    pub fn begin(dir: &Path) -> Result<Self, ReviewError> {
        let lock = lock_dir(dir, true).map_err(|source| ReviewError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut cache = ParseCache::new();
        let base = Registry::load_cached(dir, &Staged::new(), &mut cache)?;
        Ok(RegistryWrite {
            dir: dir.to_owned(),
            _lock: lock,
            staged: BTreeMap::new(),
            cache: std::cell::RefCell::new(cache),
            base,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registry as it was when the lock was taken (nothing staged).
    pub fn base(&self) -> &Registry {
        &self.base
    }

    /// The registry with what is staged so far.
    pub fn registry(&self) -> Result<Registry, ReviewError> {
        Ok(Registry::load_cached(
            &self.dir,
            &self.staged,
            &mut self.cache.borrow_mut(),
        )?)
    }

    /// A file's text as staged, else as on disk (`None`: no such file).
    pub fn text(&self, path: &Path) -> Option<String> {
        match self.staged.get(path) {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(path).ok(),
        }
    }

    /// Stages a file's new text (written only by [`RegistryWrite::commit`]).
    pub fn stage(&mut self, path: PathBuf, text: String) {
        self.staged.insert(path, Some(text));
    }

    /// What is staged now, to go back to with [`RegistryWrite::rollback`].
    pub fn checkpoint(&self) -> Staged {
        self.staged.clone()
    }

    /// Forgets what was staged since `checkpoint`.
    pub fn rollback(&mut self, checkpoint: Staged) {
        self.staged = checkpoint;
    }

    /// Checks the whole staged registry once more, then replaces each staged file atomically.
    /// Returns the files written.
    pub fn commit(self) -> Result<Vec<PathBuf>, ReviewError> {
        Registry::load_staged(&self.dir, &self.staged).map_err(|e| {
            ReviewError::Invalid(format!(
                "the decisions do not make a valid registry, nothing written: {e}"
            ))
        })?;
        let mut written = Vec::new();
        for (path, text) in &self.staged {
            let io = |source| ReviewError::Io {
                path: path.clone(),
                source,
            };
            match text {
                Some(text) => {
                    let tmp = path.with_extension("toml.partial");
                    let mut f = std::fs::File::create(&tmp).map_err(io)?;
                    f.write_all(text.as_bytes()).map_err(io)?;
                    f.sync_all().map_err(io)?;
                    std::fs::rename(&tmp, path).map_err(io)?;
                }
                None => std::fs::remove_file(path).map_err(io)?,
            }
            written.push(path.clone());
        }
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str =
        "table = \"public.t\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n";

    #[test]
    fn nothing_is_written_until_commit_and_a_refused_change_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("public.t.toml"), T).unwrap();
        let before = Registry::load(d.path()).unwrap().version;
        let mut w = RegistryWrite::begin(d.path()).unwrap();
        w.stage(
            d.path().join("public.u.toml"),
            "table = \"public.u\"\n[columns]\nx = { type = \"integer\", class = \"sensitive\", rule = \"tokenize\", domain = \"d\" }\n".into(),
        );
        assert!(w.registry().unwrap().table("public.u").is_some());
        assert!(!d.path().join("public.u.toml").exists());
        // A second file using the same domain with another type: the whole change is refused.
        w.stage(
            d.path().join("public.v.toml"),
            "table = \"public.v\"\n[columns]\ny = { type = \"text\", class = \"sensitive\", rule = \"tokenize\", domain = \"d\" }\n".into(),
        );
        assert!(w.registry().is_err());
        let e = w.commit().unwrap_err().to_string();
        assert!(e.contains("nothing written"), "{e}");
        assert!(!d.path().join("public.u.toml").exists());
        assert!(!d.path().join("public.v.toml").exists());
        assert_eq!(Registry::load(d.path()).unwrap().version, before);
    }

    #[test]
    fn writers_take_turns() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("public.t.toml"), T).unwrap();
        let first = RegistryWrite::begin(d.path()).unwrap();
        let dir = d.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        let second = std::thread::spawn(move || {
            let w = RegistryWrite::begin(&dir).unwrap();
            tx.send(()).unwrap();
            drop(w);
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(rx.try_recv().is_err(), "the second writer waits");
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        second.join().unwrap();
    }
}
