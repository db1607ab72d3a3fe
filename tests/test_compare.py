"""benchmarks/compare.py: the statistics (exact values on hand-made inputs), the aggregation and the resume logic.

No training here: the study's runs are replaced by hand-made metrics files and records."""
import importlib.util
import json
import os
import subprocess

import pytest

_spec = importlib.util.spec_from_file_location(
    "compare", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "compare.py"))
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def test_per_problem_pass_at_k_is_the_unbiased_estimator():
    # c correct of n = 4: pass@1 = c / 4; pass@2 = 1 - C(4-c, 2) / C(4, 2)
    assert compare.per_problem_pass_at_k([0, 1, 2, 4], 4, 1) == [0.0, 0.25, 0.5, 1.0]
    assert compare.per_problem_pass_at_k([0, 1, 2, 4], 4, 2) == [0.0, 0.5, 1 - 1 / 6, 1.0]
    assert compare.per_problem_pass_at_k([0, 1, 63], 64, 64) == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"k must be in \[1, n=4\]"):
        compare.per_problem_pass_at_k([1], 4, 5)


def test_split_is_by_the_warm_start_success_rate():
    # 6 / 64 = 0.094 < 0.1 is hard, 7 / 64 = 0.109 is easy
    assert compare.split_easy_hard([0, 6, 7, 64, 3], 64) == {"all": [0, 1, 2, 3, 4], "easy": [2, 3],
                                                              "hard": [0, 1, 4]}


def test_quantile_interpolates_like_numpy():
    assert compare.quantile([0.0, 1.0, 2.0, 3.0], 0.5) == 1.5
    assert compare.quantile([0.0, 1.0, 2.0, 3.0], 0.0) == 0.0 and compare.quantile([0.0, 1.0, 2.0, 3.0], 1.0) == 3.0
    assert compare.quantile([5.0], 0.975) == 5.0


def test_bootstrap_over_seeds_enumerates_every_resample():
    # two seeds with per-seed differences 0 and 1: the 4 ordered resamples have means 0, .5, .5, 1
    ci = compare.bootstrap_ci([[0.0], [1.0]], resample_problems=False)
    assert ci["exact"] and ci["mean"] == 0.5
    assert ci["lo"] == pytest.approx(0.5 * 0.075) and ci["hi"] == pytest.approx(0.5 + 0.5 * 0.925)
    # one seed, two problems: the same distribution over problems, scaled by 2
    ci = compare.bootstrap_ci([[0.0, 2.0]], resample_problems=True)
    assert ci["exact"] and (ci["lo"], ci["hi"]) == (pytest.approx(0.075), pytest.approx(1.925))


def test_bootstrap_over_seeds_and_problems_exact_two_by_two():
    # D = [[.5, 0], [0, .5]]: of the 16 (seed resample, problem resample) pairs, 2 give 0, 12 give .25, 2 give .5
    ci = compare.bootstrap_ci([[0.5, 0.0], [0.0, 0.5]])
    assert ci["exact"] and ci["mean"] == 0.25 and (ci["lo"], ci["hi"]) == (0.0, 0.5)
    # resampling only the seeds: both seeds have mean .25, so the interval is a point
    ci = compare.bootstrap_ci([[0.25], [0.25]], resample_problems=False)
    assert (ci["lo"], ci["hi"]) == (0.25, 0.25)
    with pytest.raises(ValueError, match="matrix"):
        compare.bootstrap_ci([[1.0, 2.0], [3.0]])


def test_bootstrap_monte_carlo_is_reproducible_and_has_the_normal_width():
    import random
    rng = random.Random(0)
    row = [rng.gauss(0.0, 1.0) for _ in range(400)]
    a = compare.bootstrap_ci([row], draws=4000, seed=3)
    b = compare.bootstrap_ci([row], draws=4000, seed=3)
    assert not a["exact"] and a == b
    mean = sum(row) / len(row)
    sd = (sum((x - mean) ** 2 for x in row) / len(row)) ** 0.5
    # a mean of 400 values: the 95 % interval is about mean +- 1.96 sd / 20
    assert a["lo"] < mean < a["hi"]
    assert (a["hi"] - a["lo"]) == pytest.approx(2 * 1.96 * sd / 20, rel=0.1)
    # constant differences: no spread at all, whatever is resampled
    c = compare.bootstrap_ci([[0.125] * 300 for _ in range(5)], draws=500)
    assert (c["lo"], c["hi"], c["mean"]) == (0.125, 0.125, 0.125)


