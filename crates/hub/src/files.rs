//! The hub's own files: private folders, and files replaced whole and synced, so a hub
//! killed at any moment reads each one as it last was, never torn.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Makes `dir` (and its parents) if missing, readable by the hub's user only.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The files of `dir` as `(path, name)`, with the temporary files a killed write left
/// removed.
pub(crate) fn entries(dir: &Path) -> io::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with(".tmp-") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        out.push((path, name));
    }
    Ok(out)
}

/// Replaces `dir/name` with `bytes`: written to a temporary file and synced, renamed over
/// it, and the folder synced.
pub(crate) fn replace(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Removes `dir/name` and syncs the folder.
pub(crate) fn remove(dir: &Path, name: &str) -> io::Result<()> {
    std::fs::remove_file(dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
