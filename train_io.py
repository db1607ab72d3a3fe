"""The plumbing of `train.py`: command-line flags from a dataclass and their checks, data files and the task,
prompts, models and the warm-up cache, progress display, checkpoints and resume, the metrics log and the pass@k
table. Nothing here decides what the RL step computes.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import functools
import importlib.util
import json
import os
import re
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch

import countdown
import passk_at_k
import reasoning_gym_task
import simko
import verify

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
TABLE_KS = (1, 2, 4, 8, 16)


# ================================================================================================================
# Flags from a dataclass: each field is one flag, its metadata the help text and the check

def flag(default, help: str, *, check: Callable | None = None, choices=None, shown: str | None = None,
         group: str | None = None):
    """A dataclass field that is also the command-line flag --field-name.

    help: its one-line doc, shown by --help with " (default ...)" appended (`shown` when given, else the default);
    check(value, config) -> None when the value is allowed, else what is wrong, read after the flag's name (e.g.
    "must be >= 0, got -1"); group: the --help section that starts at this field. A bool field is a switch:
    --name/--no-name when it defaults to True or None (None: resolved after parsing), --name alone when it defaults
    to False."""
    return dataclasses.field(default=default, metadata=dict(help=help, check=check, choices=choices, shown=shown,
                                                           group=group))


def at_least(lo):
    return lambda v, cfg: None if v is None or v >= lo else f"must be >= {lo}, got {v}"


def above(lo):
    return lambda v, cfg: None if v is None or v > lo else f"must be > {lo}, got {v}"


def within(interval: str):
    """A check of membership in `interval`, written as it is quoted in the message: "[0, 1)", "(0, 1]", ..."""
    lo, hi = (float(x) for x in interval[1:-1].split(","))
    low_ok = (lambda v: v >= lo) if interval[0] == "[" else (lambda v: v > lo)
    high_ok = (lambda v: v <= hi) if interval[-1] == "]" else (lambda v: v < hi)
    return lambda v, cfg: None if v is None or (low_ok(v) and high_ok(v)) else f"must be in {interval}, got {v}"


def build_parser(config_class, description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """argparse for a dataclass whose fields are made with `flag` (fields without a help text are not flags), each
    annotated int, float, str or bool, or one of those | None."""
    parser = ShortUsageParser(prog=prog, description=description)
    group = parser
    for f in dataclasses.fields(config_class):
        meta = f.metadata
        if "help" not in meta:
            continue
        if meta["group"]:
            group = parser.add_argument_group(meta["group"])
        shown = meta["shown"]
        if shown is None:
            shown = ("on" if f.default else "off") if isinstance(f.default, bool) else f.default
        said = f"default: {shown}" if meta["shown"] else f"default {shown}"
        kwargs = dict(default=f.default, help=f"{meta['help']} ({said})".replace("%", "%%"))
        kind = (f.type.__name__ if isinstance(f.type, type) else str(f.type)).split("|")[0].strip()
        if kind == "bool":
            kwargs["action"] = "store_true" if f.default is False else argparse.BooleanOptionalAction
        else:
            kwargs.update(type={"int": int, "float": float, "str": str}[kind], choices=meta["choices"])
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    return parser


class ShortUsageParser(argparse.ArgumentParser):
    """An error prints one usage line that points to --help, then the error, not the whole flag list."""

    def format_usage(self) -> str:
        return f"usage: {self.prog} [--flag VALUE ...]  (`{self.prog} --help` lists every flag)\n"


def check_fields(parser, config) -> None:
    """Each field's check, in field order; the first failure exits (argparse's usage error, status 2)."""
    for f in dataclasses.fields(config):
        check = f.metadata.get("check")
        problem = check(getattr(config, f.name), config) if check else None
        if problem:
            parser.error(f"--{f.name.replace('_', '-')}{'' if problem.startswith(':') else ' '}{problem}")


def fill_run_defaults(args) -> None:
    """The defaults of train.py's flags that depend on the model (the embedded one or --model), the device or --out."""
    embedded = args.model is None
    if args.sft_steps is None:
        args.sft_steps = 600 if embedded else 0
    if args.sft_lr is None:
        args.sft_lr = 3e-3 if embedded else 2e-5
    if args.mini_batches is None:
        args.mini_batches = min(4, args.prompts_per_step)
    if args.out is None:
        args.out = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    if args.warmup_cache is None:
        args.warmup_cache = os.path.join(os.path.dirname(os.path.abspath(args.out)), "warmup")
    if args.max_new_tokens is None:
        args.max_new_tokens = 12 if embedded else 512
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.shared_prompt == "auto":       # both paths change float rounding only; the embedded run keeps the plain
        args.shared_prompt = "off" if embedded else "on"


