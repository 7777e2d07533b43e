//! Cooperative games, the budgeted memo that every estimator evaluates
//! through, and a table game that replays a fully enumerated game.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use anyhow::{bail, Result};

use crate::shapley::coalition::{self, Coalition, MAX_PLAYERS};
use crate::shapley::exact::{enumerate, MAX_EXACT_PLAYERS};

/// A cooperative game with transferable utility: a value `v(S)` for every
/// coalition `S` of the players `0..n_players()`.
pub trait Game: Sync {
    /// Number of players `n`; coalitions use bits `0..n`.
    fn n_players(&self) -> usize;

    /// Values `v(S)` of a batch of coalitions, one per coalition and in the
    /// same order. Implementations may evaluate the batch in parallel.
    fn evaluate(&self, coalitions: &[Coalition]) -> Result<Vec<f64>>;

    /// A short name for tables and logs.
    fn name(&self) -> String {
        "game".to_string()
    }
}

/// Errors unless `n` players fit a [`Coalition`] bitmask.
pub(crate) fn check_players(n: usize) -> Result<()> {
    if n > MAX_PLAYERS {
        bail!("game has {n} players but coalitions are u64 bitmasks: use at most {MAX_PLAYERS} players");
    }
    Ok(())
}

/// Errors unless every coalition in the batch only holds players `0..n`.
pub(crate) fn check_coalitions(n: usize, coalitions: &[Coalition]) -> Result<()> {
    check_players(n)?;
    if let Some(&c) = coalitions.iter().find(|&&c| !coalition::within(c, n)) {
        bail!("coalition {c:#x} has members outside players 0..{n}: only set bits below {n}");
    }
    Ok(())
}

/// Memoising, budgeted access to a [`Game`].
///
/// **An evaluation** is one distinct coalition value computed by the
/// underlying game. Asking again for a coalition that was already evaluated
/// is served from the memo and is free: it never counts against the budget.
/// [`Memo::evaluations`] is therefore the number of distinct coalitions the
/// game has computed through this memo, and it never exceeds
/// [`Memo::budget`]: a batch that would need more new evaluations than the
/// budget has left is refused as a whole, before anything is evaluated.
///
/// New coalitions of a batch are sent to the game in one
/// [`Game::evaluate`] call (in first-appearance order, without duplicates),
/// so a game can evaluate them in parallel. State sits behind a mutex: a memo
/// can be shared by reference, and the lock is held while the game runs.
pub struct Memo<'a> {
    game: &'a dyn Game,
    budget: usize,
    state: Mutex<MemoState>,
}

#[derive(Default)]
struct MemoState {
    values: HashMap<Coalition, f64>,
    game_calls: usize,
    requests: usize,
}

impl<'a> Memo<'a> {
    /// A memo over `game` allowing at most `budget` distinct evaluations.
    pub fn new(game: &'a dyn Game, budget: usize) -> Self {
        Memo { game, budget, state: Mutex::new(MemoState::default()) }
    }

