"""Pass@k Training and SimKO inside TRL's `GRPOTrainer` (TRL 1.x): keep your trainer, swap two pieces.

TRL's GRPO trainer computes one advantage per completion in `_generate_and_score_completions` and the clipped
surrogate in `_compute_loss`. Neither has a hook, so this file subclasses the trainer and overrides exactly these two
methods (plus `_calculate_rewards`, to keep a copy of the rewards it already gathers):

1. **Advantage** (`PassKGRPOConfig.advantage`). TRL computes rewards for the *whole* generation batch, gathered from
   every process, normalises them per group and then keeps only this process's slice. The advantages it returns are
   therefore already sliced, and a per-prompt statistic cannot be recomputed from them. We recompute from the
   gathered rewards instead: `rewards [global_batch] -> [prompts, num_generations]` (TRL keeps the generations of a
   prompt consecutive), call `passk_at_k.compute_advantages` with the configured name (analytical Pass@k by default),
   and slice this process's part exactly as TRL does. Every process computes the same full table (the bootstrap
   draw is seeded by `seed` and the RL step, so it agrees across ranks).
   The reward of a completion is the weighted sum of the reward functions (TRL's `reward_weights`) and is
   *binarised* (`> passk_threshold`, default 0.5) by the Pass@k functions: Pass@k needs "correct / wrong". A
   completion that no reward function could score (all `None`) counts as wrong for its group and gets advantage 0,
   as in TRL.

2. **Loss** (`PassKGRPOConfig.simko=True`). SimKO needs, at every completion token, the full-vocabulary entropy, the
   top-K log-probabilities and whether the sampled token is the rank-1 candidate, all from the *same* forward pass
   that produces the log-prob being trained. TRL's fused LM head gives the sampled token's log-prob, the entropy and
   a rank-1 flag, but not the top-K log-probs with their gradient, so with SimKO on we run the model's ordinary
   forward for the completion logits, get every statistic from `simko.token_stats` (chunked; at TRL's sampling
   temperature, like TRL's own log-probs) and take the loss from `simko.policy_loss`. With `simko_from_hidden=True`
   the model's LM head projects one position only, the backbone's last hidden states are caught by a forward hook
   and `simko.token_stats_from_hidden` projects them chunk by chunk, so no `[batch, tokens, vocab]` logits exist
   (same values and gradients, tested; not for FSDP-sharded or soft-capped/scaled LM heads, which it refuses).
   The loss is then scaled exactly like TRL's own for the configured `loss_type` ("dapo" default, "bnpo", "grpo",
   "dr_grpo"), so that with `simko_alpha=0, simko_lambda=1` it equals TRL's loss in value and gradient, and with
   `simko_alpha > 0, simko_lambda=1` it has TRL's value but SimKO's gradient (both tested, with the PPO clip
   active). The off-policy sequence mask and vLLM's importance-sampling weights are folded into the advantage
   (both are non-negative factors of the token loss, so this is exact; the mask is tested, the vLLM path is not:
   no vLLM on CPU); the KL term (`beta`) is added with the same aggregation (tested, also at temperature != 1).

Config fields (all validated in `PassKGRPOConfig.__post_init__`, with the allowed range in the error):

    advantage         a name of `passk_at_k.ADVANTAGES`: "passk" (analytical, default) | "passk_bootstrap" |
                      "passk_full" | "combination" | "entropy_adaptive" | "exceeding" | "grpo" (population-std
                      GRPO) | "pkpo" | "pkpo_maxk" (PKPO); or "trl" (leave TRL's own advantage)
    passk_k           k, 1 <= k < num_generations (the paper uses 4, 8, 16 with 32 generations). k equal to
                      num_generations is refused: every k-subset is then the whole group and every advantage is 0
                      (PKPO's estimators accept k = num_generations)
    passk_bootstrap_groups, passk_exceeding_scale, passk_threshold     forwarded to passk_at_k.py
    passk_to_pass1_step   switch to the GRPO (Pass@1) advantage from this RL step on (the paper's "transfer")
    passk_schedule    phases "NAME[@K]:STEPS,..." (passk_at_k.parse_schedule), e.g. "grpo:50,passk:100,grpo:50" (the
                      paper's Pass@1 -> Pass@k -> Pass@1, Fig. 1) or "pkpo@8:100,pkpo@1:100" (PKPO's k annealing,
                      8 -> 1); the phase of a generation batch is passk_at_k.phase_at(phases, RL step), the last
                      phase runs to the end. It replaces `advantage` and `passk_k` (whose k is the phases' default).
                      An RL step is one generation batch (TRL generates every steps_per_generation x num_iterations
                      micro-batches), not TRL's global_step, which counts optimiser steps: with num_iterations=2 a
                      phase of 50 RL steps lasts 100 global steps. It is derived from global_step, so a resumed run
                      resumes in its phase.
    paper_clip        "passk" | "simko" | None: set TRL's epsilon / epsilon_high to one paper's clip (below)
    simko, simko_alpha, simko_lambda, simko_tau, simko_top_k, simko_gate, simko_penalty, simko_spread_on,
    simko_chunk_size, simko_from_hidden
                      SimKO on/off and simko.policy_loss / token_stats arguments (defaults: the official values
                      simko.PAPER_TOP_K = 3, PAPER_ALPHA = 0.01, PAPER_LAMBDA = 1.1, PAPER_TAU = 0.8 as a
                      per-response quantile). simko_spread_on picks the tokens that get the top-K spread:
                      "advantage" (A > 0, the paper's text; default) or "correct" (tokens of completions whose
                      reward > passk_threshold, the official code's condition).

PPO clip: TRL's `epsilon` / `epsilon_high`. TRL's default, a symmetric 0.2, is SimKO's official setting
(simko.PAPER_CLIP = (0.2, 0.2): `clip_ratio: 0.2` in its ppo_trainer.yaml), so SimKO alone needs nothing.
The Pass@k paper trains with DAPO's clip-higher, 0.2 / 0.28 (passk_at_k.PAPER_CLIP, its App. A.2):
`paper_clip="passk"`, or epsilon=0.2, epsilon_high=0.28.

Logged (besides TRL's own): passk/pass@{k} (mean unbiased pass@k of the generation batch, k = the current phase's
k, else passk_k),
passk/adv_abs_mean (mean |advantage|), passk/phase (the schedule's phase index, with passk_schedule), and with SimKO
simko/gated_frac, simko/spread_frac_of_gated, simko/penalty_frac_of_gated (see simko.policy_loss) and
simko/rank{i}_prob, simko/rank{i}_logp for i = 1..simko_top_k (simko.concentration), all over the tokens of every
process (counts summed across processes before dividing).

Usage: integrations/README.md (a complete script; `tests/test_integrations_trl.py` runs that text).

Copying: this file imports `passk_at_k` and `simko`, so copy all three next to your script and give this one another
name (the README uses `passk_trl.py`): a file called `trl.py` on `sys.path` would shadow TRL itself.

Limits (each raises a clear error rather than training silently wrong): with SimKO on, only the token-level
importance ratio, the loss types above, text-only models, no entropy bonus, no top-entropy token mask (SimKO has its
own gate) and no MoE aux loss. Without `simko_from_hidden`, SimKO's forward materialises the completion logits
`[batch, tokens, vocab]` in the model dtype (TRL's fused head does not).
`entropy_adaptive` costs one extra no-grad forward over the generation batch to measure each prompt's entropy.
"""
from __future__ import annotations

