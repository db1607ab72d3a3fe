"""RLVR on one device with Pass@k Training and SimKO: `python train.py`.

One run is one configuration (`Args`, section 1; `python train.py --help` lists every flag). Every RL step does
four things (section 2, in this order):

1. **Rollout** (`rollout.py`): G = `--group-size` responses for each of `--prompts-per-step` prompts, sampled with
   a KV cache, keeping each token's log-probability under the sampling policy (`old_logp`), the policy's entropy
   and its top-5 log-probabilities (the concentration metric).
2. **Reward**: 1 for a correct final answer, else 0: the embedded Countdown checker (`countdown.py`),
   `verify.batch_reward` for math data, or a reasoning-gym task's scorer, binarised (`reasoning_gym_task.py`).
3. **Advantage** (`passk_at_k.py`): `--advantage` picks GRPO (Pass@1), one of the Pass@k-Training advantages
   (analytical by default, `--k 4`) or PKPO; `--schedule` changes it in phases (the paper's Pass@1 -> Pass@k ->
   Pass@1 transfer, PKPO's k annealing). `--loss psr|nsr|w_reinforce` takes per-response advantages instead.
4. **Update** (`simko.py`): a teacher-forced forward gives the current log-probs and top-K statistics, and
   `policy_loss` is the clipped surrogate (`--clip`, token mean, no KL) with SimKO's top-K spread on correct
   responses and its stronger rank-1 penalty on wrong ones at high-entropy tokens (`--simko`, the default;
   `--no-simko` is plain GRPO/DAPO). The batch is split into `--mini-batches` parts of whole groups, one optimiser
   step each (as verl does; from the second part on the ratio pi/pi_old moves and the clip acts), with micro-batches
   accumulating gradients inside a part. Rows whose advantage is 0 cannot change the gradient (without a KL term)
   and are left out of the forward and backward; the loss normaliser still counts them.

With no arguments everything is built from code and runs offline on a CPU in minutes: a ~0.86M-parameter Llama and
a character tokenizer learn Countdown-3 (`countdown.py`) after a cached supervised warm-up that rarely shows the
problems needing * or / (`--warmup-variant headroom`), so that RL has something to discover. A before/after pass@k
table (k = 1, 2, 4, 8, 16) on the 300 held-out problems is printed, overall and on those problems apart. Its lr
(1e-4) and batch (16 prompts x 8) are sized for that model; for a real model pass the papers' (e.g. `--lr 1e-6`).

`--model NAME_OR_PATH_OR_GGUF --data train.jsonl|rg:TASK` trains any Hugging Face causal LM on math problems (chat
template when there is one; `--sft-steps N` first teaches the "\\boxed{answer}" format). On CUDA the forward passes
run under bf16 autocast, and for large vocabularies the token statistics come from the last hidden states
(`simko.token_stats_from_hidden`), never materialising [tokens x vocabulary] logits.

Outputs under `--out` (written by `train_io.py`): `metrics.jsonl` (one line per step and per evaluation),
`config.json` (every flag), `checkpoint/` (model, tokenizer and `trainer_state.pt` with the optimiser, scheduler and
RNG states) and `pass_at_k.md`. `--resume --out DIR` continues a run with the flags of its `config.json`; only those
in `RESUME_MAY_CHANGE` may be given new values. On CPU a resumed run reproduces the uninterrupted run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
import time
from dataclasses import dataclass

import torch

import countdown
import passk_at_k
import reasoning_gym_task
import rollout as R
import simko
import train_io
import verify
from simko import (AGGREGATIONS, GATES, LOSSES, PAPER_ALPHA, PAPER_LAMBDA, PAPER_TAU, PAPER_TOP_K,
                   PAPER_W_REINFORCE_WEIGHT, PENALTIES, SPREAD_ON)
from train_io import (TABLE_KS, Policy, Task, above, at_least, chat_prompt, concat_rollouts, find_checkpoint, flag,
                      held_out_subsets, load_jsonl, load_policy, load_trainer_state, pass_at_k_table, save_checkpoint,
                      save_config, set_threads, start_metrics, within)

ADVANTAGES = tuple(passk_at_k.ADVANTAGES)
# The named clip settings (clip_low, clip_high) of --clip
CLIPS = {"passk": passk_at_k.PAPER_CLIP, "simko": simko.PAPER_CLIP}
CONCENTRATION_RANKS = 5     # metrics.jsonl logs the rank-1..5 probabilities (SimKO's Lambda^(k))
# simko.policy_loss's metrics; a step that forwards no row logs each as None
LOSS_METRICS = ("clip_frac_low", "clip_frac_high", "ratio_mean", "gated_frac", "spread_frac_of_gated",
                "penalty_frac_of_gated")
# The flags a resumed run may change: how it runs, logs and saves, never what it computes.
RESUME_MAY_CHANGE = ("steps", "eval_every", "probe_every", "save_every", "out", "resume", "device", "threads", "micro_batch_size",
                     "gen_batch_size", "decode", "grad_checkpointing", "stats_from_hidden", "reward_workers",
                     "reward_timeout", "warmup_cache", "no_progress")


# ================================================================================================================
# 1. Configuration: one field per flag (`--name-with-dashes`), its help text and its check beside it

def _check_model(v, a):
    if v is None:
        return None
    if a.data is None:
        return "needs --data (a JSONL of problems and answers, or rg:TASK)"
    if v.endswith(".gguf"):
        if not os.path.isfile(v):
            return f": no such GGUF file: {v}"
        if importlib.util.find_spec("gguf") is None:
            return f"{v}: reading a GGUF file needs the gguf package: pip install gguf"
    elif v.startswith(("/", ".", "~")) and not os.path.exists(v):
        return f": no such directory: {v}"     # (hub names like Org/Name are not checked)


def _check_data(v, a):
    if v is not None and a.model is None:
        return "needs --model (the embedded tiny model only knows its built-in Countdown task)"
    if v is not None and not reasoning_gym_task.is_spec(v) and not os.path.isfile(v):
        return f": no such file: {v}"


def _check_eval_data(v, a):
    if v is not None and a.data is None:
        return "needs --data and --model"
    if v is not None and reasoning_gym_task.is_spec(a.data):
        return "is not used with --data rg:... (the held-out split comes from the same generator)"
    if v is not None and not os.path.isfile(v):
        return f": no such file: {v}"


def _k_problem(advantage: str, k: int, G: int) -> str | None:
    """Why group size k does not suit `advantage` at G responses a prompt, or None when it does."""
    if advantage.startswith("pkpo"):        # PKPO is defined up to k = G
        return None if 1 <= k <= G else f"must be in [1, --group-size = {G}], got {k}"
    allowed = f"must be in [1, --group-size - 1 = {G - 1}], got {k}"
    if k < 1:
        return allowed
    if k >= G and advantage != "grpo":      # (GRPO ignores k)
        return (f"{allowed}: with k >= the group size every k-subset is the whole group, so every Pass@k advantage "
                f"is exactly 0 and nothing is trained")


def _check_k(v, a):                         # (a schedule's phases are checked by _check_schedule)
    return _k_problem(a.advantage if a.schedule is None and a.loss == "clip" else "grpo", v, a.group_size)


def _check_schedule(v, a):
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
        problem = _k_problem(p.advantage, p.k, a.group_size)
        if problem:
            return f": phase {p.advantage}@{p.k}: k {problem}"


@dataclass
class Args:
    model: str | None = flag(
        None, "Hugging Face causal LM to train: a hub name, a directory, or a local .gguf file (dequantised to "
        "float32; needs `pip install gguf`)", check=_check_model, group="model and data",
        shown="the embedded tiny Llama on its Countdown task")
    data: str | None = flag(
        None, "training JSONL, one problem a line (problem/question, answer/solution), or a reasoning-gym task "
        "'rg:TASK?key=value&...' (keys: the task's config fields, plus size= (default 2000) and seed= (default 0); "
        "e.g. 'rg:basic_arithmetic?min_terms=2&max_terms=2&max_digits=2'; see reasoning_gym_task.py); needs --model",
        check=_check_data, shown="the embedded Countdown problems")
    eval_data: str | None = flag(None, "held-out JSONL, same fields", check=_check_eval_data,
                                 shown="the last 10% of --data, at most 500 problems")
    out: str | None = flag(
        None, "run directory", shown="runs/<timestamp>",
        check=lambda v, a: None if a.resume or not os.path.exists(os.path.join(v, "metrics.jsonl")) else
        f"{v} already holds a run (metrics.jsonl); pass --resume to continue it or pick another --out")
    warmup_cache: str | None = flag(
        None, "directory where the embedded model's warm-up is cached and shared between runs",
        shown="warmup/ beside --out, e.g. runs/warmup")
    warmup_variant: str = flag(
        "headroom", "embedded task only: the warm-up's data; 'headroom' few * and /, so that the problems that need "
        "them are solved only rarely at the start and exploration can show; 'full' every problem and answer "
        "(countdown.py's docstring)", choices=countdown.WARMUP_VARIANTS)
    device: str | None = flag(None, "cpu, cuda, cuda:1, ...", shown="cuda when available, else cpu")
    seed: int = flag(0, "seed of the prompt order, the rollouts and the evaluations (the embedded warm-up always uses "
                     "seed 0)")
    threads: int | None = flag(None, "torch CPU threads", check=at_least(1),
                               shown="1 for the embedded model on CPU, torch's default otherwise")

    steps: int = flag(80, "RL steps, one rollout batch each", check=at_least(0), group="schedule")
    sft_steps: int | None = flag(
        None, "supervised warm-up steps before RL: for the embedded task steps of 64 problems; for --model a format "
        "warm-up on the training split's gold answers, 8 problems a step", check=at_least(0),
        shown="600 for the embedded task, 0 for --model")
    sft_lr: float | None = flag(None, "learning rate of the warm-up", check=above(0),
                                shown="3e-3 for the embedded task, 2e-5 for --model")
    prompts_per_step: int = flag(16, f"prompts per rollout batch (the Pass@k paper: {passk_at_k.PAPER_PROMPT_BATCH}, "
                                 f"SimKO's: {simko.PAPER_PROMPT_BATCH})",
                                 check=at_least(1))
    group_size: int = flag(8, f"G (the papers' N): responses sampled per prompt (the Pass@k paper: "
                           f"{passk_at_k.PAPER_N}, SimKO's: {simko.PAPER_N})", check=lambda v, a: None if v >= 2 else
                           f"must be >= 2 (advantages compare responses), got {v}")
    mini_batches: int | None = flag(
        None, "optimiser steps per rollout batch: the prompts are split in order into this many parts of whole "
        "groups, one step each (verl: ppo_mini_batch_size = prompts per part)",
        shown="4 as in the papers, or --prompts-per-step if fewer",
        check=lambda v, a: None if 1 <= v <= a.prompts_per_step else f"must be in [1, --prompts-per-step="
        f"{a.prompts_per_step}] (each part holds whole groups), got {v}")
    micro_batch_size: int = flag(0, "rows (responses) per forward/backward, gradients accumulated; 0 = a whole "
                                 "mini-batch at once", check=at_least(0))
    gen_batch_size: int = flag(0, "prompts per generation call; 0 = all prompts of the step at once",
                               check=at_least(0))
    lr: float = flag(1e-4, f"AdamW learning rate of the RL updates (both papers: {passk_at_k.PAPER_LR:g} on real "
                     "models; the embedded 0.86M model needs a larger step)", check=above(0))
    lr_warmup_steps: int = flag(0, "RL steps of linear learning-rate warm-up, then constant; 0 = none (the Pass@k "
                                f"paper: {passk_at_k.PAPER_WARMUP_STEPS}, its App. A.2)", check=at_least(0))
    max_grad_norm: float = flag(1.0, "gradient clipping, L2 norm over all parameters", check=above(0))
    eval_every: int = flag(40, "RL steps between held-out evaluations; 0 = only before and after", check=at_least(0))
    eval_samples: int = flag(16, "n responses per held-out problem; pass@k is reported for k = 1..n",
                             check=at_least(1))
    eval_problems: int = flag(0, "evaluate on the first N held-out problems only; 0 = all", check=at_least(0))
    eval_before: bool = flag(True, "evaluate at step 0; --no-eval-before skips it when several runs share one warm "
                             "start whose evaluation is already known")
    probe_problems: int = flag(0, "SimKO's mechanism on fixed prompts: at step 0, every --probe-every steps and at "
                               "the end, sample --group-size responses to each of the first N held-out problems and "
                               "log the rank-1..5 probabilities and the entropy over all their tokens and over the "
                               "top 20 % by entropy; 0 = off", check=at_least(0))
    probe_every: int = flag(10, "RL steps between probes (--probe-problems)", check=at_least(1))
    save_every: int = flag(0, "RL steps between checkpoints; the end of the run always saves one; 0 = only at the "
                           "end", check=at_least(0))
    resume: bool = flag(False, "continue the run in --out from its checkpoint with the flags of its config.json; "
                        "only " + ", ".join(f"--{k.replace('_', '-')}" for k in RESUME_MAY_CHANGE[:-1]
                                            if k not in ("out", "resume")) +
                        f" and --{RESUME_MAY_CHANGE[-1].replace('_', '-')} may be given new values")

    advantage: str = flag("passk", "the advantage (passk_at_k.ADVANTAGES): grpo = Pass@1; passk = analytical "
                          "Pass@k (Pass@k Training's Eqs. 11-15); passk_bootstrap, passk_full = its sampled forms; "
                          "combination, entropy_adaptive, exceeding = its advantage designs; pkpo, pkpo_maxk = PKPO's "
                          "pass@k and max@k estimators (Walder and Karkhanis 2025)", choices=ADVANTAGES,
                          group="algorithm")
    k: int = flag(4, "k of the Pass@k advantages, 1 <= k < --group-size (k <= --group-size for pkpo); ignored by "
                  "grpo", check=_check_k)
    schedule: str | None = flag(
        None, "advantage phases 'NAME[@K]:STEPS,...' (passk_at_k.parse_schedule; K defaults to --k; the last phase "
        "runs to the end), replacing --advantage: e.g. the Pass@k paper's Pass@1 -> Pass@k -> Pass@1 (its Fig. 1) "
        "'grpo:50,passk:100,grpo:50', its (P@k + P@1) x 2 (Table 5) 'passk:50,grpo:50,passk:50,grpo:50', PKPO's k "
        "annealing 'pkpo@8:100,pkpo@4:100'; each step logs its phase's advantage and k", check=_check_schedule,
        shown="--advantage with --k throughout")
    switch_to_grpo_at: int | None = flag(None, "RL steps after which the GRPO advantage is used (the Pass@k -> "
                                         "Pass@1 transfer; the same as --schedule ADVANTAGE:STEPS,grpo:1)",
                                         check=at_least(0), shown="never")
    grpo_std: str = flag("population", "the std of the grpo advantage (r - mean) / std: 'population' divides by N "
                         "(the Pass@k paper's formula), 'unbiased' by N - 1 (verl, and so SimKO's official code: "
                         "1.069x smaller advantages at N = 8)", choices=("population", "unbiased"))
    loss: str = flag("clip", "the policy loss (simko.LOSSES): 'clip' the clipped surrogate on the advantage above; "
                     "'psr', 'nsr', 'w_reinforce' the analysis baselines of SimKO's Fig. 3 (Zhu et al. 2025, arXiv "
                     "2506.01347): the same surrogate on per-response advantages from the reward alone (PSR: 1 "
                     "correct, 0 wrong; NSR: 0 correct, -1 wrong; W-REINFORCE: --w-reinforce-weight correct, -1 "
                     "wrong; simko.sample_advantages), --advantage, --k and --schedule unused (with --no-simko: the "
                     "plain baselines)", choices=LOSSES)
    w_reinforce_weight: float = flag(PAPER_W_REINFORCE_WEIGHT, "lambda_w, the advantage of a correct response under "
                                     "--loss w_reinforce (Zhu et al. 2025's value)", check=at_least(0))
    simko: bool | None = flag(None, "SimKO's changes to the loss; --no-simko is plain GRPO/DAPO",
                              shown="on, off under --loss psr, nsr, w_reinforce (Zhu et al.'s runs)")
    simko_topk: int = flag(PAPER_TOP_K, "K, the top-K candidates over which SimKO spreads the push of correct "
                           "tokens", check=at_least(1))
    simko_alpha: float = flag(PAPER_ALPHA, "alpha in [0, 1], the share of that push spread over the top-K",
                              check=within("[0, 1]"))
    simko_lambda: float = flag(PAPER_LAMBDA, "lambda > 0, the factor on the penalty of a wrong token that is "
                               "the policy's rank-1 candidate", check=above(0))
    simko_tau: float = flag(
        PAPER_TAU, "entropy gate: a quantile in [0, 1] of the token entropies (row_quantile, batch_quantile), "
        "or nats (absolute); SimKO acts on tokens above it",
        check=lambda v, a: None if a.simko_gate == "absolute" or 0 <= v <= 1 else
        f"is a quantile for --simko-gate {a.simko_gate}: must be in [0, 1], got {v}")
    simko_gate: str = flag(GATES[0], "what --simko-tau is a threshold of (row_quantile is the official "
                           "code's)", choices=GATES)
    simko_penalty: str = flag(PENALTIES[0], "how lambda enters: 'advantage' scales the advantage (official "
                              "code), 'ratio' scales the ratio inside the clip (paper text)", choices=PENALTIES)
    simko_spread_on: str = flag(
        SPREAD_ON[0], "which gated tokens get SimKO's top-K spread: 'advantage' those with A > 0 (the paper's text), "
        "'correct' those of correct responses (the official code); the two differ under passk_full and "
        "passk_bootstrap, where a wrong response in a successful group has A > 0", choices=SPREAD_ON)
    clip: str | None = flag(
        None, "the named clip range of --clip-low / --clip-high: 'passk' 0.2 / 0.28, DAPO's clip-higher, the Pass@k "
        "paper's setting (passk_at_k.PAPER_CLIP); 'simko' a symmetric 0.2, SimKO's official code (clip_ratio 0.2 "
        "in its ppo_trainer.yaml; simko.PAPER_CLIP)", choices=tuple(CLIPS),
        shown="simko for SimKO alone (the grpo advantage throughout, --simko, --loss clip) and for --loss psr, nsr, "
        "w_reinforce (verl's 0.2, Zhu et al.'s runs), else passk")
    clip_low: float | None = flag(None, "the ratio is clipped below at 1 - this, in [0, 1)", check=within("[0, 1)"),
                                  shown="from --clip: 0.2")
    clip_high: float | None = flag(None, "the ratio is clipped above at 1 + this, >= 0", check=at_least(0),
                                   shown="from --clip: 0.28 for passk, 0.2 for simko")
    loss_agg: str = flag(AGGREGATIONS[0], "how token losses are averaged: over all tokens (DAPO), per response "
                         "then over responses (GRPO), per response sum / max length (Dr. GRPO)",
                         choices=AGGREGATIONS)
    kl_coef: float = flag(0.0, "weight of a k3 KL penalty to the initial policy; 0 = none and no reference model is "
                          "loaded", check=at_least(0))

    temperature: float = flag(1.0, "rollout sampling temperature, > 0; the loss uses the same", check=above(0),
                              group="sampling")
    top_p: float = flag(1.0, "rollout nucleus in (0, 1]; old_logp ignores the cut", check=within("(0, 1]"))
    eval_temperature: float = flag(1.0, "held-out sampling temperature, > 0", check=above(0))
    eval_top_p: float = flag(1.0, f"held-out nucleus in (0, 1] (the Pass@k paper: {passk_at_k.PAPER_EVAL_TOP_P})",
                             check=within("(0, 1]"))
    max_new_tokens: int | None = flag(None, "tokens per response at most", check=at_least(1),
                                      shown="12 for the embedded model, 512 with --model")
    decode: str = flag("dynamic", "the rollout's KV cache: grown token by token, or preallocated (rollout.py's "
                       "static_cache; same tokens)", choices=("dynamic", "static"))

    grad_checkpointing: bool = flag(False, "recompute activations in the backward to save memory",
                                    group="memory and rewards (real models)")
    stats_from_hidden: str = flag("auto", "token statistics from the last hidden states and the LM head, never "
                                  "materialising the logits; auto = on for vocabularies over 32k",
                                  choices=("auto", "on", "off"))
    shared_prompt: str = flag("auto", "the update forwards the rows' shared prefixes once (each group's prompt, "
                              "common openings and response prefixes) as one packed sequence with no padding "
                              "(rollout.response_forward; equal to the plain forward to float rounding); auto = "
                              "on with --model, off for the embedded model (whose runs stay bit for bit the plain "
                              "path's)", choices=("auto", "on", "off"))
    reward_workers: int | None = flag(None, "processes for verify.batch_reward; 0 = in-process", check=at_least(0),
                                      shown="verify's, at most 8")
    reward_timeout: float = flag(5.0, "seconds one answer check may take before it counts as wrong", check=above(0))
    reward_fallback: str = flag(verify.FALLBACKS[0], "responses with no box and no answer anchor: 'none' scores 0, "
                                "'last' takes the last value in the text (lenient; verify.py's fallback=)",
                                choices=verify.FALLBACKS)
    no_progress: bool = flag(False, "no progress bars, e.g. in logs")


def build_parser():
    return train_io.build_parser(Args, __doc__.split("\n\n")[0])


def parse_args(argv=None) -> Args:
    """The flags, with the defaults that depend on other flags filled in, and checked (every error names the flag and
    the allowed range); under --resume the saved ones, overridden by those in RESUME_MAY_CHANGE."""
    parser = build_parser()
    args = Args(**vars(parser.parse_args(argv)))
    if args.resume:
        args = train_io.resumed_args(parser, args, argv, RESUME_MAY_CHANGE)
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
    train_io.check_fields(parser, args)
    if args.simko is None:
        args.simko = args.loss == "clip"
    if args.clip is None:
        simko_alone = args.simko and args.loss == "clip" and all(p.advantage == "grpo" for p in schedule_of(args))
        args.clip = "simko" if simko_alone or args.loss != "clip" else "passk"
    if args.clip_low is None:
        args.clip_low = CLIPS[args.clip][0]
    if args.clip_high is None:
        args.clip_high = CLIPS[args.clip][1]
    return args


def schedule_of(args: Args) -> list[passk_at_k.Phase]:
    """The run's advantage phases: --schedule, else --advantage with --k throughout (switching to GRPO after
    --switch-to-grpo-at steps). passk_at_k.phase_at(phases, step) is the phase of a step."""
    if args.schedule:
        return passk_at_k.parse_schedule(args.schedule, args.k)
    grpo = passk_at_k.Phase("grpo", args.k, 1)
    if args.switch_to_grpo_at == 0:
        return [grpo]
    first = passk_at_k.Phase(args.advantage, args.k, args.switch_to_grpo_at or 1)
    return [first] if args.switch_to_grpo_at is None else [first, grpo]


def load_task(args: Args) -> Task:
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


# ================================================================================================================
# 2. One RL step: rollout -> reward -> advantage -> update

def rollout_batch(policy: Policy, prompts: list[str], task: Task, args: Args, generator) -> R.Rollout:
    """Step 1: G responses per prompt; rows [i*G, (i+1)*G) belong to prompts[i]."""
    per_call = args.gen_batch_size or len(prompts)
    parts = []
    with policy.autocast():
        for s in range(0, len(prompts), per_call):
            parts.append(R.rollout(policy.model, policy.tokenizer, prompts[s:s + per_call], args.group_size,
                                   max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                   top_p=args.top_p, generator=generator, eos_token_id=policy.eos_ids,
                                   add_special_tokens=task.add_special_tokens, static_cache=args.decode == "static",
                                   stats_top_k=CONCENTRATION_RANKS, shrink_cache=use_fast_paths(args)))
    return concat_rollouts(parts, policy.tokenizer)


def rewards_of(ro: R.Rollout, batch: list[dict], task: Task, G: int) -> torch.Tensor:
    """Step 2: the [P, G] rewards of the responses."""
    rewards = task.reward(ro.texts, [p for p in batch for _ in range(G)])
    return torch.tensor(rewards, dtype=torch.float32).view(len(batch), G)


def advantages_of(rewards: torch.Tensor, ro: R.Rollout, method: str, args: Args, step: int,
                  k: int | None = None) -> torch.Tensor:
    """Step 3: [P, G] rewards -> [P, G] advantages: passk_at_k.ADVANTAGES[method] with group size k (default --k);
    under --loss psr / nsr / w_reinforce each response's own, from its reward (simko.sample_advantages)."""
    P, G = rewards.shape
    if args.loss != "clip":
        correct = rewards.reshape(-1) > 0.5
        return simko.sample_advantages(correct, args.loss, args.w_reinforce_weight).view(P, G)
    prompt_entropy = None
    if method == "entropy_adaptive":        # each prompt's mean token entropy (only this advantage reads it)
        mask = ro.response_mask
        prompt_entropy = ((ro.entropy * mask).sum(1) / mask.sum(1).clamp_min(1)).view(P, G).mean(1).cpu()
    generator = torch.Generator().manual_seed(args.seed * 100003 + step)      # (passk_bootstrap samples groups)
    return passk_at_k.compute_advantages(method, rewards, args.k if k is None else k, entropy=prompt_entropy,
                                         generator=generator, unbiased_std=args.grpo_std == "unbiased")


