"""Pass@k-Training (and PKPO) advantages as verl advantage estimators, and SimKO as a verl policy loss with the
statistics it needs from the actor's forward (verified against verl 0.9.1).

verl computes advantages in the trainer process through a registry: `core_algos.register_adv_est(name)` adds a
function, and `algorithm.adv_estimator=name` selects it. verl calls every non-GAE, non-GRPO estimator as

    advantages, returns = fn(token_level_rewards=[bs, T], response_mask=[bs, T], config=<the `algorithm` config>,
                             index=<np.ndarray [bs] of prompt uids>)        # (+ reward_baselines when present)

so an estimator only has to (1) sum each response's token-level rewards into its scalar outcome reward, (2) group
the responses of a prompt by `index` (verl's `uid`: responses of one prompt share it, their order in the batch is
arbitrary), (3) compute the per-response advantage and (4) broadcast it over the response tokens. Steps (1), (2)
and (4) are `_outcome_advantages` below; step (3) is a function of `passk_at_k.py`. Rewards are binarised there
(`> passk_threshold`, default 0.5): use a 0/1 correctness reward and keep `algorithm.use_kl_in_reward=False`
(a KL penalty folded into the reward would make the outcome non-binary).

Registered names (those of `passk_at_k.ADVANTAGES`, the project's one registry) and the `algorithm` keys they read
(hydra needs the `+` for keys that are not in verl's schema):

    passk               passk_advantages_analytical     +algorithm.passk_k=8
    passk_bootstrap     passk_advantages_bootstrap      +algorithm.passk_k, +algorithm.passk_bootstrap_groups (N),
                                                        +algorithm.passk_seed (0; fresh, reproducible draw per step)
    passk_full          passk_advantages_full           +algorithm.passk_k
    combination         combination_advantages          +algorithm.passk_k
    exceeding           exceeding_passk_advantages      +algorithm.passk_k, +algorithm.passk_exceeding_scale (0.4)
    pkpo                pkpo_advantages                 +algorithm.passk_k (1 <= k <= rollout.n; PKPO's pass@k)
    pkpo_maxk           pkpo_advantages(continuous)     +algorithm.passk_k (PKPO's max@k of the rewards as they are)
    (all)                                               +algorithm.passk_threshold (0.5)

verl's own `grpo_passk` is a different method (only the best response of a group gets a non-zero advantage); these
names do not touch it, and "grpo" stays verl's own. The entropy-adaptive variant needs each prompt's policy entropy,
which verl does not pass to an estimator, so it is not registered.

How to enable it. The estimators must be registered in the process that runs `trainer.fit` (in verl 0.9 a Ray
actor, not the driver), so registering from your launch script is not enough. verl imports the modules listed in
the environment variable `VERL_USE_EXTERNAL_MODULES` whenever `import verl` runs, in every process; this module
registers itself on import when verl is importable:

    PYTHONPATH=/path/to/this/repo VERL_USE_EXTERNAL_MODULES=integrations.verl python -m verl.trainer.main_ppo \\
        algorithm.adv_estimator=passk +algorithm.passk_k=8 actor_rollout_ref.rollout.n=32 ...

(`register_passk_estimators()` does the same explicitly, e.g. inside a custom TaskRunner.) Ray workers that verl's
own `ray.init` starts inherit the launching shell's environment; on a cluster you joined, export the two variables
on every node. What is tested (verl 0.9.1, CPU, no Ray cluster; `.ci/verl` builds that environment from
integrations/requirements-verl.txt): `import verl` with the variable set registers the estimators, and verl's own
`ray_trainer.compute_advantage` on a `DataProto` with an OmegaConf `algorithm` config returns the analytical Pass@k
advantages; a full `main_ppo` run is not. Without verl installed this module still imports, and the estimator
functions work on plain tensors.

SimKO (`simko.py`) as a verl policy loss. A loss registered with `core_algos.register_policy_loss` is called as
`fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights)`: it sees the
log-probability of the *sampled* token only, while SimKO needs, from the same forward pass, (a) the top-K log-probs
of every position, with gradient (its positive-branch gradient is spread over them), (b) whether the sampled token is
the rank-1 candidate (its negative-branch penalty) and (c) the full-vocabulary entropy (its gate), plus each
response's score (the official code spreads on the responses with reward == 1). So the plug-in has two halves:

1. The actor's forward. verl 0.9.1 has one actor path, the engine workers (`verl/workers/engine_workers.py`; it has no
   `dp_actor`). On import this module wraps `FSDPEngineWithLMHead.prepare_model_outputs`
   (`verl/workers/engine/fsdp/transformer_impl.py`, backends `fsdp` and `fsdp2`, verl's default). When the actor's
   loss is `ppo_loss` with `policy_loss.loss_mode=simko`, the wrapper computes `simko.token_stats` on the logits the
   model returned (packed `use_remove_padding=True`, verl's default, or padded), takes `log_probs` from the same pass
   (`stats.logp`; verl's flash-attn cross-entropy, whose in-place backward would overwrite the logits that the top-K
   gradient is recomputed from, is not run), cuts the response tokens out with verl's `no_padding_2_padding` and
   hands the statistics [bs, T] (top-K [bs, T, K]) and the per-response correctness (`token_level_scores` summed
   == 1) to the loss. Memory: `token_stats` keeps a reference to the logits verl's forward already holds and
   recomputes the softmax chunk by chunk in backward, so no [tokens x vocab] copy is added (the official code makes
   K of them). `simko.token_stats_from_hidden` (no logits at all) would only pay off where verl's own log-probs skip
   the logits too: the fused-kernel path, which is not covered (below). Ulysses sequence parallelism goes through
   verl's own gather (`_gather_and_unpad_packed`), as `log_probs` does; it is not tested (it needs several processes).
2. The loss `simko` (`simko_policy_loss`, registered in verl's policy-loss registry): `simko.policy_loss` with the
   official settings, reading from the actor config
       clip            actor.clip_ratio_low / clip_ratio_high (verl's defaults 0.2 / 0.2 = simko.PAPER_CLIP)
       aggregation     actor.loss_agg_mode: token-mean -> token_mean (the official), seq-mean-token-mean ->
                       seq_mean_token_mean, seq-mean-token-sum-norm -> seq_mean_token_sum_norm (max_len =
                       actor.loss_scale_factor or the response length); token-sum, seq-mean-token-sum: ValueError
       gate, penalty   the 0.8 quantile of each response's entropies, lambda * advantage (official; fixed)
       K, alpha, lambda, tau, spread condition: simko.PAPER_* and spread_on="correct" (reward == 1), or
                       `simko_top_k`, `simko_alpha`, `simko_lambda`, `simko_tau`, `simko_spread_on` in
                       actor.policy_loss (needs `policy_loss._target_=integrations.verl.SimKOPolicyLossConfig`, the
                       dataclass that has those fields; verl's own PolicyLossConfig rejects unknown keys).
   `simko.policy_loss` normalises over the micro-batch it sees; verl 0.9.1 normalises every micro-batch by the whole
   mini-batch (all data-parallel ranks: `batch_num_tokens`, `global_batch_size`, times `dp_size` because FSDP
   averages gradients), so the loss is `simko.policy_loss` times (the micro-batch's normaliser / the global one) x
   dp_size: the micro-batches' gradients add up to one SimKO loss over the mini-batch, as for verl's own losses
   (verl's seq-mean modes divide by every sequence of the mini-batch, empty responses included).
   verl's dual clip (`clip_ratio_c`) is not applied (the official SimKO has none); rollout-correction weights
   (`rollout_is_weights`) raise a ValueError.

Command (single node; the reward must be a 0/1 correctness score in `token_level_scores`, and the entropy bonus off,
as `actor.entropy_coeff=0`, verl's default, keeps it):

    PYTHONPATH=/path/to/this/repo VERL_USE_EXTERNAL_MODULES=integrations.verl python -m verl.trainer.main_ppo \\
        algorithm.adv_estimator=grpo actor_rollout_ref.actor.policy_loss.loss_mode=simko \\
        actor_rollout_ref.rollout.n=8 ...                                  # SimKO as published (GRPO advantages)
    ... algorithm.adv_estimator=passk +algorithm.passk_k=8 actor_rollout_ref.actor.policy_loss.loss_mode=simko
                                                                           # Pass@k + SimKO
    ... actor_rollout_ref.actor.policy_loss._target_=integrations.verl.SimKOPolicyLossConfig \\
        +actor_rollout_ref.actor.policy_loss.simko_top_k=5                 # other SimKO settings

Not covered (the loss raises a ValueError naming the setting when the statistics are missing): the fused-kernel path
(`actor_rollout_ref.model.use_fused_kernels=True`: verl never forms the logits), top-K distillation, and the other
engine backends (megatron, veomni, torchtitan, automodel, fsdp_turbo), whose forwards this module does not wrap.
What is tested (CPU, one process; tests/test_integrations_verl.py): the wrapped `prepare_model_outputs` of a real
`FSDPEngineWithLMHead` on a tiny Llama, both padding paths, against `simko.token_stats` on the same logits; the
registered loss against `simko.policy_loss` and against the official loss re-implemented from its code (value and
gradient); the mapping of every `loss_agg_mode`; the hydra config with `SimKOPolicyLossConfig`; and verl's own
`forward_backward_batch` + optimizer step over two micro-batches (the engine without the FSDP wrapping, which needs
a GPU) against the same step computed directly.
"""
from __future__ import annotations

