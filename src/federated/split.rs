//! Client partitions of a labelled dataset: Dirichlet label skew (FedIT style) and IID.
//!
//! Both return `Vec<Vec<usize>>`: for each client, the indices of its examples into the
//! `labels` slice, sorted ascending (the order inside a client is the trainer's business). All
//! randomness comes from a `ChaCha8Rng` seeded with `seed`, so the same inputs and seed give the
//! same split.

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many whole Dirichlet draws are tried before giving up on `min_size`.
pub const MAX_ATTEMPTS: usize = 1000;

/// A partition scheme.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitMethod {
    /// Shuffle and deal evenly (client sizes differ by at most one).
    Iid,
    /// Dirichlet label skew: smaller `alpha` means more skew (0.1 / 0.5 / 1.0 are usual).
    Dirichlet {
        /// Concentration of `Dir(α·1_K)`, > 0.
        alpha: f64,
        /// Every client must get at least this many examples (FedIT uses 40).
        min_size: usize,
    },
}

impl SplitMethod {
    /// The split called `name`: `iid` or `dirichlet:ALPHA` (ALPHA > 0), whose clients get at
    /// least `min_size` examples each.
    pub fn parse(name: &str, min_size: usize) -> anyhow::Result<SplitMethod> {
        if name == "iid" {
            return Ok(SplitMethod::Iid);
        }
        let alpha = name
            .strip_prefix("dirichlet:")
            .and_then(|a| a.parse::<f64>().ok())
            .filter(|a| a.is_finite() && *a > 0.0)
            .ok_or_else(|| anyhow::anyhow!("unknown split '{name}'; use iid or dirichlet:ALPHA with ALPHA > 0"))?;
        Ok(SplitMethod::Dirichlet { alpha, min_size })
    }
}

/// Splits the examples with `labels` among `num_clients` clients by `method`.
pub fn split(labels: &[usize], num_clients: usize, method: &SplitMethod, seed: u64) -> Result<Vec<Vec<usize>>> {
    match *method {
        SplitMethod::Iid => iid_split(labels.len(), num_clients, seed),
        SplitMethod::Dirichlet { alpha, min_size } => dirichlet_split(labels, num_clients, alpha, min_size, seed),
    }
}

/// IID split of `n` examples: a seeded shuffle dealt into contiguous chunks, the first
/// `n mod K` clients getting one extra example. Errors when `num_clients` is 0 or exceeds `n`.
pub fn iid_split(n: usize, num_clients: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if num_clients == 0 {
        bail!("cannot split among 0 clients; use at least one client");
    }
    if num_clients > n {
        bail!("{num_clients} clients but only {n} examples; use at most {n} clients");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng);
    let (base, extra) = (n / num_clients, n % num_clients);
    let mut out = Vec::with_capacity(num_clients);
    let mut start = 0;
    for c in 0..num_clients {
        let len = base + usize::from(c < extra);
        let mut part = idx[start..start + len].to_vec();
        part.sort_unstable();
        out.push(part);
        start += len;
    }
    Ok(out)
}

/// A draw from `Dir(α·1_k)`, computed in log space (`G = G' · U^{1/α}` with `G' ~ Gamma(α+1)`)
/// so that very small `α` does not underflow to all zeros. Errors unless `alpha` is positive
/// and finite.
pub fn sample_dirichlet(rng: &mut impl Rng, alpha: f64, k: usize) -> Result<Vec<f64>> {
    if !(alpha.is_finite() && alpha > 0.0) {
        bail!("Dirichlet alpha {alpha} must be positive and finite (smaller = more skew, e.g. 0.5)");
    }
    let gamma = Gamma::new(alpha + 1.0, 1.0).map_err(|e| anyhow::anyhow!("Gamma({}) shape: {e}", alpha + 1.0))?;
    let logs: Vec<f64> = (0..k)
        .map(|_| {
            let g: f64 = gamma.sample(rng);
            let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
            g.ln() + u.ln() / alpha
        })
        .collect();
    let max = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    Ok(exps.into_iter().map(|e| e / sum).collect())
}