def update(policy: Policy, optimizer, scheduler, ro: R.Rollout, advantages: torch.Tensor, args: Args,
           correct: torch.Tensor | None = None) -> dict:
    """Step 4: --mini-batches optimiser steps on the rollout batch; advantages [rows], correct [rows] bool (needed by
    --simko-spread-on correct). Returns the loss metrics.

    The prompts are split in order into M parts of whole groups; each part is one optimiser step whose loss is
    that part's aggregate (token mean by default), accumulated over micro-batches."""
    rows, G = ro.response_mask.shape[0], args.group_size
    if rows % G:
        raise ValueError(f"update: {rows} rollout rows are not whole groups of --group-size {G}")
    policy.model.train()
    weights, live = choose_rows(ro.response_mask, advantages, policy, args, correct)
    totals, losses, grad_norms = {}, [], []
    for part in torch.arange(rows // G).tensor_split(min(args.mini_batches, rows // G)):
        part_rows = torch.arange(int(part[0]) * G, (int(part[-1]) + 1) * G, device=weights.device)
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss_and_backward(policy, ro, advantages, correct, part_rows, weights, live, args, totals))
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(policy.model.parameters(), args.max_grad_norm)))
        optimizer.step()
    scheduler.step()
    policy.model.eval()
    return {**mean_metrics(totals), "loss": sum(losses) / len(losses), "grad_norm": sum(grad_norms) / len(grad_norms),
            "updated_rows_frac": live.float().mean().item()}


