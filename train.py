"""RLVR on one device with Pass@k Training and SimKO: `python train.py`.

One run is one configuration (`Args`, section 1; `python train.py --help` lists the flags, docs/train.md explains
them). Every RL step does four things (section 2, in this order):

1. **Rollout** (`rollout.py`): G = `--group-size` responses for each of `--prompts-per-step` prompts, sampled with
   a KV cache, keeping each token's log-probability under the sampling policy (`old_logp`), the policy's entropy
   and its top-5 log-probabilities (the concentration metric).
2. **Reward**: 1 for a correct final answer, else 0: the embedded Countdown checker (`countdown.py`),
   `verify.batch_reward` for math data, or a reasoning-gym task's scorer, binarised (`reasoning_gym_task.py`).
3. **Advantage** (`passk_at_k.py`): `--advantage` picks GRPO (Pass@1), a Pass@k-Training advantage (analytical by
   default, `--k 4`) or PKPO; `--schedule` changes it in phases. `--loss psr|nsr|w_reinforce` takes per-response
   advantages instead.
4. **Update** (`simko.py`): a teacher-forced forward gives the current log-probs and top-K statistics, and
   `policy_loss` is the clipped surrogate (`--clip`, token mean, no KL) with SimKO's top-K spread on correct
   responses and its stronger rank-1 penalty on wrong ones at high-entropy tokens (`--simko`; `--no-simko` is plain
   GRPO/DAPO). The batch is split into `--mini-batches` parts of whole groups, one optimiser step each (as verl
   does; from the second part on the ratio pi/pi_old moves and the clip acts), with micro-batches accumulating
   gradients inside a part. Rows whose advantage is 0 cannot change the gradient (without a KL term) and are left
   out of the forward and backward; the loss normaliser still counts them.

With no arguments a ~0.86M-parameter Llama, built from code, learns Countdown-3 (`countdown.py`) offline on a CPU in
minutes, after a cached warm-up that rarely shows the problems needing * or / so that RL has something to discover,
and a before/after pass@k table on 300 held-out problems is printed. `--model NAME_OR_PATH_OR_GGUF --data
train.jsonl|rg:TASK` trains a Hugging Face causal LM (`--sft-steps N` first teaches the "\\boxed{answer}" format).
Sections 3-5: the run, the policy before RL, the flags; `train_io.py` holds the plumbing (checks, data, checkpoints).
"""
from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from dataclasses import dataclass

import torch

import countdown
import passk_at_k
import rollout
import simko
import train_io
import verify
from simko import AGGREGATIONS, GATES, LOSSES, PAPER_ALPHA, PAPER_LAMBDA, PAPER_TAU, PAPER_TOP_K, PENALTIES, SPREAD_ON
from train_io import (TABLE_KS, Policy, Task, above, at_least, find_checkpoint, flag, load_task, progress,
                      save_checkpoint, save_config, set_threads, start_metrics, within)

ADVANTAGES = tuple(passk_at_k.ADVANTAGES)
# The named clip settings (clip_low, clip_high) of --clip
CLIPS = {"passk": passk_at_k.PAPER_CLIP, "simko": simko.PAPER_CLIP}
CONCENTRATION_RANKS = 5     # metrics.jsonl logs the rank-1..5 probabilities (SimKO's Lambda^(k))
# simko.policy_loss's metrics; a step that forwards no row logs each as None
LOSS_METRICS = ("clip_frac_low", "clip_frac_high", "ratio_mean", "gated_frac", "spread_frac_of_gated",
                "penalty_frac_of_gated")
# The flags a resumed run may change: how it runs, logs and saves, never what it computes.
RESUME_MAY_CHANGE = ("steps", "eval_every", "probe_every", "save_every", "out", "resume", "device", "threads",
                     "micro_batch_size", "gen_batch_size", "decode", "grad_checkpointing", "stats_from_hidden",
                     "reward_workers", "reward_timeout", "warmup_cache", "no_progress")
_MAY_CHANGE = [f"--{k.replace('_', '-')}" for k in RESUME_MAY_CHANGE if k not in ("out", "resume")]


# ================================================================================================================
# 1. Configuration: one field per flag (`--name-with-dashes`), its help line and its check (docs/train.md explains)