/// Dirichlet label-skew split (FedIT `client_data_allocation.py`): for each class in ascending
/// order, shuffle its indices, draw proportions `p ~ Dir(α·1_K)`, zero the proportion of every
/// client already holding `≥ N/K` examples (if that zeroes all of them the raw draw is used),
/// renormalise and cut the class at `floor(cumsum(p) · n_class)`. The whole draw is repeated with
/// fresh randomness until every client has at least `min_size` examples, at most
/// [`MAX_ATTEMPTS`] times.
pub fn dirichlet_split(
    labels: &[usize],
    num_clients: usize,
    alpha: f64,
    min_size: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    let n = labels.len();
    if num_clients == 0 {
        bail!("cannot split among 0 clients; use at least one client");
    }
    if n == 0 {
        bail!("no examples to split; pass a non-empty label list");
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        bail!("Dirichlet alpha {alpha} must be positive and finite (smaller = more skew, e.g. 0.5)");
    }
    if min_size.saturating_mul(num_clients) > n {
        bail!(
            "min_size {min_size} × {num_clients} clients exceeds the {n} examples; lower min_size or use fewer clients"
        );
    }
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let even_share = n as f64 / num_clients as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut smallest = 0;
    for _attempt in 0..MAX_ATTEMPTS {
        let mut parts: Vec<Vec<usize>> = vec![Vec::new(); num_clients];
        for class in by_class.values() {
            let mut idx = class.clone();
            idx.shuffle(&mut rng);
            let raw = sample_dirichlet(&mut rng, alpha, num_clients)?;
            let mut p: Vec<f64> = raw
                .iter()
                .zip(&parts)
                .map(|(p, part)| if (part.len() as f64) < even_share { *p } else { 0.0 })
                .collect();
            let mut sum: f64 = p.iter().sum();
            if sum <= 0.0 {
                p = raw;
                sum = p.iter().sum();
            }
            let mut start = 0usize;
            let mut cum = 0.0f64;
            for (c, part) in parts.iter_mut().enumerate() {
                let end = if c + 1 == num_clients {
                    idx.len()
                } else {
                    cum += p[c] / sum;
                    ((cum * idx.len() as f64).floor() as usize).clamp(start, idx.len())
                };
                part.extend_from_slice(&idx[start..end]);
                start = end;
            }
        }
        smallest = parts.iter().map(Vec::len).min().unwrap_or(0);
        if smallest >= min_size {
            for part in &mut parts {
                part.sort_unstable();
            }
            return Ok(parts);
        }
    }
    bail!(
        "no Dirichlet split with every client ≥ {min_size} examples in {MAX_ATTEMPTS} draws (last smallest: {smallest}); \
         lower min_size or raise alpha"
    )
}