# ================================================================================================================
# The checks of train.py's flags that read other flags or the disk; each returns None or what is wrong

def check_model(v, a):
    """--model: a local .gguf file, a directory with config.json, or a Hugging Face Hub name that is cached or, online,
    exists; decided before anything is loaded."""
    if v is None:
        return None
    if a.data is None:
        return "needs --data (a JSONL of problems and answers, or rg:TASK)"
    if v.endswith(".gguf"):
        if not os.path.isfile(v):
            return f": no such GGUF file: {v}"
        if importlib.util.find_spec("gguf") is None:
            return f"{v}: reading a GGUF file needs the gguf package: pip install -e \".[real]\" (gguf==0.19.0)"
    elif os.path.isdir(v):
        if not os.path.isfile(os.path.join(v, "config.json")):
            return f": {v} is a directory without config.json, so not a Hugging Face model (a train.py run saves its " \
                   f"model in RUN/checkpoint)"
    elif os.path.exists(v):
        return f": {v} is a file; --model takes a model directory, a Hub name or a .gguf file"
    else:
        return hub_model_problem(v)


def hub_model_problem(name: str) -> str | None:
    """Why `name`, which is no local path, cannot be loaded from the Hugging Face Hub, or None when it can: it is in
    the local cache, or (unless offline mode is on) one metadata request finds it. No download, no retries."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id
    try:
        validate_repo_id(name)
    except HFValidationError:
        return f": no such directory: {name}"
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    offline = constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE
    if offline:
        return f": {name} is no local directory and is not in the Hugging Face cache (offline mode: HF_HUB_OFFLINE)"
    try:
        HfApi().model_info(name, timeout=10)
    except RepositoryNotFoundError:
        return f": {name} is no local directory and no model on the Hugging Face Hub (a private one needs " \
               f"`hf auth login`)"
    except Exception as e:         # noqa: BLE001  (no network, DNS, proxy, timeout: all say the same to the user)
        return f": {name} is no local directory, is not in the Hugging Face cache, and the Hub cannot be reached " \
               f"({type(e).__name__})"
    return None


def check_data(v, a):
    if v is not None and a.model is None:
        return "needs --model (the embedded tiny model only knows its built-in Countdown task)"
    if v is not None and not reasoning_gym_task.is_spec(v) and not os.path.isfile(v):
        return f": no such file: {v}"


def check_eval_data(v, a):
    if v is not None and a.data is None:
        return "needs --data and --model"
    if v is not None and reasoning_gym_task.is_spec(a.data):
        return "is not used with --data rg:... (the held-out split comes from the same generator)"
    if v is not None and not os.path.isfile(v):
        return f": no such file: {v}"


def check_out(v, a):
    if not a.resume and os.path.exists(os.path.join(v, "metrics.jsonl")):
        return f"{v} already holds a run (metrics.jsonl); pass --resume to continue it or pick another --out"


def check_group_size(v, a):
    return None if v >= 2 else f"must be >= 2 (advantages compare responses), got {v}"


def check_mini_batches(v, a):
    if not 1 <= v <= a.prompts_per_step:
        return f"must be in [1, --prompts-per-step={a.prompts_per_step}] (each part holds whole groups), got {v}"


def check_k(v, a):
    """passk_at_k.check_k for the advantage that uses --k (a schedule's phases are checked by check_schedule)."""
    try:
        passk_at_k.check_k(v, a.group_size, a.advantage if a.schedule is None and a.loss == "clip" else "grpo")
    except ValueError as e:
        return f": {e}"


def check_schedule(v, a):
    if v is None:
        return None
    if a.switch_to_grpo_at is not None:
        return "replaces --switch-to-grpo-at (the same as --schedule ADVANTAGE:STEPS,grpo:1); give one of them"
    if a.loss != "clip":
        return f"schedules advantages, and --loss {a.loss} takes its advantages from the rewards alone"
    try:
        phases = passk_at_k.parse_schedule(v, a.k)
    except ValueError as e:
        return f": {e}"
    for p in phases:
        try:
            passk_at_k.check_k(p.k, a.group_size, p.advantage)
        except ValueError as e:
            return f": phase {p.advantage}@{p.k}: {e}"


def check_simko_tau(v, a):
    if a.simko_gate != "absolute" and not 0 <= v <= 1:
        return f"is a quantile for --simko-gate {a.simko_gate}: must be in [0, 1], got {v}"


# ================================================================================================================
# The task and the policy

@dataclass
class Task:
    name: str
    train: list[dict]                                   # problems the RL steps sample from
    eval: list[dict]                                    # held-out problems for pass@k
    prompt: Callable[[dict, object], str]               # (problem, tokenizer) -> prompt text
    reward: Callable[[list[str], list[dict]], list]     # (responses, their problems) -> a reward in [0, 1] each
    add_special_tokens: bool = True                     # tokenizer(prompt, add_special_tokens=...)


@dataclass
class Policy:
    model: torch.nn.Module
    tokenizer: object
    eos_ids: list[int]                                  # any of these ends a response
    autocast: Callable = nullcontext                    # bf16 autocast on CUDA
    stats_from_hidden: bool = False                     # --stats-from-hidden resolved for this model
    ref_model: torch.nn.Module | None = None            # frozen initial policy, only for --kl-coef > 0


# ================================================================================================================
# Data files and prompts

def load_task(args) -> Task:
    """The task as plain data and functions. No model is touched, so data errors come before any loading."""
    if args.model is None:
        train, held_out = countdown.make_problems()
        task = Task("countdown", train, held_out, prompt=lambda p, tokenizer: p["prompt"],
                    reward=lambda texts, probs: [countdown.reward(t, p["numbers"], p["target"])
                                                 for t, p in zip(texts, probs)])
    elif reasoning_gym_task.is_spec(args.data):
        train, held_out, reward, scorer = reasoning_gym_task.load(
            args.data, reward_timeout=args.reward_timeout, reward_workers=args.reward_workers,
            fallback=args.reward_fallback)
        task = Task(f"{args.data} (reward: {scorer})", train, held_out, prompt=chat_prompt, reward=reward,
                    add_special_tokens=False)
    else:
        train = load_jsonl(args.data)
        if args.eval_data:
            held_out = load_jsonl(args.eval_data)
        else:
            n = min(500, max(1, len(train) // 10))
            if len(train) - n < 1:
                raise ValueError(f"{args.data}: {len(train)} problem(s) is too few to hold out an evaluation split; "
                                 f"pass --eval-data")
            train, held_out = train[:-n], train[-n:]
        task = Task("jsonl", train, held_out, prompt=chat_prompt, add_special_tokens=False,
                    reward=lambda texts, probs: verify.batch_reward(
                        texts, [p["gold"] for p in probs], timeout=args.reward_timeout, workers=args.reward_workers,
                        fallback=args.reward_fallback))
    if args.eval_problems:
        task.eval = task.eval[:args.eval_problems]
    if len(task.train) < args.prompts_per_step:
        raise ValueError(f"--prompts-per-step {args.prompts_per_step} is larger than the training set "
                         f"({len(task.train)} problems)")
    return task


EMPTY_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{\s*\}")


def load_jsonl(path: str) -> list[dict]:
    """Problems as {"problem": str, "gold": the answer as written}: verify.reward reads the final answer out of the
    gold itself (the boxes of a MATH solution, GSM8K's `#### 72`, ...). Every error names the file and line."""
    problems = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            problem = record.get("problem", record.get("question"))
            answer = record.get("answer", record.get("solution"))
            if not isinstance(problem, str) or not problem.strip():
                raise ValueError(f"{where}: needs a non-empty string field 'problem' or 'question'")
            if isinstance(answer, (int, float)) and not isinstance(answer, bool):
                answer = str(answer)
            if not isinstance(answer, str) or not answer.strip():
                raise ValueError(f"{where}: needs a non-empty string field 'answer' or 'solution'")
            if EMPTY_BOX.search(answer):
                raise ValueError(f"{where}: the answer {answer[:60]!r} has an empty \\boxed{{}}")
            problems.append({"problem": problem, "gold": answer.strip()})
    if not problems:
        raise ValueError(f"{path}: no problems (the file is empty)")
    return problems


def chat_prompt(problem: dict, tokenizer) -> str:
    """The problem plus the boxed-answer instruction, in the model's chat template when it has one."""
    content = f"{problem['problem']}\n{INSTRUCTION}"
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    bos = tokenizer.bos_token or ""
    return f"{bos}{content}\n"


# ================================================================================================================
# Models and the warm-up cache

def load_policy(args, task: Task, log, checkpoint: str | None = None) -> Policy:
    """The policy to train: a resumed run's checkpoint, the embedded warm-started model, or --model (train.py adds
    the format warm-up of --model and the reference model of --kl-coef)."""
    if checkpoint:
        model, tokenizer = load_hf_model(checkpoint, args)
    elif args.model is None:
        model, tokenizer = warmed_up_model(args, task, log)
    else:
        model, tokenizer = load_hf_model(args.model, args)
    model.to(args.device).eval()
    if args.grad_checkpointing:
        # the method's name differs between transformers versions; the rollout runs in eval mode and keeps its cache
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    policy = Policy(model, tokenizer, stop_token_ids(model, tokenizer),
                    stats_from_hidden=stats_from_hidden(model, args.stats_from_hidden))
    if str(args.device).startswith("cuda"):
        policy.autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return policy


def warmed_up_model(args, task: Task, log):
    """The embedded model after its supervised warm-up, from the cache when an identical warm-up exists.

    The warm-up uses a fixed seed (not --seed) so that every run - any seed, any algorithm - starts from the same
    policy, which is what a fair comparison of RL methods needs."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    settings = {"v": 1, "steps": args.sft_steps, "lr": args.sft_lr,
                "task": [countdown.NUMBERS.stop, countdown.TARGETS.stop, countdown.HELD_OUT]}
    if args.warmup_variant != "full":          # (so that caches of the "full" warm-up stay valid)
        settings["variant"] = args.warmup_variant
    key = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:10]
    variant = "" if args.warmup_variant == "full" else f"-{args.warmup_variant}"
    path = os.path.join(args.warmup_cache, f"countdown{variant}-sft{args.sft_steps}-{key}")
    if os.path.isfile(os.path.join(path, "warmup.json")):
        log(f"warm-up: reusing {path}")
        return (AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                PreTrainedTokenizerFast.from_pretrained(path))
    tokenizer = countdown.build_tokenizer()
    model = countdown.build_model(tokenizer, seed=0).to(args.device)
    log(f"warm-up: {args.sft_steps} supervised steps on {len(task.train)} problems "
        f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), caching to {path}")
    start = time.time()
    losses = countdown.warm_up(model, tokenizer, task.train, args.sft_steps, lr=args.sft_lr, seed=0,
                               progress=lambda steps: progress(steps, "warm-up", args.no_progress, log),
                               variant=args.warmup_variant)
    seconds = time.time() - start

    def write(tmp):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "warmup.json"), "w") as f:
            json.dump({"steps": args.sft_steps, "lr": args.sft_lr, "seconds": seconds,
                       "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:]))}, f)
    atomic_save(write, path)
    return model, tokenizer


def load_hf_model(path: str, args):
    """Model and tokenizer from a hub name, a directory, or a .gguf file (which transformers dequantises to float32,
    so checkpoints are ordinary safetensors that reload without gguf)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {}
    if path.endswith(".gguf"):
        path, where["gguf_file"] = os.path.split(os.path.abspath(path))
    tokenizer = AutoTokenizer.from_pretrained(path, **where)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **where)
    if getattr(model, "hf_quantizer", None) is not None:
        # GGUF weights arrive dequantised; dropping the quantizer's marks lets save_pretrained write plain safetensors
        model.hf_quantizer.remove_quantization_config(model)
    return model, tokenizer


def stop_token_ids(model, tokenizer) -> list[int]:
    """EOS ids: the tokenizer's plus the generation config's (chat models often end turns with another token)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(extra if isinstance(extra, (list, tuple)) else [extra] if extra is not None else [])
    if not ids:
        raise ValueError("the tokenizer and generation config define no EOS token; cannot tell where responses end")
    return sorted(ids)


def stats_from_hidden(model, setting: str) -> bool:
    """--stats-from-hidden resolved for `model`: 'auto' is on for a plain linear LM head over more than 32k tokens."""
    if setting != "auto":
        return setting == "on"
    head = model.get_output_embeddings()
    plain = isinstance(head, torch.nn.Linear) and not any(
        getattr(model.config, a, None) for a in ("final_logit_softcapping", "logit_scale"))
    return plain and model.config.vocab_size > 32768


def set_threads(args) -> None:
    # The tiny model's matrices are too small for intra-op parallelism (the README has the measurement), so the
    # embedded run uses one thread unless --threads says otherwise.
    if args.threads or (args.model is None and not str(args.device).startswith("cuda")):
        torch.set_num_threads(args.threads or 1)


# ================================================================================================================
# Progress, the loss metrics and the pass@k table

def quiet_libraries():
    """Turns off transformers' own progress bars; returns the function that prints a line beside ours (tqdm.write),
    flushed, so that a log redirected to a file shows each line when it is written."""
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    if not sys.stderr.isatty():
        # transformers' GGUF de-quantising bar ignores disable_progress_bar: in a log file it is 272 redrawn lines
        import transformers.modeling_gguf_pytorch_utils as gguf_loading
        gguf_loading.tqdm = functools.partial(tqdm, disable=True)

    def log(line: str) -> None:
        tqdm.write(line)
        sys.stdout.flush()
    return log


def progress(items, desc: str, quiet: bool, log, *, total: int | None = None, initial: int = 0):
    """`items`, showing progress: a tqdm bar on a terminal; where the output goes to a file or a pipe, one line (via
    `log`) each tenth of the way, with the bar's figures, which metrics.jsonl also holds; nothing when `quiet`.
    The result has tqdm's set_postfix and close."""
    from tqdm import tqdm
    if quiet or sys.stderr.isatty():
        return tqdm(items, desc=desc, total=total, initial=initial, disable=quiet, mininterval=1)
    return _SparseProgress(items, desc, len(items) if total is None else total, initial, log)


class _SparseProgress:
    def __init__(self, items, desc, total, initial, log):
        self.items, self.desc, self.total, self.done, self.log, self.postfix = items, desc, total, initial, log, {}

    def __iter__(self):
        start, every = time.time(), max(1, self.total // 10)
        for item in self.items:
            yield item
            self.done += 1
            if self.done % every == 0 or self.done == self.total:
                self.log(f"{self.desc}: {self.done}/{self.total}, {time.time() - start:.0f}s" +
                         "".join(f", {k} {v}" for k, v in self.postfix.items()))

    def set_postfix(self, **values):
        self.postfix = values

    def close(self):
        pass


def mean_metrics(measured: list, keys: tuple) -> dict:
    """The loss metrics of (metrics, response tokens) pairs, one per micro-batch, as means over the forwarded
    response tokens; a fraction "_of_gated" over the gated tokens. None for each of `keys` when no token was
    forwarded; 0 for a fraction of gated tokens when none was gated."""
    if not measured:
        return dict.fromkeys(keys)
    out = {}
    for key in measured[0][0]:
        weights = [n * m["gated_frac"] if key.endswith("_of_gated") else n for m, n in measured]
        total = sum(weights)
        out[key] = sum(m[key] * w for (m, _), w in zip(measured, weights)) / total if total else 0.0
    return out


def report(args, task_name: str, history: list[dict], subsets: dict[str, list[int]]) -> tuple[dict | None, dict]:
    """Prints the run's pass@k table (written to pass_at_k.md too) and where its outputs are; returns the before
    and after evaluations (before is None when no RL step ran between two evaluations, e.g. with --steps 0)."""
    evals = [h for h in history if h["type"] == "eval"]
    before, after = (evals[0] if evals[0]["step"] == 0 and len(evals) > 1 else None), evals[-1]
    table = pass_at_k_table(before, after, args.eval_samples, subsets)
    print(table)
    if task_name == "countdown" and args.warmup_variant == "headroom":
        print("needs * or /: the problems whose every answer uses * or /, which the headroom warm-up rarely saw; "
              "that is where exploration shows. The GRPO baseline from the same warm start (--advantage grpo "
              "--no-simko) is in the README beside this run; benchmarks/compare.py compares the methods over seeds.")
    with open(os.path.join(args.out, "pass_at_k.md"), "w") as f:
        f.write(table + "\n")
    print(f"outputs in {args.out}: metrics.jsonl (every step and evaluation), config.json (the flags), "
          f"checkpoint/ (model, tokenizer, trainer state for --resume), pass_at_k.md (the table above)")
    return before, after


HIGH_ENTROPY_SHARE = 0.2    # the probe's high-entropy tokens: the top 20 % by entropy (SimKO's gate, tau = 0.8)


def probe_metrics(ro) -> dict:
    """SimKO's mechanism in a rollout: the mean entropy and the concentration metric Lambda^(k) (the rank-k
    candidate's mean probability, simko.concentration) over all response tokens ("all") and over the high-entropy
    ones ("high_entropy": the top HIGH_ENTROPY_SHARE of the rollout's tokens by entropy, where SimKO's gate acts)."""
    mask = ro.response_mask.bool()                                   # [B, R]
    threshold = torch.quantile(ro.entropy[mask].double(), 1 - HIGH_ENTROPY_SHARE).item()
    high = mask & (ro.entropy >= threshold)                          # [B, R]
    out = {}
    for name, m in (("all", mask), ("high_entropy", high)):
        c = simko.concentration(ro.topk_logp, m.float())
        out[name] = {"tokens": int(m.sum()), "entropy": ro.entropy[m].mean().item(),
                     **{f"rank{i + 1}_prob": p for i, p in enumerate(c["prob"])}}
    out["high_entropy"]["threshold"] = threshold
    return out


def pass_at_k_table(before: dict | None, after: dict, n: int, subsets: dict[str, list[int]] | None = None) -> str:
    """Markdown before/after pass@k table (the after row only when `before` is None); with `subsets`, also the rows
    on each subset of the held-out problems (from the eval lines' per-problem correct counts)."""
    ks = [k for k in TABLE_KS if k <= n]

    def row(label, curve):
        return f"| {label} | " + " | ".join(f"{curve[f'pass@{k}']:.3f}" for k in ks) + " |"

    def on(evaluation, idx):
        counts = torch.tensor([evaluation["correct"][i] for i in idx])
        correct = torch.arange(n) < counts[:, None]       # [problems, n]: pass@k depends only on the count
        return {f"pass@{k}": v for k, v in passk_at_k.pass_at_k_curve(correct, ks=ks).items()}
    lines = [f"| k | " + " | ".join(str(k) for k in ks) + " |", "|---|" + "---|" * len(ks),
             *([row(f"before (step {before['step']})", before)] if before else []),
             row(f"after (step {after['step']})", after)]
    for name, idx in (subsets or {}).items():
        if idx and "correct" in after:
            if before and "correct" in before:
                lines.append(row(f"{name} ({len(idx)}): before", on(before, idx)))
            lines.append(row(f"{name} ({len(idx)}): after", on(after, idx)))
    return "\n".join(lines)


# ================================================================================================================
# The run directory: config.json, metrics.jsonl, checkpoints, resume

# ---- Resume: the saved flags, the explicit ones, what may change

def resumed_args(parser, args, argv, may_change: tuple[str, ...]):
    """--resume: the run's config.json, overridden by the flags given explicitly; refuses a change of anything that
    defines the run (every flag outside `may_change`). Returns a new config of the same class as `args`."""
    if args.out is None:
        parser.error("--resume needs --out (the run directory to continue)")
    if find_checkpoint(args.out) is None:
        parser.error(f"--resume: no checkpoint in {args.out}")
    config = os.path.join(args.out, "config.json")
    if not os.path.isfile(config):
        parser.error(f"--resume: no config.json in {args.out}")
    with open(config) as f:
        saved = json.load(f)
    # with no defaults: only what was typed survives parsing
    quiet = build_parser(type(args), parser.description, parser.prog)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    explicit = vars(quiet.parse_args(argv))
    merged = vars(parser.parse_args([]))                  # defaults for flags that the saved config.json lacks
    merged.update({k: v for k, v in saved.items() if k in merged})
    changed = {k: (merged[k], v) for k, v in explicit.items() if merged[k] != v and k not in ("resume", "out")}
    refused = [k for k in changed if k not in may_change]
    if refused:
        parser.error("--resume cannot change " + ", ".join(
            f"--{k.replace('_', '-')} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in refused) +
            f": it defines the run in {args.out}; start a new run with another --out instead")
    merged.update(explicit)
    merged["resume"] = True
    resumed = type(args)(**merged)
    resumed.changed_on_resume = changed
    return resumed


def save_config(args) -> None:
    config = {k: v for k, v in vars(args).items() if k not in ("resume", "changed_on_resume")}
    path = os.path.join(args.out, "config.json")
    with open(path + ".tmp", "w") as f:
        json.dump(config, f, indent=1)
    os.replace(path + ".tmp", path)


def start_metrics(path: str, checkpoint_step: int | None) -> list[dict]:
    """A resumed run's log up to its checkpoint (what a killed run wrote after it is redone), rewritten atomically;
    an empty log for a new run."""
    history = []
    if checkpoint_step is not None:
        with open(path) as f:
            history = [json.loads(line) for line in f if line.strip()]
        history = [h for h in history if h["step"] <= checkpoint_step]
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(h) + "\n" for h in history)
    os.replace(path + ".tmp", path)
    return history


# ---- Checkpoints

def resume_trainer(args, checkpoint, policy: Policy, optimizer, scheduler, sampler, generator, log) -> int:
    """--resume: the checkpoint's optimiser, scheduler and random states restored, the changed flags reported;
    returns the step to continue from."""
    step = load_trainer_state(checkpoint, optimizer, scheduler, sampler, generator)
    if args.steps < step:
        raise ValueError(f"--steps {args.steps} is before the checkpoint's step {step} in {args.out}")
    if policy.ref_model is not None:
        log("note: --kl-coef on resume uses the checkpoint as the reference policy")
    changes = getattr(args, "changed_on_resume", {})
    log(f"resuming {args.out} at step {step}" + "".join(
        f"; --{k.replace('_', '-')} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
    return step


def find_checkpoint(out: str) -> str | None:
    """The usable checkpoint of a run: `checkpoint/`, or `checkpoint.old` when a save died between its renames."""
    for name in ("checkpoint", "checkpoint.old"):
        path = os.path.join(out, name)
        if os.path.isfile(os.path.join(path, "trainer_state.pt")):
            return path
    return None


def save_checkpoint(out, policy: Policy, optimizer, scheduler, step, sampler, generator):
    def write(tmp):
        policy.model.save_pretrained(tmp)
        policy.tokenizer.save_pretrained(tmp)
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "sampler": sampler.getstate(), "generator": generator.get_state(),
                    "torch_rng": torch.random.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                   os.path.join(tmp, "trainer_state.pt"))
    atomic_save(write, os.path.join(out, "checkpoint"))


def load_trainer_state(checkpoint, optimizer, scheduler, sampler, generator) -> int:
    """Restore the optimiser, scheduler and every random state of a checkpoint; returns its step."""
    state = torch.load(os.path.join(checkpoint, "trainer_state.pt"), weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.setstate(state["sampler"])
    generator.set_state(state["generator"])
    torch.random.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"]


def atomic_save(write, final_dir: str) -> None:
    """Write into a fresh temporary directory, then swap it in with renames (the old copy survives a crash)."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    for stale in glob.glob(f"{glob.escape(final_dir)}.tmp-*"):        # left by an earlier process killed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = f"{final_dir}.tmp-{os.getpid()}"
    os.makedirs(tmp)
    write(tmp)
    old = f"{final_dir}.old"
    if os.path.exists(final_dir):
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final_dir, old)
    os.rename(tmp, final_dir)
    shutil.rmtree(old, ignore_errors=True)