@dataclass
class Args:
    model: str | None = flag(None, "Hugging Face causal LM: a Hub name, a directory or a .gguf file (needs gguf)",
                             check=train_io.check_model, group="model and data",
                             shown="the embedded tiny Llama on its Countdown task")
    data: str | None = flag(None, "training JSONL (problem/question, answer/solution) or a reasoning-gym task "
                            "'rg:TASK?key=value&...'; needs --model", check=train_io.check_data,
                            shown="the embedded Countdown problems")
    eval_data: str | None = flag(None, "held-out JSONL, same fields", check=train_io.check_eval_data,
                                 shown="the last 10% of --data, at most 500 problems")
    out: str | None = flag(None, "run directory", check=train_io.check_out, shown="runs/<timestamp>")
    warmup_cache: str | None = flag(None, "where the embedded model's warm-up is cached, shared between runs",
                                    shown="warmup/ beside --out, e.g. runs/warmup")
    warmup_variant: str = flag("headroom", "embedded task only: the warm-up's data; 'headroom' shows few * and /, "
                               "'full' every answer", choices=countdown.WARMUP_VARIANTS)
    device: str | None = flag(None, "cpu, cuda, cuda:1, ...", shown="cuda when available, else cpu")
    seed: int = flag(0, "seed of the prompt order, the rollouts and the evaluations (not of the embedded warm-up)")
    threads: int | None = flag(None, "torch CPU threads", check=at_least(1),
                               shown="1 for the embedded model on CPU, torch's default otherwise")

    steps: int = flag(80, "RL steps, one rollout batch each", check=at_least(0), group="schedule")
    sft_steps: int | None = flag(None, "supervised warm-up steps before RL (embedded: 64 problems a step; --model: "
                                 "the boxed-answer format, 8 a step)", check=at_least(0),
                                 shown="600 for the embedded task, 0 for --model")
    sft_lr: float | None = flag(None, "learning rate of the warm-up", check=above(0),
                                shown="3e-3 for the embedded task, 2e-5 for --model")
    prompts_per_step: int = flag(16, f"prompts per rollout batch (Pass@k paper: {passk_at_k.PAPER_PROMPT_BATCH}, "
                                 f"SimKO: {simko.PAPER_PROMPT_BATCH})", check=at_least(1))
    group_size: int = flag(8, f"G (the papers' N), responses per prompt (Pass@k paper: {passk_at_k.PAPER_N}, SimKO: "
                           f"{simko.PAPER_N})", check=train_io.check_group_size)
    mini_batches: int | None = flag(None, "optimiser steps per rollout batch, each on a part of whole groups",
                                    check=train_io.check_mini_batches,
                                    shown="4 as in the papers, or --prompts-per-step if fewer")
    micro_batch_size: int = flag(0, "rows per forward/backward, gradients accumulated; 0 = a whole mini-batch",
                                 check=at_least(0))
    gen_batch_size: int = flag(0, "prompts per generation call; 0 = all prompts of the step", check=at_least(0))
    lr: float = flag(1e-4, f"AdamW learning rate of the RL updates (both papers: {passk_at_k.PAPER_LR:g} on real "
                     "models)", check=above(0))
    lr_warmup_steps: int = flag(0, "RL steps of linear learning-rate warm-up, then constant (Pass@k paper: "
                                f"{passk_at_k.PAPER_WARMUP_STEPS})", check=at_least(0))
    max_grad_norm: float = flag(1.0, "gradient clipping, L2 norm over all parameters", check=above(0))
    eval_every: int = flag(40, "RL steps between held-out evaluations; 0 = only before and after", check=at_least(0))
    eval_samples: int = flag(16, "n responses per held-out problem; pass@k for k = 1..n", check=at_least(1))
    eval_problems: int = flag(0, "evaluate on the first N held-out problems only; 0 = all", check=at_least(0))
    eval_before: bool = flag(True, "evaluate at step 0 (--no-eval-before when the warm start's is known)")
    probe_problems: int = flag(0, "SimKO's mechanism on the first N held-out prompts: entropy and rank-1..5 "
                               "probabilities, all and high-entropy tokens; 0 = off", check=at_least(0))
    probe_every: int = flag(10, "RL steps between probes (--probe-problems)", check=at_least(1))
    save_every: int = flag(0, "RL steps between checkpoints; 0 = only at the end", check=at_least(0))
    resume: bool = flag(False, "continue the run in --out with its config.json; only " + ", ".join(_MAY_CHANGE[:-1]) +
                        f" and {_MAY_CHANGE[-1]} may change")

    advantage: str = flag("passk", "the advantage: grpo = Pass@1; passk (analytical), passk_bootstrap, passk_full, "
                          "combination, entropy_adaptive, exceeding = Pass@k Training's; pkpo, pkpo_maxk = PKPO's",
                          choices=ADVANTAGES, group="algorithm")
    k: int = flag(4, "k of the Pass@k advantages, 1 <= k < --group-size (k <= --group-size for pkpo); grpo ignores "
                  "it", check=train_io.check_k)
    schedule: str | None = flag(None, "advantage phases 'NAME[@K]:STEPS,...', e.g. 'grpo:50,passk:100,grpo:50' (Fig. "
                                "1 of the Pass@k paper) or 'pkpo@8:100,pkpo@1:100' (PKPO's k annealing)",
                                check=train_io.check_schedule, shown="--advantage with --k throughout")
    switch_to_grpo_at: int | None = flag(None, "RL steps after which GRPO is used: --schedule ADVANTAGE:STEPS,grpo:1",
                                         check=at_least(0), shown="never")
    grpo_std: str = flag("population", "grpo's std: 'population' (Pass@k paper) or 'unbiased' (verl, SimKO's code)",
                         choices=("population", "unbiased"))
    loss: str = flag("clip", "'clip': the clipped surrogate on the advantage; 'psr', 'nsr', 'w_reinforce': Zhu et "
                     "al.'s baselines, advantages from the reward alone", choices=LOSSES)
    w_reinforce_weight: float = flag(simko.PAPER_W_REINFORCE_WEIGHT, "lambda_w, a correct response's advantage under "
                                     "--loss w_reinforce", check=at_least(0))
    simko: bool | None = flag(None, "SimKO's changes to the loss; --no-simko is plain GRPO/DAPO",
                              shown="on, off under --loss psr, nsr, w_reinforce (Zhu et al.'s runs)")
    simko_topk: int = flag(PAPER_TOP_K, "K, the top-K candidates over which SimKO spreads a correct token's push",
                           check=at_least(1))
    simko_alpha: float = flag(PAPER_ALPHA, "alpha, the share of that push spread over the top-K",
                              check=within("[0, 1]"))
    simko_lambda: float = flag(PAPER_LAMBDA, "lambda, the factor on the penalty of a wrong rank-1 token",
                               check=above(0))
    simko_tau: float = flag(PAPER_TAU, "entropy gate: a quantile of the token entropies, or nats with "
                            "--simko-gate absolute; SimKO acts above it", check=train_io.check_simko_tau)
    simko_gate: str = flag(GATES[0], "what --simko-tau is a threshold of (row_quantile: the official code)",
                           choices=GATES)
    simko_penalty: str = flag(PENALTIES[0], "how lambda enters: 'advantage' (official code) or 'ratio' (paper text)",
                              choices=PENALTIES)
    simko_spread_on: str = flag(SPREAD_ON[0], "which gated tokens get the spread: 'advantage' A > 0 (paper text) or "
                                "'correct' correct responses (official code)", choices=SPREAD_ON)
    clip: str | None = flag(None, "the clip preset: 'passk' 0.2 / 0.28 (Pass@k paper, DAPO), 'simko' a symmetric 0.2 "
                            "(SimKO's code)", choices=tuple(CLIPS),
                            shown="simko for SimKO alone and for --loss psr, nsr, w_reinforce, else passk")
    clip_low: float | None = flag(None, "the ratio is clipped below at 1 - this", check=within("[0, 1)"),
                                  shown="from --clip: 0.2")
    clip_high: float | None = flag(None, "the ratio is clipped above at 1 + this", check=at_least(0),
                                   shown="from --clip: 0.28 for passk, 0.2 for simko")
    loss_agg: str = flag(AGGREGATIONS[0], "how token losses are averaged (simko.aggregate)", choices=AGGREGATIONS)
    kl_coef: float = flag(0.0, "weight of a k3 KL penalty to the initial policy; 0 = none, no reference model",
                          check=at_least(0))

    temperature: float = flag(1.0, "rollout sampling temperature; the loss uses the same", check=above(0),
                              group="sampling")
    top_p: float = flag(1.0, "rollout nucleus; old_logp ignores the cut", check=within("(0, 1]"))
    eval_temperature: float = flag(1.0, "held-out sampling temperature", check=above(0))
    eval_top_p: float = flag(1.0, f"held-out nucleus (Pass@k paper: {passk_at_k.PAPER_EVAL_TOP_P})",
                             check=within("(0, 1]"))
    max_new_tokens: int | None = flag(None, "tokens per response at most", check=at_least(1),
                                      shown="12 for the embedded model, 512 with --model")
    decode: str = flag("dynamic", "the rollout's KV cache: grown token by token, or preallocated (same tokens)",
                       choices=("dynamic", "static"))

    grad_checkpointing: bool = flag(False, "recompute activations in the backward to save memory",
                                    group="memory and rewards (real models)")
    stats_from_hidden: str = flag("auto", "token statistics from the last hidden states, never the full logits; auto "
                                  "= on for vocabularies over 32k", choices=("auto", "on", "off"))
    shared_prompt: str = flag("auto", "forward shared prefixes once, in the update and in the decode (stopped rows "
                              "leave its cache); auto = on with --model", choices=("auto", "on", "off"))
    reward_workers: int | None = flag(None, "processes for verify.batch_reward; 0 = in-process", check=at_least(0),
                                      shown="verify's, at most 8")
    reward_timeout: float = flag(5.0, "seconds one answer check may take before it counts as wrong", check=above(0))
    reward_fallback: str = flag(verify.FALLBACKS[0], "a response with no box and no answer cue: 'none' scores 0, "
                                "'last' reads its last value", choices=verify.FALLBACKS)
    no_progress: bool = flag(False, "no progress display (a file or a pipe gets a line each tenth of the way)")


