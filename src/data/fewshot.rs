//! Seeded, deterministic few-shot and balanced index samplers.
//!
//! Every class's indices are shuffled by an RNG seeded from `(seed, class)`, and
//! samples are prefixes of that order, so a smaller `k` always picks a subset of
//! what a larger `k` picks with the same seed.

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::mix_seed;

/// Group indices by label, each group shuffled from `(seed, class)`.
fn shuffled_groups(labels: &[u32], num_classes: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    let mut groups = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        match groups.get_mut(l as usize) {
            Some(g) => g.push(i),
            None => bail!("label {l} at index {i} is out of range for {num_classes} classes; check the label file"),
        }
    }
    for (c, g) in groups.iter_mut().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[seed, 0x5A3F, c as u64]));
        g.shuffle(&mut rng);
    }
    Ok(groups)
}

/// Pick `k` indices of every class in `0..num_classes`, class-major, from a seed.
///
/// Fails when a label is out of range or a class has fewer than `k` examples.
pub fn sample_per_class(labels: &[u32], num_classes: usize, k: usize, seed: u64) -> Result<Vec<usize>> {
    let (shots, _) = shots_and_groups(labels, num_classes, k, 0, seed, "the shots requested per class")?;
    Ok(shots)
}

/// Pick up to `total` indices spread as evenly as possible over the classes
/// (round robin over classes, seeded); classes that run out are skipped.
pub fn balanced_sample(labels: &[u32], num_classes: usize, total: usize, seed: u64) -> Result<Vec<usize>> {
    let groups = shuffled_groups(labels, num_classes, seed)?;
    Ok(round_robin(&groups, 0, total))
}

/// Take up to `total` indices round-robin from `groups`, starting at position `start` in each.
fn round_robin(groups: &[Vec<usize>], start: usize, total: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(total);
    let mut pos = start;
    while out.len() < total {
        let mut any = false;
        for g in groups {
            if out.len() == total {
                break;
            }
            if let Some(&i) = g.get(pos) {
                out.push(i);
                any = true;
            }
        }
        if !any {
            break;
        }
        pos += 1;
    }
    out
}

/// The shuffled class groups (as [`shuffled_groups`]) and the training shots, the first `shots`
/// of each group, class-major; every class must hold `spare` examples beyond its shots, which
/// `purpose` names in the error.
fn shots_and_groups(
    labels: &[u32],
    num_classes: usize,
    shots: usize,
    spare: usize,
    seed: u64,
    purpose: &str,
) -> Result<(Vec<usize>, Vec<Vec<usize>>)> {
    let groups = shuffled_groups(labels, num_classes, seed)?;
    let need = shots + spare;
    if let Some((c, g)) = groups.iter().enumerate().find(|(_, g)| g.len() < need) {
        let least = if spare == 0 { "shots".to_string() } else { format!("shots+{spare}") };
        bail!(
            "class {c} has only {} examples but needs at least {least} = {need} ({purpose}); lower the shot count or add examples",
            g.len()
        );
    }
    let train = groups.iter().flat_map(|g| g[..shots].iter().copied()).collect();
    Ok((train, groups))
}

/// The training shots and up to `rest_size` disjoint indices drawn round-robin from what each
/// class has beyond its shots (the shared body of [`split_train_test`] and [`split_train_valid`]).
fn shots_and_rest(
    labels: &[u32],
    num_classes: usize,
    shots: usize,
    rest_size: usize,
    seed: u64,
    purpose: &str,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let (train, groups) = shots_and_groups(labels, num_classes, shots, 1, seed, purpose)?;
    Ok((train, round_robin(&groups, shots, rest_size)))
}

/// Split indices into a few-shot training set (`shots` per class, class-major) and a
/// disjoint, class-balanced test set of up to `test_size` indices from the rest.
///
/// Fails when a class has fewer than `shots + 1` examples.
pub fn split_train_test(
    labels: &[u32],
    num_classes: usize,
    shots: usize,
    test_size: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    shots_and_rest(labels, num_classes, shots, test_size, seed, "shots for training plus one for testing")
}

/// Split a training pool into `shots` per class (exactly those [`sample_per_class`] picks
/// with the same seed) and a disjoint, class-balanced validation set of up to `valid_size`
/// indices drawn round-robin from the rest of each class's shuffled order. Adding or resizing
/// the validation set never changes the shots.
///
/// Fails when a class has fewer than `shots + 1` examples (no room for a validation example).
pub fn split_train_valid(
    labels: &[u32],
    num_classes: usize,
    shots: usize,
    valid_size: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    shots_and_rest(labels, num_classes, shots, valid_size, seed, "shots plus one validation example")
}