import functools
import importlib.util
import itertools
import threading

import torch

import passk_at_k
import simko

__all__ = ["register_passk_estimators", "ESTIMATORS", "register_simko", "simko_policy_loss", "simko_settings",
           "SIMKO_AGGREGATIONS"]

def _cfg(config, key, default=None):
    """Read `key` from verl's algorithm config (a DictConfig, AlgoConfig or plain dict); `default` if absent."""
    if config is None:
        return default
    get = getattr(config, "get", None)
    value = get(key, default) if callable(get) else getattr(config, key, default)
    return default if value is None else value


def _k(config) -> int:
    k = _cfg(config, "passk_k")
    if k is None:
        raise ValueError("Pass@k advantage estimator: set k in verl's algorithm config, e.g. "
                         "`+algorithm.passk_k=8` on the command line (1 <= k <= actor_rollout_ref.rollout.n)")
    if isinstance(k, bool) or int(k) != k or int(k) < 1:
        raise ValueError(f"algorithm.passk_k must be an integer >= 1, got {k!r}")
    return int(k)


def _outcome_advantages(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index, advantage_fn):
    """Shared body of every estimator: sum rewards per response, group by prompt uid, apply `advantage_fn`, and
    broadcast over the response tokens.

    token_level_rewards, response_mask: [bs, T]; index: [bs] prompt uids (any hashable; verl passes an object
    np.ndarray of strings). advantage_fn: [G, n] float64 rewards -> [G, n] advantages, called once per group size
    n (groups are usually all of size rollout.n, but filtering can leave others).
    Returns (advantages, returns), both [bs, T] in the rewards' dtype and zero outside the response mask.
    """
    if token_level_rewards.dim() != 2 or response_mask.shape != token_level_rewards.shape:
        raise ValueError(f"token_level_rewards and response_mask must both be [bs, T], got "
                         f"{list(token_level_rewards.shape)} and {list(response_mask.shape)}")
    bs = token_level_rewards.shape[0]
    if index is None or len(index) != bs:
        raise ValueError(f"Pass@k advantage estimators need `index` (the prompt uid of each of the {bs} responses) "
                         f"to group responses; got {None if index is None else len(index)} uids")
    scores = token_level_rewards.detach().sum(-1).to(device="cpu", dtype=torch.float64)
    groups: dict = {}
    for row, uid in enumerate(index.tolist() if hasattr(index, "tolist") else index):
        groups.setdefault(uid, []).append(row)
    by_size: dict[int, list[list[int]]] = {}
    for rows in groups.values():
        by_size.setdefault(len(rows), []).append(rows)
    adv = torch.zeros(bs, dtype=torch.float64)
    for n, members in by_size.items():
        rows = torch.tensor(members)                       # [G, n]
        try:
            adv[rows.flatten()] = advantage_fn(scores[rows]).flatten()
        except ValueError as e:  # e.g. k > n: say which groups and which verl setting
            raise ValueError(f"Pass@k advantage estimator on {len(members)} prompt group(s) of {n} responses: {e} "
                             f"(check +algorithm.passk_k against actor_rollout_ref.rollout.n)") from e
    out = adv.to(device=token_level_rewards.device, dtype=token_level_rewards.dtype if
                 token_level_rewards.is_floating_point() else torch.float32).unsqueeze(-1) * response_mask
    return out, out


