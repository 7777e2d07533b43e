//! A set of files written together: every file of the set is first written into a staging
//! folder inside the target folder, and only when all of them are complete are they renamed
//! over their targets. A failed write (a full disk, a table that does not validate, a target
//! that is a directory) leaves every old file in place, so a reader never finds half of a new
//! result next to half of an old one.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Result};

/// Counter that makes staging folder names unique between threads of one process.
static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A writer of one file of a set: it writes the file at the path it is given.
pub type FileWriter<'a> = Box<dyn Fn(&Path) -> Result<()> + 'a>;

/// Writes `files` (file name, writer) into `dir` as a set; returns the paths written.
///
/// Each writer fills a file in a staging folder `dir/.staging-*`. Only when every writer has
/// succeeded is each target checked (it must be absent or a file) and are the new files renamed
/// over the targets; a rename that fails then restores the old files already replaced. On any
/// error the staging folder is removed and the old files are left as they were.
pub fn write_file_set(dir: &Path, files: &[(String, FileWriter)]) -> Result<Vec<PathBuf>> {
    check_names(files)?;
    fs::create_dir_all(dir)
        .map_err(|e| anyhow!("cannot create directory {}: {e}; choose a writable output folder", dir.display()))?;
    let staging = create_staging(dir)?;
    let result = stage_and_commit(dir, &staging, files);
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Refuses names that are empty, hold a path separator, or repeat.
fn check_names(files: &[(String, FileWriter)]) -> Result<()> {
    for (i, (name, _)) in files.iter().enumerate() {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            bail!("internal: output file name {name:?} is not a plain file name");
        }
        if files[..i].iter().any(|(n, _)| n == name) {
            bail!("internal: two outputs are named {name}; give every output its own file name");
        }
    }
    Ok(())
}

/// Creates a new, uniquely named staging folder in `dir`.
fn create_staging(dir: &Path) -> Result<PathBuf> {
    let pid = std::process::id();
    for _ in 0..16 {
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let staging = dir.join(format!(".staging-{pid}-{n}"));
        match fs::create_dir(&staging) {
            Ok(()) => return Ok(staging),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => bail!("cannot create a staging folder in {}: {e}; check that it is writable", dir.display()),
        }
    }
    bail!("cannot create a unique staging folder in {}; remove stale .staging-* folders", dir.display())
}