# ================================================================================================================
# 2. One RL step: rollout -> reward -> advantage -> update

def rollout_batch(policy: Policy, prompts: list[str], task: Task, args: Args, generator) -> rollout.Rollout:
    """Step 1: G responses per prompt; rows [i*G, (i+1)*G) belong to prompts[i]."""
    per_call = args.gen_batch_size or len(prompts)
    parts = []
    with policy.autocast():
        for s in range(0, len(prompts), per_call):
            parts.append(rollout.rollout(
                policy.model, policy.tokenizer, prompts[s:s + per_call], args.group_size,
                max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                generator=generator, eos_token_id=policy.eos_ids, add_special_tokens=task.add_special_tokens,
                static_cache=args.decode == "static", stats_top_k=CONCENTRATION_RANKS,
                shared_prompt=args.shared_prompt == "on"))
    return rollout.concat_rollouts(parts, policy.tokenizer)


def rewards_of(ro: rollout.Rollout, batch: list[dict], task: Task, G: int) -> torch.Tensor:
    """Step 2: the [P, G] rewards of the responses."""
    rewards = task.reward(ro.texts, [p for p in batch for _ in range(G)])
    return torch.tensor(rewards, dtype=torch.float32).view(len(batch), G)


def advantages_of(rewards: torch.Tensor, ro: rollout.Rollout, method: str, args: Args, step: int,
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


def update(policy: Policy, optimizer, scheduler, ro: rollout.Rollout, advantages: torch.Tensor, args: Args,
           correct: torch.Tensor | None = None) -> dict:
    """Step 4: --mini-batches optimiser steps on the rollout batch; advantages [rows], correct [rows] bool (needed by
    --simko-spread-on correct). The prompts are split in order into M parts of whole groups; each part is one
    optimiser step on that part's aggregate loss (token mean by default), accumulated over micro-batches."""
    rows, G = ro.response_mask.shape[0], args.group_size
    if rows % G:
        raise ValueError(f"update: {rows} rollout rows are not whole groups of --group-size {G}")
    policy.model.train()
    weights, live = choose_rows(ro.response_mask, advantages, policy, args, correct)
    measured, losses, grad_norms = [], [], []
    for part in torch.arange(rows // G).tensor_split(min(args.mini_batches, rows // G)):
        part_rows = torch.arange(int(part[0]) * G, (int(part[-1]) + 1) * G, device=weights.device)
        todo, normaliser = part_rows[live[part_rows]], weights[part_rows].sum().clamp_min(1)
        micro = args.micro_batch_size or max(len(todo), 1)
        optimizer.zero_grad(set_to_none=True)
        part_loss = 0.0
        for s in range(0, len(todo), micro):
            sel = todo[s:s + micro]
            loss, metrics = micro_batch_loss(policy, ro, sel, advantages, correct, args)
            share = (weights[sel].sum() / normaliser).item()     # so that the micro-batch losses add up to the part's
            (loss * share).backward()
            part_loss += loss.item() * share
            measured.append((metrics, ro.response_mask[sel].sum().item()))
        if len(todo) == 0:
            # Nothing can move the gradient, but the optimiser still takes its step (as on zero gradients).
            for p in policy.model.parameters():
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
        losses.append(part_loss)
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(policy.model.parameters(), args.max_grad_norm)))
        optimizer.step()
    scheduler.step()
    policy.model.eval()
    return {**train_io.mean_metrics(measured, LOSS_METRICS), "loss": sum(losses) / len(losses),
            "grad_norm": sum(grad_norms) / len(grad_norms), "updated_rows_frac": live.float().mean().item()}