# Counts bootstrap calls (one per training step in verl) so that every step draws fresh groups, reproducibly.
_bootstrap_calls = itertools.count()


def _estimator(name: str):
    """verl's estimator for `passk_at_k.ADVANTAGES[name]`: reads k (and the options) from verl's algorithm config."""

    def estimator(token_level_rewards, response_mask, index=None, config=None, **kwargs):
        k, thr = _k(config), float(_cfg(config, "passk_threshold", 0.5))
        generator = None
        if name == "passk_bootstrap":
            # call number c (from 0, one call per training step) is seeded with passk_seed * 1_000_003 + c
            generator = torch.Generator().manual_seed(int(_cfg(config, "passk_seed", 0)) * 1_000_003
                                                      + next(_bootstrap_calls))
        options = dict(generator=generator, threshold=thr, num_groups=_cfg(config, "passk_bootstrap_groups"),
                       scale=float(_cfg(config, "passk_exceeding_scale", 0.4)))
        return _outcome_advantages(token_level_rewards, response_mask, index,
                                   lambda r: passk_at_k.compute_advantages(name, r, k, **options))

    estimator.__name__ = estimator.__qualname__ = name
    estimator.__doc__ = f"verl advantage estimator {name!r}: passk_at_k.compute_advantages({name!r}, ...) per prompt."
    return estimator


