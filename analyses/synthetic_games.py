#!/usr/bin/env python3
"""Writes synthetic 12-player games as full coalition tables, in the schema of
`shapley_coalitions.parquet` (columns method, coalition, value; one "method" per game), for
`copra-lab shapley-bench` and `analyses/bench_shapiq.py`.

Usage: analyses/synthetic_games.py OUT.parquet [--players 12] [--seed 0]

Games (all deterministic from --seed):
  soum        sum of 40 unanimity games on random coalitions of 1-5 players, weights N(0, 1):
              strong interactions of every order up to 5;
  saturating  v(S) = 1 - exp(-sum_{i in S} w_i), w_i ~ U(0, 0.4): smooth, nearly additive;
  majority    weighted voting, v(S) = 1 if sum_{i in S} w_i > half the total, w_i ~ U(1, 10):
              a step function, the hardest case for regression estimators.
"""
import argparse

import numpy as np
import pandas as pd


def tables(n, seed):
    rng = np.random.default_rng(seed)
    masks = np.arange(1 << n)
    member = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)  # [2^n, n]
    games = {}
    soum = np.zeros(1 << n)
    for _ in range(40):
        size = rng.integers(1, 6)
        players = rng.choice(n, size=size, replace=False)
        weight = rng.normal()
        soum += weight * member[:, players].all(axis=1)
    games["soum"] = soum
    w = rng.uniform(0.0, 0.4, n)
    games["saturating"] = 1.0 - np.exp(-(member * w).sum(axis=1))
    w = rng.uniform(1.0, 10.0, n)
    games["majority"] = ((member * w).sum(axis=1) > w.sum() / 2).astype(float)
    return games


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--players", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    frames = [
        pd.DataFrame({"method": name, "coalition": np.arange(len(v), dtype=np.int64), "value": v.astype(np.float64)})
        for name, v in tables(a.players, a.seed).items()
    ]
    pd.concat(frames, ignore_index=True).to_parquet(a.out, index=False)
    print(f"wrote {a.out}: {', '.join(f.method[0] for f in frames)} on {a.players} players")


if __name__ == "__main__":
    main()