def choose_rows(mask: torch.Tensor, advantages: torch.Tensor, policy: Policy, args: Args, correct: torch.Tensor):
    """Each row's weight in the loss normaliser ([rows]: its tokens for token_mean, else 1 per row with tokens) and
    the rows to forward ([rows] bool). Under --loss psr (nsr) only the correct (wrong) rows count, as in
    simko.policy_loss. A row whose advantage is 0 adds exactly 0 to the loss and its gradient when there is no KL
    term, so it is left out of the forward and backward while its weight stays in the normaliser - except under
    SimKO's batch_quantile gate, whose quantile is taken over the rows that are forwarded."""
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


def micro_batch_loss(policy: Policy, ro: rollout.Rollout, rows: torch.Tensor, advantages: torch.Tensor,
                     correct: torch.Tensor | None, args: Args) -> tuple[torch.Tensor, dict]:
    """The loss of the rollout rows `rows` ([b] indices; advantages and correct are [all rows]) under the current
    policy: simko.policy_loss, plus the KL penalty under --kl-coef. Returns the loss and its metrics."""
    ids, att, m = ro.input_ids[rows], ro.attention_mask[rows], ro.response_mask[rows]
    with policy.autocast():
        stats = response_token_stats(policy.model, ids, att, ro.prompt_len, args, policy.stats_from_hidden)
    loss, metrics = simko.policy_loss(stats.logp, ro.logp[rows], advantages[rows], m, stats if args.simko else None,
                                      max_len=ro.response_mask.shape[1],
                                      correct=None if correct is None else correct[rows], **policy_loss_settings(args))
    if policy.ref_model is not None:
        with torch.no_grad(), policy.autocast():
            ref_logp = response_token_stats(policy.ref_model, ids, att, ro.prompt_len, args,
                                            policy.stats_from_hidden).logp
        log_ratio = torch.where(m.bool(), ref_logp - stats.logp, 0.0)
        # k3 estimator of KL(pi || pi_ref) = E[exp(r) - r - 1], r = log pi_ref - log pi; >= 0
        kl = ((log_ratio.exp() - log_ratio - 1) * m).sum() / m.sum().clamp_min(1)
        loss = loss + args.kl_coef * kl
        metrics["kl"] = kl.item()
    return loss, metrics