# The registry's names that verl can serve ("grpo" is verl's own; entropy_adaptive needs entropies verl does not pass).
ESTIMATORS = {name: _estimator(name) for name in ("passk", "passk_bootstrap", "passk_full", "combination",
                                                   "exceeding", "pkpo", "pkpo_maxk")}


def register_passk_estimators() -> list[str]:
    """Register every estimator in `ESTIMATORS` with verl (idempotent); returns the names. Needs verl."""
    from verl.trainer.ppo.core_algos import register_adv_est  # lazy: verl (and Ray) only when asked for

    for name, fn in ESTIMATORS.items():
        register_adv_est(name)(fn)
    return list(ESTIMATORS)


# ---------------------------------------------------------------------------------------------------------------
# SimKO: the actor's statistics and the policy loss


# verl's loss_agg_mode -> simko's agg (simko.AGGREGATIONS); verl's other modes have no SimKO counterpart.
SIMKO_AGGREGATIONS = {"token-mean": "token_mean", "seq-mean-token-mean": "seq_mean_token_mean",
                      "seq-mean-token-sum-norm": "seq_mean_token_sum_norm"}
# The settings read from actor.policy_loss, with the official values as defaults.
_SIMKO_DEFAULTS = {"simko_top_k": simko.PAPER_TOP_K, "simko_alpha": simko.PAPER_ALPHA,
                   "simko_lambda": simko.PAPER_LAMBDA, "simko_tau": simko.PAPER_TAU, "simko_spread_on": "correct"}

