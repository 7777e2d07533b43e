//! Atomic file writes: write to a temporary file next to the target, flush it to
//! disk, then rename it over the target. A reader never sees a half-written file,
//! and a failed write never damages an existing target.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, Result};

/// Counter that makes temporary names unique between threads of one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
///
/// Parent directories are created when missing. On error the temporary file is
/// removed and an existing file at `path` is left untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |file| {
        file.write_all(bytes).map_err(|e| anyhow!("cannot write {}: {e}; check free disk space", path.display()))
    })
}

/// Writes `path` atomically, letting `f` fill a temporary file opened for writing.
///
/// The temporary file lives in the target's directory (so the final rename stays
/// on one file system), is synced to disk after `f` returns `Ok`, and is then
/// renamed over `path`. Parent directories are created when missing. If `f` or
/// any step fails, the temporary file is removed and an existing file at `path`
/// is left untouched.
pub fn write_atomic_with(path: &Path, f: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        anyhow!("cannot write {}: the path has no file name; pass a file path, not a directory", path.display())
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| {
        anyhow!("cannot create directory {} for {}: {e}; check permissions", dir.display(), path.display())
    })?;

    let (tmp_path, mut file) = create_temp(&dir, &file_name.to_string_lossy(), path)?;
    let result = fill_and_commit(&mut file, &tmp_path, path, f);
    drop(file);
    if result.is_err() {
        // Best effort: the original error is what the caller needs to see.
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// Checks, before any work, that `dir` is (or can be created as) a writable directory:
/// creates it and a probe file inside, then removes the probe. The error names the path.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(anyhow!("{} is a file, not a directory; choose another output folder", dir.display()));
    }
    let broken_link = dir.ancestors().find(|a| !a.exists() && fs::symlink_metadata(a).is_ok_and(|m| m.is_symlink()));
    if let Some(link) = broken_link {
        return Err(anyhow!(
            "{} is a broken symbolic link; restore its target or choose another folder",
            link.display()
        ));
    }
    fs::create_dir_all(dir)
        .map_err(|e| anyhow!("cannot create directory {}: {e}; choose a writable output folder", dir.display()))?;
    let (probe, file) = create_temp(dir, "write-probe", dir)?;
    drop(file);
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Creates a new, uniquely named temporary file in `dir`.
fn create_temp(dir: &Path, file_name: &str, target: &Path) -> Result<(PathBuf, File)> {
    let pid = std::process::id();
    let mut last_err = None;
    for _ in 0..16 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{file_name}.tmp-{pid}-{n}"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => {
                return Err(anyhow!(
                    "cannot create a temporary file in {} for {}: {e}; check that the directory is writable",
                    dir.display(),
                    target.display()
                ))
            }
        }
    }
    Err(anyhow!(
        "cannot create a unique temporary file in {} for {} ({}); remove stale .{}.tmp-* files",
        dir.display(),
        target.display(),
        last_err.map(|e| e.to_string()).unwrap_or_default(),
        file_name
    ))
}

/// Runs the writer, syncs the temporary file and renames it over the target.
fn fill_and_commit(file: &mut File, tmp: &Path, target: &Path, f: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    f(file)?;
    file.flush().map_err(|e| anyhow!("cannot flush {}: {e}; check free disk space", tmp.display()))?;
    file.sync_all().map_err(|e| anyhow!("cannot sync {} to disk: {e}; check the file system", tmp.display()))?;
    fs::rename(tmp, target).map_err(|e| {
        anyhow!(
            "cannot rename {} to {}: {e}; check that the target is not a directory and is writable",
            tmp.display(),
            target.display()
        )
    })?;
    // Make the rename durable where the platform allows syncing a directory.
    #[cfg(unix)]
    if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("copra-report-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn temp_files(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn round_trip_creates_parents() {
        let dir = scratch_dir("roundtrip");
        let path = dir.join("a/b/out.bin");
        write_atomic(&path, b"hello").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        write_atomic(&path, b"second version").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second version");
        assert!(temp_files(&dir.join("a/b")).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failing_writer_keeps_target_and_leaves_no_temp() {
        let dir = scratch_dir("failing");
        let path = dir.join("keep.txt");
        write_atomic(&path, b"original").unwrap();
        let err = write_atomic_with(&path, |file| {
            file.write_all(b"partial garbage")?;
            Err(anyhow!("writer failed on purpose"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("on purpose"));
        assert_eq!(fs::read(&path).unwrap(), b"original");
        assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writable_dir_check_names_the_path() {
        let dir = scratch_dir("writable");
        ensure_writable_dir(&dir.join("new/sub")).unwrap();
        assert!(dir.join("new/sub").is_dir());
        assert!(temp_files(&dir.join("new/sub")).is_empty());
        fs::write(dir.join("file"), b"x").unwrap();
        let err = ensure_writable_dir(&dir.join("file")).unwrap_err().to_string();
        assert!(err.contains("is a file") && err.contains("file"), "{err}");
        let err = ensure_writable_dir(&dir.join("file/below")).unwrap_err().to_string();
        assert!(err.contains("file/below"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directory_target_is_an_error() {
        let dir = scratch_dir("dirtarget");
        let target = dir.join("sub");
        fs::create_dir_all(target.join("inner")).unwrap();
        assert!(write_atomic(&target, b"x").is_err());
        assert!(target.join("inner").is_dir());
        assert!(temp_files(&dir).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
