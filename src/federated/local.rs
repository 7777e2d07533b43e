//! A client's metrics on its own label distribution. The client splits partition only the
//! training shots, so there is no held-out local test data: the local metrics reweight one
//! evaluation on the shared test set by the client's training class proportions.

use crate::eval::{Examples, Metrics};
use anyhow::{bail, Result};

/// Loss and accuracy under a client's label distribution: the per-class means of `examples`
/// (one evaluation on a shared test set) weighted by the client's training class counts
/// `class_counts`, i.e. the expected metrics on test data drawn from the client's label
/// distribution. Classes absent from the test set are left out and the weights renormalised;
/// errors when none of the client's classes occurs in the test set.
pub fn label_weighted_metrics(examples: &Examples, class_counts: &[usize]) -> Result<Metrics> {
    let k = class_counts.len();
    let (mut n, mut correct, mut loss) = (vec![0usize; k], vec![0usize; k], vec![0.0f64; k]);
    for ((&y, &p), &l) in examples.labels.iter().zip(&examples.predictions).zip(&examples.losses) {
        let Some(slot) = n.get_mut(y as usize) else {
            bail!("test label {y} is outside the client's {k} classes; give one count per class of the task");
        };
        *slot += 1;
        correct[y as usize] += usize::from(y == p);
        loss[y as usize] += l;
    }
    let weight: f64 = (0..k).filter(|&c| n[c] > 0).map(|c| class_counts[c] as f64).sum();
    if weight == 0.0 {
        bail!("none of the client's classes occurs in the test set; use a test set covering its classes");
    }
    let mean = |per: &dyn Fn(usize) -> f64| -> f64 {
        (0..k).filter(|&c| n[c] > 0).map(|c| class_counts[c] as f64 * per(c) / n[c] as f64).sum::<f64>() / weight
    };
    Ok(Metrics { loss: mean(&|c| loss[c]), accuracy: mean(&|c| correct[c] as f64) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> Examples {
        // Class 0: one of two right (losses 1, 3); class 1: both right (0.5, 0.5); class 2: wrong (4).
        Examples {
            labels: vec![0, 0, 1, 1, 2],
            predictions: vec![0, 1, 1, 1, 0],
            losses: vec![1.0, 3.0, 0.5, 0.5, 4.0],
        }
    }

    #[test]
    fn class_means_weighted_by_the_clients_counts() {
        // Counts [3, 1, 0]: accuracy (3·0.5 + 1·1)/4 = 0.625, loss (3·2 + 1·0.5)/4 = 1.625.
        let m = label_weighted_metrics(&examples(), &[3, 1, 0]).unwrap();
        assert!((m.accuracy - 0.625).abs() < 1e-12 && (m.loss - 1.625).abs() < 1e-12, "{m:?}");
        let only2 = label_weighted_metrics(&examples(), &[0, 0, 7]).unwrap();
        assert_eq!((only2.accuracy, only2.loss), (0.0, 4.0));
        // Counts proportional to the test set's class frequencies give the plain metrics.
        let plain = label_weighted_metrics(&examples(), &[4, 4, 2]).unwrap();
        assert!((plain.accuracy - 0.6).abs() < 1e-12 && (plain.loss - 1.8).abs() < 1e-12, "{plain:?}");
    }

    #[test]
    fn classes_missing_from_the_test_set_are_renormalised_away_or_refused() {
        let with_absent = label_weighted_metrics(&examples(), &[3, 1, 0, 10]).unwrap();
        assert_eq!(with_absent, label_weighted_metrics(&examples(), &[3, 1, 0]).unwrap());
        let err = label_weighted_metrics(&examples(), &[0, 0, 0, 4]).unwrap_err();
        assert!(err.to_string().contains("none of the client's classes"), "{err}");
        assert!(label_weighted_metrics(&examples(), &[1, 1]).is_err());
    }
}