    /// A memo without a budget (`usize::MAX`).
    pub fn unlimited(game: &'a dyn Game) -> Self {
        Self::new(game, usize::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, MemoState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The underlying game.
    pub fn game(&self) -> &'a dyn Game {
        self.game
    }

    /// Number of players of the underlying game.
    pub fn n_players(&self) -> usize {
        self.game.n_players()
    }

    /// The hard cap on distinct evaluations.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Distinct coalitions evaluated by the underlying game so far.
    pub fn evaluations(&self) -> usize {
        self.lock().values.len()
    }

    /// Evaluations still allowed by the budget.
    pub fn remaining(&self) -> usize {
        self.budget.saturating_sub(self.evaluations())
    }

    /// Number of [`Game::evaluate`] calls made so far (one per batch with new coalitions).
    pub fn game_calls(&self) -> usize {
        self.lock().game_calls
    }

    /// Coalition values handed out so far, repeats included.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// The memoised value of `c`, if it was evaluated.
    pub fn get(&self, c: Coalition) -> Option<f64> {
        self.lock().values.get(&c).copied()
    }

    /// How many new distinct evaluations `batch` would need (repeats inside
    /// the batch and already memoised coalitions are free).
    pub fn cost(&self, batch: &[Coalition]) -> usize {
        let state = self.lock();
        let mut seen = HashSet::new();
        batch.iter().filter(|c| !state.values.contains_key(c) && seen.insert(**c)).count()
    }

    /// Values of `batch`, or `None` (nothing evaluated) when it needs more
    /// new evaluations than the budget has left.
    pub fn try_values(&self, batch: &[Coalition]) -> Result<Option<Vec<f64>>> {
        self.try_values_capped(batch, usize::MAX)
    }

    /// Like [`Memo::try_values`], but also refuses a batch that needs more
    /// than `max_new` new evaluations.
    pub fn try_values_capped(&self, batch: &[Coalition], max_new: usize) -> Result<Option<Vec<f64>>> {
        let n = self.game.n_players();
        check_coalitions(n, batch)?;
        let mut state = self.lock();
        let mut seen = HashSet::new();
        let new: Vec<Coalition> =
            batch.iter().copied().filter(|c| !state.values.contains_key(c) && seen.insert(*c)).collect();
        let allowed = max_new.min(self.budget.saturating_sub(state.values.len()));
        if new.len() > allowed {
            return Ok(None);
        }
        if !new.is_empty() {
            let values = self.game.evaluate(&new)?;
            state.game_calls += 1;
            if values.len() != new.len() {
                bail!(
                    "game '{}' returned {} values for {} coalitions: evaluate must return one value per coalition",
                    self.game.name(),
                    values.len(),
                    new.len()
                );
            }
            if let Some((c, v)) = new.iter().zip(&values).find(|(_, v)| !v.is_finite()) {
                bail!(
                    "game '{}' returned the non-finite value {v} for coalition {c:#x}: values must be finite numbers",
                    self.game.name()
                );
            }
            state.values.extend(new.iter().copied().zip(values));
        }
        state.requests += batch.len();
        Ok(Some(batch.iter().map(|c| state.values[c]).collect()))
    }

    /// Values of `batch`; errors when it would exceed the budget.
    pub fn values(&self, batch: &[Coalition]) -> Result<Vec<f64>> {
        match self.try_values(batch)? {
            Some(values) => Ok(values),
            None => bail!(
                "batch needs {} new evaluations but only {} of the budget of {} are left: raise the budget",
                self.cost(batch),
                self.remaining(),
                self.budget
            ),
        }
    }

    /// The value of one coalition; errors when it would exceed the budget.
    pub fn value(&self, c: Coalition) -> Result<f64> {
        Ok(self.values(&[c])?[0])
    }

    /// Every evaluated coalition with its value, sorted by coalition.
    pub fn cached(&self) -> Vec<(Coalition, f64)> {
        let mut all: Vec<(Coalition, f64)> = self.lock().values.iter().map(|(&c, &v)| (c, v)).collect();
        all.sort_unstable_by_key(|&(c, _)| c);
        all
    }
}

/// A game given by the table of all `2^n` values, indexed by coalition
/// bitmask; replays a fully enumerated game cheaply.
#[derive(Debug, Clone, PartialEq)]
pub struct TableGame {
    n: usize,
    values: Vec<f64>,
    name: String,
}

impl TableGame {
    /// A table game of `n <= 20` players from `values[S]` for every `S < 2^n`.
    pub fn new(n: usize, values: Vec<f64>) -> Result<Self> {
        if n > MAX_EXACT_PLAYERS {
            bail!("a table game holds all 2^n values: n = {n} is too large, use n <= {MAX_EXACT_PLAYERS}");
        }
        if values.len() != 1usize << n {
            bail!(
                "a table game of {n} players needs 2^{n} = {} values but got {}: pass one value per coalition bitmask",
                1usize << n,
                values.len()
            );
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!("table value for coalition {i:#x} is not finite: all values must be finite numbers");
        }
        Ok(TableGame { n, values, name: "table".to_string() })
    }

