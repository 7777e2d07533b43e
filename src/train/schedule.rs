//! Participation schedules p(t): the probability that an adapter group is active
//! at optimizer step t, and the per-step Bernoulli mask over groups.

use crate::util::Rng;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// Training method: which participation schedule the adapter groups follow.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Method {
    /// Baseline LoRA: every group active at every step (p = 1).
    Lora,
    /// CopRA / CoTo: p rises linearly from p0 to 1 over the first ⌈ρT⌉ steps, then stays 1.
    Copra,
    /// CoTo's exponential ablation: p0 + (1 − p0)(e^{5u} − 1)/(e^5 − 1), u = t/⌈ρT⌉ (slow start).
    CopraExp,
    /// CoTo's sine ablation: p0 + (1 − p0)·sin(πu/2), u = t/⌈ρT⌉ (fast start).
    CopraSine,
    /// Constant participation p for the whole run ("stochastic depth for LoRA").
    StochasticDepth {
        /// Probability that a group is active.
        p: f64,
    },
    /// Constant participation at CopRA's mean p over the same run (same p0, ρ and T; 0.625 at
    /// p0 = 0, ρ = 0.75): stochastic like CopRA with equal expected participation, but flat, so
    /// that it and CopRA differ only in the schedule's shape.
    StochasticDepthMatched,
}

impl Method {
    /// Stable short name used in run paths and tables.
    pub fn name(&self) -> String {
        match self {
            Method::Lora => "lora".into(),
            Method::Copra => "copra".into(),
            Method::CopraExp => "copra-exp".into(),
            Method::CopraSine => "copra-sine".into(),
            Method::StochasticDepth { p } => format!("stochastic-depth-{p}"),
            Method::StochasticDepthMatched => "stochastic-depth-matched".into(),
        }
    }

    /// Parses `lora`, `copra`, `copra-exp`, `copra-sine`, `stochastic-depth` (p = 0.5),
    /// `stochastic-depth-0.7` or `stochastic-depth-matched` (CopRA's mean p).
    pub fn parse(s: &str) -> anyhow::Result<Method> {
        let s = s.trim().to_ascii_lowercase();
        Ok(match s.as_str() {
            "lora" => Method::Lora,
            "copra" | "coto" => Method::Copra,
            "copra-exp" => Method::CopraExp,
            "copra-sine" => Method::CopraSine,
            "stochastic-depth" => Method::StochasticDepth { p: 0.5 },
            "stochastic-depth-matched" => Method::StochasticDepthMatched,
            other => {
                let p = other
                    .strip_prefix("stochastic-depth-")
                    .and_then(|p| p.parse::<f64>().ok())
                    .filter(|p| *p > 0.0 && *p <= 1.0);
                match p {
                    Some(p) => Method::StochasticDepth { p },
                    None => anyhow::bail!(
                        "unknown method '{other}': use lora, copra, copra-exp, copra-sine, stochastic-depth[-P] with 0 < P ≤ 1, or stochastic-depth-matched"
                    ),
                }
            }
        })
    }
}

/// The participation probability schedule of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Method (shape of the curve).
    pub method: Method,
    /// Starting probability p0 (paper 0; CoTo reference code 0.1).
    pub p0: f64,
    /// Fraction ρ of training over which p rises to 1 (0.75).
    pub stage1_ratio: f64,
    /// Total optimizer steps T.
    pub total_steps: usize,
}

impl Schedule {
    /// Last step of the rising phase, ⌈ρT⌉ (at least 1).
    pub fn end_step(&self) -> usize {
        ((self.stage1_ratio * self.total_steps as f64).ceil() as usize).max(1)
    }

    /// CopRA's mean participation over this run's steps, `(1/T) Σ_{t<T} min(p0 + (1 − p0)t/E, 1)`
    /// with `E` = [`Schedule::end_step`], in closed form: with `m = min(E, T)`,
    /// `(m·p0 + (1 − p0)·m(m − 1)/(2E) + (T − m)) / T`.
    pub fn copra_mean_p(&self) -> f64 {
        let (e, t) = (self.end_step() as f64, self.total_steps.max(1) as f64);
        let m = e.min(t);
        (m * self.p0 + (1.0 - self.p0) * m * (m - 1.0) / (2.0 * e) + (t - m)) / t
    }

    /// p(t) for optimizer step t (0-based).
    pub fn p(&self, step: usize) -> f64 {
        let u = (step as f64 / self.end_step() as f64).min(1.0);
        let p0 = self.p0;
        let p = match self.method {
            Method::Lora => 1.0,
            Method::StochasticDepth { p } => return p,
            Method::StochasticDepthMatched => return self.copra_mean_p(),
            Method::Copra => p0 + (1.0 - p0) * u,
            Method::CopraSine => p0 + (1.0 - p0) * (std::f64::consts::FRAC_PI_2 * u).sin(),
            Method::CopraExp => p0 + (1.0 - p0) * ((5.0 * u).exp() - 1.0) / (5.0f64.exp() - 1.0),
        };
        p.min(1.0)
    }
}

