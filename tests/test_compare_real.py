"""benchmarks/compare_real.py: its effects, claims and report on hand-made run records (no model is loaded)."""
import importlib.util
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
_spec = importlib.util.spec_from_file_location(
    "compare_real", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "compare_real.py"))
compare_real = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_real)


def _probe(step, rank1, high_rank1, entropy):
    stats = lambda r1, h: {"tokens": 10, "entropy": h, "rank1_prob": r1, "rank2_prob": (1 - r1) / 2,
                           "rank3_prob": 0.0, "rank4_prob": 0.0, "rank5_prob": 0.0}
    return {"type": "probe", "step": step, "all": stats(rank1, entropy),
            "high_entropy": {**stats(high_rank1, 2 * entropy), "threshold": entropy}}


def _run(config, seed, correct, rank1, warm_rank1=0.8):
    return {"config": config, "seed": seed, "correct": correct, "final": [0.0] * 4, "wall_seconds": 60.0,
            "probes": [_probe(0, warm_rank1, warm_rank1 - 0.2, 0.5), _probe(10, rank1, rank1 - 0.2, 0.3)],
            "trajectory": {}}


def _results():
    # 3 problems x n = 4 samples; the warm start solves 1, 0, 4 of 4 (problem 1 is hard); seeds 0 and 1
    cfg = dict(compare_real.DESIGN, seeds=2, eval_samples=4, eval_problems=3, jobs=2, task=compare_real.TASK)
    runs = [_run("grpo", 0, [2, 0, 4], 0.9), _run("grpo", 1, [3, 0, 4], 0.912),
            _run("simko", 0, [2, 1, 4], 0.85), _run("simko", 1, [2, 2, 4], 0.86)]
    results = {"config": cfg, "runs": runs, "split": compare_real.split_easy_hard([1, 0, 4], 4),
               "warm_ref": {"correct": [1, 0, 4], "pass@k": [0.0] * 4}, "wall_seconds": 600.0}
    results["effects"] = compare_real.effects(results)
    results["claims"] = compare_real.evaluate_claims(results)
    results["summary"] = compare_real.summary(results)
    return results


def test_effects_are_paired_differences_of_the_final_evaluation_and_of_the_last_probe():
    r = _results()
    e = compare_real.find(r["effects"], "simko", "grpo", "pass@1", "all")
    # per seed, per problem: seed 0 (0, 1/4, 0), seed 1 (-1/4, 2/4, 0): mean (1/4 + 1/4) / 6
    assert e["mean"] == pytest.approx(1 / 12) and e["seeds"] == [0, 1]
    hard = compare_real.find(r["effects"], "simko", "grpo", "pass@4", "hard")
    assert hard["mean"] == pytest.approx(1.0)          # problem 1: 0 of 4 under GRPO, >= 1 of 4 under SimKO
    assert hard["ci"] == [pytest.approx(1.0), pytest.approx(1.0)]
    rank1 = compare_real.find(r["effects"], "simko", "grpo", "rank1_prob", "all")
    # per seed -0.05 and -0.052: se 0.001, t(0.975, 1) = 12.706205
    assert rank1["mean"] == pytest.approx(-0.051) and rank1["per_seed"] == [pytest.approx(-0.05), pytest.approx(-0.052)]
    assert rank1["ci"] == [pytest.approx(-0.051 - 0.012706205), pytest.approx(-0.051 + 0.012706205)]
    high = compare_real.find(r["effects"], "simko", "grpo", "rank1_prob", "high_entropy")
    assert high["mean"] == pytest.approx(rank1["mean"])
    # against the warm start: its one reference evaluation, and each run's own step-0 probe
    # against the warm start: one evaluation, the reference of every seed; the pairing and the interval are by seed
    warm = compare_real.find(r["effects"], "grpo", "@warm", "pass@1", "all")
    assert warm["per_seed"] == [pytest.approx(1 / 12), pytest.approx(2 / 12)] and warm["mean"] == pytest.approx(1 / 8)
    assert warm["ci"] == [pytest.approx(1 / 8 - 12.706205 / 24, abs=1e-6), pytest.approx(1 / 8 + 12.706205 / 24,
                                                                                          abs=1e-6)]
    assert compare_real.find(r["effects"], "grpo", "@warm", "rank1_prob", "all")["mean"] == pytest.approx(0.106)


