#!/usr/bin/env python3
"""Side-by-side benchmark: shapiq's Shapley approximators and copra-lab's
estimators on the same exported coalition tables, at equal budgets.

Setup (once):  python3 -m venv /work/venv-shapiq && /work/venv-shapiq/bin/pip install shapiq pyarrow pandas
Usage:         analyses/bench_shapiq.py [--bin target/release/copra-lab] [--seeds 10]
                   [--budgets 256,512,1024,2048] [--out out/shapiq-bench] LABEL=FILE ...
Each FILE is a `shapley_coalitions.parquet` written by `copra-lab shapley` (all 2^n
coalitions per method). For every game (file × method) it runs shapiq's KernelSHAP
(with and without pairing), kADDSHAP (order 2, with and without pairing), SVARM,
PermutationSamplingSV and OwenSamplingSV over the seeds, runs
`copra-lab shapley-bench` on the same files, and prints the mean MSE against the
exact values of the best approximator of each side and their ratio.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import shapiq
from shapiq.approximator import SVARM, KernelSHAP, OwenSamplingSV, PermutationSamplingSV, kADDSHAP


def load_games(specs):
    games = []
    for spec in specs:
        label, path = spec.split("=", 1) if "=" in spec else (os.path.basename(os.path.dirname(spec)), spec)
        df = pd.read_parquet(path)
        for method, part in df.groupby("method", sort=False):
            size = len(part)
            n = size.bit_length() - 1
            if size != 1 << n:
                sys.exit(f"{path}: method {method} has {size} coalitions, not 2^n: export a full table")
            table = np.full(size, np.nan)
            table[part["coalition"].to_numpy()] = part["value"].to_numpy()
            games.append((f"{label}/{method}", n, table))
    return games


def exact_shapley(table, n):
    phi = np.zeros(n)
    sizes = np.array([bin(s).count("1") for s in range(1 << n)])
    from math import comb

    w = np.array([1.0 / (n * comb(n - 1, s)) for s in range(n)])
    for i in range(n):
        bit = 1 << i
        without = np.array([s for s in range(1 << n) if not s & bit])
        phi[i] = np.sum(w[sizes[without]] * (table[without | bit] - table[without]))
    return phi


def approximators(n, seed):
    return {
        "KernelSHAP": KernelSHAP(n, pairing_trick=False, random_state=seed),
        "KernelSHAP_paired": KernelSHAP(n, pairing_trick=True, random_state=seed),
        "kADDSHAP": kADDSHAP(n, max_order=2, pairing_trick=False, random_state=seed),
        "kADDSHAP_paired": kADDSHAP(n, max_order=2, pairing_trick=True, random_state=seed),
        "SVARM": SVARM(n, random_state=seed),
        "PermutationSamplingSV": PermutationSamplingSV(n, random_state=seed),
        "OwenSamplingSV": OwenSamplingSV(n, random_state=seed),
    }


def run_shapiq(games, budgets, seeds):
    rows = []
    for name, n, table in games:
        exact = exact_shapley(table, n)
        weights = 1 << np.arange(n)

        def game(coalitions, table=table):
            # Permutation and Owen samplers pass a single 1-D coalition.
            masks = np.atleast_2d(coalitions).astype(np.int64) @ weights
            return table[masks]

        for budget in budgets:
            for seed in range(seeds):
                for approx_name, approx in approximators(n, seed).items():
                    started = time.perf_counter()
                    iv = approx.approximate(budget, game)
                    secs = time.perf_counter() - started
                    est = np.array([iv[(i,)] for i in range(n)])
                    rows.append(dict(game=name, estimator=approx_name, budget=budget, seed=seed,
                                     mse=float(np.mean((est - exact) ** 2)), seconds=secs))
    return pd.DataFrame(rows)


def run_ours(binary, specs, budgets, seeds, out):
    tables = ",".join(specs)
    cmd = [binary, "shapley-bench", "--table", tables, "--budgets", ",".join(map(str, budgets)),
           "--seeds", str(seeds), "--out", out]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return pd.read_parquet(os.path.join(out, "shapley_bench.parquet"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="+", help="LABEL=shapley_coalitions.parquet")
    p.add_argument("--bin", default=os.environ.get("COPRA_LAB", "target/release/copra-lab"))
    p.add_argument("--budgets", default="256,512,1024,2048")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--out", default="out/shapiq-bench")
    p.add_argument("--reuse", action="store_true", help="reuse OUT/shapiq_bench.parquet from an earlier run")
    p.add_argument("--shapiq-only", action="store_true", help="run shapiq only and stop")
    a = p.parse_args()
    budgets = [int(b) for b in a.budgets.split(",")]
    os.makedirs(a.out, exist_ok=True)
    games = load_games(a.tables)
    cached = os.path.join(a.out, "shapiq_bench.parquet")
    if a.reuse and os.path.exists(cached):
        theirs = pd.read_parquet(cached)
    else:
        theirs = run_shapiq(games, budgets, a.seeds)
        theirs.to_parquet(cached)
    if a.shapiq_only:
        print(theirs.groupby(["game", "budget", "estimator"])["mse"].mean().unstack().to_string(float_format=lambda x: f"{x:.2e}"))
        return
    ours = run_ours(a.bin, a.tables, budgets, a.seeds, a.out)
    mean_t = theirs.groupby(["game", "budget", "estimator"])["mse"].mean()
    mean_o = ours.groupby(["game", "budget", "estimator"])["mse"].mean()
    print(f"shapiq {getattr(shapiq, '__version__', '?')}, {a.seeds} seeds; mean MSE against exact")
    print("| game | budget | shapiq best | MSE | copra-lab best | MSE | ratio ours/shapiq |")
    print("|---|---|---|---|---|---|---|")
    for (game, budget), _ in theirs.groupby(["game", "budget"]):
        t = mean_t.loc[(game, budget)]
        o = mean_o.loc[(game, budget)]
        print(f"| {game} | {budget} | {t.idxmin()} | {t.min():.2e} | {o.idxmin()} | {o.min():.2e} | {o.min() / t.min():.2f} |")
    print()
    print("All estimators (mean MSE):")
    both = pd.concat([mean_t.rename("mse").reset_index().assign(side="shapiq"),
                      mean_o.rename("mse").reset_index().assign(side="copra-lab")])
    print(both.pivot_table(index=["side", "estimator"], columns=["game", "budget"], values="mse").to_string(float_format=lambda x: f"{x:.2e}"))


if __name__ == "__main__":
    main()