/// Draws one Bernoulli(p) per group. If none is active, one group chosen uniformly is
/// activated (CoTo's reference rejection-samples instead; with p0 = 0 that loop would
/// almost never end — same support, slightly different law, documented in the README).
pub fn sample_mask(p: f64, groups: usize, rng: &mut Rng) -> Vec<bool> {
    if p >= 1.0 {
        return vec![true; groups];
    }
    let mut mask: Vec<bool> = (0..groups).map(|_| rng.random::<f64>() < p).collect();
    if groups > 0 && !mask.iter().any(|m| *m) {
        let g = rng.random_range(0..groups);
        mask[g] = true;
    }
    mask
}

/// How an active adapter group's output is scaled while the schedule drops groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rescale {
    /// No rescaling (CopRA / CoTo as published: a dropped adapter is skipped).
    #[default]
    None,
    /// Inverted dropout: an active group's output is divided by its inclusion probability
    /// ([`inclusion_probability`], ≈ p), so that its expected output over the mask equals the
    /// all-on output.
    InverseP,
}

impl Rescale {
    /// True for [`Rescale::None`] (left out of serialised configs, so old run keys stay).
    pub fn is_none(&self) -> bool {
        *self == Rescale::None
    }

    /// The factor an active group's output takes at participation `p` over `groups` groups.
    pub fn active_scale(self, p: f64, groups: usize) -> f64 {
        match self {
            Rescale::None => 1.0,
            Rescale::InverseP if p >= 1.0 || groups == 0 => 1.0,
            Rescale::InverseP => 1.0 / inclusion_probability(p, groups),
        }
    }
}

impl crate::choice::Choice for Rescale {
    const WHAT: &'static str = "rescaling";
    const VARIANTS: &'static [(&'static str, &'static str, Self)] = &[
        ("none", "active adapters unscaled (CopRA as published)", Rescale::None),
        ("inverse-p", "active adapters divided by their inclusion probability (inverted dropout)", Rescale::InverseP),
    ];
}

/// The probability that a given group is active under [`sample_mask`]: `p` from its own draw,
/// plus `(1 − p)^G / G` from the rule that turns one group on when the draw leaves all `G` off.
pub fn inclusion_probability(p: f64, groups: usize) -> f64 {
    if p >= 1.0 {
        return 1.0;
    }
    let g = groups.max(1) as f64;
    p + (1.0 - p).powf(g) / g
}

