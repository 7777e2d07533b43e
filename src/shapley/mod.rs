//! Shapley values of cooperative games: exact computation, Monte Carlo
//! estimators with hard evaluation budgets, synthetic games with known
//! values, and metrics. Pure math, independent of any neural-network code;
//! the LoRA game (players = transformer blocks, `v(S)` = test accuracy with
//! only the adapters of the blocks in `S` switched on) implements [`Game`].
//!
//! # Definitions
//!
//! Players are `N = {0, …, n−1}`; a coalition `S ⊆ N` is a `u64` bitmask
//! ([`Coalition`]); a game assigns a value `v(S)` to each coalition.
//!
//! * **Shapley value** of player `i`:
//!   `φ_i = Σ_{S ⊆ N∖i} |S|!(n−|S|−1)!/n! · (v(S ∪ i) − v(S))`,
//!   equivalently the expected marginal `v(P ∪ i) − v(P)` where `P` holds
//!   the players before `i` in a uniformly random order. It is the unique
//!   attribution with efficiency (`Σφ = v(N) − v(∅)`), symmetry, null
//!   player and additivity. [`exact()`] computes it from all `2^n` values.
//! * **Multilinear extension**: `F(x) = Σ_S v(S) Π_{i∈S} x_i Π_{i∉S} (1 − x_i)`,
//!   the expected value of a random coalition whose players join
//!   independently with probabilities `x`. On the diagonal,
//!   `F(q) = Σ_S v(S) q^|S| (1−q)^(n−|S|)` ([`multilinear_extension`], exact;
//!   [`mle_sampled`], by sampling); `F(0) = v(∅)`, `F(1) = v(N)`.
//! * **Owen's formula**: `φ_i = ∫₀¹ ∂F/∂x_i(q, …, q) dq
//!   = ∫₀¹ E_{S∼Bernoulli(q) on N∖i}[v(S ∪ i) − v(S)] dq`, which
//!   [`owen_sampling`] estimates.
//!
//! # Evaluations and budgets
//!
//! **An evaluation is one distinct coalition value computed by the
//! underlying game.** Every estimator evaluates through a [`Memo`], which
//! memoises values (repeats are free), counts distinct evaluations, and
//! refuses any batch that would exceed its budget, so a run never spends
//! more than its budget. The budget maps to samples as follows:
//!
//! | estimator | cost of one sample | samples for budget `B` |
//! | --- | --- | --- |
//! | `permutation` | first permutation `n + 1` (its prefix chain including `∅` and `N`); each later one at most `n − 1` new, since `∅` and `N` are memoised | as many as fit, in batches of [`PERMUTATION_BATCH`]; capped at `B` |
//! | `permutation_antithetic` | a permutation and its reverse: `2n` for the first pair, at most `2(n − 1)` new after | as above; one pair = one sample |
//! | `owen_*` | `n + 1` per draw (`S` and `S △ {i}` for every `i`) | `M = ⌊B/(n+1)⌋` draws, fixed up front |
//! | `owen_*_antithetic` | `2(n + 1)` per pair (`S` at `q` and `N∖S` at `1 − q`) | `⌊B/(2(n+1))⌋` pairs |
//! | `owen_grid` | as the other Owen ones | rounded down to whole rounds of the grid |
//! | `exact` | all `2^n` coalitions | ignores the budget (the ground truth, `n ≤ 20`) |
//!
//! Memo hits make samples cheaper than these worst cases: permutation
//! sampling turns the savings into extra permutations, while Owen sampling,
//! whose stratified `q`s need `M` up front, leaves them unspent; every
//! estimate reports the evaluations it actually used. A budget that cannot
//! pay for one sample is an error ([`Estimator::min_budget`] gives the
//! minimum), never a panic.
//!
//! # Uncertainty, early stopping, seeds
//!
//! Standard errors are the per-player sample standard deviation of the
//! i.i.d. samples (permutations, draws, or antithetic pairs) over
//! `√samples`; for stratified Owen sampling this is conservative. With a
//! target precision an estimator stops after a batch (from
//! [`MIN_SAMPLES_FOR_STOP`] samples on) once
//! `max_i SE_i / (max_i φ_i − min_i φ_i)` ([`convergence_ratio`], Covert &
//! Lee's rule) drops below the target, and reports `converged = true`.
//! Every random choice comes from `ChaCha8Rng::seed_from_u64(seed)`: the
//! same seed gives bit-identical output.

pub mod coalition;
pub mod design;
pub mod estimator;
pub mod exact;
pub mod game;
pub mod interactions;
pub mod kadd;
pub mod kernel;
pub mod leverage;
pub mod metrics;
pub mod owen;
pub mod permutation;
pub mod registry;
pub mod regression;
pub mod result;
mod sampling;
pub mod stratified;
pub mod synthetic;

pub use coalition::Coalition;
pub use estimator::{estimate, estimate_with_memo, EstimateConfig, Estimator, ShapleyEstimator};
pub use exact::{
    enumerate, exact, multilinear_extension, shapley_from_table, ExactEstimator, ExactResult, MAX_EXACT_PLAYERS,
};
pub use game::{FnGame, Game, Memo, TableGame};
pub use kadd::KaddEstimator;
pub use kernel::KernelEstimator;
pub use leverage::LeverageEstimator;
pub use metrics::{efficiency_gap, kendall_tau, max_abs_error, mse, precision_at_k};
pub use owen::{mle_sampled, owen_sampling, MlePoint, OwenEstimator, OwenQ};
pub use permutation::{permutation_sampling, PermutationEstimator, PERMUTATION_BATCH};
pub use result::ShapleyEstimate;
pub use sampling::{convergence_ratio, MIN_SAMPLES_FOR_STOP};
pub use stratified::StratifiedEstimator;
pub use synthetic::{AdditiveGame, SaturatingGame, SumOfUnanimityGames, UnanimityGame, WeightedMajorityGame};
