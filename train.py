"""RLVR on one device with Pass@k Training and SimKO: `python train.py`.

One run is one algorithm configuration. Every step does the same four things:

1. **Rollout** (`rollout.py`): sample `--group-size` G responses for each of `--prompts-per-step` prompts with a KV
   cache, keeping each token's log-probability under the sampling policy (`old_logp`) and the policy's entropy.
2. **Reward**: 1 for a correct final answer, else 0 - the embedded Countdown checker (`countdown.py`) or
   `verify.batch_reward` for math data sets.
3. **Advantage** (`passk_at_k.py`): `--advantage` picks GRPO (Pass@1) or one of the Pass@k-Training advantages
   (analytical by default, `--k 4`); `--switch-to-grpo-at STEP` is the paper's Pass@k -> Pass@1 transfer.
4. **Update** (`simko.py`): a teacher-forced forward gives the current log-probs and the top-K statistics, and
   `policy_loss` is the DAPO clipped surrogate (clip 0.2 / 0.28, token mean, no KL) with SimKO's top-K spread on
   correct responses and its stronger rank-1 penalty on wrong ones at high-entropy tokens (`--simko`, the default;
   `--no-simko` is plain GRPO/DAPO). Micro-batches accumulate gradients into one optimiser step per rollout batch.

With no arguments everything is built from code and runs offline on a CPU in minutes: a ~0.86M-parameter Llama and
a character tokenizer learn Countdown-3 (`countdown.py`). A supervised warm-up (cached under `--warmup-cache`,
shared by runs with the same warm-up settings) brings held-out pass@1 to ~0.2 and pass@16 to ~0.85; RL then runs
and a before/after pass@k table (k = 1, 2, 4, 8, 16) on 300 held-out problems is printed.

With `--model NAME_OR_PATH --data train.jsonl [--eval-data test.jsonl]` any Hugging Face causal LM is trained on
math problems (fields `problem`/`question`, `answer`/`solution`; the chat template is used when there is one). On
CUDA the forward passes run under bf16 autocast, `--grad-checkpointing` trades compute for memory, and for large
vocabularies the token statistics come straight from the last hidden states (`simko.token_stats_from_hidden`),
so that no [tokens x vocabulary] logits tensor is ever materialised.

Outputs under `--out` (default `runs/<timestamp>`): `metrics.jsonl` (one line per step and per evaluation),
`checkpoint/` (Hugging Face model + tokenizer + `trainer_state.pt` with optimiser, scheduler and RNG states; written
to a temporary directory and renamed, so a kill mid-save leaves the previous one usable), `config.json`.
`--resume` continues a run from its checkpoint; on CPU a resumed run reproduces the uninterrupted run's metrics.

Defaults for the embedded model differ from the papers' on purpose: lr 1e-4 instead of 1e-6 (a 0.86M model trained
for 80 steps needs a much larger step to move visibly; 2e-4 and 5e-4 were also tried, see the README), 16 prompts x
8 samples per step instead of 1024 x 8. For a real model pass the papers' settings (e.g. `--lr 1e-6`).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import inspect
import json
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext

import torch

import countdown
import passk_at_k
import rollout as R
import simko
import verify

CONCENTRATION_RANKS = 5     # metrics.jsonl logs the rank-1..5 probabilities (SimKO's Lambda^(k))
ADVANTAGES = tuple(getattr(passk_at_k, "ADVANTAGES", None) or (
    "grpo", "passk", "passk_bootstrap", "passk_full", "combination", "entropy_adaptive", "exceeding"))
LOSS_AGGS = getattr(simko, "AGGREGATIONS", ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"))
GATES = getattr(simko, "GATES", ("row_quantile", "batch_quantile", "absolute"))
PENALTIES = getattr(simko, "PENALTIES", ("advantage", "ratio"))
WARMUP_VARIANTS = getattr(countdown, "WARMUP_VARIANTS", ("full",))
FALLBACKS = getattr(verify, "FALLBACKS", ("none",))
# the rollout returns its top-5 log-probs for the concentration metric (when this rollout.py can)
STATS_TOP_K = {"stats_top_k": CONCENTRATION_RANKS} if "stats_top_k" in inspect.signature(R.rollout).parameters else {}
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
TABLE_KS = (1, 2, 4, 8, 16)


# ----------------------------------------------------------------------------------------------------------------
# Command line, validated before anything heavy is loaded

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=None, help="HF causal LM name or path; default: the embedded tiny Llama")
    g.add_argument("--data", default=None, help="training JSONL (problem/question, answer/solution); needs --model")
    g.add_argument("--eval-data", default=None, help="held-out JSONL; default: the last 10%% (<= 500) of --data")
    g.add_argument("--out", default=None, help="run directory; default runs/<timestamp>")
    g.add_argument("--warmup-cache", default="runs/warmup", help="where the embedded warm-up is cached and shared")
    g.add_argument("--warmup-variant", choices=WARMUP_VARIANTS, default="full",
                   help="embedded task only: the supervised warm-up's data (countdown.py's docstring)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...; default cuda when available")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads; default 1 for the embedded model on CPU, torch's default otherwise")
    g = p.add_argument_group("schedule")
    g.add_argument("--steps", type=int, default=80, help="RL steps")
    g.add_argument("--sft-steps", type=int, default=600, help="supervised warm-up steps (embedded task only)")
    g.add_argument("--sft-lr", type=float, default=3e-3)
    g.add_argument("--prompts-per-step", type=int, default=16)
    g.add_argument("--group-size", type=int, default=8, help="G responses per prompt")
    g.add_argument("--mini-batches", type=int, default=None,
                   help="optimiser steps per rollout batch: the prompts are split in order into this many parts of "
                        "whole groups, one step each (default 4 as in the papers, or --prompts-per-step if fewer)")
    g.add_argument("--micro-batch-size", type=int, default=0, help="rows per forward/backward; 0: all at once")
    g.add_argument("--gen-batch-size", type=int, default=0, help="prompts per generation call; 0: all at once")
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--lr-warmup-steps", type=int, default=0, help="linear lr warm-up, then constant")
    g.add_argument("--max-grad-norm", type=float, default=1.0)
    g.add_argument("--eval-every", type=int, default=40, help="RL steps between evaluations; 0: only before/after")
    g.add_argument("--eval-samples", type=int, default=16, help="n responses per held-out problem for pass@k")
    g.add_argument("--eval-problems", type=int, default=0, help="use only the first N held-out problems; 0: all")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (and always at the end)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    g = p.add_argument_group("algorithm")
    g.add_argument("--advantage", choices=ADVANTAGES, default="passk")
    g.add_argument("--k", type=int, default=4, help="k of the Pass@k advantage (<= --group-size)")
    g.add_argument("--switch-to-grpo-at", type=int, default=None,
                   help="after this many RL steps use the GRPO advantage (the Pass@k -> Pass@1 transfer)")
    g.add_argument("--simko", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--simko-topk", type=int, default=3)
    g.add_argument("--simko-alpha", type=float, default=0.01)
    g.add_argument("--simko-lambda", type=float, default=1.1)
    g.add_argument("--simko-tau", type=float, default=0.8)
    g.add_argument("--simko-gate", choices=GATES, default="row_quantile")
    g.add_argument("--simko-penalty", choices=PENALTIES, default="advantage")
    g.add_argument("--clip-low", type=float, default=0.2)
    g.add_argument("--clip-high", type=float, default=0.28)
    g.add_argument("--loss-agg", choices=LOSS_AGGS, default="token_mean")
    g.add_argument("--kl-coef", type=float, default=0.0, help="k3 KL to the initial policy; 0 loads no reference")
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0, help="rollout nucleus (old_logp ignores the cut)")
    g.add_argument("--eval-temperature", type=float, default=1.0)
    g.add_argument("--eval-top-p", type=float, default=1.0)
    g.add_argument("--max-new-tokens", type=int, default=None, help="default 12 (embedded) / 512 (--model)")
    g.add_argument("--decode", choices=("dynamic", "static"), default="dynamic",
                   help="KV cache of the rollout: grown per token, or preallocated (rollout.py static_cache)")
    g = p.add_argument_group("memory (real models)")
    g.add_argument("--grad-checkpointing", action="store_true")
    g.add_argument("--stats-from-hidden", choices=("auto", "on", "off"), default="auto",
                   help="token stats from hidden states + LM head (auto: vocabulary > 32k)")
    g.add_argument("--reward-workers", type=int, default=None, help="verify.batch_reward workers; 0: in-process")
    g.add_argument("--reward-timeout", type=float, default=5.0)
    g.add_argument("--reward-fallback", choices=FALLBACKS, default=FALLBACKS[0],
                   help="verify.batch_reward's fallback for responses without a final answer")
    g.add_argument("--no-progress", action="store_true", help="no tqdm bars (tests, logs)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)

    def need(ok, message):
        if not ok:
            parser.error(message)

    for name in ("steps", "sft_steps", "eval_every", "eval_problems", "save_every", "lr_warmup_steps",
                 "micro_batch_size", "gen_batch_size"):
        need(getattr(args, name) >= 0, f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("prompts_per_step", "eval_samples", "simko_topk"):
        need(getattr(args, name) >= 1, f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    need(args.group_size >= 2, f"--group-size must be >= 2 (advantages compare responses), got {args.group_size}")
    need(args.k >= 1, f"--k must be in [1, --group-size - 1 = {args.group_size - 1}], got {args.k}")
    if args.advantage != "grpo":    # (GRPO ignores k)
        need(args.k < args.group_size,
             f"--k must be in [1, --group-size - 1 = {args.group_size - 1}], got {args.k}: with k >= the group size "
             f"every k-subset is the whole group, so every Pass@k advantage is exactly 0 and nothing is trained")
    if args.mini_batches is None:
        args.mini_batches = min(4, args.prompts_per_step)
    need(1 <= args.mini_batches <= args.prompts_per_step,
         f"--mini-batches must be in [1, --prompts-per-step={args.prompts_per_step}] (each part holds whole groups), "
         f"got {args.mini_batches}")
    need(args.decode == "dynamic" or "static_cache" in inspect.signature(R.rollout).parameters,
         "--decode static needs rollout.py's static_cache, which this rollout.py does not have")
    for name in ("lr", "sft_lr", "temperature", "eval_temperature", "max_grad_norm", "reward_timeout"):
        need(getattr(args, name) > 0, f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("top_p", "eval_top_p"):
        need(0 < getattr(args, name) <= 1, f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(args, name)}")
    need(0 <= args.clip_low < 1, f"--clip-low must be in [0, 1), got {args.clip_low}")
    need(args.clip_high >= 0, f"--clip-high must be >= 0, got {args.clip_high}")
    need(0 <= args.simko_alpha <= 1, f"--simko-alpha must be in [0, 1], got {args.simko_alpha}")
    need(args.simko_lambda > 0, f"--simko-lambda must be > 0, got {args.simko_lambda}")
    need(args.simko_gate == "absolute" or 0 <= args.simko_tau <= 1,
         f"--simko-tau is a quantile for --simko-gate {args.simko_gate}: must be in [0, 1], got {args.simko_tau}")
    need(args.kl_coef >= 0, f"--kl-coef must be >= 0, got {args.kl_coef}")
    need(args.switch_to_grpo_at is None or args.switch_to_grpo_at >= 0,
         f"--switch-to-grpo-at must be >= 0, got {args.switch_to_grpo_at}")
    need(args.max_new_tokens is None or args.max_new_tokens >= 1,
         f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    need(args.threads is None or args.threads >= 1, f"--threads must be >= 1, got {args.threads}")
    need(args.reward_workers is None or args.reward_workers >= 0, "--reward-workers must be >= 0")
    need(args.data is None or args.model is not None,
         "--data needs --model (the embedded tiny model only knows its built-in Countdown task)")
    need(args.model is None or args.data is not None, "--model needs --data (a JSONL of problems and answers)")
    need(args.eval_data is None or args.data is not None, "--eval-data needs --data and --model")
    for name in ("data", "eval_data"):
        path = getattr(args, name)
        need(path is None or os.path.isfile(path), f"--{name.replace('_', '-')}: no such file: {path}")
    if args.model is not None and args.model.startswith(("/", ".", "~")) and not os.path.exists(args.model):
        parser.error(f"--model: no such directory: {args.model}")   # (hub names like Org/Name are not checked)
    if args.resume:
        need(args.out is not None, "--resume needs --out (the run directory to continue)")
        need(find_checkpoint(args.out) is not None, f"--resume: no checkpoint in {args.out}")
    elif args.out is not None:
        need(not os.path.exists(os.path.join(args.out, "metrics.jsonl")),
             f"--out {args.out} already holds a run (metrics.jsonl); pass --resume to continue it or pick another "
             f"--out")
    if args.out is None:
        args.out = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    if args.max_new_tokens is None:
        args.max_new_tokens = 512 if args.model else 12
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


# ----------------------------------------------------------------------------------------------------------------
# Data: the embedded Countdown task or a JSONL of math problems

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
    """Reduce a reference answer to what the checker compares: GSM8K `#### 42` -> "42", a MATH solution -> the
    content of its last \\boxed{}, anything else stripped."""
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip().replace(",", "")
    if "\\boxed" in answer or "\\fbox" in answer:
        boxed = verify.extract_answer(answer)
        return "" if boxed is None else boxed.strip()     # an empty box is an error, not the whole solution
    return answer.strip()


def load_task(args) -> dict:
    """The task as plain data and functions: train/eval problems, prompt text, rewards. No model is touched."""
    if args.model is None:
        train, held_out = countdown.make_problems()
        task = {"name": "countdown", "train": train, "eval": held_out, "add_special_tokens": True,
                "prompt": lambda p, tokenizer: p["prompt"],
                "reward": lambda texts, probs: [countdown.reward(t, p["numbers"], p["target"])
                                                for t, p in zip(texts, probs)]}
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
        fallback = {"fallback": args.reward_fallback} if hasattr(verify, "FALLBACKS") else {}
        task = {"name": "jsonl", "train": train, "eval": held_out, "add_special_tokens": False,
                "prompt": chat_prompt,
                "reward": lambda texts, probs: verify.batch_reward(texts, [p["gold"] for p in probs],
                                                                   timeout=args.reward_timeout,
                                                                   workers=args.reward_workers,
                                                                   **fallback)}
    if args.eval_problems:
        task["eval"] = task["eval"][:args.eval_problems]
    if len(task["train"]) < args.prompts_per_step:
        raise ValueError(f"--prompts-per-step {args.prompts_per_step} is larger than the training set "
                         f"({len(task['train'])} problems)")
    return task


def chat_prompt(problem: dict, tokenizer) -> str:
    """The problem plus the boxed-answer instruction, in the model's chat template when it has one."""
    content = f"{problem['problem']}\n{INSTRUCTION}"
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    bos = tokenizer.bos_token or ""
    return f"{bos}{content}\n"