/// Cosine learning-rate decay from `lr` to `min_lr` over `total` steps, no warm-up
/// (PyTorch `CosineAnnealingLR` stepped every iteration, as CLIP-LoRA).
pub fn cosine_lr(lr: f64, min_lr: f64, step: usize, total: usize) -> f64 {
    let t = step as f64 / total.max(1) as f64;
    min_lr + (lr - min_lr) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng_for;

    fn sched(method: Method, p0: f64, t: usize) -> Schedule {
        Schedule { method, p0, stage1_ratio: 0.75, total_steps: t }
    }

    #[test]
    fn copra_mean_p_matches_the_sum_over_steps() {
        // T = 8000, ρ = 0.75: E = 6000, Σ_{t<6000} t/6000 = 2999.5, plus 2000 steps at 1.
        let s = sched(Method::StochasticDepthMatched, 0.0, 8000);
        assert!((s.copra_mean_p() - 4999.5 / 8000.0).abs() < 1e-15);
        assert_eq!(s.p(0), s.copra_mean_p());
        for (p0, rho, t) in [(0.0, 0.75, 500), (0.1, 0.75, 10), (0.3, 1.0, 37), (0.0, 0.5, 1)] {
            let copra = Schedule { method: Method::Copra, p0, stage1_ratio: rho, total_steps: t };
            let brute = (0..t).map(|i| copra.p(i)).sum::<f64>() / t as f64;
            let flat = Schedule { method: Method::StochasticDepthMatched, ..copra };
            assert!((flat.p(t / 2) - brute).abs() < 1e-12, "{p0} {rho} {t}: {} vs {brute}", flat.p(t / 2));
        }
        assert_eq!(Method::parse("stochastic-depth-matched").unwrap(), Method::StochasticDepthMatched);
    }

    #[test]
    fn inclusion_probability_is_the_mask_law_marginal() {
        // Closed form over all 2^G masks of sample_mask's law: P(mask) = p^k (1−p)^{G−k} for
        // k ≥ 1 active, plus (1−p)^G / G for each one-active mask (the all-off draw's rescue).
        for &(p, g) in &[(0.0f64, 3usize), (0.25, 3), (0.6, 4), (0.9, 1)] {
            let mut marginal = vec![0.0; g];
            let mut total = 0.0;
            for mask in 1u32..(1 << g) {
                let k = mask.count_ones() as i32;
                let mut prob = p.powi(k) * (1.0 - p).powi(g as i32 - k);
                if k == 1 {
                    prob += (1.0 - p).powi(g as i32) / g as f64;
                }
                total += prob;
                for (i, m) in marginal.iter_mut().enumerate() {
                    if mask >> i & 1 == 1 {
                        *m += prob;
                    }
                }
            }
            assert!((total - 1.0).abs() < 1e-12);
            for m in marginal {
                assert!((m - inclusion_probability(p, g)).abs() < 1e-12, "p {p} G {g}");
            }
        }
        // And sample_mask draws at that rate.
        let mut rng = rng_for(3, "mask");
        let (p, g, n) = (0.2, 3, 200_000);
        let on = (0..n).filter(|_| sample_mask(p, g, &mut rng)[1]).count() as f64 / n as f64;
        let pi = inclusion_probability(p, g);
        assert!((on - pi).abs() < 4.0 * (pi * (1.0 - pi) / n as f64).sqrt(), "{on} vs {pi}");
        assert_eq!(Rescale::InverseP.active_scale(1.0, 12), 1.0);
        assert_eq!(Rescale::None.active_scale(0.3, 12), 1.0);
        // Two groups at p = 0.5: π = 0.5 + 0.25 / 2 = 0.625, scale 1.6; one group is always on.
        assert!((Rescale::InverseP.active_scale(0.5, 2) - 1.6).abs() < 1e-15);
        assert_eq!(Rescale::InverseP.active_scale(0.5, 1), 1.0);
    }

    #[test]
    fn copra_schedule_matches_paper_checkpoints() {
        let s = sched(Method::Copra, 0.0, 8000);
        assert_eq!(s.end_step(), 6000);
        assert_eq!(s.p(0), 0.0);
        assert!((s.p(3000) - 0.5).abs() < 1e-12);
        assert_eq!(s.p(6000), 1.0);
        assert_eq!(s.p(7999), 1.0);
        let mut prev = -1.0;
        for t in 0..8000 {
            assert!(s.p(t) >= prev);
            prev = s.p(t);
        }
    }

    #[test]
    fn coto_reference_p0_and_ceil() {
        // T = 10, ρ = 0.75 → end step ⌈7.5⌉ = 8; p(4) = 0.1 + 0.9·4/8.
        let s = sched(Method::Copra, 0.1, 10);
        assert_eq!(s.end_step(), 8);
        assert!((s.p(0) - 0.1).abs() < 1e-12);
        assert!((s.p(4) - 0.55).abs() < 1e-12);
    }

    #[test]
    fn ablation_schedules_share_endpoints_and_order() {
        for m in [Method::CopraExp, Method::CopraSine] {
            let s = sched(m, 0.0, 100);
            assert!(s.p(0).abs() < 1e-12);
            assert_eq!(s.p(75), 1.0);
        }
        let lin = sched(Method::Copra, 0.0, 100).p(30);
        assert!(sched(Method::CopraSine, 0.0, 100).p(30) > lin);
        assert!(sched(Method::CopraExp, 0.0, 100).p(30) < lin);
        assert_eq!(sched(Method::Lora, 0.0, 100).p(0), 1.0);
        assert_eq!(sched(Method::StochasticDepth { p: 0.3 }, 0.0, 100).p(99), 0.3);
    }

    #[test]
    fn mask_never_empty_and_frequency_matches_p() {
        let mut rng = rng_for(7, "mask");
        let mut on = 0usize;
        for _ in 0..4000 {
            let m = sample_mask(0.3, 12, &mut rng);
            assert!(m.iter().any(|x| *x));
            on += m.iter().filter(|x| **x).count();
        }
        let freq = on as f64 / (4000.0 * 12.0);
        // P(empty) = 0.7^12 ≈ 0.014 adds ≈ 0.0012 to the frequency.
        assert!((freq - 0.3012).abs() < 0.01, "frequency {freq}");
        let m = sample_mask(0.0, 5, &mut rng);
        assert_eq!(m.iter().filter(|x| **x).count(), 1);
        assert_eq!(sample_mask(1.0, 4, &mut rng), vec![true; 4]);
    }

    #[test]
    fn cosine_endpoints() {
        assert!((cosine_lr(2e-4, 1e-6, 0, 100) - 2e-4).abs() < 1e-15);
        assert!((cosine_lr(2e-4, 1e-6, 100, 100) - 1e-6).abs() < 1e-15);
        let mid = cosine_lr(2e-4, 1e-6, 50, 100);
        assert!((mid - (1e-6 + (2e-4 - 1e-6) / 2.0)).abs() < 1e-15);
    }

    #[test]
    fn method_names_round_trip() {
        for m in [Method::Lora, Method::Copra, Method::CopraExp, Method::CopraSine, Method::StochasticDepth { p: 0.7 }]
        {
            assert_eq!(Method::parse(&m.name()).unwrap(), m);
        }
        assert!(Method::parse("sgd").is_err());
        assert!(Method::parse("stochastic-depth-1.5").is_err());
    }
}
