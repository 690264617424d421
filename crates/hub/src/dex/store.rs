//! Durable executions on disk: one file per execution (`{id}.json`), replaced whole and
//! synced on every change, so a hub killed at any point reads each one as it last was.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Execution;

pub(super) struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (made if missing, 0700) and the executions it holds. A file that
    /// does not parse is set aside as `{id}.corrupt` and said.
    pub(super) fn open(dir: &Path) -> std::io::Result<(Store, Vec<Execution>)> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut loaded = Vec::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".tmp-") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
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
        let tmp = self.dir.join(format!(".tmp-{}", exec.id));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(format!("{}.json", exec.id)))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    pub(super) fn delete(&self, id: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
    }
}
