"""The study: GRPO vs Pass@k Training vs SimKO on the embedded Countdown task, paired by seed, with t-intervals.

Design (every choice is a flag below; the defaults are the committed study):

- **Task.** The embedded Countdown task with the *headroom* warm start (`countdown.py`, `--warmup-variant
  headroom`): a warm-up that saw little multiplication and division, so that some held-out problems are solved only
  rarely at the start and RL has something to discover. A few configurations also run on the *full* warm start
  (every answer seen), where RL can only sharpen.
- **Pairing.** Every configuration trains from one shared warm start per variant (train.py's warm-up cache) with
  the same budget (steps, prompts, group size, learning rate) and the same seeds. Seed s of two configurations
  draws the same training prompts and the same evaluation generator seed, so differences are paired by seed.
- **Evaluation.** n = 64 samples on each held-out problem at temperature 1, at step 0 and at the last step; every
  eval line of train.py's metrics.jsonl has the per-problem correct counts, from which the unbiased pass@k of each
  problem is computed here (`per_problem_pass_at_k`).
- **Easy / hard split**, defined once per variant from the warm start and never from a trained run: a separate
  evaluation of the warm start with its own seed (`SPLIT_SEED`, used by no run, so the warm-start row of the table,
  which is the mean of the runs' own step-0 evaluations, is not biased by the selection) gives each problem's
  success rate r; **hard** = r < `HARD_RATE` (0.1, i.e. at most 6 of 64 samples correct), **easy** = the rest.
- **Intervals** (`benchmarks/stats.py`, shared with `compare_real.py`; the seed is the unit). For configuration m
  and its reference b (GRPO with the same warm start and number of mini-batches), D[s, i] = pass@k of problem i after
  m's run with seed s minus the same after b's run with seed s. The effect is the mean of D over seeds and problems
  of the subset. Its primary 95 % interval is a t-interval over the paired per-seed means (mean of D over the
  subset's problems, one number per seed; seeds - 1 degrees of freedom). Beside it: the crossed seed / problem
  variance-components standard error, which also counts the problems as a sample of the task, and, as a secondary
  column, the percentile bootstrap that resamples seeds and problems (`BOOTSTRAP_DRAWS` draws). Entropy and rank-1
  probability (one number per run: the mean over the last 10 steps) get the t-interval of their per-seed
  differences, beside the seeds-only bootstrap.
- **Claims** are decided by the t-interval, never by the mean. A superiority claim is *supported* when it excludes 0
  in the claimed direction, *not supported* when it excludes 0 in the other direction or lies within
  +-`NEGLIGIBLE`, *inconclusive* otherwise. A non-inferiority claim ("keeps", "does not cost") names its margin
  (`MARGIN`) and is *supported* when the interval's bound against the claim stays within it. `PRIMARY` names each
  paper's one confirmatory claim; the others are secondary, the effect tables descriptive.

Outputs (rewritten after every finished run, so an interrupted study still leaves its partial table):

    results/compare.json   every run's settings, seed, code and commit, wall time, pass@k curve, per-problem correct
                           counts, trajectories; the warm starts and their splits; every effect with its intervals
    results/compare.md     the tables (means, effects with their intervals) and the claims tables
    results/*.png          pass@k curves (all / easy / hard), entropy and rank-1 probability per step, effects
                           with their intervals (needs matplotlib, imported lazily)

Runs that finished (their metrics.jsonl has the final evaluation) are reused; an unfinished run is started again
from scratch. So an interrupted study continues where it stopped with the same command. The runs saved in
results/compare.json are reused too, so that new configurations can join the study without running the others
again: only when the design is the same and the variant's warm start, rebuilt first, gives the same per-problem
counts (the same model on the same kernels), so that seed s of a saved run and of a new one are paired exactly
(`--no-reuse` runs everything again). `--configs A B` runs A and B (and their baselines) and keeps the saved rest.

    python benchmarks/compare.py                 # the full study (see README for its wall time)
    python benchmarks/compare.py --quick         # < 5 minutes: 2 configurations x 2 seeds, short
    python benchmarks/compare.py --report-only   # tables and plots again from results/compare.json
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stats import (BOOTSTRAP_DRAWS, BOOTSTRAP_SEED, EFFECTS_NOTE, MARGIN, check_claims, claims_markdown,  # noqa: E402
                   fmt_ci, fmt_secondary, paired_effect, per_problem_pass_at_k, scalar_effect)

SPLIT_SEED = 1000          # the warm-start evaluation that defines easy / hard; no run uses this seed
HARD_RATE = 0.1            # hard: the warm start solves the problem in fewer than 10 % of its samples
TAIL_STEPS = 10            # entropy and rank-1 probability: mean over the last 10 RL steps

GRPO = ["--advantage", "grpo", "--no-simko"]


def _simko(alpha, lam=1.1):
    # clip-higher (0.2 / 0.28) like every other configuration here, so that SimKO's effects are its loss's alone
    return ["--advantage", "grpo", "--simko", "--simko-alpha", str(alpha), "--simko-lambda", str(lam),
            "--clip-high", "0.28"]


# name -> variant, train.py flags, the baseline it is compared with, and a tier (lower tiers run first, so that an
# interrupted study has the core comparison: GRPO and Pass@k; the transfer and SimKO's two ends; 4 mini-batches;
# a stronger SimKO penalty; the rest of the alpha sweep; the full warm start). Every configuration passes
# --mini-batches explicitly.
CONFIGS = {
    "grpo": dict(variant="headroom", flags=GRPO + ["--mini-batches", "1"], baseline=None, tier=0),
    "passk_k4": dict(variant="headroom", flags=["--advantage", "passk", "--k", "4", "--no-simko",
                                                "--mini-batches", "1"], baseline="grpo", tier=0),
    "passk_k8": dict(variant="headroom", flags=["--advantage", "passk", "--k", "8", "--no-simko",
                                                "--mini-batches", "1"], baseline="grpo", tier=0),
    "passk_k4->grpo": dict(variant="headroom", flags=["--advantage", "passk", "--k", "4", "--no-simko",
                                                      "--mini-batches", "1", "--switch-to-grpo-at", "{three_quarters}"],
                           baseline="grpo", tier=1),
    "simko_a0.01": dict(variant="headroom", flags=_simko(0.01) + ["--mini-batches", "1"], baseline="grpo", tier=1),
    "simko_a0.2": dict(variant="headroom", flags=_simko(0.2) + ["--mini-batches", "1"], baseline="grpo", tier=1),
    "grpo_mb4": dict(variant="headroom", flags=GRPO + ["--mini-batches", "4"], baseline="grpo", tier=2),
    "passk_k4_mb4": dict(variant="headroom", flags=["--advantage", "passk", "--k", "4", "--no-simko",
                                                    "--mini-batches", "4"], baseline="grpo_mb4", tier=2),
    "simko_a0": dict(variant="headroom", flags=_simko(0.0) + ["--mini-batches", "1"], baseline="grpo", tier=4),
    "simko_a0.05": dict(variant="headroom", flags=_simko(0.05) + ["--mini-batches", "1"], baseline="grpo", tier=4),
    "simko_a0.1": dict(variant="headroom", flags=_simko(0.1) + ["--mini-batches", "1"], baseline="grpo", tier=4),
    "simko_a0.01_lam2": dict(variant="headroom", flags=_simko(0.01, 2.0) + ["--mini-batches", "1"],
                             baseline="grpo", tier=3),
    # SimKO's analysis baselines (its Fig. 3, after Zhu et al. 2025): where does concentration come from?
    "psr": dict(variant="headroom", flags=GRPO + ["--loss", "psr", "--mini-batches", "1"], baseline="grpo", tier=1),
    "nsr": dict(variant="headroom", flags=GRPO + ["--loss", "nsr", "--mini-batches", "1"], baseline="grpo", tier=1),
    "w_reinforce": dict(variant="headroom", flags=GRPO + ["--loss", "w_reinforce", "--mini-batches", "1"],
                        baseline="grpo", tier=2),
    # PKPO's unbiased pass@k estimator beside the analytical Pass@k advantage, same k
    "pkpo_k4": dict(variant="headroom", flags=["--advantage", "pkpo", "--k", "4", "--no-simko", "--mini-batches", "1"],
                    baseline="grpo", tier=1),
    # train.py's own default method: Pass@k + SimKO
    "passk_k4+simko": dict(variant="headroom", flags=["--advantage", "passk", "--k", "4", "--simko",
                                                      "--clip-high", "0.28", "--mini-batches", "1"],
                           baseline="grpo", tier=1),
    "full:grpo": dict(variant="full", flags=GRPO + ["--mini-batches", "1"], baseline=None, tier=5),
    "full:passk_k4": dict(variant="full", flags=["--advantage", "passk", "--k", "4", "--no-simko",
                                                 "--mini-batches", "1"], baseline="full:grpo", tier=5),
}
# extra paired contrasts besides "each configuration vs its baseline": (configuration, reference)
CONTRASTS = [("passk_k8", "passk_k4"), ("passk_k4_mb4", "passk_k4"), ("nsr", "psr"), ("pkpo_k4", "passk_k4"),
             ("passk_k4+simko", "passk_k4"), ("passk_k4+simko", "simko_a0.01")]

# 200 of the 300 held-out problems: the study's time budget (see the README); --eval-problems 300 for all
FULL = dict(steps=200, seeds=5, eval_samples=64, eval_problems=200, prompts_per_step=8, group_size=16)
QUICK = dict(steps=12, seeds=2, eval_samples=16, eval_problems=100, prompts_per_step=8, group_size=16)
QUICK_CONFIGS = ["grpo", "passk_k8"]
TABLE_KS = (1, 64)          # the ks of the effects (pass@1 and the largest k); the curves have every k = 1..n
SUBSETS = ("all", "easy", "hard")


# ----------------------------------------------------------------------------------------------------------------
# The easy / hard split and per-run summaries (the statistics are in stats.py)

def split_easy_hard(correct: list[int], n: int, hard_rate: float = HARD_RATE) -> dict[str, list[int]]:
    """Problem indices by the warm start's success rate: hard when c / n < hard_rate, easy otherwise."""
    hard = [i for i, c in enumerate(correct) if c / n < hard_rate]
    easy = [i for i, c in enumerate(correct) if c / n >= hard_rate]
    return {"all": list(range(len(correct))), "easy": easy, "hard": hard}