/// Client × class counts: `hist[c][k]` = examples of class `k` held by client `c`. Errors when a
/// client index is out of range or a label is `≥ num_classes`.
pub fn label_histogram(labels: &[usize], clients: &[Vec<usize>], num_classes: usize) -> Result<Vec<Vec<usize>>> {
    let mut hist = vec![vec![0usize; num_classes]; clients.len()];
    for (c, part) in clients.iter().enumerate() {
        for &i in part {
            let Some(&l) = labels.get(i) else {
                bail!(
                    "client {c} holds example {i} but there are only {} labels; split and labels disagree",
                    labels.len()
                );
            };
            if l >= num_classes {
                bail!("label {l} of example {i} is ≥ num_classes {num_classes}; pass the true number of classes");
            }
            hist[c][l] += 1;
        }
    }
    Ok(hist)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_parse_with_clear_errors() {
        assert_eq!(SplitMethod::parse("iid", 8).unwrap(), SplitMethod::Iid);
        assert_eq!(SplitMethod::parse("dirichlet:0.5", 8).unwrap(), SplitMethod::Dirichlet { alpha: 0.5, min_size: 8 });
        for bad in ["dirichlet:-1", "dirichlet:x", "dirichlet", "IID"] {
            assert!(SplitMethod::parse(bad, 8).unwrap_err().to_string().contains("iid or dirichlet"), "{bad}");
        }
    }

    /// `classes` classes with `per_class` examples each, interleaved.
    fn labels(classes: usize, per_class: usize) -> Vec<usize> {
        (0..classes * per_class).map(|i| i % classes).collect()
    }

    fn assert_partition(parts: &[Vec<usize>], n: usize) {
        let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    /// Mean over clients of (largest class count / client size).
    fn mean_max_share(labels: &[usize], parts: &[Vec<usize>], k: usize) -> f64 {
        let hist = label_histogram(labels, parts, k).unwrap();
        let shares: Vec<f64> =
            hist.iter().map(|h| *h.iter().max().unwrap() as f64 / h.iter().sum::<usize>().max(1) as f64).collect();
        shares.iter().sum::<f64>() / shares.len() as f64
    }

    #[test]
    fn dirichlet_is_a_partition_with_min_size_and_is_seeded() {
        let y = labels(10, 60);
        for alpha in [0.1, 0.5, 1.0, 10.0] {
            let parts = dirichlet_split(&y, 8, alpha, 20, 7).unwrap();
            assert_eq!(parts.len(), 8);
            assert_partition(&parts, y.len());
            assert!(parts.iter().all(|p| p.len() >= 20), "alpha {alpha}");
            assert!(parts.iter().all(|p| p.windows(2).all(|w| w[0] < w[1])));
            assert_eq!(parts, dirichlet_split(&y, 8, alpha, 20, 7).unwrap());
        }
        assert_ne!(dirichlet_split(&y, 8, 0.5, 20, 1).unwrap(), dirichlet_split(&y, 8, 0.5, 20, 2).unwrap());
    }

    #[test]
    fn smaller_alpha_gives_more_skew() {
        let y = labels(10, 100);
        let mean = |alpha: f64| {
            (0..5u64).map(|s| mean_max_share(&y, &dirichlet_split(&y, 10, alpha, 10, s).unwrap(), 10)).sum::<f64>()
                / 5.0
        };
        let (skewed, mild, flat) = (mean(0.1), mean(1.0), mean(100.0));
        assert!(skewed > mild && mild > flat, "{skewed} {mild} {flat}");
        assert!(flat < 0.25 && skewed > 0.5, "{skewed} {flat}");
    }

    #[test]
    fn dirichlet_errors() {
        let y = labels(2, 50);
        assert!(dirichlet_split(&y, 10, 0.5, 11, 0).unwrap_err().to_string().contains("lower min_size"));
        let err = dirichlet_split(&y, 10, 0.001, 10, 0).unwrap_err().to_string();
        assert!(err.contains("lower min_size or raise alpha"), "{err}");
        assert!(dirichlet_split(&y, 0, 0.5, 0, 0).is_err());
        assert!(dirichlet_split(&y, 2, 0.0, 0, 0).is_err());
        assert!(dirichlet_split(&[], 2, 0.5, 0, 0).is_err());
    }

    #[test]
    fn iid_is_balanced_and_seeded() {
        let parts = iid_split(103, 10, 3).unwrap();
        assert_partition(&parts, 103);
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        assert_eq!(parts, iid_split(103, 10, 3).unwrap());
        assert_ne!(parts, iid_split(103, 10, 4).unwrap());
        assert!(iid_split(3, 4, 0).is_err());
        assert!(iid_split(3, 0, 0).is_err());
        assert_eq!(split(&labels(2, 5), 2, &SplitMethod::Iid, 3).unwrap(), iid_split(10, 2, 3).unwrap());
    }

    #[test]
    fn histogram_by_hand() {
        let y = vec![0, 1, 1, 2, 0];
        let hist = label_histogram(&y, &[vec![0, 1], vec![2, 3, 4]], 3).unwrap();
        assert_eq!(hist, vec![vec![1, 1, 0], vec![1, 1, 1]]);
        assert!(label_histogram(&y, &[vec![9]], 3).is_err());
        assert!(label_histogram(&y, &[vec![3]], 2).is_err());
    }

    #[test]
    fn dirichlet_draws_are_distributions() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for alpha in [1e-3, 0.1, 1.0, 50.0] {
            let p = sample_dirichlet(&mut rng, alpha, 6).unwrap();
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12 && p.iter().all(|x| *x >= 0.0));
        }
        assert!(sample_dirichlet(&mut rng, -2.0, 3).is_err());
    }
}