# The forward's statistics for the loss of the same micro-batch: verl calls the loss right after the forward, in the
# same thread, and the loss function only receives `log_prob`.
_pending = threading.local()


def simko_settings(actor_config) -> dict:
    """SimKO's settings from verl's actor config: actor.policy_loss.simko_* or the official values."""
    policy_loss = _cfg(actor_config, "policy_loss")
    out = {key: _cfg(policy_loss, key, default) for key, default in _SIMKO_DEFAULTS.items()}
    top_k = out["simko_top_k"]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"actor_rollout_ref.actor.policy_loss.simko_top_k must be an integer >= 1, got {top_k!r}")
    if out["simko_spread_on"] not in simko.SPREAD_ON:
        raise ValueError(f"actor_rollout_ref.actor.policy_loss.simko_spread_on must be one of {simko.SPREAD_ON}, "
                         f"got {out['simko_spread_on']!r}")
    return out


def _simko_actor_config(loss_function):
    """The actor config when `loss_function` is verl's `partial(ppo_loss, config=...)` with loss_mode simko, else
    None (the critic, log-prob inference and other losses are left alone)."""
    config = loss_function.keywords.get("config") if isinstance(loss_function, functools.partial) else None
    if config is None or _cfg(_cfg(config, "policy_loss"), "loss_mode") != "simko":
        return None
    return config


def _response_correct(micro_batch):
    """[bs] bool: the response's summed token_level_scores == 1 (the official spread condition); None if absent."""
    if "token_level_scores" not in micro_batch.keys():
        return None
    scores = micro_batch["token_level_scores"]
    scores = scores.to_padded_tensor(0.0) if scores.is_nested else scores
    return scores.sum(-1) == 1


def _packed_token_stats(output, output_args, micro_batch, top_k):
    """simko.token_stats of every packed token ([total_nnz] values, [total_nnz, K] for top-K) from verl's raw model
    output; the same logits, labels and temperature that verl's own log-probs use."""
    from torch.distributed.tensor import DTensor

    logits = output.logits
    if isinstance(logits, DTensor):  # tensor parallelism: vocab-sharded logits, as verl gathers them
        logits = logits.full_tensor()
    if output_args.get("input_ids_rmpad_rolled") is not None and "temperature_rmpad" in output_args:
        # packed: logits [1, nnz(+pad), V], one label and one temperature per token
        labels, temperature = output_args["input_ids_rmpad_rolled"].unsqueeze(0), output_args["temperature_rmpad"]
        valid = None
    else:
        # padded: logits [bs, S, V]; labels are the packed rolled ids, laid back out per sequence
        lengths = micro_batch["input_ids"].offsets().diff()
        labels = torch.nested.nested_tensor_from_jagged(output_args["input_ids_rmpad_rolled"],
                                                        micro_batch["input_ids"].offsets())
        labels = labels.to_padded_tensor(0, output_size=tuple(logits.shape[:2]))
        temperature = output_args["temperature"]
        valid = torch.arange(logits.shape[1], device=logits.device) < lengths.to(logits.device).unsqueeze(1)
    if output_args.get("temperature_is_one", False) or bool((temperature == temperature.flatten()[0]).all()):
        # one temperature (the usual case): token_stats divides chunk by chunk, no scaled copy of the logits
        t = 1.0 if output_args.get("temperature_is_one", False) else float(temperature.flatten()[0])
    else:  # per-sample temperatures: scale as verl does
        logits = logits / temperature.clamp(min=1e-8).to(logits.dtype).reshape(*temperature.shape, 1)
        t = 1.0
    stats = simko.token_stats(logits, labels, top_k=top_k, temperature=t)
    if valid is None:
        return simko.TokenStats(*(x.squeeze(0) for x in stats))
    return simko.TokenStats(*(x[valid] for x in stats))