/// Split one pool (a task without separate test files) into `shots` per class, a validation
/// set and a test set, pairwise disjoint. The shots are exactly those of [`split_train_test`]
/// with the same seed. Validation is held out from the end of each class's shuffled order
/// (round-robin, up to `valid_size`, at most half of what a class has beyond its shots); the
/// test set is then drawn as [`split_train_test`] draws it from what is left, so on a pool
/// large enough for both it is the same test set.
///
/// Fails when a class has fewer than `shots + 2` examples (one validation and one test example).
pub fn split_train_valid_test(
    labels: &[u32],
    num_classes: usize,
    shots: usize,
    valid_size: usize,
    test_size: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let (train, groups) = shots_and_groups(
        labels,
        num_classes,
        shots,
        2,
        seed,
        "shots for training, one for validation, one for testing",
    )?;
    // Each class's tail, reversed, capped at half of its examples beyond the shots.
    let tails: Vec<Vec<usize>> =
        groups.iter().map(|g| g.iter().rev().take((g.len() - shots) / 2).copied().collect()).collect();
    let valid = round_robin(&tails, 0, valid_size);
    let held: std::collections::HashSet<usize> = valid.iter().copied().collect();
    let rest: Vec<Vec<usize>> =
        groups.iter().map(|g| g.iter().copied().filter(|i| !held.contains(i)).collect()).collect();
    let test = round_robin(&rest, shots, test_size);
    Ok((train, valid, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<u32> {
        // 3 classes with 10, 20 and 5 examples, interleaved.
        let mut l = Vec::new();
        for i in 0..35u32 {
            l.push(match i {
                0..=9 => 0,
                10..=29 => 1,
                _ => 2,
            });
        }
        l.reverse();
        l
    }

    #[test]
    fn per_class_counts_and_determinism() {
        let l = labels();
        let a = sample_per_class(&l, 3, 4, 7).unwrap();
        assert_eq!(a.len(), 12);
        for c in 0..3 {
            assert_eq!(a[c * 4..(c + 1) * 4].iter().filter(|&&i| l[i] == c as u32).count(), 4);
        }
        assert_eq!(a, sample_per_class(&l, 3, 4, 7).unwrap());
        assert_ne!(a, sample_per_class(&l, 3, 4, 8).unwrap());
        let mut uniq = a.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 12);
        // Nested: 2 shots are a prefix of 4 shots for every class.
        let b = sample_per_class(&l, 3, 2, 7).unwrap();
        for c in 0..3 {
            assert_eq!(b[c * 2..c * 2 + 2], a[c * 4..c * 4 + 2]);
        }
    }

    #[test]
    fn too_many_shots_is_an_error() {
        let err = sample_per_class(&labels(), 3, 6, 0).unwrap_err().to_string();
        assert!(err.contains("class 2") && err.contains("only 5"), "{err}");
        let err = sample_per_class(&[0, 5], 3, 1, 0).unwrap_err().to_string();
        assert!(err.contains("out of range"), "{err}");
    }

    #[test]
    fn balanced_sample_spreads_evenly() {
        let l = labels();
        let s = balanced_sample(&l, 3, 12, 1).unwrap();
        assert_eq!(s.len(), 12);
        for c in 0..3 {
            assert_eq!(s.iter().filter(|&&i| l[i] == c).count(), 4);
        }
        // Class 2 runs out after 5; the rest are filled from other classes.
        let s = balanced_sample(&l, 3, 100, 1).unwrap();
        assert_eq!(s.len(), 35);
    }

    #[test]
    fn split_is_disjoint() {
        let l = labels();
        let (tr, te) = split_train_test(&l, 3, 4, 9, 3).unwrap();
        assert_eq!(tr.len(), 12);
        assert_eq!(te.len(), 9);
        assert!(te.iter().all(|i| !tr.contains(i)));
        // Class 2 has one example left after 4 shots; classes 0 and 1 fill the rest.
        let counts: Vec<usize> = (0..3).map(|c| te.iter().filter(|&&i| l[i] == c).count()).collect();
        assert_eq!(counts, vec![4, 4, 1]);
        let err = split_train_test(&l, 3, 5, 9, 3).unwrap_err().to_string();
        assert!(err.contains("shots+1"), "{err}");
    }

    #[test]
    fn validation_is_disjoint_and_leaves_the_shots_alone() {
        let l = labels();
        let (tr, va) = split_train_valid(&l, 3, 4, 6, 3).unwrap();
        assert_eq!(tr, sample_per_class(&l, 3, 4, 3).unwrap());
        assert_eq!(va.len(), 6);
        assert!(va.iter().all(|i| !tr.contains(i)));
        let counts: Vec<usize> = (0..3).map(|c| va.iter().filter(|&&i| l[i] == c).count()).collect();
        // Class 2 has one example left after its 4 shots; the others fill the rest.
        assert_eq!(counts, vec![3, 2, 1]);
        assert_eq!((tr.clone(), va.clone()), split_train_valid(&l, 3, 4, 6, 3).unwrap());
        let err = split_train_valid(&l, 3, 5, 6, 3).unwrap_err().to_string();
        assert!(err.contains("class 2") && err.contains("shots+1"), "{err}");
    }

    #[test]
    fn pool_split_is_three_way_disjoint_and_keeps_shots_and_large_test_sets() {
        let l = labels();
        let (tr, va, te) = split_train_valid_test(&l, 3, 2, 6, 100, 3).unwrap();
        let (tr0, te0) = split_train_test(&l, 3, 2, 100, 3).unwrap();
        assert_eq!(tr, tr0);
        assert!(va.iter().all(|i| !tr.contains(i) && !te.contains(i)));
        assert!(te.iter().all(|i| !tr.contains(i)));
        // Class 2 has 5: 2 shots, at most (5-2)/2 = 1 validation, the other 2 test.
        let vc: Vec<usize> = (0..3).map(|c| va.iter().filter(|&&i| l[i] == c).count()).collect();
        assert_eq!(vc, vec![3, 2, 1]);
        assert_eq!(tr.len() + va.len() + te.len(), l.len());
        assert!(te0.len() > te.len());
        // On a pool large enough for both, the test set is the one without validation.
        let (_, va, te) = split_train_valid_test(&l, 3, 2, 3, 3, 3).unwrap();
        assert_eq!(te, split_train_test(&l, 3, 2, 3, 3).unwrap().1);
        assert!(va.iter().all(|i| !te.contains(i)));
        let err = split_train_valid_test(&l, 3, 4, 3, 3, 3).unwrap_err().to_string();
        assert!(err.contains("class 2") && err.contains("shots+2"), "{err}");
    }
}