/// Writes every file into `staging`, checks the targets, then renames the files into `dir`.
fn stage_and_commit(dir: &Path, staging: &Path, files: &[(String, FileWriter)]) -> Result<Vec<PathBuf>> {
    for (name, write) in files {
        write(&staging.join(name))?;
    }
    for (name, _) in files {
        let target = dir.join(name);
        if let Ok(meta) = fs::symlink_metadata(&target) {
            if meta.is_dir() {
                bail!(
                    "cannot write {}: a directory is in the way; remove it or choose another output folder (no file was replaced)",
                    target.display()
                );
            }
        }
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    commit(dir, staging, &names)
}

/// Renames the staged files `names` over their targets in `dir`; when a rename fails, the
/// targets already replaced get their old files back and the error is returned.
fn commit(dir: &Path, staging: &Path, names: &[&str]) -> Result<Vec<PathBuf>> {
    let backups = staging.join(".old");
    fs::create_dir(&backups).map_err(|e| anyhow!("cannot create {}: {e}", backups.display()))?;
    let mut replaced: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    for name in names {
        let target = dir.join(name);
        match replace(&staging.join(name), &target, &backups.join(name)) {
            Ok(backup) => replaced.push((target, backup)),
            Err(e) => {
                restore(&replaced);
                return Err(e);
            }
        }
    }
    sync_dir(dir);
    Ok(replaced.into_iter().map(|(t, _)| t).collect())
}

/// Renames `new` over `target`, first keeping the old target as `backup` (a hard link, so the
/// target never goes missing); returns the backup when there was an old target.
fn replace(new: &Path, target: &Path, backup: &Path) -> Result<Option<PathBuf>> {
    let had_old = fs::symlink_metadata(target).is_ok();
    if had_old {
        fs::hard_link(target, backup)
            .or_else(|_| fs::copy(target, backup).map(|_| ()))
            .map_err(|e| anyhow!("cannot keep a copy of {} before replacing it: {e}", target.display()))?;
    }
    fs::rename(new, target).map_err(|e| {
        anyhow!("cannot rename {} to {}: {e}; no file of this output set was replaced", new.display(), target.display())
    })?;
    Ok(had_old.then(|| backup.to_path_buf()))
}

/// Puts back the old files of the targets already replaced (best effort: the caller reports
/// the error that stopped the commit).
fn restore(replaced: &[(PathBuf, Option<PathBuf>)]) {
    for (target, backup) in replaced.iter().rev() {
        match backup {
            Some(b) => {
                let _ = fs::rename(b, target);
            }
            None => {
                let _ = fs::remove_file(target);
            }
        }
    }
}

/// Makes the renames durable where the platform allows syncing a directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("copra-report-file-set-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn text_set<'a>(files: &'a [(&'a str, &'a str)]) -> Vec<(String, FileWriter<'a>)> {
        files
            .iter()
            .map(|&(name, body)| {
                let w: FileWriter = Box::new(move |p: &Path| Ok(fs::write(p, body)?));
                (name.to_string(), w)
            })
            .collect()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_set_replaces_the_old_set_and_leaves_no_staging() {
        let dir = scratch_dir("replace");
        let written = write_file_set(&dir, &text_set(&[("a.txt", "old a"), ("b.txt", "old b")])).unwrap();
        assert_eq!(written, [dir.join("a.txt"), dir.join("b.txt")]);
        write_file_set(&dir, &text_set(&[("a.txt", "new a"), ("b.txt", "new b"), ("c.txt", "new c")])).unwrap();
        assert_eq!(fs::read_to_string(dir.join("a.txt")).unwrap(), "new a");
        assert_eq!(fs::read_to_string(dir.join("c.txt")).unwrap(), "new c");
        assert_eq!(entries(&dir), ["a.txt", "b.txt", "c.txt"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failing_writer_replaces_nothing() {
        let dir = scratch_dir("failing");
        write_file_set(&dir, &text_set(&[("a.txt", "old a"), ("b.txt", "old b")])).unwrap();
        let mut set = text_set(&[("a.txt", "new a"), ("b.txt", "new b")]);
        set.push(("c.txt".into(), Box::new(|_: &Path| Err(anyhow!("disk full on purpose")))));
        let err = write_file_set(&dir, &set).unwrap_err().to_string();
        assert!(err.contains("on purpose"), "{err}");
        assert_eq!(fs::read_to_string(dir.join("a.txt")).unwrap(), "old a");
        assert_eq!(fs::read_to_string(dir.join("b.txt")).unwrap(), "old b");
        assert_eq!(entries(&dir), ["a.txt", "b.txt"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_in_the_way_replaces_nothing() {
        let dir = scratch_dir("dir-in-way");
        write_file_set(&dir, &text_set(&[("a.txt", "old a")])).unwrap();
        fs::create_dir_all(dir.join("z.txt/inner")).unwrap();
        let err = write_file_set(&dir, &text_set(&[("a.txt", "new a"), ("z.txt", "new z")])).unwrap_err();
        assert!(err.to_string().contains("z.txt") && err.to_string().contains("directory"), "{err}");
        assert_eq!(fs::read_to_string(dir.join("a.txt")).unwrap(), "old a");
        assert!(dir.join("z.txt/inner").is_dir());
        assert_eq!(entries(&dir), ["a.txt", "z.txt"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_rename_restores_the_files_already_replaced() {
        let dir = scratch_dir("restore");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("a.txt"), "old a").unwrap();
        let staging = create_staging(&dir).unwrap();
        fs::write(staging.join("a.txt"), "new a").unwrap();
        fs::write(staging.join("c.txt"), "new c").unwrap();
        // b.txt is never staged, so its rename fails after a.txt and c.txt were replaced.
        assert!(commit(&dir, &staging, &["c.txt", "a.txt", "b.txt"]).is_err());
        assert_eq!(fs::read_to_string(dir.join("a.txt")).unwrap(), "old a");
        assert!(!dir.join("b.txt").exists() && !dir.join("c.txt").exists());
        fs::remove_dir_all(&staging).unwrap();
        assert_eq!(entries(&dir), ["a.txt"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_names_are_refused_before_writing() {
        let dir = scratch_dir("names");
        assert!(write_file_set(&dir, &text_set(&[("a.txt", "1"), ("a.txt", "2")])).is_err());
        assert!(write_file_set(&dir, &text_set(&[("../x.txt", "1")])).is_err());
        assert!(!dir.exists());
    }
}