def test_claims_use_the_verdict_rules_and_missing_methods_are_not_run():
    claims = _results()["claims"]
    by_claim = {c["claim"]: c for c in claims}
    # 0.106 +- 12.706 * 0.006 = [0.030, 0.182]; -0.051 +- 0.0127: both exclude 0
    assert by_claim["GRPO concentrates: its rank-1 probability rises above the warm start's"]["verdict"] == "supported"
    assert by_claim["SimKO lowers the rank-1 probability vs GRPO, all tokens"]["verdict"] == "supported"
    cost = by_claim["Pass@k (k=4) does not cost pass@1 vs GRPO"]
    assert cost["verdict"] == "not run" and cost["tests"][0]["kind"] == "non-inferiority, margin 0.01"
    # simko vs grpo, pass@4 (the largest k), all problems: per seed 1/3 and 1/3 -> the interval is a point
    primary = {c["paper"]: c for c in claims if c["role"] == "primary"}
    assert set(primary) == {"Pass@k Training", "SimKO"}
    assert primary["SimKO"]["tests"][0]["test"] == ("simko", "grpo", "pass@4", "all")
    assert primary["SimKO"]["tests"][0]["ci"] == [pytest.approx(1 / 3), pytest.approx(1 / 3)]
    assert primary["SimKO"]["verdict"] == "supported" and primary["Pass@k Training"]["verdict"] == "not run"
    assert sum(c["role"] == "primary" for c in claims) == 2


def test_report_has_every_method_the_warm_start_and_the_claims():
    r = _results()
    text = compare_real.report(r)
    assert "| warm start | 2 |" in text and "| grpo | 2 |" in text and "| simko | 2 |" in text
    assert "| simko | grpo |" in text and "| grpo | warm start |" in text
    assert "**supported**" in text and "**not run**" in text
    assert "### Primary" in text and "| SimKO | SimKO improves pass@4 vs GRPO | simko vs grpo, pass@4, all | " \
        "superiority | +0.333 [+0.333, +0.333] |" in text
    rows = r["summary"]["rows"]
    assert rows["warm start"]["all:pass@1"] == pytest.approx(5 / 12)
    assert rows["warm start"]["all:rank1_prob"] == pytest.approx(0.8)
    assert rows["grpo"]["hard:pass@4"] == 0.0 and rows["simko"]["hard:pass@4"] == 1.0


def test_mechanism_over_training_is_paired_per_probe_step_and_splits_the_lost_rank1_mass():
    r = _results()
    traj = compare_real.mechanism_over_training(r)
    at = {(e["step"], e["subset"], e["metric"]): e for e in traj if e["config"] == "simko"}
    assert {step for step, _, _ in at} == {0, 10}
    # step 0: every run is the warm start, so every paired difference is exactly 0
    assert all(e["mean"] == 0 and e["ci"] == [0, 0] for (step, _, _), e in at.items() if step == 0)
    # step 10: SimKO minus GRPO, seed by seed; the hand-made probes put (1 - rank1) / 2 on rank 2, the rest in the
    # tail
    assert at[10, "all", "rank1_prob"]["mean"] == pytest.approx(-0.051)
    assert at[10, "high_entropy", "rank2_prob"]["mean"] == pytest.approx(-at[10, "all", "rank1_prob"]["mean"] / 2)
    assert at[10, "high_entropy", "tail_prob"]["mean"] == pytest.approx(-at[10, "all", "rank1_prob"]["mean"] / 2)
    assert at[10, "high_entropy", "rank3_5_prob"]["mean"] == 0
    assert not any(e["config"] == "grpo" for e in traj)
    text = compare_real.report({**r, "mechanism_over_training": traj})
    assert "## SimKO's mechanism over training" in text
    assert "| simko | 10 | -0.051 [-0.064, -0.038] |" in text and "| simko | 0 | +0.000 [+0.000, +0.000] |" in text


def test_the_warm_reference_averages_its_evaluations_and_the_midpoint_counts_stopped_runs():
    r = _results()
    # two evaluations of the warm start: per problem, pass@1 is the mean of (1/4, 3/4), (0, 0), (1, 1)
    r["warm_ref"] = compare_real.merge_warm({"1": {"seed": 1, "correct": [3, 0, 4], "pass@k": [0.5] * 4},
                                             "0": {"seed": 0, "correct": [1, 0, 4], "pass@k": [0.25] * 4}}, 4)
    assert r["warm_ref"]["seeds"] == [0, 1] and r["warm_ref"]["pass@k"] == [0.375] * 4
    for run in r["runs"]:
        run["mid"] = {"step": 20, "correct": [4, 0, 4]}
    # a run stopped after its midpoint evaluation: no final one, so only the midpoint effects see it
    r["partial"] = [dict(_run("grpo", 2, None, 0.9), final=None, mid={"step": 20, "correct": [0, 0, 0]})]
    r["effects"], r["effects_mid"] = compare_real.effects(r), compare_real.effects(r, at="mid")
    r["summary"] = compare_real.summary(r)
    r["claims"] = compare_real.evaluate_claims(r)
    warm = compare_real.find(r["effects"], "grpo", "@warm", "pass@1", "all")
    # grpo's final pass@1 per seed: (2/4 + 0 + 1) / 3 and (3/4 + 0 + 1) / 3; the warm start's (2/4 + 0 + 1) / 3
    assert warm["per_seed"] == pytest.approx([0.0, 0.25 / 3])
    assert r["summary"]["rows"]["warm start"]["all:pass@1"] == pytest.approx(1.5 / 3)
    mid = compare_real.find(r["effects_mid"], "grpo", "@warm", "pass@1", "all")
    assert mid["seeds"] == [0, 1, 2] and mid["per_seed"] == pytest.approx([0.5 / 3, 0.5 / 3, -1.5 / 3])
    assert compare_real.find(r["effects_mid"], "simko", "grpo", "rank1_prob", "all") is None   # pass@k only
    assert r["summary"]["mid_rows"]["grpo"]["seeds"] == 3
    text = compare_real.report(r)
    assert "## At the midpoint (step 20)" in text and "the mean of 2 evaluations (seeds 0, 1)" in text
    assert "| grpo | 3 | 0.444 |" in text          # (2/3 + 2/3 + 0) / 3