def test_verdict_reads_the_interval_not_the_mean():
    v = compare.verdict
    assert v({"lo": 0.001, "hi": 0.05}, +1) == "supported"
    assert v({"lo": -0.05, "hi": -0.001}, +1) == "not supported"           # the opposite, clearly
    assert v({"lo": -0.005, "hi": 0.008}, +1) == "not supported"           # within the negligible band
    assert v({"lo": -0.02, "hi": 0.05}, +1) == "inconclusive"
    assert v({"lo": -0.05, "hi": -0.02}, -1) == "supported"                # a claimed decrease
    assert v({"lo": 0.02, "hi": 0.05}, -1) == "not supported"


def _results(n=4):
    """Two configurations x two seeds on two problems (problem 0 hard, problem 1 easy), by hand."""
    def run(config, seed, correct, step0, entropy):
        return {"config": config, "variant": "headroom", "seed": seed, "wall_seconds": 60.0, "started": 100.0 * seed,
                "finished": 100.0 * seed + 60, "correct": correct, "correct_step0": step0,
                "trajectory": {"entropy": [entropy] * 3, "rank1_prob": [0.5, 0.6, 0.7], "reward_mean": [0.1] * 3,
                               "zero_variance_frac": [0.5] * 3}}
    runs = [run("grpo", 0, [2, 0], [0, 3], 0.3), run("grpo", 1, [2, 0], [0, 3], 0.4),
            run("passk_k4", 0, [4, 0], [0, 3], 0.5), run("passk_k4", 1, [2, 2], [0, 3], 0.8)]
    ws = {"variant": "headroom", "seed": compare.SPLIT_SEED, "correct": [0, 3], "pass@k": [0.375] * n,
          "split": compare.split_easy_hard([0, 3], n), "hard_rate": compare.HARD_RATE}
    return {"config": dict(compare.FULL, steps=3, seeds=2, eval_samples=n, eval_problems=2, jobs=2, lr=1e-4),
            "warm_starts": {"headroom": ws}, "runs": runs}


def test_aggregate_means_and_paired_effects_by_hand():
    results = _results()
    agg = compare.aggregate(results)
    assert agg["ks"] == [1, 4]
    s = agg["summary"]
    # pass@1 = c / 4: grpo [.5, 0] both seeds; passk [1, 0] and [.5, .5]
    assert s["grpo"]["all:pass@1"] == 0.25 and s["grpo"]["hard:pass@1"] == 0.5 and s["grpo"]["easy:pass@1"] == 0
    assert s["passk_k4"]["all:pass@1"] == 0.5 and s["passk_k4"]["hard:pass@1"] == 0.75
    assert s["passk_k4"]["easy:pass@4"] == 0.5 and s["passk_k4"]["entropy"] == pytest.approx(0.65)
    assert s["grpo"]["rank1_prob"] == pytest.approx(0.6)
    w = agg["warm_start"]["headroom"]
    assert (w["n_easy"], w["n_hard"], w["all:pass@1"], w["entropy"]) == (1, 1, 0.375, pytest.approx(0.35))
    e = compare.find_effect(agg, "passk_k4", "grpo", "pass@1", "all")
    # D = [[.5, 0], [0, .5]] (seed x problem): the exact two-by-two case
    assert (e["mean"], e["ci"], e["ci_seeds_only"], e["seeds"]) == (0.25, [0.0, 0.5], [0.25, 0.25], [0, 1])
    # hard: one problem, per-seed differences .5 and 0 -> resample means 0, .25, .25, .5
    hard = compare.find_effect(agg, "passk_k4", "grpo", "pass@1", "hard")
    assert hard["mean"] == 0.25 and hard["ci"] == [pytest.approx(0.25 * 0.075), pytest.approx(0.25 + 0.25 * 0.925)]
    # entropy over the last steps: differences .2 and .4 per seed -> resample means .2, .3, .3, .4
    ent = compare.find_effect(agg, "passk_k4", "grpo", "entropy")
    assert ent["mean"] == pytest.approx(0.3) and ent["ci"] == [pytest.approx(0.2 + 0.1 * 0.075),
                                                                pytest.approx(0.3 + 0.1 * 0.925)]


