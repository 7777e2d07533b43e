//! Atomic directory installs: a folder is assembled under a temporary sibling name and
//! moved into place in one step, so a reader sees either the old folder or the complete
//! new one, never a mixture or a gap, and concurrent writers of one target all succeed.
//!
//! - A temporary folder is named `.tmp-<target>~<host>~<pid>~<n>` ([`temp_sibling`]):
//!   unique between processes, hosts sharing a file system, and threads of one process.
//! - [`install_dir`] renames it onto the target. When the target already holds a complete
//!   folder, either the first complete writer wins (the new one is discarded) or, when
//!   replacing, the two are exchanged in one `renameat2(RENAME_EXCHANGE)` (Linux) and the old
//!   one is deleted under the temporary name, where no reader looks.
//! - [`clean_stale_temps`] removes temporary folders whose writer is gone (a process of this
//!   host that no longer runs) or that are older than [`STALE_AFTER`]; a live writer's
//!   folder is never touched.

use anyhow::{anyhow, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Temporary folders older than this are stale whoever wrote them (a run folder is filled in
/// seconds, after training, so no live writer keeps one this long).
pub const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

/// Prefix of every temporary folder name.
const TEMP_PREFIX: &str = ".tmp-";

/// Separator between the parts of a temporary folder name (not used by run or cell names).
const SEP: char = '~';

/// Makes temporary names unique between threads of one process.
static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What [`install_dir`] did with the temporary folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// The new folder is now the target.
    New,
    /// The target already held a complete folder, which was kept; the new one was discarded.
    KeptExisting,
}

/// This host's name as a file-name-safe string (`host` when unknown).
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String =
        raw.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(40).collect();
    if clean.is_empty() {
        "host".to_string()
    } else {
        clean
    }
}

/// A fresh temporary sibling of `target`, unique to this host, process and call.
pub fn temp_sibling(target: &Path) -> Result<PathBuf> {
    let parent = target.parent().ok_or_else(|| anyhow!("{} has no parent folder", target.display()))?;
    let name = target.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "dir".into());
    let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(parent.join(format!("{TEMP_PREFIX}{name}{SEP}{}{SEP}{}{SEP}{n}", host_name(), std::process::id())))
}

/// The writer of a temporary folder named by [`temp_sibling`]: host and process id.
fn temp_writer(name: &str) -> Option<(String, u32)> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let mut parts = rest.rsplitn(4, SEP);
    let _n: u64 = parts.next()?.parse().ok()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let host = parts.next()?.to_string();
    parts.next()?;
    Some((host, pid))
}

/// Whether process `pid` of this host runs, where the platform can tell (`/proc`).
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    proc.join("self").exists().then(|| proc.join(pid.to_string()).exists())
}