def _wrap_prepare_model_outputs(original):
    """verl's `FSDPEngineWithLMHead.prepare_model_outputs`, plus SimKO's statistics when the loss is simko."""

    @functools.wraps(original)
    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        _pending.stats = None
        config = _simko_actor_config(logits_processor_func)
        if config is None:
            return original(self, output, output_args, micro_batch, logits_processor_func)
        from verl.utils import tensordict_utils as tu
        from verl.workers.utils.padding import no_padding_2_padding

        for key, setting in (("use_fused_kernels", "actor_rollout_ref.model.use_fused_kernels=False"),
                             ("distillation_use_topk", "no top-K distillation")):
            if tu.get_non_tensor_data(data=micro_batch, key=key, default=False):
                raise ValueError(f"policy_loss.loss_mode=simko needs the logits of the actor's forward: set {setting}")
        settings = simko_settings(config)
        stats = _packed_token_stats(output, output_args, micro_batch, settings["simko_top_k"])
        pad_size = output_args.get("pad_size", 0)
        stats = simko.TokenStats(*(self._gather_and_unpad_packed(x, pad_size) for x in stats))
        # verl's own output (entropy etc.) without its log-probs, which come from the same pass as the statistics
        tu.assign_non_tensor(micro_batch, distillation_only=True)
        try:
            model_output = original(self, output, output_args, micro_batch, logits_processor_func)
        finally:
            tu.assign_non_tensor(micro_batch, distillation_only=False)
        cu_seqlens = micro_batch["input_ids"].offsets()
        model_output["log_probs"] = torch.nested.nested_tensor_from_jagged(stats.logp, cu_seqlens)
        # response tokens [bs, T(, K)], aligned with the loss's log_prob (the same slicing)
        _pending.stats = {
            "logp": no_padding_2_padding(stats.logp, micro_batch),
            "entropy": no_padding_2_padding(stats.entropy, micro_batch),
            "topk_logp": no_padding_2_padding(stats.topk_logp, micro_batch),
            "is_rank1": no_padding_2_padding(stats.is_rank1.float(), micro_batch) > 0.5,
            "correct": _response_correct(micro_batch),
        }
        return model_output

    prepare_model_outputs._simko_wrapped = True
    return prepare_model_outputs


def _global_scale(mask: torch.Tensor, agg: str, batch_info: dict) -> float:
    """(The micro-batch's normaliser in simko.aggregate) x dp_size / (verl's normaliser over the mini-batch)."""
    dp_size = int(batch_info.get("dp_size") or 1)
    if agg == "token_mean":
        local, total = mask.sum(), batch_info.get("batch_num_tokens")
    else:
        nonempty = (mask.sum(-1) > 0).sum()
        local = nonempty if agg == "seq_mean_token_mean" else mask.shape[0]
        total = batch_info.get("global_batch_size")
        total = nonempty if total is None else total
    if total is None:  # no global info (one process, whole batch): verl normalises over this micro-batch
        total = local
    return float(local) * dp_size / max(float(total), 1.0)


