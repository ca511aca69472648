//! The plugin's own memory — the IPAM pools and the endpoints between CreateEndpoint
//! and DeleteEndpoint — kept in a JSON file of the daemon's state directory, so that a
//! restarted netpath answers dockerd as before (dockerd never repeats a CreateNetwork,
//! CreateEndpoint or RequestPool). Every change is all or nothing: it is made on a copy,
//! written to a temporary file and renamed over the old one, and only then kept.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use serde::{Serialize, de::DeserializeOwned};

use super::driver::Refusal;

/// A value of type `T`, saved in `path` after every change (in memory only without one).
pub struct Saved<T> {
    path: Option<PathBuf>,
    value: Mutex<T>,
}

impl<T: Clone + Default + Serialize + DeserializeOwned> Saved<T> {
    /// In memory only.
    pub fn memory() -> Saved<T> {
        Saved {
            path: None,
            value: Mutex::new(T::default()),
        }
    }

    /// Loaded from `path` (the default if there is no such file yet).
    pub fn load(path: &Path) -> Result<Saved<T>, String> {
        let value = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not the plugin's state: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Saved {
            path: Some(path.to_owned()),
            value: Mutex::new(value),
        })
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the value.
    pub fn get(&self) -> T {
        self.lock().clone()
    }

    /// Applies `change` to a copy; keeps (and saves) the copy only if `change` succeeds
    /// and the file is written. Changes are serialised by the lock.
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut T) -> Result<R, Refusal>,
    ) -> Result<R, Refusal> {
        let mut value = self.lock();
        let mut next = value.clone();
        let r = change(&mut next)?;
        if let Some(path) = &self.path {
            write(path, &next)?;
        }
        *value = next;
        Ok(r)
    }
}

/// Writes `value` to `path` through a temporary file beside it and a rename.
fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), Refusal> {
    let failed =
        |e: std::io::Error| format!("cannot save the plugin's state in {}: {e}", path.display());
    let json = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_change_is_kept_and_saved_only_when_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let saved: Saved<BTreeMap<String, u32>> = Saved::load(&path).unwrap();
        saved.update(|m| Ok(m.insert("a".into(), 1))).unwrap();
        let refused = saved.update(|m| {
            m.insert("b".into(), 2);
            Err::<(), _>("no".into())
        });
        assert_eq!(refused, Err("no".into()));
        assert_eq!(saved.get(), BTreeMap::from([("a".into(), 1)]));
        // What a restart loads.
        let again: Saved<BTreeMap<String, u32>> = Saved::load(&path).unwrap();
        assert_eq!(again.get(), BTreeMap::from([("a".into(), 1)]));
        // A file that cannot be written: the change is refused and not kept.
        let gone: Saved<BTreeMap<String, u32>> =
            Saved::load(&dir.path().join("no/such.json")).unwrap();
        let err = gone.update(|m| Ok(m.insert("c".into(), 3))).unwrap_err();
        assert!(
            err.starts_with("cannot save the plugin's state in"),
            "{err}"
        );
        assert!(gone.get().is_empty());
        // A file that is not the plugin's.
        std::fs::write(&path, "{").unwrap();
        let err = Saved::<BTreeMap<String, u32>>::load(&path).err().unwrap();
        assert!(err.contains("is not the plugin's state"), "{err}");
    }
}
