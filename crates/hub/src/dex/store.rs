//! Durable executions on disk: one file per execution (`{id}.json`), replaced whole and
//! synced on every change, so a hub killed at any point reads each one as it last was.

use std::path::{Path, PathBuf};

use super::Execution;
use crate::files;

pub(super) struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (made if missing, 0700) and the executions it holds. A file that
    /// does not parse is set aside as `{id}.corrupt` and said.
    pub(super) fn open(dir: &Path) -> std::io::Result<(Store, Vec<Execution>)> {
        files::private_dir(dir)?;
        let mut loaded = Vec::new();
        for (path, name) in files::entries(dir)? {
            if !name.ends_with(".json") {
                continue;
            }
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Execution>(&b).ok())
            {
                Some(exec) => loaded.push(exec),
                None => {
                    tracing::warn!(file = %path.display(), "a durable execution file does not parse; set aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        Ok((
            Store {
                dir: dir.to_owned(),
            },
            loaded,
        ))
    }

    pub(super) fn save(&self, exec: &Execution) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(exec).map_err(std::io::Error::other)?;
        files::replace(&self.dir, &format!("{}.json", exec.id), &bytes)
    }

    pub(super) fn delete(&self, id: &str) {
        let _ = files::remove(&self.dir, &format!("{id}.json"));
    }
}