# ----------------------------------------------------------------------------------------------------------------
# Model: the embedded warm-started tiny Llama (cached) or a Hugging Face checkpoint

def _atomic_save(write, final_dir: str) -> None:
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


def warmed_up_model(args, task, log):
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
    log(f"warm-up: {args.sft_steps} supervised steps on {len(task['train'])} problems "
        f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), caching to {path}")
    start = time.time()
    extra = {} if args.warmup_variant == "full" else {"variant": args.warmup_variant}
    losses = countdown.warm_up(model, tokenizer, task["train"], args.sft_steps, lr=args.sft_lr, seed=0,
                               progress=not args.no_progress, **extra)
    seconds = time.time() - start

    def write(tmp):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "warmup.json"), "w") as f:
            json.dump({"steps": args.sft_steps, "lr": args.sft_lr, "seconds": seconds,
                       "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:]))}, f)
    _atomic_save(write, path)
    return model, tokenizer


def load_hf_model(path: str, args):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tokenizer


def stop_token_ids(model, tokenizer) -> list[int]:
    """EOS ids: the tokenizer's plus the generation config's (chat models often end turns with another token)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(extra if isinstance(extra, (list, tuple)) else [extra] if extra is not None else [])
    if not ids:
        raise ValueError("the tokenizer and generation config define no EOS token; cannot tell where responses end")
    return sorted(ids)


# ----------------------------------------------------------------------------------------------------------------
# The update: teacher-forced token statistics and the SimKO / DAPO loss

def use_hidden_stats(model, args) -> bool:
    if args.stats_from_hidden != "auto":
        return args.stats_from_hidden == "on"
    head = model.get_output_embeddings()
    plain = isinstance(head, torch.nn.Linear) and not any(
        getattr(model.config, a, None) for a in ("final_logit_softcapping", "logit_scale"))
    return plain and model.config.vocab_size > 32768


def response_token_stats(model, input_ids, attention_mask, prompt_len, args, from_hidden: bool):
    """simko.TokenStats [b, R] of the response tokens under the current policy (position t predicts token t+1)."""
    tokens = input_ids[:, prompt_len:]
    pos = R.position_ids(attention_mask)
    if from_hidden:
        base = getattr(model, model.base_model_prefix)
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                      use_cache=False).last_hidden_state
        head = model.get_output_embeddings()
        # Under CUDA autocast the LM head runs in bf16, as it would inside the model; the fused function gets both
        # operands in one dtype and runs with autocast off, so its forward and its recomputing backward agree.
        dtype = torch.bfloat16 if hidden.is_cuda and torch.is_autocast_enabled("cuda") else head.weight.dtype
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return simko.token_stats_from_hidden(
                hidden[:, prompt_len - 1:-1].to(dtype), head.weight.to(dtype), tokens,
                top_k=args.simko_topk, temperature=args.temperature,
                bias=None if head.bias is None else head.bias.to(dtype))
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, use_cache=False,
                   logits_to_keep=tokens.shape[1] + 1).logits[:, :-1]
    return simko.token_stats(logits, tokens, top_k=args.simko_topk,
                             temperature=args.temperature)


def compute_advantages(rewards: torch.Tensor, entropy: torch.Tensor, method: str, k: int, seed: int) -> torch.Tensor:
    """[P, G] rewards -> [P, G] advantages; `entropy` [P] is each prompt's mean token entropy (entropy_adaptive)."""
    return passk_at_k.compute_advantages(method, rewards, k, entropy=entropy,
                                         generator=torch.Generator().manual_seed(seed))


def update(model, ref_model, optimizer, scheduler, ro: R.Rollout, advantages: torch.Tensor, args, autocast,
           from_hidden: bool) -> dict:
    """--mini-batches optimiser steps on one rollout batch, each in micro-batches whose losses add up to the
    mini-batch's loss.

    The rollout's prompts are split in order into M parts of whole groups (like verl's ppo_mini_batch_size); each
    part is one optimiser step, so from the second part on the policy differs from the sampling policy and the
    ratio and its clip come into play. M = 1 is a single step on the whole batch. Rows whose advantage is 0 (all
    tokens) add exactly 0 to the loss and its gradient when there is no KL term: they are left out of the forward
    and backward, while the loss normaliser (tokens or rows of the mini-batch) still counts them. The exception is
    SimKO's batch_quantile gate, whose quantile would then be taken over fewer tokens.
    """
    model.train()
    rows, width = ro.response_mask.shape
    mask = ro.response_mask
    # Each micro-batch's loss is rescaled so that the sum equals the mini-batch's aggregate (tokens or sequences).
    if args.loss_agg == "token_mean":
        weights = mask.sum(1)
    elif args.loss_agg == "seq_mean_token_mean":
        weights = (mask.sum(1) > 0).float()
    else:
        weights = torch.ones(rows, device=mask.device)
    can_skip = ref_model is None and not (args.simko and args.simko_gate == "batch_quantile")
    live = weights > 0
    if can_skip:
        live &= advantages != 0
    G = args.group_size
    parts = torch.arange(rows // G).tensor_split(min(args.mini_batches, rows // G))
    K = args.simko_topk
    sums, n_sum, losses, grad_norms = {}, 0.0, [], []
    for part in parts:
        part_rows = torch.arange(int(part[0]) * G, (int(part[-1]) + 1) * G, device=mask.device)
        total = weights[part_rows].sum().clamp_min(1)
        todo = part_rows[live[part_rows]]
        micro = args.micro_batch_size or max(len(todo), 1)
        optimizer.zero_grad(set_to_none=True)
        part_loss = 0.0
        for s in range(0, len(todo), micro):
            sel = todo[s:s + micro]
            ids, att, m = ro.input_ids[sel], ro.attention_mask[sel], mask[sel]
            share = (weights[sel].sum() / total).item()
            with autocast():
                stats = response_token_stats(model, ids, att, ro.prompt_len, args, from_hidden)
            loss, metrics = simko.policy_loss(
                stats.logp, ro.logp[sel], advantages[sel], m, stats if args.simko else None,
                alpha=args.simko_alpha if args.simko else 0.0, lam=args.simko_lambda if args.simko else 1.0,
                tau=args.simko_tau, gate=args.simko_gate, penalty=args.simko_penalty, clip_low=args.clip_low,
                clip_high=args.clip_high, agg=args.loss_agg, max_len=width)
            metrics.pop("entropy", None)        # (logged from the rollout, over every row)
            if ref_model is not None:
                with torch.no_grad(), autocast():
                    ref_logp = response_token_stats(ref_model, ids, att, ro.prompt_len, args, from_hidden).logp
                log_ratio = torch.where(m.bool(), ref_logp - stats.logp, 0.0)
                kl = ((log_ratio.exp() - log_ratio - 1) * m).sum() / m.sum().clamp_min(1)   # k3 estimator, >= 0
                loss = loss + args.kl_coef * kl
                metrics["kl"] = kl.item()
            (loss * share).backward()
            part_loss += loss.item() * share
            n_tok = m.sum().item()
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value * n_tok
            n_sum += n_tok
        if len(todo) == 0:
            # Nothing can move the gradient, but the optimiser still takes its step (as it would on zero gradients)
            for p in model.parameters():
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)))
        optimizer.step()
        losses.append(part_loss)
    scheduler.step()
    model.eval()
    # policy-loss metrics: means over the response tokens that entered the update (None when none did)
    if not sums:
        one = torch.zeros(1, 1)
        sums = dict.fromkeys(simko.policy_loss(one, one, one[0], one + 1)[1], 0.0)
        sums.pop("entropy", None)
    out = {key: value / n_sum if n_sum else None for key, value in sums.items()}
    out["loss"] = sum(losses) / len(losses)
    out["grad_norm"] = sum(grad_norms) / len(grad_norms)
    out["updated_rows_frac"] = live.float().mean().item()
    return out


