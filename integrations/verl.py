"""Pass@k-Training (and PKPO) advantages as verl advantage estimators (verified against verl 0.9.1).

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

Why SimKO is *not* a verl policy-loss plug-in. A loss registered with `core_algos.register_policy_loss` is called
as `fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_log_probs)`: it sees the
log-probability of the *sampled* token only. SimKO needs, from the same forward pass, (a) the top-K log-probs of
every position, with gradient (its positive-branch gradient is spread over them), (b) whether the sampled token is
the rank-1 candidate (its negative-branch penalty) and (c) the full-vocabulary entropy (its gate). None of them can
be recovered from `log_prob`. What to change in the actor instead (verl 0.9, engine workers):

1. Where the logits become log-probs (`prepare_model_outputs` in `verl/workers/engine/fsdp/transformer_impl.py`,
   which calls `logprobs_from_logits` and `entropy_from_logits`), call
   `stats = simko.token_stats(logits, labels, top_k=3, temperature=temperature)` (or `token_stats_from_hidden`
   with the LM-head weight, which never materialises the logits) and put `stats.topk_logp`, `stats.is_rank1` and
   `stats.entropy` into the model output, converted to the padded layout like `log_probs`.
2. In the actor loss (`ppo_loss` in `verl/workers/utils/losses.py`), replace
   `policy_loss_fn(old_log_prob=..., log_prob=..., ...)` by
   `simko.policy_loss(log_prob, old_log_prob, advantages, response_mask, stats, alpha=0.01, lam=1.1, tau=0.8,
   clip_low=config.clip_ratio_low, clip_high=config.clip_ratio_high, agg=...)` with `agg` = "token_mean",
   "seq_mean_token_mean" or "seq_mean_token_sum_norm" for verl's `loss_agg_mode` "token-mean",
   "seq-mean-token-mean", "seq-mean-token-sum-norm", and keep verl's global-batch scaling of the result.
`integrations/trl.py` does exactly these two steps inside TRL's trainer, and its test checks the result against
TRL's own loss.
"""
from __future__ import annotations

import importlib.util
import itertools

import torch

import passk_at_k

__all__ = ["register_passk_estimators", "ESTIMATORS"]

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


# Register on import when verl is installed, so `VERL_USE_EXTERNAL_MODULES=integrations.verl` is all it takes.
# Without verl the functions above still work on tensors. A verl that is installed but fails to import (a missing
# dependency) raises here, rather than leaving verl to report an "unknown advantage estimator" later.
if importlib.util.find_spec("verl") is not None:
    register_passk_estimators()