def choose_rows(mask: torch.Tensor, advantages: torch.Tensor, policy: Policy, args: Args, correct: torch.Tensor):
    """Each row's weight in the loss normaliser ([rows]: its tokens for token_mean, else 1 per row with tokens) and
    the rows to forward ([rows] bool). Under --loss psr (nsr) only the correct (wrong) rows count, as in
    simko.policy_loss.

    A row whose advantage is 0 adds exactly 0 to the loss and its gradient when there is no KL term, so it is left
    out of the forward and backward while its weight stays in the normaliser - except under SimKO's batch_quantile
    gate, whose quantile is taken over the rows that are forwarded."""
    if args.loss_agg == "token_mean":
        weights = mask.sum(1)
    elif args.loss_agg == "seq_mean_token_mean":
        weights = (mask.sum(1) > 0).float()
    else:
        weights = torch.ones(mask.shape[0], device=mask.device)
    if args.loss in ("psr", "nsr"):
        weights = torch.where(correct == (args.loss == "psr"), weights, 0)
    live = weights > 0
    if policy.ref_model is None and not (args.simko and args.simko_gate == "batch_quantile"):
        live &= advantages != 0
    return weights, live


def loss_and_backward(policy: Policy, ro: R.Rollout, advantages, correct, part_rows, weights, live, args: Args,
                      totals: dict) -> float:
    """One part's loss (simko.policy_loss, plus the KL penalty), its gradient accumulated over micro-batches of its
    live rows; each micro-batch's metrics are added to `totals`. Returns the part's loss."""
    total = weights[part_rows].sum().clamp_min(1)
    todo = part_rows[live[part_rows]]
    micro = args.micro_batch_size or max(len(todo), 1)
    part_loss = 0.0
    for s in range(0, len(todo), micro):
        sel = todo[s:s + micro]
        ids, att, m = ro.input_ids[sel], ro.attention_mask[sel], ro.response_mask[sel]
        share = (weights[sel].sum() / total).item()     # so that the micro-batch losses add up to the part's
        with policy.autocast():
            stats = response_token_stats(policy.model, ids, att, ro.prompt_len, args, policy.from_hidden)
        loss, metrics = simko.policy_loss(
            stats.logp, ro.logp[sel], advantages[sel], m, stats if args.simko else None,
            alpha=args.simko_alpha if args.simko else 0.0, lam=args.simko_lambda if args.simko else 1.0,
            tau=args.simko_tau, gate=args.simko_gate, penalty=args.simko_penalty, clip_low=args.clip_low,
            clip_high=args.clip_high, agg=args.loss_agg, max_len=ro.response_mask.shape[1],
            spread_on=args.simko_spread_on, correct=None if correct is None else correct[sel])
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
        add_metrics(totals, metrics, m.sum().item())
    if len(todo) == 0:
        # Nothing can move the gradient, but the optimiser still takes its step (as on zero gradients).
        for p in policy.model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
    return part_loss