@pytest.mark.slow
def test_cpu_dry_run_stops_at_the_deadline_keeping_what_ran_then_resumes_to_the_end(tmp_path):
    """The harness end to end on a tiny model: every job a train.py process, 2 at a time."""
    pytest.importorskip("reasoning_gym", reason='needs reasoning-gym: pip install -e ".[real]" (reasoning-gym==0.1.25)')
    import json
    from conftest import save_tiny_chat_llama
    model = save_tiny_chat_llama(tmp_path / "base")
    out, runs = tmp_path / "out", tmp_path / "runs"
    flags = ["--model", model, "--out", str(out), "--runs", str(runs), "--steps", "2", "--seeds", "1",
             "--eval-problems", "3", "--eval-samples", "4", "--probe-problems", "1", "--probe-every", "1",
             "--prompts-per-step", "2", "--group-size", "5", "--max-new-tokens", "4", "--sft-steps", "1",
             "--configs", "simko"]
    # a deadline already past once the warm start is built: no job runs, the study says what it stopped
    compare_real.main(flags + ["--deadline-minutes", "1e-6"])
    stopped = json.loads((out / "compare.json").read_text())
    assert stopped["runs"] == [] and len(stopped["stopped"]) == 5 and stopped["failed"] == []
    compare_real.main(flags)                     # the same command again: the warm start is reused, the jobs run
    results = json.loads((out / "compare.json").read_text())
    assert [(r["config"], r["seed"]) for r in results["runs"]] == [("grpo", 0), ("simko", 0)]
    assert all(r["mid"]["step"] == 1 and len(r["mid"]["correct"]) == 3 and len(r["correct"]) == 3
               for r in results["runs"])
    assert [p["step"] for p in results["runs"][1]["probes"]] == [0, 1, 2]
    assert len(results["warm_ref"]["correct"]) == 2 and results["stopped"] == [] and results["partial"] == []
    assert "## At the midpoint (step 1)" in (out / "compare.md").read_text()
    assert not (runs / "simko-s0" / "checkpoint").exists()          # each run's 538 MB copy is not kept


def test_a_finished_run_without_its_timing_is_reused_and_an_unfinished_one_runs_again(tmp_path, monkeypatch):
    import json
    import subprocess
    import types
    cfg = dict(compare_real.DESIGN, steps=4, eval_samples=2, task=compare_real.TASK)
    args = types.SimpleNamespace(runs=str(tmp_path), warm="warm/checkpoint", deadline=None)
    out = tmp_path / "simko-s3"
    out.mkdir()
    (out / "config.json").write_text("{}")
    evals = [{"type": "eval", "step": step, "correct": [c], "pass@1": c / 2, "pass@2": min(c, 1)}
             for step, c in ((2, 1), (4, 2))]
    (out / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    os.utime(out / "config.json", (1000.0, 1000.0))
    os.utime(out / "metrics.jsonl", (1600.0, 1600.0))

    def no_training(*a, **k):
        raise AssertionError("trained again")
    monkeypatch.setattr(subprocess, "Popen", no_training)
    monkeypatch.setattr(sys.modules["compare"], "code_fingerprint", lambda *a: {})     # git would spawn a process
    compare_real.run_job("simko", 3, args, cfg)            # finished (its study process died before the timing)
    rec = compare_real.job_record("simko", 3, args, cfg)
    assert (rec["wall_seconds"], rec["correct"], rec["mid"]) == (600.0, [2], {"step": 2, "correct": [1]})
    # the midpoint alone: a stopped run, kept as partial until it runs again from scratch
    (out / "study_timing.json").unlink()
    (out / "metrics.jsonl").write_text(json.dumps(evals[0]) + "\n")
    assert compare_real.job_record("simko", 3, args, cfg)["final"] is None
    with pytest.raises(AssertionError, match="trained again"):
        compare_real.run_job("simko", 3, args, cfg)
