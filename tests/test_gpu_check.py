"""benchmarks/gpu_check.py: the dry run covers every stage; a failing or hanging stage does not stop the others."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_runs_every_stage_and_writes_json_and_markdown(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, SCRIPT, "--dry-run", "--out", str(out), "--work", str(work)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    stages = report["stages"]
    assert sorted(stages) == ["a", "b", "c", "d"]
    for name, stage in stages.items():
        assert {"status", "seconds", "budget_s", "result"} <= set(stage), name
    # a-c need nothing optional: they must run. d needs the GGUF and the recipe's flags: run, or say why not.
    assert [stages[s]["status"] for s in "abc"] == ["ok", "ok", "ok"], {s: stages[s].get("reason") for s in "abc"}
    assert stages["d"]["status"] == "ok" or (stages["d"]["status"] == "skipped" and stages["d"]["reason"])
    assert "skipped" in stages["a"]["result"]["summary"]                          # (no CUDA here)
    b = stages["b"]["result"]
    assert set(b) == {"default", "static"}
    for run in b.values():
        assert run["rc"] == 0 and run["rl_steps_done"] == 2 and "| before (step 0) |" in run["pass_at_k_table"]
    c = stages["c"]["result"]
    assert c["setup"]["vocab"] == 151936 and c["setup"]["rows"] == 8
    for key in ("rollout_dynamic", "rollout_static", "rollout_generate"):
        assert c[key]["tokens_per_s"] > 0, key
    assert c["rollout_static"]["rows_same_tokens_as_dynamic"] == "8/8"         # fp32 on CPU: the same tokens
    assert c["rollout_static"]["max_abs_logp_diff_before_divergence"] < 1e-4
    updates = [v for k, v in c.items() if k.startswith("update_")]
    assert sorted((u["token_stats_from_hidden"], u["grad_checkpointing"]) for u in updates) == [
        (False, False), (False, True), (True, False), (True, True)]
    assert all(u["response_tokens_per_s"] > 0 for u in updates)
    if stages["d"]["status"] == "ok":
        assert stages["d"]["result"]["rl_steps_done"] >= 1 and stages["d"]["result"].get("eval_last")
    # only the six files a GPU lease brings back
    assert sorted(os.listdir(out)) == ["gpu_check.json", "gpu_check.md"] + [f"stage_{s}.log" for s in "abcd"]
    md = (out / "gpu_check.md").read_text()
    for title in ("a. pytest -m gpu", "b. train.py", "c. throughput", "d. real model", "rollout.py, static cache"):
        assert title in md
    for name in os.listdir(out):                        # committed results name no directory of the machine
        text = (out / name).read_text()
        assert str(work) not in text and ROOT + os.sep not in text, name
    assert "<work>/b_default" in (out / "stage_b.log").read_text()


def test_a_failing_stage_is_recorded_and_the_next_stages_still_run(tmp_path, monkeypatch):
    gc = _load()
    ran = []

    def broken(*args):
        raise RuntimeError("stage a broke")

    def fine(name):
        return lambda runner, *rest: (ran.append(name), runner.record(name, "ok", 1.0, 10, {"x": 1}))
    monkeypatch.setattr(gc, "stage_a", broken)
    for name in "bcd":
        monkeypatch.setattr(gc, f"stage_{name}", fine(name))
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--dry-run", "--out", str(tmp_path), "--work", str(tmp_path)])
    gc.main()
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert ran == ["b", "c", "d"]
    a = report["stages"]["a"]
    assert a["status"] == "failed" and "RuntimeError: stage a broke" in a["reason"]
    assert [report["stages"][s]["status"] for s in "bcd"] == ["ok", "ok", "ok"]


def test_a_stage_past_its_budget_is_killed_with_its_children(tmp_path):
    gc = _load()
    runner = gc._Runner(str(tmp_path), dict(os.environ), time.time() + 60, {"stages": {}}, str(tmp_path))
    # the child starts a grandchild that would outlive a plain kill of the child
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
            " print('started', flush=True); time.sleep(120)")
    t = time.time()
    rc, seconds, timed_out, tail = runner.run("x", [sys.executable, "-c", code], budget=6)
    assert timed_out and rc is None and time.time() - t < 30
    assert "started" in tail and "time limit reached" in tail
    # the whole check's deadline also bounds a stage: nothing is started once it has passed
    late = gc._Runner(str(tmp_path), dict(os.environ), time.time() - 1, {"stages": {}}, str(tmp_path))
    assert late.run("y", [sys.executable, "-c", "print('ran')"], budget=100) == (None, 0.0, True, "")
    assert "# not started" in (tmp_path / "stage_y.log").read_text()


def test_train_summary_keeps_what_a_killed_run_wrote(tmp_path):
    gc = _load()
    lines = [{"type": "eval", "step": 0, "pass@1": 0.25, "pass@2": 0.5, "seconds": 3.0},
             {"type": "train", "step": 1, "time_step": 9.0, "time_rollout": 8.0},
             {"type": "train", "step": 2, "time_step": 1.0, "time_rollout": 0.5},
             {"type": "train", "step": 3, "time_step": 3.0, "time_rollout": 1.5}]
    text = "".join(json.dumps(x) + "\n" for x in lines) + '{"type": "train", "st'      # cut off mid-line by a kill
    (tmp_path / "metrics.jsonl").write_text(text)
    s = gc._train_summary(str(tmp_path))
    assert s["rl_steps_done"] == 3 and s["eval_first"] == {"step": 0, "pass@1": 0.25, "pass@2": 0.5}
    assert s["median_time_step"] == 3.0 and s["median_time_rollout"] == 1.5     # step 1 (warm-up) left out
    assert "pass_at_k_table" not in s


def _runner(gc, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    os.makedirs(tmp_path / "out", exist_ok=True)
    return gc._Runner(str(tmp_path / "out"), env, time.time() + 600,
                      {"meta": gc._meta("dry", str(tmp_path)), "stages": {}}, str(tmp_path))


def test_stage_d_runs_the_recipe_and_reads_its_pass_at_k(tmp_path, monkeypatch):
    # Stage d's own path with a recipe every train.py has (the embedded task), whatever the real-model flags are.
    gc = _load()
    monkeypatch.setattr(gc, "REAL_MODEL_RECIPE", f"--sft-steps 5 --steps 1 --prompts-per-step 2 --group-size 4 "
                                                 f"--k 2 --eval-problems 4 --eval-samples 2 --warmup-cache {tmp_path}")
    monkeypatch.setattr(gc, "REAL_MODEL_DRY_RUN", "--threads 1")
    monkeypatch.setattr(gc, "_missing_for_recipe", lambda recipe, gguf: None)
    runner = _runner(gc, tmp_path)
    gc.stage_d(runner, "dry", str(tmp_path / "work"), "any.gguf")
    d = runner.report["stages"]["d"]
    assert d["status"] == "ok", d
    assert d["result"]["rl_steps_done"] == 1 and d["result"]["eval_first"]["step"] == 0
    assert d["result"]["eval_last"]["step"] == 1 and "| after (step 1) |" in d["result"]["pass_at_k_table"]
    assert "--threads 1" in d["result"]["command"] and "--out" in d["result"]["command"]


def test_stage_d_skips_with_the_reason(tmp_path, monkeypatch):
    gc = _load()
    runner = _runner(gc, tmp_path)
    monkeypatch.setattr(gc, "_find_gguf", lambda: None)
    gc.stage_d(runner, "dry", str(tmp_path), None)
    assert runner.report["stages"]["d"]["status"] == "skipped"
    assert "no GGUF found" in runner.report["stages"]["d"]["reason"]
    # a recipe this train.py refuses is a skip that quotes train.py's own error, not a failed run
    monkeypatch.setattr(gc, "REAL_MODEL_RECIPE", "--steps 1 --no-such-flag 3")
    monkeypatch.setattr(gc, "_missing_for_recipe", lambda recipe, gguf: None)
    gc.stage_d(runner, "dry", str(tmp_path), "any.gguf")
    d = runner.report["stages"]["d"]
    assert d["status"] == "skipped" and "does not accept the recipe" in d["reason"] and "--no-such-flag" in d["reason"]