def subset_mean(values: list[float], subset: list[int]) -> float:
    return sum(values[i] for i in subset) / len(subset) if subset else float("nan")


def tail_mean(values: list, steps: int = TAIL_STEPS):
    tail = [v for v in values[-steps:] if v is not None]
    return sum(tail) / len(tail) if tail else None


# ----------------------------------------------------------------------------------------------------------------
# Running train.py

def _final_eval(path: str, step: int):
    """The evaluation at `step` in metrics.jsonl (the last one written), or None."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    evals = [e for e in rows if e.get("type") == "eval" and e.get("step") == step]
    return evals[-1] if evals else None


def _train_cmd(out: str, variant: str, seed: int, steps: int, cfg: dict, args, flags: list[str]) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "train.py"), "--out", out, "--warmup-cache", args.warmup_cache,
            "--warmup-variant", variant, "--seed", str(seed), "--steps", str(steps), "--eval-every", "0",
            "--eval-samples", str(cfg["eval_samples"]), "--eval-problems", str(cfg["eval_problems"]),
            "--prompts-per-step", str(cfg["prompts_per_step"]), "--group-size", str(cfg["group_size"]),
            "--lr", str(args.lr), "--no-progress", *flags]


def shown_cmd(cmd: list[str]) -> str:
    """A run's command as results record it: paths inside the repository relative to it, so that a committed result
    names no directory of the machine it ran on."""
    return " ".join(os.path.relpath(a, ROOT) if os.path.isabs(a) and a.startswith(ROOT + os.sep) else a
                    for a in cmd)


CODE_FILES = ("train.py", "countdown.py", "passk_at_k.py", "simko.py", "rollout.py")
ANALYSIS_FILES = ("benchmarks/stats.py", "benchmarks/compare.py", "benchmarks/compare_real.py")


def code_fingerprint(files: tuple[str, ...] = CODE_FILES) -> dict:
    """sha1 (first 12 hex digits) of `files` (default: those whose code a run executes) and the git commit, to tie
    results to code."""
    import hashlib
    out = {}
    for name in files:
        with open(os.path.join(ROOT, name), "rb") as f:
            out[name] = hashlib.sha1(f.read()).hexdigest()[:12]
    try:
        out["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out["git_head"] = None
    return out


def provenance_line(results: dict) -> str:
    """Which commits the runs ran at (each run's code record) and which analysis code rendered the tables."""
    heads = sorted({(r.get("code") or {}).get("git_head") or "not recorded" for r in results["runs"]})
    hashes = {json.dumps({k: v for k, v in (r.get("code") or {}).items() if k != "git_head"}, sort_keys=True)
              for r in results["runs"]}
    same = " and the same hashes of the files they execute" if len(heads) > 1 and len(hashes) == 1 else ""
    ana = results.get("analysis") or {}
    files = ", ".join(f"{os.path.basename(f)} {ana[f]}" for f in ANALYSIS_FILES if f in ana)
    return (f"Code: the runs ran at commit {', '.join(heads)}{same} (each run's file hashes are in compare.json); the "
            f"analysis was rendered at commit {ana.get('git_head') or 'not recorded'} ({files}).")


def recover_timing(out: str, step: int) -> None:
    """A run in `out` that finished (its evaluation at `step` is written) but whose study process died before
    recording its time: study_timing.json from the files' modification times, so that the run is reused."""
    metrics, timing_path = os.path.join(out, "metrics.jsonl"), os.path.join(out, "study_timing.json")
    if _final_eval(metrics, step) is None or os.path.isfile(timing_path):
        return
    started, finished = os.path.getmtime(os.path.join(out, "config.json")), os.path.getmtime(metrics)
    with open(timing_path, "w") as f:
        json.dump({"wall_seconds": finished - started, "started": started, "finished": finished,
                   "load_at_start": None, "load_at_end": None, "code": code_fingerprint(),
                   "note": "timing from file modification times"}, f)


def _run_train(cmd: list[str], out: str, live: set | None = None) -> float:
    """Run one train.py process (one CPU thread) into `out`, from scratch; returns its wall time. `live`, if given,
    holds the process while it runs (so that a caller can stop it)."""
    if os.path.exists(out):
        shutil.rmtree(out)                  # an unfinished run: start it again (train.py refuses a used --out)
    os.makedirs(out)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    t = time.time()
    with open(os.path.join(out, "stdout.log"), "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if live is not None:
            live.add(proc)
        try:
            proc.wait()
        finally:
            if live is not None:
                live.discard(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}; see {out}/stdout.log")
    return time.time() - t


def _eval_record(ev: dict, n: int) -> dict:
    if "correct" not in ev:
        raise RuntimeError("train.py's eval line has no 'correct' per-problem counts (needs the current train.py)")
    # pass@k: the curve for k = 1..n (index k - 1), as train.py computed it; correct: per-problem counts
    return {"pass@k": [ev[f"pass@{k}"] for k in range(1, n + 1)], "correct": ev["correct"]}


DESIGN_KEYS = ("steps", "eval_samples", "eval_problems", "prompts_per_step", "group_size", "lr")


def saved_study(path: str, cfg: dict) -> dict:
    """The runs and warm starts of the results file at `path`, if it holds a study of the same design (the keys
    above), else empty. A saved run is reused in place of running it again only while its variant's warm start,
    rebuilt here, gives the same per-problem counts (see `main`): then seed s of a saved and of a new run are
    paired exactly as two new runs are."""
    if not os.path.isfile(path):
        return {"runs": {}, "warm_starts": {}}
    with open(path) as f:
        old = json.load(f)
    if any(old["config"].get(k) != cfg[k] for k in DESIGN_KEYS):
        design = ", ".join(f"{k}={old['config'].get(k)}" for k in DESIGN_KEYS)
        print(f"{path}: another design ({design}); not reusing its runs", flush=True)
        return {"runs": {}, "warm_starts": {}}
    return {"runs": {(r["config"], r["seed"]): r for r in old["runs"] if r["config"] in CONFIGS},
            "warm_starts": old["warm_starts"]}


def warm_start(variant: str, cfg: dict, args) -> dict:
    """The split-defining evaluation of a variant's warm start (built by train.py, or reused from its cache)."""
    out = os.path.join(args.runs, variant, "warm_start_split")
    metrics = os.path.join(out, "metrics.jsonl")
    if _final_eval(metrics, 0) is None:
        cmd = _train_cmd(out, variant, SPLIT_SEED, 0, cfg, args, [])
        print(f"warm start ({variant}): building / loading and evaluating with seed {SPLIT_SEED}", flush=True)
        _run_train(cmd, out)
    ev = _eval_record(_final_eval(metrics, 0), cfg["eval_samples"])
    split = split_easy_hard(ev["correct"], cfg["eval_samples"])
    return {"variant": variant, "seed": SPLIT_SEED, "correct": ev["correct"], "pass@k": ev["pass@k"],
            "split": split, "hard_rate": HARD_RATE}


def run_one(name: str, seed: int, cfg: dict, args, warm=None, saved=None) -> dict:
    """One (configuration, seed) run, reused when finished. `warm(variant)` is called first (builds the shared warm
    start and its split once, before the first run of that variant trains). `saved`: records of runs kept in the
    results file, {(configuration, seed): record}, used when the run's own directory has no finished run."""
    spec = CONFIGS[name]
    if warm is not None:
        warm(spec["variant"])
    out = os.path.join(args.runs, spec["variant"], f"{name.split(':')[-1]}-s{seed}")
    metrics = os.path.join(out, "metrics.jsonl")
    if saved and (name, seed) in saved and _final_eval(metrics, cfg["steps"]) is None:
        return saved[(name, seed)]
    flags = [f.format(three_quarters=cfg["steps"] * 3 // 4) for f in spec["flags"]]
    cmd = _train_cmd(out, spec["variant"], seed, cfg["steps"], cfg, args, flags)
    timing_path = os.path.join(out, "study_timing.json")
    recover_timing(out, cfg["steps"])
    if _final_eval(metrics, cfg["steps"]) is None:
        start, load, code = time.time(), os.getloadavg()[0], code_fingerprint()
        seconds = _run_train(cmd, out)
        with open(timing_path, "w") as f:
            json.dump({"wall_seconds": seconds, "started": start, "finished": time.time(),
                       "load_at_start": load, "load_at_end": os.getloadavg()[0], "code": code}, f)
        print(f"  {name:18s} seed {seed}: {seconds:5.0f} s (load {load:.1f})", flush=True)
    with open(timing_path) as f:
        timing = json.load(f)
    with open(metrics) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    n = cfg["eval_samples"]
    final = _eval_record(_final_eval(metrics, cfg["steps"]), n)
    first = _eval_record(_final_eval(metrics, 0), n)
    train = [r for r in rows if r["type"] == "train"]

    def series(key):
        return [r.get(key) for r in train] if any(key in r for r in train) else []
    trajectory = {"reward_mean": series("reward_mean"), "entropy": series("entropy"),
                  "rank1_prob": series("rank1_prob"),
                  "zero_variance_frac": series("zero_variance_frac")}
    return {"config": name, "variant": spec["variant"], "seed": seed, "cmd": shown_cmd(cmd[1:]), **timing,
            "final": final["pass@k"], "correct": final["correct"], "step0": first["pass@k"],
            "correct_step0": first["correct"], "trajectory": trajectory}


# ----------------------------------------------------------------------------------------------------------------
# Aggregation and report

def aggregate(results: dict) -> dict:
    """Means per configuration and subset, and every paired effect with its intervals."""
    cfg, n = results["config"], results["config"]["eval_samples"]
    ks = sorted({k for k in TABLE_KS if k <= n} | {n})
    by_config: dict[str, dict[int, dict]] = {}
    for r in results["runs"]:
        by_config.setdefault(r["config"], {})[r["seed"]] = r
    summary, effects = {}, []
    for name, runs in by_config.items():
        split = results["warm_starts"][CONFIGS[name]["variant"]]["split"]
        row = {"seeds": sorted(runs), "wall_seconds_mean": sum(r["wall_seconds"] for r in runs.values()) / len(runs)}
        for k in ks:
            for sub in SUBSETS:
                row[f"{sub}:pass@{k}"] = sum(subset_mean(per_problem_pass_at_k(r["correct"], n, k), split[sub])
                                             for r in runs.values()) / len(runs)
        for key in ("entropy", "rank1_prob"):
            tails = [tail_mean(r["trajectory"][key]) for r in runs.values()]
            row[key] = sum(tails) / len(tails) if tails and None not in tails else None
        summary[name] = row
    # the warm start row: the runs' own step-0 evaluations (one per seed; identical across configurations)
    warm_rows = {}
    for variant, ws in results["warm_starts"].items():
        step0 = {}      # one run per seed (the first configuration): step 0 is the same model and generator in all
        for r in sorted(results["runs"], key=lambda r: list(CONFIGS).index(r["config"])):
            if r["variant"] == variant:
                step0.setdefault(r["seed"], r)
        if not step0:
            continue
        row = {"seeds": sorted(step0)}
        for k in ks:
            for sub in SUBSETS:
                row[f"{sub}:pass@{k}"] = sum(subset_mean(per_problem_pass_at_k(r["correct_step0"], n, k),
                                                         ws["split"][sub]) for r in step0.values()) / len(step0)
        for key in ("entropy", "rank1_prob"):
            firsts = [r["trajectory"][key][0] for r in step0.values() if r["trajectory"][key]]
            row[key] = sum(firsts) / len(firsts) if firsts else None
        row["n_easy"], row["n_hard"] = len(ws["split"]["easy"]), len(ws["split"]["hard"])
        warm_rows[variant] = row
    pairs = [(name, spec["baseline"]) for name, spec in CONFIGS.items() if spec["baseline"]] + CONTRASTS
    for m, b in pairs:
        if m not in by_config or b not in by_config:
            continue
        split = results["warm_starts"][CONFIGS[m]["variant"]]["split"]
        for k in ks:
            for sub in SUBSETS:
                e = paired_effect(by_config[m], by_config[b], n, k, split[sub])
                effects.append({"config": m, "baseline": b, "metric": f"pass@{k}", "subset": sub, **e})
        for key in ("entropy", "rank1_prob"):
            e = scalar_effect({s: tail_mean(r["trajectory"][key]) for s, r in by_config[m].items()},
                              {s: tail_mean(r["trajectory"][key]) for s, r in by_config[b].items()})
            effects.append({"config": m, "baseline": b, "metric": key, "subset": "all", **e})
    return {"ks": ks, "summary": summary, "warm_start": warm_rows, "effects": effects}


def find_effect(agg: dict, config: str, baseline: str, metric: str, subset: str = "all"):
    for e in agg["effects"]:
        if (e["config"], e["baseline"], e["metric"], e["subset"]) == (config, baseline, metric, subset):
            return e if "ci" in e else None
    return None


# Each paper's one confirmatory claim, fixed before a study runs: (configuration, reference, metric, subset), "pass@n"
# for the largest k. The papers' headline: Pass@k Training and SimKO each raise large-k pass@k above GRPO's.
PRIMARY = {"Pass@k Training": ("passk_k4", "grpo", "pass@n", "all"),
           "SimKO": ("simko_a0.01", "grpo", "pass@n", "all")}


# Claims of the two papers, each as (paper, claim, [(configuration, baseline, metric, subset, direction[, margin])]):
# a test with a margin is a non-inferiority test ("keeps", "does not cost"), one without a superiority test. A claim
# with several tests is supported when all are, not supported when any is, inconclusive otherwise.
def claims(n: int) -> list[tuple[str, str, list[tuple]]]:
    big = f"pass@{n}"
    return [
        ("both", "GRPO raises pass@1 above the warm start", [("grpo", "@warm", "pass@1", "all", +1)]),
        ("both", f"GRPO lowers {big} below the warm start on the problems it rarely solved (collapse)",
         [("grpo", "@warm", big, "hard", -1)]),
        ("both", f"GRPO lowers {big} below the warm start over all problems",
         [("grpo", "@warm", big, "all", -1)]),
        ("Pass@k Training", f"Pass@k (k=8) raises {big} above the warm start on the hard problems (discovers)",
         [("passk_k8", "@warm", big, "hard", +1)]),
        ("Pass@k Training", f"Pass@k (k=4) raises {big} above the warm start on the hard problems (discovers)",
         [("passk_k4", "@warm", big, "hard", +1)]),
        ("Pass@k Training", "Pass@k (k=4) ends with higher token entropy than GRPO (diversity)",
         [("passk_k4", "grpo", "entropy", "all", +1)]),
        ("Pass@k Training", f"Pass@k (k=4) keeps/improves {big} vs GRPO, hard problems",
         [("passk_k4", "grpo", big, "hard", +1, MARGIN)]),
        ("Pass@k Training", f"Pass@k (k=8) keeps/improves {big} vs GRPO, hard problems",
         [("passk_k8", "grpo", big, "hard", +1, MARGIN)]),
        ("Pass@k Training", f"Pass@k (k=4) improves {big} vs GRPO, all problems",
         [("passk_k4", "grpo", big, "all", +1)]),
        ("Pass@k Training", "Pass@k (k=4) improves pass@1 on the hard problems (exploration)",
         [("passk_k4", "grpo", "pass@1", "hard", +1)]),
        ("Pass@k Training", "Pass@k (k=4) does not cost pass@1 overall",
         [("passk_k4", "grpo", "pass@1", "all", +1, MARGIN)]),
        ("Pass@k Training", "Pass@k -> GRPO transfer ends with pass@1 above GRPO's",
         [("passk_k4->grpo", "grpo", "pass@1", "all", +1)]),
        ("Pass@k Training", f"Pass@k -> GRPO transfer ends with more {big} than GRPO",
         [("passk_k4->grpo", "grpo", big, "all", +1)]),
        ("Pass@k Training", f"larger k (8 vs 4) gives more {big}",
         [("passk_k8", "passk_k4", big, "all", +1)]),
        ("Pass@k Training", "Pass@k also helps with the papers' several optimiser steps per rollout (4 mini-batches), "
         f"{big} hard",
         [("passk_k4_mb4", "grpo_mb4", big, "hard", +1)]),
        ("Pass@k Training", f"Pass@k keeps/improves {big} vs GRPO on the full warm start (its warm-up saw every answer)",
         [("full:passk_k4", "full:grpo", big, "all", +1, MARGIN)]),
        ("SimKO", f"SimKO (paper defaults, alpha 0.01) improves {big} vs GRPO",
         [("simko_a0.01", "grpo", big, "all", +1)]),
        ("SimKO", f"SimKO (alpha 0.2) improves {big} vs GRPO",
         [("simko_a0.2", "grpo", big, "all", +1)]),
        ("SimKO", "SimKO (alpha 0.01) lowers the rank-1 probability vs GRPO",
         [("simko_a0.01", "grpo", "rank1_prob", "all", -1)]),
        ("SimKO", "SimKO (alpha 0.2) lowers the rank-1 probability vs GRPO",
         [("simko_a0.2", "grpo", "rank1_prob", "all", -1)]),
        ("SimKO", "SimKO (alpha 0.01) ends with higher entropy than GRPO",
         [("simko_a0.01", "grpo", "entropy", "all", +1)]),
        ("SimKO", "SimKO (alpha 0.01) does not cost pass@1",
         [("simko_a0.01", "grpo", "pass@1", "all", +1, MARGIN)]),
        ("SimKO", f"a stronger rank-1 penalty (lambda 2) improves {big} vs GRPO",
         [("simko_a0.01_lam2", "grpo", big, "all", +1)]),
        ("SimKO (Fig. 3)", "GRPO concentrates: its rank-1 probability rises above the warm start's",
         [("grpo", "@warm", "rank1_prob", "all", +1)]),
        ("SimKO (Fig. 3)", "PSR concentrates: its rank-1 probability rises above the warm start's",
         [("psr", "@warm", "rank1_prob", "all", +1)]),
        ("SimKO (Fig. 3)", "NSR concentrates less than GRPO (lower rank-1 probability)",
         [("nsr", "grpo", "rank1_prob", "all", -1)]),
        ("SimKO (Fig. 3)", "NSR concentrates less than PSR (lower rank-1 probability)",
         [("nsr", "psr", "rank1_prob", "all", -1)]),
        ("SimKO (Fig. 3)", f"NSR keeps/improves {big} vs GRPO",
         [("nsr", "grpo", big, "all", +1, MARGIN)]),
        ("PKPO", f"PKPO (k=4) keeps/improves {big} vs GRPO, hard problems",
         [("pkpo_k4", "grpo", big, "hard", +1, MARGIN)]),
        ("PKPO", "PKPO (k=4) does not cost pass@1 vs GRPO",
         [("pkpo_k4", "grpo", "pass@1", "all", +1, MARGIN)]),
        ("both", f"Pass@k + SimKO (train.py's default method) keeps/improves {big} vs GRPO, hard problems",
         [("passk_k4+simko", "grpo", big, "hard", +1, MARGIN)]),
        ("both", f"adding SimKO to Pass@k (k=4) improves {big}",
         [("passk_k4+simko", "passk_k4", big, "all", +1)]),
    ]


def warm_effect(results: dict, config: str, metric: str, subset: str) -> dict | None:
    """Paired effect of `config`'s final evaluation over its own step-0 evaluation (the warm start), per seed."""
    runs = {r["seed"]: r for r in results["runs"] if r["config"] == config}
    if not runs:
        return None
    if metric in ("entropy", "rank1_prob"):     # the last steps' mean against the first step's rollout
        series = {s: r["trajectory"][metric] for s, r in runs.items() if r["trajectory"][metric]}
        return scalar_effect({s: tail_mean(v) for s, v in series.items()}, {s: v[0] for s, v in series.items()})
    n = results["config"]["eval_samples"]
    split = results["warm_starts"][CONFIGS[config]["variant"]]["split"]
    k = int(metric.split("@")[1])
    after = {s: {"correct": r["correct"]} for s, r in runs.items()}
    before = {s: {"correct": r["correct_step0"]} for s, r in runs.items()}
    return paired_effect(after, before, n, k, split[subset])


def evaluate_claims(results: dict, agg: dict) -> list[dict]:
    def lookup(config, baseline, metric, subset):
        return (warm_effect(results, config, metric, subset) if baseline == "@warm"
                else find_effect(agg, config, baseline, metric, subset))
    return check_claims(claims(results["config"]["eval_samples"]), lookup, PRIMARY, results["config"]["eval_samples"])


def report(results: dict) -> str:
    cfg, agg = results["config"], results["aggregate"]
    n, ks = cfg["eval_samples"], agg["ks"]
    big = max(ks)
    lines = [f"# The study: GRPO vs Pass@k Training vs SimKO (`benchmarks/compare.py`)", "",
             f"{cfg['steps']} RL steps of {cfg['prompts_per_step']} prompts x {cfg['group_size']} samples, lr "
             f"{cfg['lr']}, seeds {', '.join(map(str, range(cfg['seeds'])))} per configuration (paired: seed s of "
             f"every configuration draws the same prompts and evaluation generator). Held-out pass@k: unbiased, from "
             f"n = {n} samples on each of {cfg['eval_problems']} problems, at step 0 and step {cfg['steps']}.", ""]
    for variant, ws in results["warm_starts"].items():
        wrow = agg["warm_start"].get(variant)
        names = [c for c in CONFIGS if CONFIGS[c]["variant"] == variant and c in agg["summary"]]
        if not names:
            continue
        lines += [f"## Warm start `{variant}`", "",
                  f"Easy / hard: the warm start's success rate in a separate evaluation (seed {ws['seed']}, n = {n}) "
                  f"is >= / < {ws['hard_rate']}: {len(ws['split']['easy'])} easy and {len(ws['split']['hard'])} hard "
                  f"problems. Means over seeds; entropy and rank-1 probability: mean over the last {TAIL_STEPS} "
                  f"steps (the warm start's: the first step's rollout).", "",
                  "| configuration | seeds | " + " | ".join(f"{s} pass@{k}" for s in SUBSETS for k in ks)
                  + " | entropy | rank-1 prob | min/run |",
                  "|---|---:|" + "---:|" * (len(SUBSETS) * len(ks) + 3)]

        def fmt(v):
            return "-" if v is None else f"{v:.3f}"
        if wrow:
            lines.append(f"| warm start (step 0) | {len(wrow['seeds'])} | "
                         + " | ".join(fmt(wrow[f'{s}:pass@{k}']) for s in SUBSETS for k in ks)
                         + f" | {fmt(wrow['entropy'])} | {fmt(wrow['rank1_prob'])} | - |")
        for name in names:
            row = agg["summary"][name]
            lines.append(f"| {name} | {len(row['seeds'])} | "
                         + " | ".join(fmt(row[f'{s}:pass@{k}']) for s in SUBSETS for k in ks)
                         + f" | {fmt(row['entropy'])} | {fmt(row['rank1_prob'])} | "
                         f"{row['wall_seconds_mean'] / 60:.1f} |")
        pairs = [(m, CONFIGS[m]["baseline"]) for m in names if CONFIGS[m]["baseline"]] + \
                [(m, b) for m, b in CONTRASTS if m in names and b in agg["summary"]]
        head = ["| configuration | reference | " + " | ".join(f"{s} pass@{k}" for s in SUBSETS for k in ks)
                + " | entropy | rank-1 prob |", "|---|---|" + "---|" * (len(SUBSETS) * len(ks) + 2)]
        lines += ["", EFFECTS_NOTE, ""]
        for cell in (fmt_ci, fmt_secondary):
            lines += head
            for m, b in pairs:
                cells = [cell(find_effect(agg, m, b, f"pass@{k}", s)) for s in SUBSETS for k in ks]
                cells += [cell(find_effect(agg, m, b, key)) for key in ("entropy", "rank1_prob")]
                lines.append(f"| {m} | {b} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += claims_markdown(results["claims"], lambda b: "its own warm start" if b == "@warm" else b)
    lines += ["", f"Runs: {len(results['runs'])}; study wall time {results['wall_seconds'] / 60:.1f} min "
                  f"({cfg['jobs']} runs at a time, one CPU thread each; first run start to last run end).",
              "", provenance_line(results), ""]
    return "\n".join(lines)


def plot(results: dict, out_dir: str) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not installed: skipping the plots (pip install matplotlib)")
        return []
    n, agg, written = results["config"]["eval_samples"], results["aggregate"], []
    ks = list(range(1, n + 1))
    headroom = [c for c in CONFIGS if CONFIGS[c]["variant"] == "headroom" and c in agg["summary"]]
    if "headroom" in results["warm_starts"] and headroom:
        split = results["warm_starts"]["headroom"]["split"]
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), sharey=True)
        runs = results["runs"]
        for ax, sub in zip(axes, SUBSETS):
            step0 = {r["seed"]: r["correct_step0"] for r in runs if r["variant"] == "headroom"}

            def curve(counts_list):
                return [sum(subset_mean(per_problem_pass_at_k(c, n, k), split[sub]) for c in counts_list)
                        / len(counts_list) for k in ks]
            ax.plot(ks, curve(list(step0.values())), "k--", label="warm start")
            for name in headroom:
                ax.plot(ks, curve([r["correct"] for r in runs if r["config"] == name]), label=name)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("k")
            ax.set_title(f"{sub} ({len(split[sub])} problems)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("held-out pass@k, mean over seeds")
        axes[-1].legend(fontsize=7)
        path = os.path.join(out_dir, "passk_curves.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        written.append(path)
        plt.close(fig)
    for key, label, fname in (("entropy", "mean token entropy of the rollout (nats)", "entropy.png"),
                              ("rank1_prob", "rank-1 candidate probability", "rank1_prob.png")):
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for name in headroom:
            mine = [r["trajectory"][key] for r in results["runs"] if r["config"] == name and r["trajectory"][key]]
            if not mine:
                continue
            steps = min(map(len, mine))
            curve = []
            for i in range(steps):
                vals = [m[i] for m in mine if m[i] is not None]
                curve.append(sum(vals) / len(vals) if vals else float("nan"))
            ax.plot(range(1, steps + 1), curve, label=name, lw=1)
        ax.set_xlabel("RL step")
        ax.set_ylabel(label)
        ax.set_title(f"{label}, mean over seeds (headroom warm start)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = os.path.join(out_dir, fname)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        written.append(path)
        plt.close(fig)
    # the effects with their intervals
    big = max(agg["ks"])
    panels = [(f"pass@1", "all"), (f"pass@{big}", "all"), (f"pass@1", "hard"), (f"pass@{big}", "hard")]
    pairs = [(m, CONFIGS[m]["baseline"]) for m in CONFIGS if CONFIGS[m]["baseline"] and m in agg["summary"]] + \
            [(m, b) for m, b in CONTRASTS if m in agg["summary"] and b in agg["summary"]]
    if pairs:
        fig, axes = plt.subplots(1, len(panels), figsize=(18, 0.45 * len(pairs) + 1.5), sharey=True)
        for ax, (metric, sub) in zip(axes, panels):
            for y, (m, b) in enumerate(pairs):
                e = find_effect(agg, m, b, metric, sub)
                if e and None not in e["ci"]:
                    ax.errorbar([e["mean"]], [y], xerr=[[e["mean"] - e["ci"][0]], [e["ci"][1] - e["mean"]]],
                                fmt="o", color="C0" if e["ci"][0] > 0 else "C3" if e["ci"][1] < 0 else "C7",
                                capsize=3)
            ax.axvline(0, color="k", lw=0.8)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
            ax.set_title(f"{metric}, {sub}: difference, 95 % t-interval over seeds", fontsize=9)
            ax.grid(alpha=0.3, axis="x")
        axes[0].set_yticks(range(len(pairs)))
        axes[0].set_yticklabels([f"{m} - {b}" for m, b in pairs], fontsize=8)
        axes[0].invert_yaxis()
        path = os.path.join(out_dir, "effects.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        written.append(path)
        plt.close(fig)
    return written


# ----------------------------------------------------------------------------------------------------------------
# main

def finish(results: dict, out_dir: str, suffix: str, plots: bool) -> None:
    results["analysis"] = code_fingerprint(ANALYSIS_FILES)
    results["aggregate"] = aggregate(results)
    results["claims"] = evaluate_claims(results, results["aggregate"])
    starts = [r["started"] for r in results["runs"]]
    ends = [r["finished"] for r in results["runs"]]
    results["wall_seconds"] = (max(ends) - min(starts)) if starts else 0.0
    tmp = os.path.join(out_dir, f"compare{suffix}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, f"compare{suffix}.json"))
    with open(os.path.join(out_dir, f"compare{suffix}.md"), "w") as f:
        f.write(report(results))
    if plots:
        for path in plot(results, out_dir):
            print(f"wrote {path}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"< 5 minutes: {' and '.join(QUICK_CONFIGS)}, {QUICK['seeds']} seeds, {QUICK['steps']} steps")
    p.add_argument("--out", default=os.path.join(ROOT, "results"), help="where results are written")
    p.add_argument("--runs", default=None, help="run directories (default: runs/compare[-quick] under the repo)")
    p.add_argument("--warmup-cache", default=os.path.join(ROOT, "runs", "warmup"))
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one CPU thread each)")
    p.add_argument("--configs", nargs="*", default=None, choices=list(CONFIGS),
                   help="configurations to run (default: all; --quick: " + " ".join(QUICK_CONFIGS) + ")")
    for key, value in FULL.items():
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                       help=f"default {value} (quick: {QUICK[key]})")
    p.add_argument("--lr", type=float, default=1e-4, help="RL learning rate of every run (train.py's default)")
    p.add_argument("--no-reuse", action="store_true",
                   help="run every configuration again instead of reusing the finished runs saved in the results "
                        "file (reused only with the same design and the same rebuilt warm start)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the tables and plots from the saved compare.json, without running anything")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    cfg = dict(QUICK if args.quick else FULL)
    cfg.update({k: getattr(args, k) for k in FULL if getattr(args, k) is not None})
    for key, low in (("steps", 1), ("seeds", 1), ("eval_samples", 1), ("eval_problems", 1),
                     ("prompts_per_step", 1), ("group_size", 2)):
        if cfg[key] < low:
            p.error(f"--{key.replace('_', '-')} must be >= {low}, got {cfg[key]}")
    cfg.update(jobs=args.jobs, lr=args.lr)
    suffix = "-quick" if args.quick else ""
    args.runs = args.runs or os.path.join(ROOT, "runs", "compare" + suffix)
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, f"compare{suffix}.json")
    if args.report_only:
        with open(json_path) as f:
            results = json.load(f)
        finish(results, args.out, suffix, plots=not suffix)
        print(open(os.path.join(args.out, f"compare{suffix}.md")).read())
        return

    names = args.configs or (QUICK_CONFIGS if args.quick else list(CONFIGS))
    # a configuration's baseline runs too (the effects are paired differences)
    names = sorted(set(names) | {CONFIGS[m]["baseline"] for m in names if CONFIGS[m]["baseline"]},
                   key=list(CONFIGS).index)
    saved = saved_study(json_path, cfg) if not (args.quick or args.no_reuse) else {"runs": {}, "warm_starts": {}}
    # the saved runs of configurations not run now stay in the results, with their warm start
    kept = sorted({m for m, _ in saved["runs"]} - set(names), key=list(CONFIGS).index)
    results = {"config": {**cfg, "configs": kept + names, "split_seed": SPLIT_SEED, "hard_rate": HARD_RATE,
                          "bootstrap_draws": BOOTSTRAP_DRAWS, "bootstrap_seed": BOOTSTRAP_SEED,
                          "flags": {m: CONFIGS[m]["flags"] for m in kept + names}},
               "warm_starts": {v: ws for v, ws in saved["warm_starts"].items()
                               if any(CONFIGS[m]["variant"] == v for m in kept)},
               "runs": [r for (m, _), r in saved["runs"].items() if m in kept]}
    results["warm_starts"] = {v: ws for v, ws in results["warm_starts"].items()
                              if not any(CONFIGS[m]["variant"] == v for m in names)}   # rebuilt below
    warm_lock = threading.Lock()

    def warm(variant):                  # once per variant, when its first run is about to start
        with warm_lock:
            if variant not in results["warm_starts"]:
                ws = warm_start(variant, cfg, args)
                old = saved["warm_starts"].get(variant)
                if old is not None and old["correct"] != ws["correct"]:
                    # another machine's kernels, or other code: saved runs of this variant cannot be paired
                    print(f"  {variant}: the warm start differs from the saved one; saved runs of it are not "
                          f"reused, and kept configurations of it are dropped", flush=True)
                    for key in [key for key in saved["runs"] if CONFIGS[key[0]]["variant"] == variant]:
                        del saved["runs"][key]
                    results["runs"][:] = [r for r in results["runs"] if r["variant"] != variant]
                results["warm_starts"][variant] = ws
                print(f"  {variant}: warm start pass@1 {ws['pass@k'][0]:.3f}  pass@{cfg['eval_samples']} "
                      f"{ws['pass@k'][-1]:.3f}; {len(ws['split']['easy'])} easy / "
                      f"{len(ws['split']['hard'])} hard", flush=True)
    # lower tiers first and every seed of a configuration before the next one, so that an interrupted study has
    # as many complete configurations (all seeds, paired with a complete baseline) as possible
    jobs = sorted(((name, seed) for name in names for seed in range(cfg["seeds"])),
                  key=lambda j: (CONFIGS[j[0]]["tier"], list(CONFIGS).index(j[0]), j[1]))
    print(f"{len(jobs)} runs, {args.jobs} at a time; runs in {args.runs}", flush=True)
    lock, failed = threading.Lock(), []
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_one, name, seed, cfg, args, warm, saved["runs"]): (name, seed)
                   for name, seed in jobs}
        for fut in cf.as_completed(futures):
            name, seed = futures[fut]
            try:
                run = fut.result()
            except Exception as e:          # one failed run must not lose the others
                failed.append(f"{name} seed {seed}: {e}")
                print(f"  FAILED {name} seed {seed}: {e}", flush=True)
                continue
            with lock, warm_lock:
                results["runs"].append(run)
                results["runs"].sort(key=lambda r: (list(CONFIGS).index(r["config"]), r["seed"]))
                finish(results, args.out, suffix, plots=False)
    results["failed"] = failed
    finish(results, args.out, suffix, plots=not suffix)
    print("\n" + open(os.path.join(args.out, f"compare{suffix}.md")).read())
    if failed:
        sys.exit(f"{len(failed)} run(s) failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