def policy_loss_settings(args: Args) -> dict:
    """simko.policy_loss's settings from the flags; with --no-simko SimKO's terms are neutral (alpha 0, lambda 1)."""
    return dict(alpha=args.simko_alpha if args.simko else 0.0, lam=args.simko_lambda if args.simko else 1.0,
                tau=args.simko_tau, gate=args.simko_gate, penalty=args.simko_penalty, spread_on=args.simko_spread_on,
                clip_low=args.clip_low, clip_high=args.clip_high, agg=args.loss_agg)


def response_token_stats(model, input_ids, attention_mask, prompt_len, args: Args, stats_from_hidden: bool):
    """simko.TokenStats [b, R] of the response tokens under the current policy: first the forward (the rows' shared
    prefixes once under --shared-prompt, else every row whole), then the statistics (from its logits, or from its
    last hidden states and the LM head)."""
    P, tokens = prompt_len, input_ids[:, prompt_len:]
    if args.shared_prompt == "on":
        out = rollout.response_forward(model, input_ids, attention_mask, P, hidden=stats_from_hidden)
    else:       # position P - 1 + t predicts response token t
        kw = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                  position_ids=rollout.position_ids(attention_mask))
        out = (getattr(model, model.base_model_prefix)(**kw).last_hidden_state[:, P - 1:-1] if stats_from_hidden
               else model(**kw, logits_to_keep=tokens.shape[1] + 1).logits[:, :-1])
    if not stats_from_hidden:
        return simko.token_stats(out, tokens, top_k=args.simko_topk, temperature=args.temperature)
    head = model.get_output_embeddings()
    # Under CUDA autocast the LM head runs in bf16, as it would inside the model; the fused function gets both
    # operands in one dtype and runs with autocast off, so its forward and its recomputing backward agree.
    dtype = torch.bfloat16 if out.is_cuda and torch.is_autocast_enabled("cuda") else head.weight.dtype
    with torch.autocast(device_type=out.device.type, enabled=False):
        return simko.token_stats_from_hidden(out.to(dtype), head.weight.to(dtype), tokens, top_k=args.simko_topk,
                                             temperature=args.temperature,
                                             bias=None if head.bias is None else head.bias.to(dtype))


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
           "k": phase.k, "reward_mean": rewards.mean().item(),
           "zero_variance_frac": (rewards.std(1) == 0).float().mean().item(),
           "adv_mean": adv.mean().item(), "adv_abs_mean": adv.abs().mean().item(),
           "response_len": mask.sum(1).mean().item(), "truncated_frac": ro.truncated.float().mean().item(),
           # the sampling policy's mean token entropy, over every response token of the batch
           "entropy": (ro.entropy * mask).sum().item() / max(n_tokens, 1)}
    # the concentration metric, also over every response token: mean probability / log-prob of rank i
    c = simko.concentration(ro.topk_logp, mask)
    out.update({f"rank{i + 1}_{kind}": c[kind][i] for kind in ("prob", "logp") for i in range(CONCENTRATION_RANKS)})
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
        texts = rollout.sample_for_eval(
            policy.model, policy.tokenizer, prompts, n, max_new_tokens=args.max_new_tokens,
            temperature=args.eval_temperature, top_p=args.eval_top_p, generator=generator, batch_size=eval_rows,
            add_special_tokens=task.add_special_tokens, eos_token_id=policy.eos_ids,
            static_cache=args.decode == "static", shared_prompt=args.shared_prompt == "on")
    flat = [t for row in texts for t in row]
    problems = [p for p in task.eval for _ in range(n)]
    correct = torch.tensor(task.reward(flat, problems)).view(len(prompts), n) > 0.5
    curve = passk_at_k.pass_at_k_curve(correct, ks=list(range(1, n + 1)))
    return {**{f"pass@{k}": v for k, v in curve.items()}, "correct": correct.sum(1).tolist()}