def use_fast_paths(args: Args) -> bool:
    """--shared-prompt resolved: the update's prefix-tree forward, and stopped rows leaving the rollout's KV cache
    (rollout's shrink_cache). Both change only float rounding, so the embedded model keeps the plain paths bit for bit."""
    return args.shared_prompt == "on" or (args.shared_prompt == "auto" and args.model is not None)


def response_token_stats(model, input_ids, attention_mask, prompt_len, args: Args, from_hidden: bool):
    """simko.TokenStats [b, R] of the response tokens under the current policy (position t predicts token t+1)."""
    tokens = input_ids[:, prompt_len:]
    pos = R.position_ids(attention_mask)
    shared = use_fast_paths(args)
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


def add_metrics(totals: dict, metrics: dict, n_tokens: float) -> None:
    """Adds one micro-batch's loss metrics to `totals` (key -> [weighted sum, weight]): a fraction "_of_gated" is
    over the gated tokens, every other metric over all response tokens."""
    for key, value in metrics.items():
        weight = n_tokens * metrics["gated_frac"] if key.endswith("_of_gated") else n_tokens
        total = totals.setdefault(key, [0.0, 0.0])
        total[0] += value * weight
        total[1] += weight


def mean_metrics(totals: dict) -> dict:
    """The loss metrics as means over the forwarded response tokens: None for every key when no token was
    forwarded, 0 for a fraction of gated tokens when none was gated."""
    if not totals:
        return dict.fromkeys(LOSS_METRICS)
    return {key: value / weight if weight else 0.0 for key, (value, weight) in totals.items()}