import bisect
import itertools
import warnings
from dataclasses import dataclass, field

import torch
from accelerate.utils import is_peft_model
from trl import GRPOConfig, GRPOTrainer

import passk_at_k
import simko
# (by name too: inside PassKGRPOConfig's body the field `simko` hides the module)
from simko import GATES, PAPER_ALPHA, PAPER_LAMBDA, PAPER_TAU, PAPER_TOP_K, PENALTIES, SPREAD_ON

# TRL 1.16 reads the model's `is_gradient_checkpointing` before every generation (trl/models/utils.py), a name that
# transformers 5.x deprecates with a FutureWarning on each read; the user can do nothing about it, so that one
# message is silenced.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

__all__ = ["PassKGRPOConfig", "PassKGRPOTrainer", "ADVANTAGE_CHOICES", "SIMKO_LOSS_TYPES", "PAPER_CLIPS"]

# PassKGRPOConfig.advantage: the names of passk_at_k's registry, or "trl" for TRL's own advantage
ADVANTAGE_CHOICES = (*passk_at_k.ADVANTAGES, "trl")
# PassKGRPOConfig.paper_clip: each paper's (epsilon, epsilon_high)
PAPER_CLIPS = {"passk": passk_at_k.PAPER_CLIP, "simko": simko.PAPER_CLIP}
# TRL loss types whose aggregation simko.policy_loss reproduces exactly (TRL name -> simko agg)
SIMKO_LOSS_TYPES = {"dapo": "token_mean", "bnpo": "token_mean", "grpo": "seq_mean_token_mean",
                    "dr_grpo": "seq_mean_token_sum_norm"}