# ----------------------------------------------------------------------------------------------------------------
# Evaluation: pass@k on the held-out split

@torch.no_grad()
def evaluate(model, tokenizer, task, args, eos_ids, autocast) -> dict:
    """pass@k for every k = 1..n from n = --eval-samples responses per held-out problem.

    A fresh generator seeded from --seed is used at every evaluation: evaluations never disturb the training RNG
    (so resuming reproduces the run), and before/after tables see the same random numbers."""
    model.eval()
    prompts = [task["prompt"](p, tokenizer) for p in task["eval"]]
    generator = torch.Generator(device=args.device).manual_seed(args.seed + 7919)
    n = args.eval_samples
    # as many rows per generation call as a training rollout (at least 512 for the tiny embedded model)
    eval_rows = max(n, (args.gen_batch_size or args.prompts_per_step) * args.group_size)
    if args.model is None:
        eval_rows = max(eval_rows, 512)
    with autocast():
        texts = R.sample_for_eval(model, tokenizer, prompts, n, max_new_tokens=args.max_new_tokens,
                                  temperature=args.eval_temperature, top_p=args.eval_top_p, generator=generator,
                                  batch_size=eval_rows, add_special_tokens=task["add_special_tokens"],
                                  eos_token_id=eos_ids, **decode_kwargs(args))
    flat = [t for row in texts for t in row]
    problems = [p for p in task["eval"] for _ in range(n)]
    correct = torch.tensor(task["reward"](flat, problems)).view(len(prompts), n) > 0.5
    curve = passk_at_k.pass_at_k_curve(correct, ks=list(range(1, n + 1)))
    return {**{f"pass@{k}": v for k, v in curve.items()}, "correct": correct.sum(1).tolist()}


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints

def find_checkpoint(out: str) -> str | None:
    """The usable checkpoint of a run: `checkpoint/`, or `checkpoint.old` when a save died between its renames."""
    for name in ("checkpoint", "checkpoint.old"):
        path = os.path.join(out, name)
        if os.path.isfile(os.path.join(path, "trainer_state.pt")):
            return path
    return None


def save_checkpoint(out, model, tokenizer, optimizer, scheduler, step, sampler, generator):
    def write(tmp):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "sampler": sampler.getstate(), "generator": generator.get_state(),
                    "torch_rng": torch.random.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                   os.path.join(tmp, "trainer_state.pt"))
    _atomic_save(write, os.path.join(out, "checkpoint"))


def decode_kwargs(args) -> dict:
    """rollout.py keywords of --decode (only passed when not the default, so an older rollout.py still works)."""
    return {"static_cache": True} if args.decode == "static" else {}


def rl_step(step, batch, model, ref_model, tokenizer, optimizer, scheduler, task, args, generator, eos_ids,
            autocast, from_hidden) -> dict:
    """One RL step on `batch` (a list of problems): rollout -> reward -> advantage -> update. Returns its metrics."""
    G, P = args.group_size, len(batch)
    t0 = time.time()
    prompts = [task["prompt"](p, tokenizer) for p in batch]
    per_call = args.gen_batch_size or P
    parts = []
    with autocast():
        for s in range(0, P, per_call):
            parts.append(R.rollout(model, tokenizer, prompts[s:s + per_call], G, max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature, top_p=args.top_p, generator=generator,
                                   add_special_tokens=task["add_special_tokens"], eos_token_id=eos_ids,
                                   **decode_kwargs(args), **STATS_TOP_K))
    ro = _concat_rollouts(parts, tokenizer)
    t1 = time.time()
    rewards = torch.tensor(task["reward"](ro.texts, [p for p in batch for _ in range(G)]),
                           dtype=torch.float32).view(P, G)
    t2 = time.time()
    mask = ro.response_mask
    prompt_entropy = ((ro.entropy * mask).sum(1) / mask.sum(1).clamp_min(1)).view(P, G).mean(1).cpu()
    method = "grpo" if args.switch_to_grpo_at is not None and step >= args.switch_to_grpo_at else args.advantage
    adv = compute_advantages(rewards, prompt_entropy, method, args.k, args.seed * 100003 + step)
    advantages = adv.reshape(-1).to(args.device, torch.float32)
    t3 = time.time()
    stats = update(model, ref_model, optimizer, scheduler, ro, advantages, args, autocast, from_hidden)
    t4 = time.time()
    n_tokens = mask.sum().item()
    out = {"type": "train", "step": step + 1, "advantage": method,
           "reward_mean": rewards.mean().item(),
           "zero_variance_frac": (rewards.std(1) == 0).float().mean().item(),
           "adv_mean": adv.mean().item(), "adv_abs_mean": adv.abs().mean().item(),
           "response_len": mask.sum(1).mean().item(), "truncated_frac": ro.truncated.float().mean().item(),
           # the sampling policy's mean token entropy and concentration, over every response token of the batch
           "entropy": (ro.entropy * mask).sum().item() / max(n_tokens, 1)}
    if getattr(ro, "topk_logp", None) is not None:
        c = simko.concentration(ro.topk_logp, mask)
        for i in range(CONCENTRATION_RANKS):
            out[f"rank{i + 1}_prob"] = c["prob"][i]
        for i in range(CONCENTRATION_RANKS):
            out[f"rank{i + 1}_logp"] = c["logp"][i]
    out.update(stats)
    out.update({"lr": scheduler.get_last_lr()[0],
                "rollout_tokens_per_s": n_tokens / max(t1 - t0, 1e-9),
                "update_tokens_per_s": ro.attention_mask.sum().item() / max(t4 - t3, 1e-9),
                "time_rollout": t1 - t0, "time_reward": t2 - t1, "time_advantage": t3 - t2, "time_update": t4 - t3,
                "time_step": t4 - t0})
    return out