def simko_policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                      rollout_is_weights=None):
    """verl policy loss `simko`: `simko.policy_loss` on the statistics of the forward that produced `log_prob`.

    old_log_prob, log_prob, advantages, response_mask: [bs, T] (verl's padded response layout); config: the actor
    config (clip, loss_scale_factor, global_batch_info, policy_loss.simko_*). Returns (loss, metrics), the loss
    scaled to verl's mini-batch normalisation (module docstring).
    """
    stats = getattr(_pending, "stats", None)
    _pending.stats = None
    if stats is None or stats["logp"].shape != log_prob.shape:
        raise ValueError("policy_loss.loss_mode=simko: no SimKO statistics from the actor's forward for this "
                         f"micro-batch (log_prob {list(log_prob.shape)}). They come from verl's fsdp/fsdp2 engine "
                         "with actor_rollout_ref.model.use_fused_kernels=False and VERL_USE_EXTERNAL_MODULES="
                         "integrations.verl in the worker processes; other engines are not covered")
    if rollout_is_weights is not None:
        raise ValueError("policy_loss.loss_mode=simko does not apply rollout-correction weights: turn "
                         "algorithm.rollout_correction off")
    if loss_agg_mode not in SIMKO_AGGREGATIONS:
        raise ValueError(f"policy_loss.loss_mode=simko: actor.loss_agg_mode must be one of "
                         f"{sorted(SIMKO_AGGREGATIONS)}, got {loss_agg_mode!r}")
    settings = simko_settings(config)
    if settings["simko_spread_on"] == "correct" and stats["correct"] is None:
        raise ValueError("policy_loss.loss_mode=simko with simko_spread_on=correct needs token_level_scores (the "
                         "0/1 reward) in the actor's batch")
    agg = SIMKO_AGGREGATIONS[loss_agg_mode]
    clip = _cfg(config, "clip_ratio", 0.2)
    batch_info = dict(_cfg(config, "global_batch_info", {}) or {})
    max_len = batch_info.get("loss_scale_factor") or _cfg(config, "loss_scale_factor")
    token_stats = simko.TokenStats(log_prob, stats["entropy"], stats["topk_logp"], None, stats["is_rank1"])
    loss, metrics = simko.policy_loss(
        log_prob, old_log_prob, advantages, response_mask, token_stats, alpha=float(settings["simko_alpha"]),
        lam=float(settings["simko_lambda"]), tau=float(settings["simko_tau"]),
        clip_low=float(_cfg(config, "clip_ratio_low", clip)), clip_high=float(_cfg(config, "clip_ratio_high", clip)),
        agg=agg, max_len=None if max_len is None else int(max_len), correct=stats["correct"],
        spread_on=settings["simko_spread_on"])
    loss = loss * _global_scale(response_mask.bool(), agg, batch_info)
    return loss, {f"actor/simko_{key}": value for key, value in metrics.items()}


def _simko_config_class():
    """verl's PolicyLossConfig with the simko_* fields (hydra target for `actor.policy_loss._target_`)."""
    from dataclasses import dataclass

    from verl.workers.config import PolicyLossConfig

    @dataclass
    class SimKOPolicyLossConfig(PolicyLossConfig):
        simko_top_k: int = simko.PAPER_TOP_K
        simko_alpha: float = simko.PAPER_ALPHA
        simko_lambda: float = simko.PAPER_LAMBDA
        simko_tau: float = simko.PAPER_TAU
        simko_spread_on: str = "correct"

    SimKOPolicyLossConfig.__module__, SimKOPolicyLossConfig.__qualname__ = __name__, "SimKOPolicyLossConfig"
    SimKOPolicyLossConfig.__doc__ = "verl's PolicyLossConfig plus SimKO's settings (see integrations.verl)."
    return SimKOPolicyLossConfig


def register_simko() -> str:
    """Register the policy loss `simko` and wrap the fsdp engine's `prepare_model_outputs` (idempotent). Needs verl."""
    from verl.trainer.ppo.core_algos import register_policy_loss
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    register_policy_loss("simko")(simko_policy_loss)
    if not getattr(FSDPEngineWithLMHead.prepare_model_outputs, "_simko_wrapped", False):
        FSDPEngineWithLMHead.prepare_model_outputs = _wrap_prepare_model_outputs(
            FSDPEngineWithLMHead.prepare_model_outputs)
    return "simko"


# Register on import when verl is installed, so `VERL_USE_EXTERNAL_MODULES=integrations.verl` is all it takes.
# Without verl the functions above still work on tensors. A verl that is installed but fails to import (a missing
# dependency) raises here, rather than leaving verl to report an "unknown advantage estimator" later.
if importlib.util.find_spec("verl") is not None:
    register_passk_estimators()
    SimKOPolicyLossConfig = _simko_config_class()
    register_simko()
