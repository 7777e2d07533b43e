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