/// Removes the stale temporary folders in `parent` (see the module docs): those of a process
/// of this host that no longer runs, and any older than [`STALE_AFTER`]. Best effort: a folder
/// that cannot be removed (or that another cleaner removes first) is left alone. Returns how
/// many were removed.
pub fn clean_stale_temps(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else { return 0 };
    let host = host_name();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(TEMP_PREFIX) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let writer_gone = match temp_writer(&name) {
            Some((h, pid)) if h == host => process_alive(pid) == Some(false),
            _ => false,
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if (writer_gone || old) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Swaps two paths in one step (`renameat2` with `RENAME_EXCHANGE`, Linux 3.15+).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::raw::{c_char, c_int, c_uint};
    use std::os::unix::ffi::OsStrExt;
    extern "C" {
        fn renameat2(
            olddirfd: c_int,
            oldpath: *const c_char,
            newdirfd: c_int,
            newpath: *const c_char,
            flags: c_uint,
        ) -> c_int;
    }
    const AT_FDCWD: c_int = -100;
    const RENAME_EXCHANGE: c_uint = 2;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe { renameat2(AT_FDCWD, a.as_ptr(), AT_FDCWD, b.as_ptr(), RENAME_EXCHANGE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Swaps two paths in one step: not available on this platform.
#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no atomic exchange on this platform"))
}

/// Replaces the folder `target` by `tmp` without a moment where `target` is missing, where the
/// platform allows: exchange then delete the old folder (now under `tmp`'s name). Elsewhere the
/// old folder is renamed aside first (a reader may briefly find no folder).
fn replace_dir(tmp: &Path, target: &Path) -> Result<()> {
    match exchange(tmp, target) {
        Ok(()) => {
            // The old folder now sits under the temporary name, where no reader looks.
            let _ = std::fs::remove_dir_all(tmp);
            Ok(())
        }
        Err(_) => {
            let aside = temp_sibling(target)?;
            std::fs::rename(target, &aside)
                .map_err(|e| anyhow!("cannot replace {}: {e}; check permissions", target.display()))?;
            let moved = std::fs::rename(tmp, target);
            let _ = std::fs::remove_dir_all(&aside);
            moved.map_err(|e| anyhow!("cannot move the new folder into {}: {e}", target.display()))
        }
    }
}

/// Moves the complete folder `tmp` to `target` in one step. If `target` already holds a
/// folder for which `complete` is true, it is kept (and `tmp` deleted) unless `replace`;
/// otherwise (or an incomplete folder) it is replaced atomically ([`replace_dir`]). On error
/// `tmp` is deleted and `target` left as it was. A file or broken link at `target` is an error
/// naming it.
pub fn install_dir(tmp: &Path, target: &Path, replace: bool, complete: impl Fn(&Path) -> bool) -> Result<Installed> {
    let result = install_inner(tmp, target, replace, &complete);
    if result.is_err() || result.as_ref().is_ok_and(|r| *r == Installed::KeptExisting) {
        // Best effort: the outcome (or the original error) is what the caller needs.
        let _ = std::fs::remove_dir_all(tmp);
    }
    result
}

fn install_inner(tmp: &Path, target: &Path, replace: bool, complete: &dyn Fn(&Path) -> bool) -> Result<Installed> {
    // Several tries: a concurrent writer may install or replace the target between two steps.
    for _ in 0..8 {
        match std::fs::symlink_metadata(target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::rename(tmp, target) {
                Ok(()) => return Ok(Installed::New),
                Err(_) if target.is_dir() => continue,
                Err(e) => return Err(anyhow!("cannot move the new folder into {}: {e}", target.display())),
            },
            Err(e) => return Err(anyhow!("cannot access {}: {e}; check permissions", target.display())),
            Ok(meta) if !target.is_dir() => {
                let what = if meta.file_type().is_symlink() { "a broken symbolic link" } else { "a file" };
                return Err(anyhow!("{} is {what}, not a folder; remove it and rerun", target.display()));
            }
            Ok(_) if !replace && complete(target) => return Ok(Installed::KeptExisting),
            Ok(_) => {
                // An empty folder is replaced by a plain rename; a full one by an exchange.
                if std::fs::rename(tmp, target).is_ok() {
                    return Ok(Installed::New);
                }
                if !target.is_dir() {
                    continue;
                }
                return replace_dir(tmp, target).map(|()| Installed::New);
            }
        }
    }
    Err(anyhow!("cannot install {}: other writers kept changing it; rerun", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("copra-atomic-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn filled(target: &Path, text: &str) -> PathBuf {
        let tmp = temp_sibling(target).unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("done"), text).unwrap();
        tmp
    }

    fn is_done(dir: &Path) -> bool {
        dir.join("done").is_file()
    }

    #[test]
    fn temp_names_are_unique_and_parse_back() {
        let t = Path::new("/x/seed1-abc");
        let (a, b) = (temp_sibling(t).unwrap(), temp_sibling(t).unwrap());
        assert_ne!(a, b);
        let (host, pid) = temp_writer(&a.file_name().unwrap().to_string_lossy()).unwrap();
        assert_eq!((host, pid), (host_name(), std::process::id()));
        assert_eq!(temp_writer(".tmp-seed1-abc-1234"), None, "the old format has no writer");
    }

    #[test]
    fn first_complete_writer_wins_unless_replacing() {
        let root = scratch("install");
        let target = root.join("run");
        assert_eq!(install_dir(&filled(&target, "a"), &target, false, is_done).unwrap(), Installed::New);
        assert_eq!(install_dir(&filled(&target, "b"), &target, false, is_done).unwrap(), Installed::KeptExisting);
        assert_eq!(std::fs::read_to_string(target.join("done")).unwrap(), "a");
        assert_eq!(install_dir(&filled(&target, "c"), &target, true, is_done).unwrap(), Installed::New);
        assert_eq!(std::fs::read_to_string(target.join("done")).unwrap(), "c");
        // An incomplete folder is replaced even without `replace`.
        std::fs::remove_file(target.join("done")).unwrap();
        std::fs::write(target.join("junk"), "x").unwrap();
        assert_eq!(install_dir(&filled(&target, "d"), &target, false, is_done).unwrap(), Installed::New);
        assert!(!target.join("junk").exists());
        // Nothing temporary is left behind.
        let left: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("run")]);
        // A file at the target is named.
        let file = root.join("file");
        std::fs::write(&file, "x").unwrap();
        let err = install_dir(&filled(&file, "e"), &file, false, is_done).unwrap_err().to_string();
        assert!(err.contains("is a file, not a folder"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn concurrent_writers_of_one_target_all_succeed() {
        let root = scratch("race");
        let target = root.join("run");
        for replace in [false, true] {
            let barrier = std::sync::Barrier::new(16);
            std::thread::scope(|s| {
                for i in 0..16 {
                    let (target, barrier) = (&target, &barrier);
                    s.spawn(move || {
                        let tmp = filled(target, &i.to_string());
                        barrier.wait();
                        install_dir(&tmp, target, replace, is_done).unwrap();
                        // Every reader finds a complete folder at every moment after the first install.
                        assert!(is_done(target));
                    });
                }
            });
            assert!(is_done(&target));
        }
        let left: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("run")]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn only_stale_temporary_folders_are_cleaned() {
        let root = scratch("stale");
        // A writer of this host that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let gone = root.join(format!(".tmp-run{SEP}{}{SEP}{dead}{SEP}0", host_name()));
        // A live writer (this process), another host's writer, and the old name format.
        let live = temp_sibling(&root.join("run")).unwrap();
        let other = root.join(format!(".tmp-run{SEP}elsewhere{SEP}{dead}{SEP}0"));
        let old = root.join(".tmp-run-123");
        for d in [&gone, &live, &other, &old] {
            std::fs::create_dir_all(d).unwrap();
        }
        if process_alive(dead).is_some() {
            assert_eq!(clean_stale_temps(&root), 1);
            assert!(!gone.exists());
        }
        assert!(live.exists() && other.exists() && old.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
