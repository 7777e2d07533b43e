//! Small shared helpers: a stable hash for cache keys, seeded RNG construction.

use rand::SeedableRng;

/// Deterministic 64-bit FNV-1a hash (stable across platforms and versions, unlike `DefaultHasher`).
#[derive(Clone, Debug)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv64 {
    /// A fresh hasher.
    pub fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash value.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Hash of a string, as hex.
pub fn hash_str(s: &str) -> String {
    let mut h = Fnv64::new();
    h.update(s.as_bytes());
    h.hex()
}

/// The crate's seeded RNG: ChaCha8 (portable and reproducible across platforms).
pub type Rng = rand_chacha::ChaCha8Rng;

/// A seeded RNG for a named purpose: distinct purposes with one seed give independent streams.
pub fn rng_for(seed: u64, purpose: &str) -> Rng {
    let mut h = Fnv64::new();
    h.update(&seed.to_le_bytes());
    h.update(purpose.as_bytes());
    Rng::seed_from_u64(h.finish())
}

/// The kind of file-system entry a path must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// A regular file (or a link to one).
    File,
    /// A folder (or a link to one).
    Folder,
}

/// Errors unless `path` names an entry of kind `want`, saying what is there instead: nothing,
/// a file where a folder is needed (or the other way round), a broken symbolic link, or an
/// entry that cannot be read. `what` names the path's role (`image folder`), `hint` the fix.
pub fn check_path_kind(path: &std::path::Path, want: PathKind, what: &str, hint: &str) -> anyhow::Result<()> {
    let shown = path.display();
    let link = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!("{what} {shown} does not exist; {hint}"),
        Err(e) => anyhow::bail!("cannot access {what} {shown}: {e}; check its permissions"),
        Ok(m) => m,
    };
    let meta = match std::fs::metadata(path) {
        Err(_) if link.file_type().is_symlink() => {
            anyhow::bail!("{what} {shown} is a broken symbolic link; {hint}")
        }
        Err(e) => anyhow::bail!("cannot access {what} {shown}: {e}; check its permissions"),
        Ok(m) => m,
    };
    match (want, meta.is_dir(), meta.is_file()) {
        (PathKind::Folder, true, _) | (PathKind::File, _, true) => Ok(()),
        (PathKind::Folder, _, true) => anyhow::bail!("{what} {shown} is a file, not a folder; {hint}"),
        (PathKind::File, true, _) => anyhow::bail!("{what} {shown} is a folder, not a file; {hint}"),
        _ => anyhow::bail!("{what} {shown} is neither a file nor a folder; {hint}"),
    }
}

/// Work beyond this multiple of the default needs an explicit yes (`--yes`).
pub const COST_FACTOR: f64 = 20.0;

/// Refuses work far beyond the default (more than [`COST_FACTOR`] times `default`) unless
/// `yes`; `what` names the setting and `estimate` the work it asks for, in the same unit.
pub fn check_cost(what: &str, estimate: f64, default: f64, yes: bool) -> anyhow::Result<()> {
    let ratio = estimate / default.max(1.0);
    if !(ratio <= COST_FACTOR || yes) {
        anyhow::bail!(
            "{what} asks for about {ratio:.0}× the default work ({estimate:.0} vs {default:.0}); pass --yes to run it anyway"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_kinds_of_path_are_named_not_called_missing() {
        let root = std::env::temp_dir().join(format!("copra-path-kind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let file = root.join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = |p: &std::path::Path, k| check_path_kind(p, k, "thing", "fix it").unwrap_err().to_string();
        assert!(err(&root.join("none"), PathKind::File).contains("does not exist; fix it"));
        assert!(err(&file, PathKind::Folder).contains("is a file, not a folder"));
        assert!(err(&root, PathKind::File).contains("is a folder, not a file"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("gone"), root.join("link")).unwrap();
            assert!(err(&root.join("link"), PathKind::Folder).contains("broken symbolic link"));
        }
        assert!(check_path_kind(&file, PathKind::File, "thing", "").is_ok());
        assert!(check_path_kind(&root, PathKind::Folder, "thing", "").is_ok());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        // FNV-1a 64 reference values: "" and "a".
        assert_eq!(Fnv64::new().finish(), 0xcbf29ce484222325);
        let mut h = Fnv64::new();
        h.update(b"a");
        assert_eq!(h.finish(), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn purposes_give_different_streams() {
        use rand::Rng as _;
        let a: u64 = rng_for(1, "mask").random();
        let b: u64 = rng_for(1, "dropout").random();
        let c: u64 = rng_for(1, "mask").random();
        assert_ne!(a, b);
        assert_eq!(a, c);
    }
}