    /// Enumerates every coalition of `game` (one batch) into a table game
    /// that keeps the game's name.
    pub fn from_game(game: &dyn Game) -> Result<Self> {
        let values = enumerate(game)?;
        Ok(Self::new(game.n_players(), values)?.with_name(game.name()))
    }

    /// The same table under another name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// All `2^n` values, indexed by coalition bitmask.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The value of `c`, or `None` when `c` has members outside `0..n`.
    pub fn value(&self, c: Coalition) -> Option<f64> {
        usize::try_from(c).ok().and_then(|i| self.values.get(i)).copied()
    }
}

impl Game for TableGame {
    fn n_players(&self) -> usize {
        self.n
    }

    fn evaluate(&self, coalitions: &[Coalition]) -> Result<Vec<f64>> {
        check_coalitions(self.n, coalitions)?;
        Ok(coalitions.iter().map(|&c| self.values[c as usize]).collect())
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

/// A game defined by a closure `v(S)`; handy for tests and quick studies.
pub struct FnGame<F> {
    n: usize,
    name: String,
    f: F,
}

impl<F: Fn(Coalition) -> f64 + Sync> FnGame<F> {
    /// A game of `n` players whose value is `f(S)`.
    pub fn new(n: usize, name: impl Into<String>, f: F) -> Self {
        FnGame { n, name: name.into(), f }
    }
}

impl<F: Fn(Coalition) -> f64 + Sync> Game for FnGame<F> {
    fn n_players(&self) -> usize {
        self.n
    }

    fn evaluate(&self, coalitions: &[Coalition]) -> Result<Vec<f64>> {
        check_coalitions(self.n, coalitions)?;
        Ok(coalitions.iter().map(|&c| (self.f)(c)).collect())
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts every coalition the game itself computes.
    struct Counting {
        n: usize,
        computed: AtomicUsize,
        calls: AtomicUsize,
    }

    impl Game for Counting {
        fn n_players(&self) -> usize {
            self.n
        }
        fn evaluate(&self, coalitions: &[Coalition]) -> Result<Vec<f64>> {
            self.computed.fetch_add(coalitions.len(), Ordering::SeqCst);
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(coalitions.iter().map(|&c| c as f64 * 0.5).collect())
        }
    }

    fn counting(n: usize) -> Counting {
        Counting { n, computed: AtomicUsize::new(0), calls: AtomicUsize::new(0) }
    }

    #[test]
    fn memo_counts_distinct_evaluations_and_serves_repeats_free() {
        let game = counting(4);
        let memo = Memo::new(&game, 100);
        assert_eq!(memo.cost(&[1, 2, 2, 1, 3]), 3);
        let v = memo.values(&[1, 2, 2, 1, 3]).unwrap();
        assert_eq!(v, vec![0.5, 1.0, 1.0, 0.5, 1.5]);
        assert_eq!(memo.evaluations(), 3);
        assert_eq!(game.computed.load(Ordering::SeqCst), 3);
        // Repeats are free and do not call the game.
        assert_eq!(memo.cost(&[1, 3]), 0);
        memo.values(&[3, 1, 1]).unwrap();
        assert_eq!(game.calls.load(Ordering::SeqCst), 1);
        assert_eq!(memo.game_calls(), 1);
        assert_eq!(memo.requests(), 8);
        // A mixed batch only sends the new coalition.
        memo.values(&[1, 15, 3]).unwrap();
        assert_eq!(game.computed.load(Ordering::SeqCst), 4);
        assert_eq!(memo.evaluations(), 4);
        assert_eq!(memo.remaining(), 96);
        assert_eq!(memo.get(15), Some(7.5));
        assert_eq!(memo.get(14), None);
        assert_eq!(memo.cached(), vec![(1, 0.5), (2, 1.0), (3, 1.5), (15, 7.5)]);
    }

    #[test]
    fn memo_refuses_batches_over_budget_without_evaluating() {
        let game = counting(4);
        let memo = Memo::new(&game, 3);
        assert_eq!(memo.try_values(&[0, 1, 2, 3]).unwrap(), None);
        assert_eq!(memo.evaluations(), 0);
        assert_eq!(game.computed.load(Ordering::SeqCst), 0);
        assert!(memo.try_values(&[0, 1, 1, 2]).unwrap().is_some());
        assert_eq!(memo.remaining(), 0);
        // Memoised coalitions stay available at zero cost.
        assert!(memo.try_values(&[2, 0]).unwrap().is_some());
        let err = memo.value(5).unwrap_err().to_string();
        assert!(err.contains("budget"), "{err}");
        assert_eq!(memo.try_values_capped(&[0], 0).unwrap(), Some(vec![0.0]));
        let fresh = Memo::new(&game, 10);
        assert_eq!(fresh.try_values_capped(&[0, 1], 1).unwrap(), None);
    }

    #[test]
    fn memo_rejects_bad_coalitions_and_bad_games() {
        let game = counting(3);
        let memo = Memo::unlimited(&game);
        let err = memo.values(&[0b1000]).unwrap_err().to_string();
        assert!(err.contains("outside players 0..3"), "{err}");

        let short = FnGame::new(2, "nan", |c| if c == 3 { f64::NAN } else { 1.0 });
        let memo = Memo::unlimited(&short);
        let err = memo.values(&[1, 3]).unwrap_err().to_string();
        assert!(err.contains("non-finite"), "{err}");
        assert_eq!(memo.evaluations(), 0);

        struct Wrong;
        impl Game for Wrong {
            fn n_players(&self) -> usize {
                2
            }
            fn evaluate(&self, _: &[Coalition]) -> Result<Vec<f64>> {
                Ok(vec![1.0])
            }
        }
        let memo = Memo::unlimited(&Wrong);
        let err = memo.values(&[0, 1]).unwrap_err().to_string();
        assert!(err.contains("one value per coalition"), "{err}");
    }

    #[test]
    fn table_game_replays_and_validates() {
        let f = FnGame::new(3, "size", |c| coalition::size(c) as f64);
        let t = TableGame::from_game(&f).unwrap();
        assert_eq!(t.name(), "size");
        assert_eq!(t.values(), &[0.0, 1.0, 1.0, 2.0, 1.0, 2.0, 2.0, 3.0]);
        assert_eq!(t.evaluate(&[7, 0, 5]).unwrap(), vec![3.0, 0.0, 2.0]);
        assert_eq!(t.value(6), Some(2.0));
        assert_eq!(t.value(8), None);
        assert!(t.evaluate(&[8]).is_err());
        assert!(TableGame::new(2, vec![0.0; 3]).is_err());
        assert!(TableGame::new(21, vec![]).is_err());
        assert!(TableGame::new(1, vec![0.0, f64::INFINITY]).is_err());
        assert_eq!(TableGame::new(0, vec![2.0]).unwrap().with_name("x").name(), "x");
    }

    #[test]
    fn memo_can_be_shared_between_threads() {
        fn assert_sync<T: Sync>() {}
        assert_sync::<Memo<'static>>();
        let game = counting(6);
        let memo = Memo::new(&game, 64);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let memo = &memo;
                s.spawn(move || memo.values(&[t, t + 1, 63]).unwrap());
            }
        });
        assert_eq!(memo.evaluations(), 6);
        assert_eq!(game.computed.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn too_many_players_is_an_error() {
        assert!(check_players(65).is_err());
        assert!(check_coalitions(64, &[u64::MAX]).is_ok());
    }
}