# The key under which each completion's verdict (reward > passk_threshold, [local batch] bool) travels with TRL's
# batch to the loss, for simko_spread_on="correct"
CORRECT_KEY = "passk_correct"
# Keys of a TRL batch that only multimodal models carry; SimKO's own forward is text-only.
_MULTIMODAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "image_sizes",
                    "token_type_ids", "mm_token_type_ids", "image_position_ids", "num_images", "num_tiles")


@dataclass
class PassKGRPOConfig(GRPOConfig):
    """`GRPOConfig` plus the Pass@k-advantage and SimKO fields (see the module docstring)."""

    advantage: str = field(default="passk", metadata={"help": f"Advantage: one of {ADVANTAGE_CHOICES}."})
    passk_k: int = field(default=4, metadata={"help": "k of Pass@k, 1 <= k < num_generations."})
    passk_bootstrap_groups: int | None = field(
        default=None, metadata={"help": "Groups per prompt for advantage='passk_bootstrap' (default N)."})
    passk_exceeding_scale: float = field(
        default=0.4, metadata={"help": "f(N_pos) = scale / ln(N_pos + 0.5) for advantage='exceeding'."})
    passk_threshold: float = field(
        default=0.5, metadata={"help": "A completion is correct when its (weighted) reward > threshold."})
    passk_to_pass1_step: int | None = field(
        default=None, metadata={"help": "From this RL step (generation batch) on, use the GRPO (Pass@1) advantage."})
    passk_schedule: str | None = field(
        default=None, metadata={"help": "Phases 'NAME[@K]:STEPS,...', e.g. 'grpo:50,passk:100,grpo:50' "
                                        "(passk_at_k.parse_schedule), STEPS in generation batches; replaces "
                                        "advantage and passk_k."})
    paper_clip: str | None = field(
        default=None, metadata={"help": "Set epsilon / epsilon_high to a paper's clip: 'passk' (0.2 / 0.28, "
                                        "clip-higher) or 'simko' (0.2 / 0.2); None keeps TRL's."})
    simko: bool = field(default=False, metadata={"help": "Use SimKO's policy loss (simko.py)."})
    simko_alpha: float = field(default=PAPER_ALPHA,
                               metadata={"help": "Share of the positive push spread over top-K."})
    simko_lambda: float = field(default=PAPER_LAMBDA,
                                metadata={"help": "Penalty factor at rank-1 tokens of wrong answers."})
    simko_tau: float = field(default=PAPER_TAU,
                             metadata={"help": "Entropy gate: quantile (or nats for gate='absolute')."})
    simko_top_k: int = field(default=PAPER_TOP_K, metadata={"help": "K of SimKO's top-K redistribution."})
    simko_gate: str = field(default=GATES[0], metadata={"help": f"One of {GATES}."})
    simko_penalty: str = field(default=PENALTIES[0], metadata={"help": f"One of {PENALTIES}."})
    simko_spread_on: str = field(
        default=SPREAD_ON[0], metadata={"help": f"Which gated tokens get SimKO's top-K spread, one of {SPREAD_ON}: "
                                                "A > 0 (the paper's text) or those of correct completions (reward > "
                                                "passk_threshold; the official code)."})
    simko_chunk_size: int | None = field(
        default=None, metadata={"help": "Tokens per chunk in simko.token_stats (None: ~64M logits per chunk)."})
    simko_from_hidden: bool = field(
        default=False, metadata={"help": "Compute SimKO's statistics from the last hidden states and the LM-head "
                                         "weight (simko.token_stats_from_hidden): no [batch, tokens, vocab] logits."})

    def __post_init__(self):
        if self.paper_clip is not None:
            if self.paper_clip not in PAPER_CLIPS:
                raise ValueError(f"PassKGRPOConfig.paper_clip must be one of {tuple(PAPER_CLIPS)} or None, "
                                 f"got {self.paper_clip!r}")
            self.epsilon, self.epsilon_high = PAPER_CLIPS[self.paper_clip]
        super().__post_init__()
        if self.advantage not in ADVANTAGE_CHOICES:
            raise ValueError(f"PassKGRPOConfig.advantage must be one of {ADVANTAGE_CHOICES}, got {self.advantage!r}")
        if isinstance(self.passk_k, bool) or not isinstance(self.passk_k, int) or self.passk_k < 1:
            raise ValueError(f"PassKGRPOConfig.passk_k must be an int >= 1, got {self.passk_k!r}")
        if self.passk_schedule is not None:
            if self.advantage == "trl" or self.passk_to_pass1_step is not None:
                raise ValueError("PassKGRPOConfig.passk_schedule replaces advantage and passk_to_pass1_step; leave "
                                 "advantage at a registry name (not 'trl') and passk_to_pass1_step=None")
            phases = passk_at_k.parse_schedule(self.passk_schedule, self.passk_k)
            for phase in phases:
                self._check_k(phase.advantage, phase.k, f"passk_schedule phase {phase.advantage}@{phase.k}")
            self.schedule_phases = phases
        else:
            self.schedule_phases = None
            self._check_k(self.advantage, self.passk_k, f"passk_k={self.passk_k}")
        uses_k = self.advantage not in ("grpo", "trl")
        n_eval = self.num_generations_eval
        if uses_k and n_eval is not None and self.passk_k > n_eval:
            raise ValueError(f"PassKGRPOConfig.passk_k={self.passk_k} must be <= num_generations_eval={n_eval} (k "
                             f"responses are drawn from the {n_eval} generations of a prompt)")
        if self.passk_bootstrap_groups is not None and (
                not isinstance(self.passk_bootstrap_groups, int) or self.passk_bootstrap_groups < 1):
            raise ValueError(f"PassKGRPOConfig.passk_bootstrap_groups must be an int >= 1 or None, "
                             f"got {self.passk_bootstrap_groups!r}")
        if self.passk_to_pass1_step is not None and (
                not isinstance(self.passk_to_pass1_step, int) or self.passk_to_pass1_step < 0):
            raise ValueError(f"PassKGRPOConfig.passk_to_pass1_step must be an int >= 0 or None, "
                             f"got {self.passk_to_pass1_step!r}")
        if self.passk_to_pass1_step is not None and not uses_k:
            raise ValueError(f"PassKGRPOConfig.passk_to_pass1_step switches a Pass@k advantage to Pass@1; it needs "
                             f"a Pass@k advantage (not 'grpo' or 'trl'), got advantage={self.advantage!r}")
        if self.simko:
            self._check_simko()

    def _check_k(self, advantage: str, k: int, what: str):
        """passk_at_k.check_k (the one k rule) at N = num_generations, its error named by this config's field."""
        if advantage == "trl":
            return
        try:
            passk_at_k.check_k(k, self.num_generations, advantage)
        except ValueError as e:
            raise ValueError(f"PassKGRPOConfig.{what} (num_generations={self.num_generations}): {e}") from None

    def _check_simko(self):
        """SimKO's loss replaces TRL's; refuse the TRL options it does not reproduce instead of ignoring them."""
        def bad(what):
            raise ValueError(f"PassKGRPOConfig(simko=True): {what}")

        if not 0.0 <= self.simko_alpha <= 1.0:
            bad(f"simko_alpha must be in [0, 1], got {self.simko_alpha!r}")
        if not self.simko_lambda > 0:
            bad(f"simko_lambda must be > 0 (official 1.1), got {self.simko_lambda!r}")
        if self.simko_gate not in simko.GATES:
            bad(f"simko_gate must be one of {simko.GATES}, got {self.simko_gate!r}")
        if self.simko_gate != "absolute" and not 0.0 <= self.simko_tau <= 1.0:
            bad(f"simko_tau is a quantile for simko_gate={self.simko_gate!r} and must be in [0, 1], "
                f"got {self.simko_tau!r}")
        if self.simko_spread_on not in simko.SPREAD_ON:
            bad(f"simko_spread_on must be one of {simko.SPREAD_ON}, got {self.simko_spread_on!r}")
        if self.simko_penalty not in simko.PENALTIES:
            bad(f"simko_penalty must be one of {simko.PENALTIES}, got {self.simko_penalty!r}")
        if isinstance(self.simko_top_k, bool) or not isinstance(self.simko_top_k, int) or self.simko_top_k < 1:
            bad(f"simko_top_k must be an int >= 1, got {self.simko_top_k!r}")
        if self.simko_chunk_size is not None and (not isinstance(self.simko_chunk_size, int)
                                                  or self.simko_chunk_size < 1):
            bad(f"simko_chunk_size must be an int >= 1 or None, got {self.simko_chunk_size!r}")
        if self.loss_type not in SIMKO_LOSS_TYPES:
            bad(f"loss_type must be one of {tuple(SIMKO_LOSS_TYPES)}, got {self.loss_type!r}")
        if self.importance_sampling_level != "token":
            bad(f"importance_sampling_level must be 'token', got {self.importance_sampling_level!r}")
        if self.delta is not None:
            bad("two-sided clipping (delta) is not supported; set delta=None")
        if self.top_entropy_quantile < 1.0:
            bad("top_entropy_quantile < 1 masks tokens by entropy; SimKO has its own gate (simko_tau); set it to 1.0")
        if self.entropy_coef != 0.0 or self.use_adaptive_entropy:
            bad("the entropy bonus is not supported (SimKO's entropy carries no gradient); set entropy_coef=0")


class PassKGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` whose advantage comes from `passk_at_k.py` and whose loss (optionally) from `simko.py`."""

    def __init__(self, model, reward_funcs=None, args: PassKGRPOConfig | None = None, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = PassKGRPOConfig(f"{str(name).split('/')[-1]}-PassK-GRPO")
        if not isinstance(args, PassKGRPOConfig):
            raise TypeError(f"PassKGRPOTrainer needs args=PassKGRPOConfig(...) (a GRPOConfig with the Pass@k and "
                            f"SimKO fields), got {type(args).__name__}")
        super().__init__(model, reward_funcs, args=args, **kwargs)
        if args.simko and self.aux_loss_enabled:
            raise ValueError("PassKGRPOConfig(simko=True): the MoE router aux loss is not supported; "
                             "set router_aux_loss_coef=0")
        if args.simko and args.simko_from_hidden:
            text_config = self._unwrapped_causal_lm(self.model).config.get_text_config()
            scaled = [key for key in ("final_logit_softcapping", "logit_scale", "output_multiplier",
                                      "lm_head_multiplier", "logits_scaling") if getattr(text_config, key, None)]
            if scaled:
                raise ValueError(f"PassKGRPOConfig(simko_from_hidden=True): this model transforms its logits after "
                                 f"the LM head ({scaled}); token_stats_from_hidden does not. Use "
                                 f"simko_from_hidden=False")
        self._gathered_rewards_per_func = None

    # ---------------------------------------------------------------------------------------------------------
    # 1. Advantages
    # ---------------------------------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # TRL returns rewards gathered over all processes, [global_batch, num_reward_funcs]; keep them.
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _rl_step(self) -> int:
        """Generation batches trained before the current one: the RL step that passk_schedule, passk_to_pass1_step
        and the bootstrap seed count.

        TRL generates once every steps_per_generation x num_iterations micro-batches (its `_prepare_inputs`), while
        `global_step` counts optimiser steps of gradient_accumulation_steps micro-batches: with num_iterations > 1,
        or steps_per_generation != gradient_accumulation_steps, the two differ. Micro-batches done = global_step x
        gradient_accumulation_steps + those of the current optimiser step; from global_step, which a resumed run
        restores, so a resumed run resumes in its phase.
        """
        ga = self.args.gradient_accumulation_steps
        micro = int(self.state.global_step) * ga + self._step % ga
        return micro // (self.args.steps_per_generation * self.num_iterations)

    def _current_advantage(self) -> tuple[str, int]:
        """(registry name, k) for the current generation batch: the schedule's phase, the Pass@1 transfer, or the
        configured advantage."""
        a, step = self.args, self._rl_step()
        if a.schedule_phases is not None:
            phase = passk_at_k.phase_at(a.schedule_phases, step)
            return phase.advantage, phase.k
        if a.passk_to_pass1_step is not None and step >= a.passk_to_pass1_step:
            return "grpo", a.passk_k
        return a.advantage, a.passk_k

    def _phase_index(self) -> int:
        """The index of passk_at_k.phase_at's phase in the schedule (phases may repeat, so not `.index(phase)`)."""
        phases = self.args.schedule_phases
        ends = list(itertools.accumulate(phase.steps for phase in phases))
        return min(bisect.bisect_right(ends, self._rl_step()), len(phases) - 1)

    def _passk_advantages(self, rewards: torch.Tensor, prompt_entropy: torch.Tensor | None) -> torch.Tensor:
        """rewards [prompts, N] float64 on CPU -> advantages [prompts, N], from passk_at_k's registry."""
        a = self.args
        name, k = self._current_advantage()
        # The bootstrap draw: the same seed on every process (they all compute the full table, then slice).
        gen = torch.Generator().manual_seed(int(a.seed) * 1_000_003 + self._rl_step())
        return passk_at_k.compute_advantages(name, rewards, k, entropy=prompt_entropy, generator=gen,
                                             threshold=a.passk_threshold, num_groups=a.passk_bootstrap_groups,
                                             scale=a.passk_exceeding_scale)

    @torch.no_grad()
    def _completion_entropy(self, output: dict) -> torch.Tensor:
        """Mean token entropy of every completion of the generation batch, gathered over processes: [global_batch]."""
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        att = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        extra = {key: output[key] for key in _MULTIMODAL_KEYS if key in output}
        _, ent, _ = self._get_per_token_logps_and_entropies(
            self.model, ids, att, output["completion_ids"].size(1), compute_entropy=True,
            batch_size=self.args.per_device_train_batch_size if self.model.training
            else self.args.per_device_eval_batch_size, **extra)
        m = output["completion_mask"].float()
        local = (ent * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.accelerator.gather(local)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        n = self.num_generations if mode == "train" else self.num_generations_eval
        rpf = self._gathered_rewards_per_func  # [global_batch, F], NaN where a reward function returned None
        unscorable = torch.isnan(rpf).all(dim=1)
        rewards = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).nansum(dim=1)
        rewards = rewards.masked_fill(unscorable, 0.0).double().cpu().view(-1, n)  # unscorable = wrong
        correct = rewards > self.args.passk_threshold                                   # [prompts, N]
        # The same slice TRL takes: this process's completions are a contiguous block of the gathered batch.
        local = len(inputs)
        process_slice = slice(self.accelerator.process_index * local, (self.accelerator.process_index + 1) * local)
        output[CORRECT_KEY] = correct.flatten()[process_slice].to(output["advantages"].device)
        if self.args.advantage == "trl":
            return output

        entropy = None
        name, k = self._current_advantage()
        if name == "entropy_adaptive":
            entropy = self._completion_entropy(output).double().cpu().view(-1, n).mean(1)
        adv = self._passk_advantages(rewards, entropy).flatten()
        adv = adv.masked_fill(unscorable.cpu(), 0.0)
        output["advantages"] = adv[process_slice].to(device=output["advantages"].device,
                                                     dtype=output["advantages"].dtype)

        # TRL logged its own advantages for the completions table: replace them with the ones we use.
        logged = self._logs["advantages"]
        for _ in range(min(adv.numel(), len(logged))):
            logged.pop()
        logged.extend(adv.tolist())
        if k <= n:  # the k of the current phase
            self._metrics[mode][f"passk/pass@{k}"].append(float(passk_at_k.pass_at_k(n, correct.sum(1), k).mean()))
        self._metrics[mode]["passk/adv_abs_mean"].append(float(adv.abs().mean()))
        if self.args.schedule_phases is not None:
            self._metrics[mode]["passk/phase"].append(float(self._phase_index()))
        return output

    # ---------------------------------------------------------------------------------------------------------
    # 2. SimKO loss
    # ---------------------------------------------------------------------------------------------------------

    def _unwrapped_causal_lm(self, model):
        base = self.accelerator.unwrap_model(model)
        return base.get_base_model() if is_peft_model(base) else base

    def _completion_hidden(self, model, input_ids, attention_mask, logits_to_keep):
        """Last hidden states at the positions predicting the completion, [B, logits_to_keep, H], and the LM head.

        The model is still called as a whole (so DDP / DeepSpeed hooks run), with `logits_to_keep=1` so that its LM
        head projects a single position; a forward hook on the backbone (`base_model`, the module TRL's fused head
        also reads) catches the final normalised hidden states, and simko.token_stats_from_hidden projects them
        chunk by chunk. Not for FSDP-sharded LM heads (the weight is read outside the forward).
        """
        lm = self._unwrapped_causal_lm(model)
        caught = {}

        def hook(module, args, output):
            caught["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

        handle = lm.base_model.register_forward_hook(hook)
        try:
            with self.accelerator.autocast():
                model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1, use_cache=False)
        finally:
            handle.remove()
        return caught["hidden"][:, -logits_to_keep - 1:-1], lm.get_output_embeddings()

    def _completion_logits(self, model, input_ids, attention_mask, logits_to_keep):
        """Logits predicting the completion tokens, [B, logits_to_keep, V], from the model's ordinary forward.

        Calling `model(...)` (not a sub-module) keeps DDP / DeepSpeed / PEFT wrappers in the loop; without
        `fused_lm_head=True` TRL's patched forward falls through to the model's own. `logits_to_keep + 1`
        positions: the last one predicts the token after the completion and is dropped.
        """
        with self.accelerator.autocast():
            out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1,
                        use_cache=False)
        return out.logits[:, :-1]

    def _compute_loss(self, model, inputs):
        if not self.args.simko:
            return super()._compute_loss(model, inputs)
        present = [key for key in _MULTIMODAL_KEYS if inputs.get(key) is not None]
        if present:
            raise NotImplementedError(f"PassKGRPOTrainer(simko=True) supports text-only models; the batch has "
                                      f"multimodal inputs {present}")
        a = self.args
        mode = "train" if self.model.training else "eval"
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        T = completion_ids.size(1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]

        if a.simko_from_hidden:
            hidden, head = self._completion_hidden(model, input_ids, attention_mask, T)
            dtype = torch.promote_types(hidden.dtype, head.weight.dtype)  # e.g. fp32 with cast_lm_head_to_fp32
            stats = simko.token_stats_from_hidden(hidden.to(dtype), head.weight.to(dtype), completion_ids,
                                                  top_k=a.simko_top_k, chunk_size=a.simko_chunk_size or 256,
                                                  temperature=self.temperature,
                                                  bias=None if head.bias is None else head.bias.to(dtype))
        else:
            logits = self._completion_logits(model, input_ids, attention_mask, T)
            stats = simko.token_stats(logits, completion_ids, top_k=a.simko_top_k, chunk_size=a.simko_chunk_size,
                                      temperature=self.temperature)
        logp = stats.logp
        old_logp = inputs.get("old_per_token_logps")
        old_logp = logp.detach() if old_logp is None else old_logp

        # Non-negative per-token (or per-sequence) factors of the token loss fold into the advantage exactly:
        # w * max(-A r, -A clip(r)) = max(-(wA) r, -(wA) clip(r)) for w >= 0, and sign(wA) = sign(A) where w > 0.
        advantages = inputs["advantages"]
        advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
        if self.off_policy_mask_threshold is not None:
            sampling_logp = inputs.get("sampling_per_token_logps", old_logp)
            advantages = advantages * self.get_off_policy_mask(advantages, logp, sampling_logp, mask,
                                                               self.off_policy_mask_threshold)
        if self.use_vllm and self.vllm_importance_sampling_correction:
            advantages = advantages * inputs["importance_sampling_ratio"]
        advantages = advantages.expand_as(logp)

        agg = SIMKO_LOSS_TYPES[self.loss_type]
        max_len = self.max_completion_length if agg == "seq_mean_token_sum_norm" else None
        loss, metrics = simko.policy_loss(
            logp, old_logp, advantages, mask, stats, alpha=a.simko_alpha, lam=a.simko_lambda, tau=a.simko_tau,
            clip_low=self.epsilon_low, clip_high=self.epsilon_high, agg=agg, gate=a.simko_gate,
            penalty=a.simko_penalty, max_len=max_len, spread_on=a.simko_spread_on, correct=inputs.get(CORRECT_KEY))
        loss = self._trl_scale(loss, mask, mode, inputs)

        if self.beta != 0.0:
            ref = inputs["ref_per_token_logps"]
            per_token_kl = torch.exp(ref - logp) - (ref - logp) - 1
            if a.use_bias_correction_kl:
                per_token_kl = per_token_kl * torch.exp(logp - old_logp)
            kl = simko.aggregate(torch.where(mask.bool(), per_token_kl, 0.0), mask.bool(), agg, max_len)
            loss = loss + self.beta * self._trl_scale(kl, mask, mode, inputs)
            self._metrics[mode]["kl"].append(self._global_mean(per_token_kl.detach(), mask))

        # The metrics TRL logs, from the same forward, plus SimKO's own.
        self._metrics[mode]["entropy"].append(self._global_mean(stats.entropy, mask))
        ratio = torch.exp((logp - old_logp).detach())
        low = ((ratio < 1 - self.epsilon_low) & (advantages < 0)).float()
        high = ((ratio > 1 + self.epsilon_high) & (advantages > 0)).float()
        self._metrics[mode]["clip_ratio/low_mean"].append(self._global_mean(low, mask))
        self._metrics[mode]["clip_ratio/high_mean"].append(self._global_mean(high, mask))
        self._metrics[mode]["clip_ratio/region_mean"].append(self._global_mean(torch.maximum(low, high), mask))
        # SimKO's fractions and the concentration (simko.concentration) over the tokens of every process: local
        # counts and sums, added across processes, then divided.
        m = mask.bool()
        n_tok = m.sum().double()
        n_gated = metrics["gated_frac"] * n_tok
        top = stats.topk_logp.detach().double()[m]                                  # [tokens, K]
        local = torch.cat([torch.stack([n_tok, n_gated, metrics["spread_frac_of_gated"] * n_gated.clamp(min=1.0),
                                        metrics["penalty_frac_of_gated"] * n_gated.clamp(min=1.0)]),
                           top.exp().sum(0), top.sum(0)]).to(mask.device)
        total = self.accelerator.reduce(local, reduction="sum").cpu()
        n_tok, n_gated = total[0].clamp(min=1.0), total[1].clamp(min=1.0)
        self._metrics[mode]["simko/gated_frac"].append(float(total[1] / n_tok))
        self._metrics[mode]["simko/spread_frac_of_gated"].append(float(total[2] / n_gated))
        self._metrics[mode]["simko/penalty_frac_of_gated"].append(float(total[3] / n_gated))
        K = top.shape[-1]
        for i in range(K):
            self._metrics[mode][f"simko/rank{i + 1}_prob"].append(float(total[4 + i] / n_tok))
            self._metrics[mode][f"simko/rank{i + 1}_logp"].append(float(total[4 + K + i] / n_tok))
        return loss

    def _trl_scale(self, value: torch.Tensor, mask: torch.Tensor, mode: str, inputs: dict) -> torch.Tensor:
        """Rescale a simko-aggregated loss to what TRL's `_compute_loss` returns for the same loss type.

        dapo: TRL divides the token sum by the token count of the whole generation batch (per process, per
        accumulation step); simko's token_mean divides by this micro-batch's count. grpo: TRL means over *all*
        sequences, simko over non-empty ones. bnpo / grpo / dr_grpo: TRL divides by the accumulation steps.
        """
        m = mask.bool()
        if self.loss_type == "dapo":
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
            return value * m.sum().clamp_min(1) / normalizer
        if self.loss_type == "grpo":
            value = value * (m.sum(1) > 0).sum() / m.size(0)
        return value / (self.current_gradient_accumulation_steps if mode == "train" else 1.0)

    def _global_mean(self, x: torch.Tensor, mask: torch.Tensor) -> float:
        """Token mean over all processes (as TRL logs its metrics)."""
        m = mask.float()
        totals = self.accelerator.reduce(torch.stack([(x.detach().float() * m).sum(), m.sum()]), reduction="sum")
        return (totals[0] / totals[1].clamp(min=1.0)).item()