@torch.no_grad()
def probe(policy: Policy, task: Task, args: Args) -> dict:
    """SimKO's mechanism on fixed held-out prompts (train_io.probe_metrics): --group-size responses to each of the
    first --probe-problems held-out problems, from a generator seeded by --seed alone, so that every probe of a run
    draws the same random numbers and training is not disturbed."""
    policy.model.eval()
    generator = torch.Generator(device=args.device).manual_seed(args.seed + 104729)
    problems = task.eval[:args.probe_problems]
    ro = rollout_batch(policy, [task.prompt(p, policy.tokenizer) for p in problems], task, args, generator)
    rewards = task.reward(ro.texts, [p for p in problems for _ in range(args.group_size)])
    return {"type": "probe", "reward_mean": sum(rewards) / len(ro.texts), **train_io.probe_metrics(ro)}


# ================================================================================================================
# 3. The run

def main(argv=None) -> dict:
    """Run one configuration; returns {"before": pass@k dict, "after": pass@k dict, "last_step": metrics, "out"}."""
    args = parse_args(argv)
    task = load_task(args)                 # data errors surface here, before any model is loaded
    log = train_io.quiet_libraries()       # our own progress display only; `log` prints beside it

    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    set_threads(args)
    checkpoint = find_checkpoint(args.out) if args.resume else None
    warm_up_lines = []                     # the format warm-up's line of metrics.jsonl, written once the log is open
    policy = load_policy(args, task, log, checkpoint, warm_up_lines.append)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / args.lr_warmup_steps) if args.lr_warmup_steps else 1.0)
    sampler = random.Random(args.seed)                                   # which prompts each step sees
    generator = torch.Generator(device=args.device).manual_seed(args.seed)  # rollout sampling
    start_step = train_io.resume_trainer(args, checkpoint, policy, optimizer, scheduler, sampler, generator,
                                         log) if checkpoint else 0
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

    for entry in warm_up_lines:
        record(entry)
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

    bar = progress(range(start_step, args.steps), "RL", args.no_progress, log, initial=start_step, total=args.steps)
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
    subsets = countdown.held_out_subsets(task.eval) if task.name == "countdown" else {}
    before, after = train_io.report(args, task.name, history, subsets)
    strip = lambda e: {k: v for k, v in e.items() if k.startswith("pass@")}
    return {"before": strip(before or {}), "after": strip(after), "last_step": last, "out": args.out}


