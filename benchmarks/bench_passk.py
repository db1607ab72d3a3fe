"""Benchmark: the vectorised analytical Pass@k advantage against a per-prompt Python loop with float binomials,
and PKPO's effective rewards at N = 4096.

The loop is written the way the official code computes it: for each prompt, R_bar, sigma, A_pos and A_neg from
floating-point binomial coefficients, then one value per response. Besides the time, the table shows where float
binomials stop working (they overflow to inf near N = 1030 and give NaN).

    python benchmarks/bench_passk.py [--prompts 100000] [--n 32] [--k 4] [--repeat 5]
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import passk_at_k  # noqa: E402


def comb_float(n: int, k: int) -> float:
    """A float binomial, as scipy.special.comb(n, k) returns it: inf once it exceeds the float range."""
    if k < 0 or k > n:
        return 0.0
    try:
        return float(math.comb(n, k))
    except OverflowError:
        return math.inf


def loop_advantages(rewards: list[list[float]], k: int) -> list[list[float]]:
    out = []
    for row in rewards:
        N = len(row)
        n_pos = sum(1 for r in row if r > 0.5)
        n_neg = N - n_pos
        r_bar = 1 - comb_float(n_neg, k) / comb_float(N, k)
        sigma = math.sqrt(r_bar * (1 - r_bar))          # NaN once both binomials overflow to inf
        if sigma == 0:
            out.append([0.0] * N)
            continue
        a_pos = (1 - r_bar) / sigma
        a_neg = (1 - r_bar - comb_float(n_neg - 1, k - 1) / comb_float(N - 1, k - 1)) / sigma
        out.append([a_pos if r > 0.5 else a_neg for r in row])
    return out


def best_of(fn, repeat):
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=100_000)
    p.add_argument("--n", type=int, default=32, help="responses per prompt (N)")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = a fair single-core comparison)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    acc = torch.rand(args.prompts, 1, generator=g)
    rewards = (torch.rand(args.prompts, args.n, generator=g) < acc).float()
    rows = rewards.tolist()

    t_vec, adv = best_of(lambda: passk_at_k.passk_advantages_analytical(rewards, args.k), args.repeat)
    t_loop, ref = best_of(lambda: loop_advantages(rows, args.k), max(1, args.repeat // 2))
    max_diff = (adv.double() - torch.tensor(ref, dtype=torch.float64)).abs().max().item()

    print(f"Analytical Pass@k advantage, {args.prompts:,} prompts x N = {args.n}, k = {args.k}, "
          f"torch {torch.__version__}, {args.threads} thread(s), best of {args.repeat}\n")
    print(f"| method | time (s) | prompts/s | speed-up |")
    print(f"| --- | ---: | ---: | ---: |")
    print(f"| per-prompt Python loop, float binomials | {t_loop:.3f} | {args.prompts / t_loop:,.0f} | 1.0x |")
    print(f"| passk_advantages_analytical (vectorised) | {t_vec:.4f} | {args.prompts / t_vec:,.0f} "
          f"| {t_loop / t_vec:.0f}x |")
    print(f"\nmax |difference| between the two: {max_diff:.2e}\n")

    print("Large groups: 64 prompts with N_pos spread over 1..N-1; prompts with a NaN/inf advantage")
    print("| N | k | float-binomial loop | analytical |")
    print("| ---: | ---: | ---: | ---: |")
    for N, k in [(512, 256), (1024, 512), (2048, 1024), (4096, 2048), (4096, 16)]:
        n_pos = torch.linspace(1, N - 1, 64).round().long().unique()
        r = (torch.arange(N).unsqueeze(0) < n_pos.unsqueeze(1)).float()
        bad_loop = sum(1 for row in loop_advantages(r.tolist(), k) if not all(math.isfinite(a) for a in row))
        bad_vec = int((~torch.isfinite(passk_at_k.passk_advantages_analytical(r, k))).any(-1).sum())
        print(f"| {N} | {k} | {bad_loop} of {len(n_pos)} | {bad_vec} of {len(n_pos)} |")

    print("\nPKPO effective rewards (pkpo_advantages, loo-1), 64 prompts x N = 4096: time, and prompts with NaN/inf")
    print("| rewards | k | time (s) | non-finite |")
    print("| --- | ---: | ---: | ---: |")
    N = 4096
    binary = (torch.rand(64, N, generator=g) < torch.rand(64, 1, generator=g)).double()
    real = torch.randn(64, N, generator=g, dtype=torch.float64)
    for name, r, continuous in (("binary", binary, False), ("continuous", real, True)):
        for k in (2, 64, 2048, N):
            t, adv = best_of(lambda: passk_at_k.pkpo_advantages(r, k, continuous=continuous), args.repeat)
            print(f"| {name} | {k} | {t:.4f} | {int((~torch.isfinite(adv)).any(-1).sum())} of 64 |")


if __name__ == "__main__":
    main()
