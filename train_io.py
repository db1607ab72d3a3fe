"""The plumbing of `train.py`: command-line flags from a dataclass, data files, prompts, models and the warm-up
cache, checkpoints and resume, the metrics log and the pass@k table. Nothing here decides what the RL step computes.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import glob
import hashlib
import json
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch

import countdown
import passk_at_k
import rollout as R
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


def build_parser(config_class, description: str) -> argparse.ArgumentParser:
    """argparse for a dataclass whose fields are made with `flag` (fields without a help text are not flags), each
    annotated int, float, str or bool, or one of those | None."""
    parser = argparse.ArgumentParser(description=description)
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


def check_fields(parser, config) -> None:
    """Each field's check, in field order; the first failure exits (argparse's usage error, status 2)."""
    for f in dataclasses.fields(config):
        check = f.metadata.get("check")
        problem = check(getattr(config, f.name), config) if check else None
        if problem:
            parser.error(f"--{f.name.replace('_', '-')}{'' if problem.startswith(':') else ' '}{problem}")


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
    from_hidden: bool = False                           # token statistics from hidden states (large vocabularies)
    ref_model: torch.nn.Module | None = None            # frozen initial policy, only for --kl-coef > 0


# ================================================================================================================
# Data files and prompts

def load_jsonl(path: str) -> list[dict]:
    """Problems as {"problem": str, "gold": str}; every error names the file and line."""
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
            gold = gold_answer(answer)
            if not gold:
                raise ValueError(f"{where}: the answer {answer[:60]!r} reduces to an empty gold answer")
            problems.append({"problem": problem, "gold": gold})
    if not problems:
        raise ValueError(f"{path}: no problems (the file is empty)")
    return problems


def gold_answer(answer: str) -> str:
    """What the checker compares a response with: the final answer that verify.extract_answer finds (the last
    \\boxed{} of a MATH solution, GSM8K's `#### 42`, ...), else the whole answer stripped. "" for an empty box."""
    final = verify.extract_answer(answer)
    if final is not None:
        return final.strip()
    return "" if "\\boxed" in answer or "\\fbox" in answer else answer.strip()


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
    """The policy to train: a resumed run's checkpoint, the embedded warm-started model, or --model."""
    if checkpoint:
        model, tokenizer = load_hf_model(checkpoint, args)
    elif args.model is None:
        model, tokenizer = warmed_up_model(args, task, log)
    else:
        model, tokenizer = load_hf_model(args.model, args)
    model.to(args.device).eval()
    if args.grad_checkpointing:
        # (renamed in transformers 5; the rollout runs in eval mode and keeps its KV cache)
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    policy = Policy(model, tokenizer, stop_token_ids(model, tokenizer), from_hidden=use_hidden_stats(model, args))
    if str(args.device).startswith("cuda"):
        policy.autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    if args.model is not None and checkpoint is None and args.sft_steps:
        format_warm_up(policy, task, args, log)
    if args.kl_coef > 0:
        policy.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
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
                               progress=not args.no_progress, variant=args.warmup_variant)
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


def format_warm_up(policy: Policy, task: Task, args, log, batch_size: int = 8) -> None:
    """--sft-steps supervised steps for --model: maximise log p("\\boxed{gold}" EOS | prompt) on training problems.

    A format warm-up, not a solver: a small instruct model rarely boxes its answer or stops early, so RL would see
    no reward at all. Only the answer and EOS are trained (the prompt's labels are -100). `batch_size` problems a
    step, drawn with a fixed seed (not --seed): every run of a comparison starts from the same policy, and the RL
    flags (--prompts-per-step, ...) do not change it."""
    model, tokenizer, eos = policy.model, policy.tokenizer, policy.tokenizer.eos_token_id
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.sft_lr, betas=(0.9, 0.99), weight_decay=0.0)
    start, losses = time.time(), []
    model.train()
    for _ in range(args.sft_steps):
        rows, labels = [], []
        for p in rng.sample(task.train, min(batch_size, len(task.train))):
            prompt = tokenizer(task.prompt(p, tokenizer), add_special_tokens=task.add_special_tokens)["input_ids"]
            answer = tokenizer(f"\\boxed{{{p['gold']}}}", add_special_tokens=False)["input_ids"] + [eos]
            rows.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)
        width = max(len(r) for r in rows)                                   # right padding, masked out
        ids = torch.tensor([r + [eos] * (width - len(r)) for r in rows], device=args.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=args.device)
        target = torch.tensor([t + [-100] * (width - len(t)) for t in labels], device=args.device)
        with policy.autocast():
            loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    log(f"format warm-up: {args.sft_steps} supervised steps in {time.time() - start:.0f}s, "
        f"loss {losses[0]:.3f} -> {sum(losses[-5:]) / len(losses[-5:]):.3f}")


def stop_token_ids(model, tokenizer) -> list[int]:
    """EOS ids: the tokenizer's plus the generation config's (chat models often end turns with another token)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(extra if isinstance(extra, (list, tuple)) else [extra] if extra is not None else [])
    if not ids:
        raise ValueError("the tokenizer and generation config define no EOS token; cannot tell where responses end")
    return sorted(ids)


def use_hidden_stats(model, args) -> bool:
    if args.stats_from_hidden != "auto":
        return args.stats_from_hidden == "on"
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
# Rollouts and the pass@k table

def concat_rollouts(parts: list, tokenizer) -> R.Rollout:
    """Join rollouts generated in several calls (their prompt and response widths may differ) by re-padding."""
    if len(parts) == 1:
        return parts[0]
    P = max(p.prompt_len for p in parts)
    T = max(p.response_mask.shape[1] for p in parts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    F = torch.nn.functional

    def fix(x, p, value, prompt_part: bool):
        left = P - p.prompt_len if prompt_part else 0
        right = T - p.response_mask.shape[1]
        return F.pad(x, (left, right), value=value)
    return R.Rollout(
        input_ids=torch.cat([fix(p.input_ids, p, pad, True) for p in parts]),
        attention_mask=torch.cat([fix(p.attention_mask, p, 0, True) for p in parts]),
        response_mask=torch.cat([fix(p.response_mask, p, 0.0, False) for p in parts]),
        logp=torch.cat([fix(p.logp, p, 0.0, False) for p in parts]),
        entropy=torch.cat([fix(p.entropy, p, 0.0, False) for p in parts]),
        truncated=torch.cat([p.truncated for p in parts]), prompt_len=P,
        texts=[t for p in parts for t in p.texts],
        topk_logp=torch.cat([F.pad(p.topk_logp, (0, 0, 0, T - p.response_mask.shape[1])) for p in parts]))


def held_out_subsets(task) -> dict[str, list[int]]:
    """Held-out problem indices reported apart in the table: for the embedded task, the problems that need * or /
    (a property of the problem, fixed before any sampling, so the split cannot favour the after row) and the rest."""
    if task.name != "countdown":
        return {}
    muldiv = [countdown.needs_muldiv(p) for p in task.eval]
    return {"needs * or /": [i for i, m in enumerate(muldiv) if m],
            "has a +/- answer": [i for i, m in enumerate(muldiv) if not m]}


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
    quiet = build_parser(type(args), parser.description)  # with no defaults: only what was typed survives parsing
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    explicit = vars(quiet.parse_args(argv))
    merged = vars(parser.parse_args([]))                  # defaults for flags that an older config.json lacks
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