def test_claims_and_report_from_hand_made_results():
    results = _results()
    results["aggregate"] = compare.aggregate(results)
    results["claims"] = compare.evaluate_claims(results, results["aggregate"])
    results["wall_seconds"] = 160.0
    by_text = {c["claim"]: c for c in results["claims"]}
    passk_hard = by_text["Pass@k (k=4) improves pass@1 on the hard problems (exploration)"]
    assert passk_hard["verdict"] == "supported"                 # CI [.019, .481] excludes 0
    assert by_text["Pass@k (k=4) does not cost pass@1 overall"]["verdict"] == "inconclusive"   # CI [0, .5]
    assert by_text["SimKO (alpha 0.2) improves pass@4 vs GRPO"]["verdict"] == "not run"
    md = compare.report(results)
    assert "| passk_k4 | grpo | +0.250 [+0.000, +0.500] |" in md
    assert "**supported**" in md and "not run" in md


def test_finished_runs_are_reused_without_training(tmp_path, monkeypatch):
    cfg = dict(compare.QUICK, steps=3, eval_samples=2, eval_problems=2, jobs=1, lr=1e-4)

    class Args:
        runs, warmup_cache, lr = str(tmp_path), str(tmp_path / "wc"), 1e-4
    out = tmp_path / "headroom" / "grpo-s0"
    out.mkdir(parents=True)
    lines = [{"type": "eval", "step": 0, "pass@1": 0.25, "pass@2": 0.5, "correct": [1, 0]},
             {"type": "train", "step": 1, "entropy": 0.5, "rank1_prob": 0.7, "reward_mean": 0.2},
             {"type": "eval", "step": 3, "pass@1": 0.5, "pass@2": 0.5, "correct": [2, 0]}]
    (out / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (out / "study_timing.json").write_text(json.dumps({"wall_seconds": 12.0, "started": 1.0, "finished": 13.0,
                                                       "load_at_start": 1.0, "load_at_end": 1.0}))

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(subprocess, "run", no_training)
    run = compare.run_one("grpo", 0, cfg, Args)
    assert run["correct"] == [2, 0] and run["correct_step0"] == [1, 0] and run["final"] == [0.5, 0.5]
    assert run["wall_seconds"] == 12.0 and run["trajectory"]["rank1_prob"] == [0.7]
    # finished, but the study process died before writing its timing: the time comes from the files, no training
    (out / "study_timing.json").unlink()
    (out / "config.json").write_text("{}")
    os.utime(out / "config.json", (1000.0, 1000.0))
    os.utime(out / "metrics.jsonl", (1234.0, 1234.0))
    monkeypatch.setattr(compare, "code_fingerprint", lambda: {})
    run = compare.run_one("grpo", 0, cfg, Args)
    assert (run["wall_seconds"], run["started"], run["correct"]) == (234.0, 1000.0, [2, 0])
    # an unfinished run (no final evaluation) is started again: here the stub refuses, so it raises
    (out / "metrics.jsonl").write_text(json.dumps(lines[0]) + "\n")
    with pytest.raises(AssertionError, match="trained again"):
        compare.run_one("grpo", 0, cfg, Args)


def test_saved_study_is_reused_only_with_the_same_design(tmp_path):
    cfg = dict(steps=200, eval_samples=64, eval_problems=200, prompts_per_step=8, group_size=16, lr=1e-4)
    run = {"config": "grpo", "seed": 0, "variant": "headroom"}
    gone = {"config": "no_such_configuration", "seed": 0, "variant": "headroom"}
    path = tmp_path / "compare.json"
    path.write_text(json.dumps({"config": cfg, "runs": [run, gone], "warm_starts": {"headroom": {"correct": [1]}}}))
    saved = compare.saved_study(str(path), cfg)
    assert saved["runs"] == {("grpo", 0): run} and saved["warm_starts"] == {"headroom": {"correct": [1]}}
    assert compare.saved_study(str(path), {**cfg, "steps": 100}) == {"runs": {}, "warm_starts": {}}
    assert compare.saved_study(str(tmp_path / "missing.json"), cfg) == {"runs": {}, "warm_starts": {}}


def test_a_saved_run_stands_in_for_a_missing_run_directory(tmp_path):
    class Args:
        runs = str(tmp_path / "runs")
    record = {"config": "grpo", "seed": 3, "final": [0.5]}
    cfg = dict(steps=2, eval_samples=4)
    called = []
    out = compare.run_one("grpo", 3, cfg, Args, warm=called.append, saved={("grpo", 3): record})
    assert out is record and called == ["headroom"]