# ----------------------------------------------------------------------------------------------------------------
# The run

def set_threads(args) -> None:
    # The tiny model's matrices are too small for intra-op parallelism: on a busy 2-core machine 2 threads made
    # a warm-up step 8x slower than 1 thread (3.0 s vs 0.37 s), so the embedded run uses one thread by default.
    if args.threads or (args.model is None and not str(args.device).startswith("cuda")):
        torch.set_num_threads(args.threads or 1)


def main(argv=None) -> dict:
    """Run one configuration; returns {"before": pass@k dict, "after": pass@k dict, "last_step": metrics, "out"}."""
    args = parse_args(argv)
    task = load_task(args)                 # data errors surface here, before any model is loaded
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()      # our own bars only

    def log(message):
        tqdm.write(message)

    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    set_threads(args)
    checkpoint = find_checkpoint(args.out) if args.resume else None
    if checkpoint:
        model, tokenizer = load_hf_model(checkpoint, args)
    elif args.model is None:
        model, tokenizer = warmed_up_model(args, task, log)
    else:
        model, tokenizer = load_hf_model(args.model, args)
    model.to(args.device).eval()
    eos_ids = stop_token_ids(model, tokenizer)
    on_cuda = str(args.device).startswith("cuda")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_cuda else nullcontext
    if args.grad_checkpointing:
        # (renamed in transformers 5; the rollout runs in eval mode and keeps its KV cache)
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    from_hidden = use_hidden_stats(model, args)
    ref_model = None
    if args.kl_coef > 0:
        import copy
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / args.lr_warmup_steps) if args.lr_warmup_steps else 1.0)
    sampler = random.Random(args.seed)                                   # which prompts each step sees
    generator = torch.Generator(device=args.device).manual_seed(args.seed)  # rollout sampling
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    start_step, history = 0, []
    if checkpoint:
        state = torch.load(os.path.join(checkpoint, "trainer_state.pt"), weights_only=False)
        if ref_model is not None:
            log("note: --kl-coef on resume uses the checkpoint as the reference policy")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.setstate(state["sampler"])
        generator.set_state(state["generator"])
        torch.random.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start_step = state["step"]
        config_path = os.path.join(args.out, "config.json")
        if os.path.isfile(config_path):
            with open(config_path) as f:
                saved = json.load(f)
            changed = sorted(k for k, v in vars(args).items()
                             if k in saved and saved[k] != v and k not in ("steps", "resume", "no_progress"))
            if changed:
                log("warning: --resume with flags that differ from the original run: " +
                    ", ".join(f"{k} {saved[k]!r} -> {getattr(args, k)!r}" for k in changed))
        # keep the log up to the checkpoint; whatever was written after it is redone
        with open(metrics_path) as f:
            history = [json.loads(line) for line in f if line.strip()]
        history = [h for h in history if h["step"] <= start_step]
        log(f"resuming {args.out} at step {start_step}")
    else:
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(vars(args), f, indent=1)
    with open(metrics_path + ".tmp", "w") as f:
        f.writelines(json.dumps(h) + "\n" for h in history)
    os.replace(metrics_path + ".tmp", metrics_path)

    def record(entry):
        history.append(entry)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def run_eval(step):
        t = time.time()
        result = evaluate(model, tokenizer, task, args, eos_ids, autocast)
        record({"type": "eval", "step": step, **result, "seconds": time.time() - t})
        log(f"eval @ step {step}: " + "  ".join(f"pass@{k} {result[f'pass@{k}']:.3f}" for k in TABLE_KS
                                                 if f"pass@{k}" in result))

    log(f"{task['name']}: {len(task['train'])} training / {len(task['eval'])} held-out problems; "
        f"advantage {args.advantage} (k={args.k}), SimKO {'on' if args.simko else 'off'}, out {args.out}")
    if start_step == 0:
        run_eval(0)

    P = args.prompts_per_step
    bar = tqdm(range(start_step, args.steps), desc="RL", disable=args.no_progress, initial=start_step,
               total=args.steps)
    last = {}
    for step in bar:
        batch = sampler.sample(task["train"], P)
        last = rl_step(step, batch, model, ref_model, tokenizer, optimizer, scheduler, task, args, generator,
                       eos_ids, autocast, from_hidden)
        record(last)
        bar.set_postfix(reward=f"{last['reward_mean']:.3f}", step_s=f"{last['time_step']:.2f}")
        done = step + 1
        if args.eval_every and done % args.eval_every == 0 and done != args.steps:
            run_eval(done)
        if args.save_every and done % args.save_every == 0 and done != args.steps:
            save_checkpoint(args.out, model, tokenizer, optimizer, scheduler, done, sampler, generator)
    bar.close()

    if start_step < args.steps or not any(h["type"] == "eval" and h["step"] == args.steps for h in history):
        run_eval(args.steps)
    save_checkpoint(args.out, model, tokenizer, optimizer, scheduler, args.steps, sampler, generator)
    evals = [h for h in history if h["type"] == "eval"]
    before, after = evals[0], evals[-1]
    table = pass_at_k_table(before, after, args.eval_samples)
    print(table)
    with open(os.path.join(args.out, "pass_at_k.md"), "w") as f:
        f.write(table + "\n")
    strip = lambda e: {k: v for k, v in e.items() if k.startswith("pass@")}
    return {"before": strip(before), "after": strip(after), "last_step": last, "out": args.out}


def _concat_rollouts(parts: list, tokenizer) -> R.Rollout:
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
        **({"topk_logp": torch.cat([F.pad(p.topk_logp, (0, 0, 0, T - p.response_mask.shape[1])) for p in parts])}
           if getattr(parts[0], "topk_logp", None) is not None else {}))


def pass_at_k_table(before: dict, after: dict, n: int) -> str:
    ks = [k for k in TABLE_KS if k <= n]
    lines = [f"| k | " + " | ".join(str(k) for k in ks) + " |", "|---|" + "---|" * len(ks),
             f"| before (step {before['step']}) | " + " | ".join(f"{before[f'pass@{k}']:.3f}" for k in ks) + " |",
             f"| after (step {after['step']}) | " + " | ".join(f"{after[f'pass@{k}']:.3f}" for k in ks) + " |"]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:        # data and configuration errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