# ================================================================================================================
# 4. The policy before RL: the loaded model, the format warm-up of --model, the reference of --kl-coef

def load_policy(args: Args, task: Task, log, checkpoint: str | None = None, record=lambda entry: None) -> Policy:
    """train_io.load_policy (a checkpoint, the embedded warm start or --model), then --model's format warm-up
    (--sft-steps; its metrics.jsonl line goes to `record`) and, under --kl-coef, a frozen copy as the reference."""
    policy = train_io.load_policy(args, task, log, checkpoint)
    if args.model is not None and checkpoint is None and args.sft_steps:
        record(format_warm_up(policy, task, args, log))
    if args.kl_coef > 0:
        policy.ref_model = copy.deepcopy(policy.model).eval().requires_grad_(False)
    return policy


def format_warm_up(policy: Policy, task: Task, args: Args, log, batch_size: int = 8) -> dict:
    """--sft-steps supervised steps for --model: maximise log p("\\boxed{gold}" EOS | prompt) on training problems,
    gold being the final answer that verify reads out of the problem's answer. Returns its metrics.jsonl line.

    A format warm-up, not a solver: a small instruct model rarely boxes its answer or stops early, so RL would see
    no reward at all. Only the answer and EOS are trained (the prompt's labels are -100). `batch_size` problems a
    step, drawn with a fixed seed (not --seed): every run of a comparison starts from the same policy, and the RL
    flags (--prompts-per-step, ...) do not change it."""
    model, tokenizer, eos = policy.model, policy.tokenizer, policy.tokenizer.eos_token_id
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.sft_lr, betas=(0.9, 0.99), weight_decay=0.0)
    start, losses = time.time(), []
    model.train()
    bar = progress(range(args.sft_steps), "format warm-up", args.no_progress, log)
    for _ in bar:
        rows, labels = [], []
        for p in rng.sample(task.train, min(batch_size, len(task.train))):
            prompt = tokenizer(task.prompt(p, tokenizer), add_special_tokens=task.add_special_tokens)["input_ids"]
            answer = tokenizer(f"\\boxed{{{verify.gold_answer(p['gold'])}}}", add_special_tokens=False)["input_ids"]
            rows.append(prompt + answer + [eos])
            labels.append([-100] * len(prompt) + answer + [eos])
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
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    log(f"format warm-up: {args.sft_steps} supervised steps in {time.time() - start:.0f}s, "
        f"loss {losses[0]:.3f} -> {sum(losses[-5:]) / len(losses[-5:]):.3f}")
    return {"type": "warmup", "step": 0, "loss": losses, "seconds": time.time() - start}


# ================================================================================================================
# 5. The flags: parsing, the defaults that depend on other flags, the checks (train_io.check_fields)

def build_parser():
    return train_io.build_parser(Args, __doc__.split("\n\n")[0], prog="train.py")


def parse_args(argv=None) -> Args:
    """The flags, with the defaults that depend on other flags filled in, and checked (every error names the flag and
    the allowed range); under --resume the saved ones, overridden by those in RESUME_MAY_CHANGE."""
    parser = build_parser()
    args = Args(**vars(parser.parse_args(argv)))
    if args.resume:
        args = train_io.resumed_args(parser, args, argv, RESUME_MAY_CHANGE)
    train_io.fill_run_defaults(args)
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


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:        # data and configuration errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