def rl_step(step: int, batch: list[dict], policy: Policy, optimizer, scheduler, task: Task, args: Args,
            generator) -> dict:
    """One RL step on `batch` (a list of problems): rollout -> reward -> advantage -> update. Returns its metrics."""
    G = args.group_size
    t0 = time.time()
    ro = rollout_batch(policy, [task.prompt(p, policy.tokenizer) for p in batch], task, args, generator)
    t1 = time.time()
    rewards = rewards_of(ro, batch, task, G)
    t2 = time.time()
    phase = passk_at_k.phase_at(schedule_of(args), step)
    adv = advantages_of(rewards, ro, phase.advantage, args, step, phase.k)
    t3 = time.time()
    correct = (rewards > 0.5).reshape(-1).to(args.device)
    loss_metrics = update(policy, optimizer, scheduler, ro, adv.reshape(-1).to(args.device, torch.float32), args,
                          correct)
    t4 = time.time()

    mask = ro.response_mask
    n_tokens = mask.sum().item()
    out = {"type": "train", "step": step + 1, "advantage": phase.advantage if args.loss == "clip" else args.loss,
           "k": phase.k,
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
def evaluate(policy: Policy, task: Task, args: Args) -> dict:
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
                                  eos_token_id=policy.eos_ids, static_cache=args.decode == "static",
                                  shrink_cache=use_fast_paths(args))
    flat = [t for row in texts for t in row]
    problems = [p for p in task.eval for _ in range(n)]
    correct = torch.tensor(task.reward(flat, problems)).view(len(prompts), n) > 0.5
    curve = passk_at_k.pass_at_k_curve(correct, ks=list(range(1, n + 1)))
    return {**{f"pass@{k}": v for k, v in curve.items()}, "correct": correct.sum(1).tolist()}


