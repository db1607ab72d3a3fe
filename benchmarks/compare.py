"""The study: GRPO vs Pass@k Training vs SimKO (and both) on the embedded Countdown task, from one warm start.

Every method trains from the same supervised warm start (the shared `--warmup-cache` of train.py) with the same
budget: the same RL steps, prompts per step, group size, learning rate and evaluation. Each (method, seed) is one
`python train.py` run in its own process (one CPU thread each, `--jobs` at a time); its `metrics.jsonl` holds the
per-step trajectories (token entropy, rank-1..5 probabilities) and the final held-out pass@k for k = 1..n from n
samples per problem (the unbiased estimator). This script then aggregates mean and spread over seeds and writes

    results/compare.json      raw numbers: every run's final pass@k curve and trajectories, the settings, wall time
    results/compare.md        the table (mean +- std over seeds) that the README quotes
    results/*.png             pass@k vs k (log axis), entropy and rank-1 probability vs step (needs matplotlib)

Runs that already finished (their `metrics.jsonl` has the final evaluation) are reused, so an interrupted study
continues where it stopped. Plots are skipped with a note when matplotlib is not installed.

    python benchmarks/compare.py            # the full study (~1 hour on 2 CPU cores)
    python benchmarks/compare.py --quick    # a few minutes: fewer steps, samples, problems, one seed
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> train.py flags. Every method gets the same budget (the shared flags below); only the algorithm differs.
# The group size is 16 (not train.py's 8) so that k = 8 is a real group-of-8 reward (k = N gives no signal).
METHODS = {
    "grpo": ["--advantage", "grpo", "--no-simko"],
    "passk_k4": ["--advantage", "passk", "--k", "4", "--no-simko"],
    "passk_k8": ["--advantage", "passk", "--k", "8", "--no-simko"],
    "simko": ["--advantage", "grpo", "--simko"],
    "passk_k4+simko": ["--advantage", "passk", "--k", "4", "--simko"],
    "combination_k4": ["--advantage", "combination", "--k", "4", "--no-simko"],
    "entropy_adaptive_k4": ["--advantage", "entropy_adaptive", "--k", "4", "--no-simko"],
    "passk_k4->grpo": ["--advantage", "passk", "--k", "4", "--no-simko", "--switch-to-grpo-at", "{half}"],
}

FULL = dict(steps=80, seeds=3, eval_samples=64, eval_problems=300, prompts_per_step=8, group_size=16)
QUICK = dict(steps=10, seeds=1, eval_samples=16, eval_problems=100, prompts_per_step=8, group_size=16)


def run_one(name: str, seed: int, cfg: dict, args) -> dict:
    out = os.path.join(args.runs, f"{name}-s{seed}")
    metrics = os.path.join(out, "metrics.jsonl")
    final = _final_eval(metrics, cfg["steps"])
    if final is None:
        flags = [f.format(half=cfg["steps"] // 2) for f in METHODS[name]]
        cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--out", out, "--warmup-cache", args.warmup_cache,
               "--seed", str(seed), "--steps", str(cfg["steps"]), "--eval-every", str(args.eval_every),
               "--eval-samples", str(cfg["eval_samples"]), "--eval-problems", str(cfg["eval_problems"]),
               "--prompts-per-step", str(cfg["prompts_per_step"]), "--group-size", str(cfg["group_size"]),
               "--lr", str(args.lr), "--no-progress", *flags]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        os.makedirs(out, exist_ok=True)
        t = time.time()
        with open(os.path.join(out, "stdout.log"), "w") as log:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} seed {seed} failed (exit {proc.returncode}); see {out}/stdout.log")
        print(f"  {name:22s} seed {seed}: {time.time() - t:6.0f} s", flush=True)
        final = _final_eval(metrics, cfg["steps"])
    rows = [json.loads(line) for line in open(metrics) if line.strip()]
    train = [r for r in rows if r["type"] == "train"]
    keys = ["reward_mean", "rollout_entropy", "entropy"] + [f"conc_prob_rank{i}" for i in range(1, 6)]
    return {"method": name, "seed": seed,
            "final": {k: v for k, v in final.items() if k.startswith("pass@")},
            "evals": [{k: v for k, v in r.items() if k == "step" or k.startswith("pass@")}
                      for r in rows if r["type"] == "eval"],
            "trajectory": {k: [r.get(k) for r in train] for k in keys}}


def _final_eval(path: str, steps: int):
    if not os.path.isfile(path):
        return None
    evals = [json.loads(line) for line in open(path) if line.strip()]
    evals = [e for e in evals if e["type"] == "eval" and e["step"] == steps]
    return evals[-1] if evals else None


def warm_start(cfg: dict, args) -> dict:
    """Build (or reuse) the shared warm start and evaluate it once, as the 'before' row of the table."""
    out = os.path.join(args.runs, "warm_start")
    metrics = os.path.join(out, "metrics.jsonl")
    if _final_eval(metrics, 0) is None:
        cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--out", out, "--warmup-cache", args.warmup_cache,
               "--steps", "0", "--eval-samples", str(cfg["eval_samples"]), "--eval-problems",
               str(cfg["eval_problems"]), "--no-progress"]
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "stdout.log"), "w") as log:
            subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
    final = _final_eval(metrics, 0)
    return {k: v for k, v in final.items() if k.startswith("pass@")}


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def report(results: dict) -> str:
    cfg, runs = results["config"], results["runs"]
    n = cfg["eval_samples"]
    ks = [2 ** i for i in range(n.bit_length()) if 2 ** i <= n]
    lines = [f"Held-out pass@k (unbiased, n = {n} samples on {cfg['eval_problems']} problems), after "
             f"{cfg['steps']} RL steps of {cfg['prompts_per_step']} prompts x {cfg['group_size']} samples; "
             f"mean +- std over {cfg['seeds']} seed(s). Last columns: mean token entropy and rank-1 probability "
             f"over the last 10 steps.", "",
             "| method | " + " | ".join(f"pass@{k}" for k in ks) + " | entropy | rank-1 prob |",
             "|---|" + "---:|" * (len(ks) + 2)]
    ws = results["warm_start"]
    # The warm start's entropy and rank-1 probability: every run's first step measures them before its update.
    first = [mean_std([r["trajectory"][key][0] for r in runs])[0] for key in ("entropy", "conc_prob_rank1")]
    lines.append("| warm start | " + " | ".join(f"{ws[f'pass@{k}']:.3f}" for k in ks)
                 + f" | {first[0]:.3f} | {first[1]:.3f} |")
    for name in METHODS:
        mine = [r for r in runs if r["method"] == name]
        if not mine:
            continue
        cells = []
        for k in ks:
            m, s = mean_std([r["final"][f"pass@{k}"] for r in mine])
            cells.append(f"{m:.3f} +- {s:.3f}" if len(mine) > 1 else f"{m:.3f}")
        for key in ("entropy", "conc_prob_rank1"):
            tails = [sum(v for v in r["trajectory"][key][-10:] if v is not None)
                     / max(1, sum(v is not None for v in r["trajectory"][key][-10:])) for r in mine]
            cells.append(f"{mean_std(tails)[0]:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Study wall time: {results['wall_seconds'] / 60:.1f} min with {cfg['jobs']} parallel job(s).")
    return "\n".join(lines)


def plot(results: dict, out_dir: str) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plots (pip install matplotlib)")
        return []
    runs, n = results["runs"], results["config"]["eval_samples"]
    ks = list(range(1, n + 1))
    written = []
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(ks, [results["warm_start"][f"pass@{k}"] for k in ks], "k--", label="warm start")
    for name in METHODS:
        mine = [r for r in runs if r["method"] == name]
        if mine:
            ax.plot(ks, [mean_std([r["final"][f"pass@{k}"] for r in mine])[0] for k in ks], label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (held-out)")
    ax.set_title("pass@k after RL, mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = os.path.join(out_dir, "passk_curves.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    written.append(path)
    plt.close(fig)
    for key, label, fname in (("entropy", "mean token entropy (nats)", "entropy.png"),
                              ("conc_prob_rank1", "rank-1 candidate probability", "rank1_prob.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name in METHODS:
            mine = [r for r in runs if r["method"] == name and r["trajectory"][key]]
            if not mine:
                continue
            steps = len(mine[0]["trajectory"][key])
            curve = [mean_std([r["trajectory"][key][i] for r in mine if r["trajectory"][key][i] is not None]
                              or [float("nan")])[0] for i in range(steps)]
            ax.plot(range(1, steps + 1), curve, label=name)
        ax.set_xlabel("RL step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = os.path.join(out_dir, fname)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        written.append(path)
        plt.close(fig)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="minutes instead of an hour: fewer steps/samples, 1 seed")
    p.add_argument("--out", default=os.path.join(ROOT, "results"), help="where results are written")
    p.add_argument("--runs", default=None, help="run directories (default: runs/compare[-quick] under the repo)")
    p.add_argument("--warmup-cache", default=os.path.join(ROOT, "runs", "warmup"))
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one CPU thread each)")
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    for key, value in FULL.items():
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None, help=f"default {value} (quick: "
                       f"{QUICK[key]})")
    p.add_argument("--lr", type=float, default=1e-4, help="RL learning rate of every run (train.py's default)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the table and plots from the saved compare.json, without running anything")
    p.add_argument("--eval-every", type=int, default=0, help="intermediate evaluations (0: only before/after)")
    args = p.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    cfg.update({k: getattr(args, k) for k in FULL if getattr(args, k) is not None})
    cfg["jobs"] = args.jobs
    args.runs = args.runs or os.path.join(ROOT, "runs", "compare-quick" if args.quick else "compare")
    os.makedirs(args.out, exist_ok=True)

    suffix = "-quick" if args.quick else ""
    json_path = os.path.join(args.out, f"compare{suffix}.json")
    if args.report_only:
        with open(json_path) as f:
            results = json.load(f)
        write_report(results, args.out, suffix)
        return

    start = time.time()
    print(f"warm start (shared by every run) -> {args.warmup_cache}", flush=True)
    warm = warm_start(cfg, args)
    print(f"  warm start: " + "  ".join(f"pass@{k} {warm[f'pass@{k}']:.3f}" for k in (1, 4, 16) if
                                        f"pass@{k}" in warm), flush=True)
    jobs = [(name, seed) for seed in range(cfg["seeds"]) for name in args.methods]
    print(f"{len(jobs)} runs, {args.jobs} at a time", flush=True)
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda job: run_one(job[0], job[1], cfg, args), jobs))
    results = {"config": cfg, "warm_start": warm, "runs": runs, "wall_seconds": time.time() - start}
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
    write_report(results, args.out, suffix)


def write_report(results: dict, out_dir: str, suffix: str) -> None:
    table = report(results)
    with open(os.path.join(out_dir, f"compare{suffix}.md"), "w") as f:
        f.write(table + "\n")
    print("\n" + table)
    if not suffix:
        for path in plot(results, out_dir):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
