//! Coalitions of players stored as `u64` bitmasks.
//!
//! Player `i` is a member of coalition `c` when bit `i` of `c` is set, so a
//! coalition can hold players `0..64`. Indices of 64 or more are never
//! members: [`contains`] answers `false` for them and [`insert`] leaves the
//! coalition unchanged.

use anyhow::{bail, Result};

/// A coalition: bit `i` is set when player `i` is a member.
pub type Coalition = u64;

/// The largest number of players a [`Coalition`] bitmask can hold.
pub const MAX_PLAYERS: usize = 64;

/// The empty coalition ∅.
pub const EMPTY: Coalition = 0;

/// Number of members of `c`.
pub fn size(c: Coalition) -> usize {
    c.count_ones() as usize
}

/// The coalition `{i}` (empty when `i >= 64`).
pub fn singleton(i: usize) -> Coalition {
    if i < MAX_PLAYERS {
        1u64 << i
    } else {
        EMPTY
    }
}

/// Whether player `i` is a member of `c`.
pub fn contains(c: Coalition, i: usize) -> bool {
    c & singleton(i) != 0
}

/// `c ∪ {i}`.
pub fn insert(c: Coalition, i: usize) -> Coalition {
    c | singleton(i)
}

/// `c ∖ {i}`.
pub fn remove(c: Coalition, i: usize) -> Coalition {
    c & !singleton(i)
}

/// `c △ {i}`: adds `i` when absent, removes it when present.
pub fn toggle(c: Coalition, i: usize) -> Coalition {
    c ^ singleton(i)
}

/// The grand coalition `N = {0, …, n−1}` (all 64 bits when `n >= 64`).
pub fn grand(n: usize) -> Coalition {
    if n >= MAX_PLAYERS {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// `N ∖ c` for the grand coalition of `n` players.
pub fn complement(c: Coalition, n: usize) -> Coalition {
    !c & grand(n)
}

/// Whether every member of `c` is one of the players `0..n`.
pub fn within(c: Coalition, n: usize) -> bool {
    c & !grand(n) == 0
}

/// Whether `a ⊆ b`.
pub fn is_subset(a: Coalition, b: Coalition) -> bool {
    a & !b == 0
}

/// Iterator over the members of a coalition in increasing order.
#[derive(Debug, Clone, Copy)]
pub struct Members(Coalition);

impl Iterator for Members {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(i)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let k = size(self.0);
        (k, Some(k))
    }
}

impl ExactSizeIterator for Members {}

/// The members of `c`, in increasing order.
pub fn members(c: Coalition) -> Members {
    Members(c)
}

/// The members of `c` as a sorted vector.
pub fn to_vec(c: Coalition) -> Vec<usize> {
    members(c).collect()
}

/// The coalition made of the given players; errors on an index of 64 or more.
pub fn from_members(players: &[usize]) -> Result<Coalition> {
    let mut c = EMPTY;
    for &i in players {
        if i >= MAX_PLAYERS {
            bail!("player index {i} does not fit a u64 coalition bitmask: use indices below {MAX_PLAYERS}");
        }
        c = insert(c, i);
    }
    Ok(c)
}

/// `n` characters, the `i`-th being `1` when player `i` is a member (player 0 first).
pub fn bit_string(c: Coalition, n: usize) -> String {
    (0..n).map(|i| if contains(c, i) { '1' } else { '0' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_set_operations() {
        let c = from_members(&[0, 3, 5]).unwrap();
        assert_eq!(c, 0b101001);
        assert_eq!(size(c), 3);
        assert!(contains(c, 3) && !contains(c, 4) && !contains(c, 64) && !contains(c, 1000));
        assert_eq!(insert(c, 4), 0b111001);
        assert_eq!(insert(c, 3), c);
        assert_eq!(insert(c, 70), c);
        assert_eq!(remove(c, 3), 0b100001);
        assert_eq!(remove(c, 4), c);
        assert_eq!(toggle(toggle(c, 7), 7), c);
        assert_eq!(to_vec(c), vec![0, 3, 5]);
        assert_eq!(members(c).len(), 3);
        assert_eq!(complement(c, 6), 0b010110);
        assert_eq!(complement(EMPTY, 64), u64::MAX);
        assert_eq!(grand(0), 0);
        assert_eq!(grand(3), 0b111);
        assert_eq!(grand(64), u64::MAX);
        assert!(within(c, 6) && !within(c, 5));
        assert!(is_subset(0b001, c) && !is_subset(0b010, c));
        assert_eq!(bit_string(c, 7), "1001010");
        assert_eq!(to_vec(u64::MAX).len(), 64);
        assert_eq!(to_vec(EMPTY), Vec::<usize>::new());
    }

    #[test]
    fn out_of_range_member_is_an_error() {
        let err = from_members(&[1, 64]).unwrap_err().to_string();
        assert!(err.contains("64"), "{err}");
    }
}