HIGH_ENTROPY_SHARE = 0.2    # the probe's high-entropy tokens: the top 20 % by entropy (SimKO's gate, tau = 0.8)


@torch.no_grad()
def probe(policy: Policy, task: Task, args: Args) -> dict:
    """SimKO's mechanism on fixed held-out prompts: --group-size responses to each of the first --probe-problems
    held-out problems, with a generator seeded from --seed alone (every probe of a run draws the same random
    numbers). Logs the mean entropy and the concentration metric Lambda^(k) (the rank-k candidate's mean
    probability, simko.concentration) over all response tokens and over the high-entropy ones: the top
    HIGH_ENTROPY_SHARE of this probe's tokens by entropy, where SimKO's gate acts."""
    policy.model.eval()
    generator = torch.Generator(device=args.device).manual_seed(args.seed + 104729)
    problems = task.eval[:args.probe_problems]
    ro = rollout_batch(policy, [task.prompt(p, policy.tokenizer) for p in problems], task, args, generator)
    mask = ro.response_mask.bool()                                   # [P * G, R]
    entropy = ro.entropy[mask]                                       # [tokens]
    threshold = torch.quantile(entropy.double(), 1 - HIGH_ENTROPY_SHARE).item()
    high = mask & (ro.entropy >= threshold)                          # [P * G, R]
    out = {"type": "probe", "reward_mean": sum(task.reward(ro.texts, [p for p in problems
                                                                      for _ in range(args.group_size)])) / len(ro.texts)}
    for name, m in (("all", mask), ("high_entropy", high)):
        c = simko.concentration(ro.topk_logp, m.float())
        out[name] = {"tokens": int(m.sum()), "entropy": ro.entropy[m].mean().item(),
                     **{f"rank{i + 1}_prob": c["prob"][i] for i in range(CONCENTRATION_RANKS)}}
    out["high_entropy"]["threshold"] = threshold
    return out


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

    def run_probe(step):
        if args.probe_problems:
            record({"step": step, **probe(policy, task, args)})

    phases = schedule_of(args)
    method = (f"advantage {phases[0].advantage} (k={phases[0].k})" if len(phases) == 1 else "schedule " +
              ",".join(f"{p.advantage}@{p.k}:{p.steps}" for p in phases))
    log(f"{task.name}: {len(task.train)} training / {len(task.eval)} held-out problems; "
        f"{method if args.loss == 'clip' else 'loss ' + args.loss}, SimKO {'on' if args.simko else 'off'}, "
        f"clip {args.clip_low}/{args.clip_high}, {args.mini_batches} optimiser step(s) per batch, out {args.out}")
    if start_step == 0:
        if args.eval_before:
            run_eval(0)
        run_probe(0)

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
        if args.probe_problems and done % args.probe_every == 0 and done != args.steps:
            run_probe(done)
        if args.save_every and done % args.save_every == 0 and done != args.steps:
            save_checkpoint(args.out, policy, optimizer, scheduler, done, sampler, generator)
    bar.close()

    if start_step < args.steps or not any(h["type"] == "eval" and h["step"] == args.steps for h in history):
        run_eval(args.steps)
        run_probe(args.steps)
    save_checkpoint(args.out, policy, optimizer, scheduler, args.steps, sampler, generator)
    evals = [h for h in history if h["type"] == "eval"]
    # a before row only when RL ran between two evaluations (with --steps 0 the one evaluation is both)
    before, after = (evals[0] if evals[0]["step"] == 0 and len(evals) > 1 else None), evals[-1]
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
    return {"before": strip(before or {}), "after": strip(after), "last_step": last, "out": args.out}


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:        # data and configuration errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
