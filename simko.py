"""SimKO: Simple Pass@K Policy Optimization (Peng et al. 2025, arXiv 2510.14807), in one file.

Official code: github.com/CLR-Lab/SimKO (verl; `compute_policy_loss_simko` in verl/trainer/ppo/core_algos.py).

The observation. RLVR training (GRPO and friends) makes the policy pile probability onto the rank-1 candidate token:
averaged over response tokens, the top-1 probability climbs to ~0.93 under GRPO but stays ~0.47 under SimKO (the
paper's Figure 1), and the more concentrated the policy, the worse its pass@K for large K. The paper's Fig. 3 traces
where the concentration comes from with the analysis baselines PSR and NSR (below): PSR concentrates more than GRPO,
NSR less.

SimKO leaves the GRPO loss alone except at high-entropy "forking" tokens, where it pushes mass *away* from the
top-1 candidate. With gamma = pi_theta(y | s) / pi_old(y | s) the importance ratio of the sampled token y (the
paper's text writes the denominator as pi_theta_ref; the official code divides by the rollout policy's
probabilities, as here), it replaces gamma by

    gamma~ = gamma_pos   if H(pi_theta(. | s)) > tau and A > 0                          (the gated ratio)
             gamma_neg   if H(pi_theta(. | s)) > tau and A < 0
             gamma       otherwise
    gamma_pos = (1 - alpha) gamma + (alpha / K) sum_{k in topK} sg(gamma / gamma_k) gamma_k        (top-K spread)
    gamma_neg = lambda gamma   if y is the rank-1 candidate, lambda > 1                       (rank-1 penalty)

and keeps the PPO clipped surrogate around gamma~. Three parts:

1. Entropy gate. The official code thresholds at a per-response quantile (a token is gated when its entropy is above
   the tau = 0.8 quantile of its own response's tokens, about the top 20%); the paper text reads like an absolute
   threshold in nats. Both are here (`gate=`, values in `GATES`); default: the quantile.
2. Top-K spread. Its condition: the paper writes A > 0; the official code spreads on the gated tokens of *correct*
   responses (reward 1), whatever their advantage. The two agree under GRPO; under a group advantage (Pass@k full or
   bootstrap sampling) a wrong response in a successful group has A > 0 and gets the spread only under the paper's
   reading. `spread_on=` (values in `SPREAD_ON`) picks one; default "advantage" (the paper's text), "correct" (the
   official code) with `correct=`.
   topK are the K most probable candidates of the current policy (they may include y). gamma_pos has
   the *value* gamma, so PPO clipping is unchanged; its *gradient* is
   gamma * [(1 - alpha) grad log pi(y) + (alpha / K) sum_k grad log pi(top_k)]: a share alpha of the "raise y" push
   is spread over the top-K. sg(x) (stop-gradient) freezes a factor at its value, so sg(gamma / gamma_k) gamma_k
   equals gamma but differentiates like gamma grad log gamma_k; the old policy's top-K probabilities cancel in it.
3. Rank-1 penalty. The official code multiplies the *advantage* by lambda (= 1.1, hard-coded); the paper writes
   gamma_neg = lambda gamma (inside the clip). The two agree only while the ratio is inside the clip range.
   `penalty=` (values in `PENALTIES`) picks one; default: the official "advantage".
With alpha = 0 and lambda = 1 the loss is exactly the GRPO/DAPO clipped surrogate (tested, value and gradient).

Analysis baselines (Zhu, Xia, Wei, Chen, Chen, Meng 2025, "The Surprising Effectiveness of Negative Reinforcement in
LLM Reasoning", arXiv 2506.01347, which SimKO's Fig. 3 uses): REINFORCE on the +1 / -1 verifiable reward split into
its two halves, PSR (Positive Sample Reinforcement: raise the likelihood of correct responses only) and NSR (Negative
Sample Reinforcement: lower that of wrong responses only), and W-REINFORCE = lambda_w PSR + NSR with lambda_w = 0.1.
The official SimKO code (`compute_psr_nsr_outcome_advantage`) implements them as per-response advantages fed to the
same clipped surrogate, from the 0/1 reward r:
    PSR  A = r            (1 correct, 0 wrong)
    NSR  A = r - 1        (0 correct, -1 wrong)
    W-REINFORCE  A = lambda_w r (correct), r - 1 (wrong)                       -> sample_advantages, policy_loss(loss=)
Their code first cuts the batch down to the correct (PSR) or wrong (NSR) responses, then takes the token mean:
policy_loss(loss="psr" / "nsr") aggregates over that subset's tokens only (W-REINFORCE over all).

Clip. SimKO's official code clips symmetrically, eps = 0.2 (`clip_ratio: 0.2` in its ppo_trainer.yaml; that verl
version has no clip-higher): PAPER_CLIP. policy_loss's defaults (0.2, 0.28) are DAPO's clip-higher, the Pass@k
paper's setting (passk_at_k.PAPER_CLIP), used by the project's default Pass@k + SimKO; pass PAPER_CLIP for SimKO as
published.

Other choices of the official code, and what this file does:
- loss aggregation: a token mean per micro-batch, micro-batches averaged by their share of sequences (verl); here
  the token mean over the tokens passed in (agg="token_mean"), i.e. per call.
- rank-1: the official code compares the sampled token with the argmax (ties go to the lowest id); here ties count
  as rank-1.
- the ratio of the spread term divides by (gamma_k + 1e-8); here the exact sg(gamma / gamma_k) gamma_k.
- W-REINFORCE: besides the advantage form above (`algorithm.advantage=weighted`, `positive_advantage_weight`), its
  `compute_policy_loss` has a loss-weighting form (`positive_learning_weight`); here the advantage form.
- entropy bonus: its ppo_trainer.yaml has entropy_coeff 0.001, and its run scripts do not override it; on the SimKO
  path the entropy is detached before that term (no gradient), on its GRPO path it is not. No entropy term here.

Paper -> code:
    pi(y | s), H(pi(. | s)), log pi(top_k | s), "y is rank-1"   -> TokenStats, from token_stats_reference (the
                                                                    definition) or token_stats /
                                                                    token_stats_from_hidden (the same, in chunks)
    gamma~, gamma_pos, gamma_neg, the PPO clip                    -> policy_loss
    PSR, NSR, W-REINFORCE advantages                              -> sample_advantages, policy_loss(loss=)
    Lambda^(k): mean probability of the rank-k candidate          -> concentration

Reading order: TokenStats -> token_stats_reference -> policy_loss -> concentration. Below one banner at the end
come the memory-efficient autograd implementations. The official code gets the top-K log-probs by copying the full
[tokens, vocab] logits K times (~22 GB at 12k tokens and a 152k vocabulary). Here every statistic comes from one
log-sum-exp per token plus a top-K and a `gather`, in chunks of tokens, and `token_stats_from_hidden` never
materialises the logits at all (it recomputes each chunk's logits from the hidden states in backward).
`benchmarks/bench_simko.py` prints the measured memory and time.

Imports only torch and the standard library: copy this file into your own trainer.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

__all__ = ["TokenStats", "token_stats_reference", "policy_loss", "aggregate", "sample_advantages", "concentration",
           "token_stats", "token_stats_from_hidden", "GATES", "AGGREGATIONS", "PENALTIES", "LOSSES", "SPREAD_ON",
           "PAPER_ALPHA", "PAPER_LAMBDA", "PAPER_TAU", "PAPER_TOP_K", "PAPER_CLIP", "PAPER_W_REINFORCE_WEIGHT",
           "PAPER_LR", "PAPER_N", "PAPER_PROMPT_BATCH", "PAPER_MINI_BATCH", "PAPER_MAX_RESPONSE_TOKENS"]

# The official code's values: K = 3 candidates and alpha = 0.01 (`actor.top_k=3`, `actor.mix_topk_coef=0.01` in its
# run_*_SimKO.sh), lambda = 1.1 (hard-coded in `compute_policy_loss_simko`), tau = the 0.8 quantile of each
# response's token entropies (`row_quantile_masked(entropy, mask, q=0.80)` there).
PAPER_ALPHA, PAPER_LAMBDA, PAPER_TAU, PAPER_TOP_K = 0.01, 1.1, 0.8, 3
# SimKO's clip (clip_low, clip_high): one symmetric eps = 0.2 (`clip_ratio: 0.2`, official ppo_trainer.yaml).
PAPER_CLIP = (0.2, 0.2)
# The official run script's training settings (run_qwen2.5-math-7b_SimKO.sh): lr, rollouts per prompt, prompts per
# step and per optimiser step (4 optimiser steps per rollout batch), longest response; no KL (kl_coef 0).
PAPER_LR, PAPER_N, PAPER_PROMPT_BATCH, PAPER_MINI_BATCH, PAPER_MAX_RESPONSE_TOKENS = 1e-6, 8, 1024, 256, 3072
# W-REINFORCE's weight on the positive samples, lambda_w = 0.1 (Zhu et al. 2025, arXiv 2506.01347).
PAPER_W_REINFORCE_WEIGHT = 0.1
# The allowed values of policy_loss's gate=, agg=, penalty=, loss= and spread_on= (the first is the default);
# trainers import these.
GATES = ("row_quantile", "batch_quantile", "absolute")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
PENALTIES = ("advantage", "ratio")
LOSSES = ("clip", "psr", "nsr", "w_reinforce")
SPREAD_ON = ("advantage", "correct")


class TokenStats(NamedTuple):
    """Per-token statistics of the current policy at the sampled positions. B = batch, T = tokens, K = top_k.

    (float32 whatever the input dtype; float64 for float64 inputs.)
    logp      [B, T]    float32, differentiable: log pi(y_t | s_t) of the sampled token (at the given temperature).
    entropy   [B, T]    float32, no gradient: full-vocabulary entropy H(pi(. | s_t)) in nats.
    topk_logp [B, T, K] float32, differentiable: log-probs of the K most probable tokens, sorted descending.
    topk_ids  [B, T, K] int64: their token ids.
    is_rank1  [B, T]    bool: the sampled token has the highest probability (ties count as rank-1).
    """

    logp: torch.Tensor
    entropy: torch.Tensor
    topk_logp: torch.Tensor
    topk_ids: torch.Tensor
    is_rank1: torch.Tensor


def token_stats_reference(logits: torch.Tensor, tokens: torch.Tensor, top_k: int = PAPER_TOP_K,
                          temperature: float = 1.0) -> TokenStats:
    """The definition of every TokenStats field, from a full log-softmax. logits [B, T, V], tokens [B, T].

    Same values and gradients as `token_stats` (tested), but it keeps several [B, T, V] float32 tensors alive for
    backward: fine for a small vocabulary, gigabytes at V = 152k. Use `token_stats` / `token_stats_from_hidden`.
    """
    logp_v = (logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature).log_softmax(-1)  # [B, T, V]
    logp = logp_v.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)     # [B, T]     log pi(y_t | s_t)
    entropy = torch.special.entr(logp_v.detach().exp()).sum(-1)           # [B, T]     -sum_v p_v log p_v
    topk_logp, topk_ids = logp_v.topk(top_k, dim=-1)                      # [B, T, K]  sorted descending
    is_rank1 = logp.detach() >= topk_logp[..., 0].detach()                 # [B, T]     ties count as rank-1
    return TokenStats(logp, entropy, topk_logp, topk_ids, is_rank1)


# ----------------------------------------------------------------------------------------------------------------
# The analysis baselines' advantages (PSR, NSR, W-REINFORCE)


def sample_advantages(correct: torch.Tensor, loss: str, weight: float = PAPER_W_REINFORCE_WEIGHT,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-response advantages [B] (in `dtype`) of PSR, NSR or W-REINFORCE from correct [B] (bool; 0/1 accepted).

    "psr": 1 correct, 0 wrong;  "nsr": 0 correct, -1 wrong;  "w_reinforce": `weight` correct, -1 wrong.
    (The module docstring gives the source.) No group normalisation: these are REINFORCE signals, not GRPO's.
    """
    if loss not in LOSSES[1:]:
        raise ValueError(f"sample_advantages: loss must be one of {LOSSES[1:]}, got {loss!r}")
    if correct.dim() != 1:
        raise ValueError(f"sample_advantages: correct must be [B] (one flag per response), got {list(correct.shape)}")
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"sample_advantages: weight must be a finite number >= 0, got {weight!r}")
    c = correct.bool()
    one, zero = torch.ones(c.shape, device=c.device, dtype=dtype), torch.zeros(c.shape, device=c.device, dtype=dtype)
    if loss == "psr":
        return torch.where(c, one, zero)
    if loss == "nsr":
        return torch.where(c, zero, -one)
    return torch.where(c, weight * one, -one)


# ----------------------------------------------------------------------------------------------------------------
# The SimKO policy loss


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: Optional[torch.Tensor], mask: torch.Tensor,
                stats: Optional[TokenStats] = None, *, alpha: Optional[float] = None, lam: Optional[float] = None,
                tau: float = PAPER_TAU, clip_low: float = 0.2, clip_high: float = 0.28, agg: str = "token_mean",
                gate: str = "row_quantile", penalty: str = "advantage", max_len: Optional[int] = None,
                loss: str = "clip", correct: Optional[torch.Tensor] = None, spread_on: str = "advantage",
                w_reinforce_weight: float = PAPER_W_REINFORCE_WEIGHT):
    """SimKO's loss when `stats` is given (paper values by default), the GRPO/DAPO clipped surrogate without it.

    Returns (loss, metrics).
    - stats given: SimKO with alpha = PAPER_ALPHA (0.01) and lam = PAPER_LAMBDA (1.1) unless you pass others.
      alpha=0 and lam=1 turn both changes off: exactly the clipped surrogate (value and gradient), with the gate
      metrics still computed.
    - stats=None: the plain clipped surrogate; alpha and lam must then be left unset (or 0 / 1), else ValueError.

    logp [B, T] current log-probs of the sampled tokens (differentiable; normally `stats.logp`); old_logp [B, T] the
    sampling policy's log-probs of the same tokens, recorded at rollout (no gradient); advantages [B] (broadcast
    over tokens) or [B, T]; mask [B, T] (nonzero = response token, EOS included).
    tau: the gate threshold, a quantile in [0, 1] of the entropies of the valid tokens of the same response
    (gate="row_quantile", the official code; torch.quantile's linear interpolation) or of the whole batch
    ("batch_quantile"), or an entropy in nats (gate="absolute"). Gated = entropy strictly above it.
    penalty: "advantage" (official code: lam times the advantage, i.e. lam times the clipped token loss) or "ratio"
    (paper text: lam * gamma inside the clip).
    clip_low, clip_high: the clip range [1 - clip_low, 1 + clip_high]; the defaults are DAPO's clip-higher (the Pass@k
    paper's); SimKO's official code uses PAPER_CLIP = (0.2, 0.2).
    loss: "clip" uses `advantages`; "psr", "nsr", "w_reinforce" (the analysis baselines) take their advantages from
    `correct` (see `sample_advantages`, `w_reinforce_weight` is W-REINFORCE's lambda_w), and `advantages` must then
    be None. All four go through the same clipped surrogate (and SimKO's changes when `stats` is given); "psr"
    ("nsr") aggregates over the correct (wrong) responses' tokens only, as the official code does.
    correct: [B] bool, the verifier's verdict per response; needed by loss != "clip" and by spread_on="correct".
    spread_on: which gated tokens get the top-K spread: "advantage" (A > 0, the paper's text) or "correct" (tokens
    of responses with correct = True, the official code). The rank-1 penalty always needs A < 0, as in both.
    agg: "token_mean" sums over all valid tokens of the batch / their count (DAPO); "seq_mean_token_mean" means per
    response, then over responses with >= 1 valid token (GRPO); "seq_mean_token_sum_norm" sums per response, divides
    by the constant `max_len` (default mask.shape[1]) and means over all responses (Dr. GRPO).

    Metrics (python floats):
        clip_frac_low          fraction of response tokens with A < 0 and gamma~ < 1 - clip_low (gradient clipped)
        clip_frac_high         fraction of response tokens with A > 0 and gamma~ > 1 + clip_high
        ratio_mean             mean of gamma over response tokens
        gated_frac             fraction of response tokens above the entropy gate (0 without stats)
        spread_frac_of_gated   fraction of the *gated* tokens that got the top-K spread (A > 0)
        penalty_frac_of_gated  fraction of the *gated* tokens that got the rank-1 penalty (A < 0, y rank-1)
    """
    alpha, lam = _check_policy_loss_args(logp, old_logp, advantages, mask, stats, alpha, lam, tau, clip_low,
                                         clip_high, agg, gate, penalty, max_len, loss, correct, spread_on)
    mask = mask.bool()
    if loss != "clip":
        advantages = sample_advantages(correct.to(logp.device), loss, w_reinforce_weight, logp.dtype)
        if loss != "w_reinforce":
            # Zhu et al.'s code first keeps only the correct (PSR) or wrong (NSR) responses, then takes the token mean:
            # the normaliser counts that subset's tokens, so the step size does not move with the accuracy.
            mask = mask & (correct.to(mask.device).bool() == (loss == "psr")).unsqueeze(1)
    adv = (advantages.unsqueeze(1) if advantages.dim() == 1 else advantages).to(logp.dtype).expand(logp.shape)
    adv = torch.where(mask, adv, 0.0)                       # padding may hold anything, even inf or nan
    # gamma = pi_theta(y | s) / pi_old(y | s)
    gamma = torch.exp(torch.where(mask, logp - old_logp, 0.0))
    gamma_t = gamma                                         # gamma~, the ratio that enters the clip
    gated = pos = neg = torch.zeros_like(mask)
    if stats is not None:
        # The gate: H(pi_theta(. | s)) > tau, H without gradient.
        gated = _entropy_gate(stats.entropy.detach().to(logp.dtype), mask, tau, gate)
        if spread_on == "correct":
            pos = gated & correct.to(device=mask.device, dtype=torch.bool).unsqueeze(1)
        else:
            pos = gated & (adv > 0)
        neg = gated & (adv < 0) & stats.is_rank1
        if alpha > 0:
            # gamma_pos (module docstring), as (1 - alpha) gamma + alpha sg(gamma) mean_k exp(l_k - sg(l_k)),
            # l_k = log pi_theta(top_k | s): the same value and gradient.
            l_k = stats.topk_logp.to(logp.dtype).clamp_min(-1e4)          # [B, T, K]; -inf would give exp(nan)
            gamma_pos = (1 - alpha) * gamma + alpha * gamma.detach() * torch.exp(l_k - l_k.detach()).mean(-1)
            gamma_t = torch.where(pos, gamma_pos, gamma_t)
        if lam != 1:
            if penalty == "ratio":
                # gamma_neg (module docstring; the paper's text)
                gamma_t = torch.where(neg, lam * gamma_t, gamma_t)
            else:
                # lam * A: the official code's reading, the same as gamma_neg while gamma is inside the clip
                adv = torch.where(neg, lam * adv, adv)
    # The PPO pessimistic bound: max(-A gamma~, -A clip(gamma~, 1 - clip_low, 1 + clip_high)).
    token_loss = torch.maximum(-adv * gamma_t, -adv * gamma_t.clamp(1 - clip_low, 1 + clip_high))
    loss = aggregate(torch.where(mask, token_loss, 0.0), mask, agg, max_len)

    with torch.no_grad():
        n_gated = gated.sum().clamp_min(1)
        metrics = {
            "clip_frac_low": _masked_mean((gamma_t < 1 - clip_low) & (adv < 0), mask).item(),
            "clip_frac_high": _masked_mean((gamma_t > 1 + clip_high) & (adv > 0), mask).item(),
            "ratio_mean": _masked_mean(gamma, mask).item(),
            "gated_frac": _masked_mean(gated, mask).item(),
            "spread_frac_of_gated": (pos.sum() / n_gated).item(),
            "penalty_frac_of_gated": (neg.sum() / n_gated).item(),
        }
    return loss, metrics


def _entropy_gate(entropy: torch.Tensor, mask: torch.Tensor, tau: float, gate: str) -> torch.Tensor:
    """[B, T] bool: valid tokens whose entropy is strictly above the threshold."""
    if gate == "absolute":
        threshold = torch.tensor(tau, device=entropy.device)
    elif gate == "batch_quantile":
        valid = entropy[mask]
        threshold = torch.quantile(valid, tau) if valid.numel() else entropy.new_tensor(math.inf)
    else:  # row_quantile: the quantile of each response's own valid tokens (padding -> nan, which nanquantile skips).
        threshold = torch.nanquantile(torch.where(mask, entropy, math.nan), tau, dim=1, keepdim=True)
    # A response with no valid tokens has a nan threshold; `>` with nan is False, so nothing is gated there.
    return mask & (entropy > threshold)


def aggregate(token_loss: torch.Tensor, mask: torch.Tensor, agg: str, max_len: Optional[int]) -> torch.Tensor:
    """[B, T] token losses (0 at padding) -> the scalar loss, per `agg` (see policy_loss)."""
    if agg == "token_mean":
        return token_loss.sum() / mask.sum().clamp_min(1)
    if agg == "seq_mean_token_mean":
        counts = mask.sum(1)
        return (token_loss.sum(1) / counts.clamp_min(1)).sum() / (counts > 0).sum().clamp_min(1)
    return (token_loss.sum(1) / float(max_len or mask.shape[1])).mean()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (float64) over the True entries of mask (0 when there are none). where, not multiply: inf * 0 = nan."""
    return torch.where(mask, x.double(), 0.0).sum() / mask.sum().clamp_min(1)


def _check_policy_loss_args(logp, old_logp, advantages, mask, stats, alpha, lam, tau, clip_low, clip_high, agg, gate,
                            penalty, max_len, loss="clip", correct=None, spread_on="advantage") -> tuple[float, float]:
    """Raise a ValueError naming the argument and its allowed range; return (alpha, lam) with the defaults filled in."""
    fn = "policy_loss"
    if logp.dim() != 2:
        raise ValueError(f"{fn}: logp must be [B, T], got shape {list(logp.shape)}")
    shape = logp.shape
    if loss not in LOSSES:
        raise ValueError(f"{fn}: loss must be one of {LOSSES}, got {loss!r}")
    if spread_on not in SPREAD_ON:
        raise ValueError(f"{fn}: spread_on must be one of {SPREAD_ON}, got {spread_on!r}")
    if (loss != "clip" or spread_on == "correct") and (correct is None or correct.shape != (shape[0],)):
        raise ValueError(f"{fn}: loss={loss!r}, spread_on={spread_on!r} need correct= ([B] = [{shape[0]}] bool, one "
                         f"verdict per response), got {None if correct is None else list(correct.shape)}")
    if loss != "clip":
        if advantages is not None:
            raise ValueError(f"{fn}: loss={loss!r} takes its advantages from correct=; pass advantages=None")
        return _check_rest(fn, shape, old_logp, torch.zeros(shape[0]), mask, stats, alpha, lam, tau, clip_low,
                           clip_high, agg, gate, penalty, max_len)
    if advantages is None:
        raise ValueError(f"{fn}: loss='clip' needs advantages ([B] or [B, T])")
    return _check_rest(fn, shape, old_logp, advantages, mask, stats, alpha, lam, tau, clip_low, clip_high, agg, gate,
                       penalty, max_len)


def _check_rest(fn, shape, old_logp, advantages, mask, stats, alpha, lam, tau, clip_low, clip_high, agg, gate, penalty,
                max_len) -> tuple[float, float]:
    if old_logp.shape != shape or mask.shape != shape:
        raise ValueError(f"{fn}: logp, old_logp and mask must all be [B, T] = {list(shape)}, got "
                         f"{list(old_logp.shape)} and {list(mask.shape)}")
    if advantages.shape not in ((shape[0],), shape):
        raise ValueError(f"{fn}: advantages must be [B] = [{shape[0]}] or [B, T] = {list(shape)}, got "
                         f"{list(advantages.shape)}")
    if agg not in AGGREGATIONS:
        raise ValueError(f"{fn}: agg must be one of {AGGREGATIONS}, got {agg!r}")
    if gate not in GATES:
        raise ValueError(f"{fn}: gate must be one of {GATES}, got {gate!r}")
    if penalty not in PENALTIES:
        raise ValueError(f"{fn}: penalty must be one of {PENALTIES}, got {penalty!r}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{fn}: alpha must be in [0, 1] (share of the push spread over the top-K), got {alpha!r}")
    if lam is not None and not lam > 0:
        raise ValueError(f"{fn}: lam must be > 0 (the paper uses {PAPER_LAMBDA}), got {lam!r}")
    if stats is None:
        if alpha not in (None, 0) or lam not in (None, 1):
            raise ValueError(f"{fn}: alpha={alpha!r}, lam={lam!r} are SimKO's and need stats= (the TokenStats of the "
                             f"current policy); without stats the loss is plain GRPO/DAPO")
        alpha, lam = 0.0, 1.0
    alpha = PAPER_ALPHA if alpha is None else alpha
    lam = PAPER_LAMBDA if lam is None else lam
    if gate != "absolute" and not 0.0 <= tau <= 1.0:
        raise ValueError(f"{fn}: tau must be a quantile in [0, 1] for gate={gate!r}, got {tau!r}")
    if not (0.0 <= clip_low < 1.0 and clip_high >= 0.0):
        raise ValueError(f"{fn}: need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low!r}, {clip_high!r}")
    if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
        raise ValueError(f"{fn}: max_len must be a positive int or None, got {max_len!r}")
    if stats is not None and (stats.entropy.shape != shape or stats.topk_logp.shape[:2] != shape
                              or stats.is_rank1.shape != shape):
        raise ValueError(f"{fn}: stats fields must match logp's [B, T] = {list(shape)}, got entropy "
                         f"{list(stats.entropy.shape)}, topk_logp {list(stats.topk_logp.shape)}")
    return float(alpha), float(lam)


# ----------------------------------------------------------------------------------------------------------------
# The concentration metric


@torch.no_grad()
def concentration(topk_logp: torch.Tensor, mask: torch.Tensor) -> dict:
    """The paper's concentration metric Lambda^(k): the rank-k candidate's mean probability over response tokens.

    topk_logp [B, T, K] (sorted descending, e.g. `stats.topk_logp`), mask [B, T]. Returns
    {"prob": [K floats], "logp": [K floats]}: prob[i] is the mean probability and logp[i] the mean log-probability
    of the rank-(i+1) candidate over valid tokens (nan when there are none). Logged as `rank{i+1}_prob` and
    `rank{i+1}_logp` (train.py; `simko/rank1_prob` ... in TRL). GRPO drives rank-1 towards ~0.93; SimKO keeps it ~0.47.
    """
    if topk_logp.dim() != 3 or mask.shape != topk_logp.shape[:2]:
        raise ValueError(f"concentration: need topk_logp [B, T, K] and mask [B, T], got {list(topk_logp.shape)} and "
                         f"{list(mask.shape)}")
    m = mask.bool()
    if not m.any():
        k = topk_logp.shape[-1]
        return {"prob": [math.nan] * k, "logp": [math.nan] * k}
    valid = topk_logp[m].double()  # [n, K]
    return {"prob": valid.exp().mean(0).tolist(), "logp": valid.mean(0).tolist()}


# ================================================================================================================
# Memory-efficient autograd implementations of the token statistics: token_stats (from logits, in chunks) and
# token_stats_from_hidden (from the last hidden states and the LM head; never materialises [tokens, vocab]).
# Same values and gradients as token_stats_reference; everything below is engineering.
# ================================================================================================================

# Chunk size when `token_stats(chunk_size=None)`: about 64M float32 logits (256 MB) per chunk, i.e. 441 tokens at a
# 152k vocabulary. The per-chunk temporaries are a few such buffers.
_AUTO_CHUNK_ELEMENTS = 1 << 26


# ----------------------------------------------------------------------------------------------------------------
# The per-chunk kernels shared by both autograd functions. `z` is a [n, V] float32 block of temperature-scaled
# logits. The n x V work buffers are allocated once per call and reused by every chunk: on CPU a fresh 150 MB
# tensor costs more in page faults than the exp that fills it.


def _chunk_forward(z: torch.Tensor, y: torch.Tensor, k: int, work: torch.Tensor):
    """Statistics of one chunk. z [n, V] float32 (read only), y [n] int64, work: a [>= n, V] scratch buffer
    -> logp [n], lse [n], entropy [n], topk_logp [n, k], topk_ids [n, k], is_rank1 [n]."""
    top_vals, top_ids = z.topk(k, dim=-1)  # sorted descending; top_vals[:, 0] is the max, needed for a stable lse
    m = top_vals[:, :1]
    e = torch.sub(z, m, out=work[: z.shape[0]]).exp_()  # exp(z - max)
    s = e.sum(-1)
    # sum_v e_v * z_v, in place in the scratch buffer. (Not bmm as a batched dot product: its float32 accumulation
    # over 152k terms is ~1e-4 relative, i.e. 1e-3 nats of entropy; the reduction `sum` is pairwise and ~1e-7.)
    # nan_to_num: logits of -inf (a masked vocabulary entry) give 0 * -inf = nan, whose true contribution is 0.
    ez = e.mul_(z).nan_to_num_(0.0).sum(-1)
    lse = m.squeeze(1) + s.log()
    # H = lse - E_p[z]. E_p[z] = ez / s. Both terms are close to max(z); the difference is accurate to ~1e-6 * |max|.
    entropy = (lse - ez / s).clamp_min_(0.0)
    z_y = z.gather(1, y.unsqueeze(1)).squeeze(1)
    return z_y - lse, lse, entropy, top_vals - lse.unsqueeze(1), top_ids, z_y >= top_vals[:, 0]


def _chunk_grad_(z: torch.Tensor, lse, y, top_ids, g_logp, g_topk, inv_temperature: float) -> torch.Tensor:
    """Gradient w.r.t. the *unscaled* logits of one chunk, computed IN PLACE in z (which is destroyed).

    d logp / d z = onehot(y) - p and d topk_logp_k / d z = onehot(top_k) - p, so
        dL/dz = g_logp * onehot(y) + sum_k g_topk_k * onehot(top_k) - (g_logp + sum_k g_topk_k) * p,
    all times 1/T for the temperature. The entropy output carries no gradient by design.
    """
    c = g_logp + g_topk.sum(-1)
    p = z.sub_(lse.unsqueeze(1)).exp_()
    p.mul_(c.unsqueeze(1).neg())
    p.scatter_add_(1, y.unsqueeze(1), g_logp.unsqueeze(1))
    p.scatter_add_(1, top_ids, g_topk)
    if inv_temperature != 1.0:
        p.mul_(inv_temperature)
    return p


def _zeros_if_none(g: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g.to(like.dtype)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for bf16/fp16/fp32 inputs, float64 for float64 ones (lets tests check gradients in float64)."""
    return torch.promote_types(dtype, torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# token_stats: from materialised logits.


def _logit_blocks(logits: torch.Tensor, chunk: int):
    """Yield (start, stop, view [n, V]) over the B*T positions in flattened order, without copying the logits.

    A contiguous [B, T, V] tensor is chunked as one [B*T, V] matrix; a strided one (e.g. `logits[:, :-1]`, which
    cannot be flattened without a copy) is chunked row by row.
    """
    b, t, v = logits.shape
    try:
        flat = logits.view(b * t, v)
        for start in range(0, b * t, chunk):
            yield start, min(start + chunk, b * t), flat[start:start + chunk]
    except RuntimeError:
        for i in range(b):
            for start in range(0, t, chunk):
                stop = min(start + chunk, t)
                yield i * t + start, i * t + stop, logits[i, start:stop]


def _scaled_float(block: torch.Tensor, inv_temperature: float, buf: Optional[torch.Tensor]) -> torch.Tensor:
    """A logits block in the compute dtype, divided by the temperature: the block itself (read only) when that
    needs no change, else written into `buf` (a [>= n, V] float buffer)."""
    if buf is None:
        return block
    z = buf[: block.shape[0]]
    if inv_temperature == 1.0:
        return z.copy_(block)
    return torch.mul(block, inv_temperature, out=z) if block.dtype == buf.dtype else z.copy_(block).mul_(
        inv_temperature)


def _empty_outputs(n: int, k: int, dtype: torch.dtype, device):
    """Output buffers of the chunked forward: logp, lse, entropy [n]; topk_logp, topk_ids [n, k]; is_rank1 [n]."""
    return (torch.empty(n, dtype=dtype, device=device), torch.empty(n, dtype=dtype, device=device),
            torch.empty(n, dtype=dtype, device=device), torch.empty(n, k, dtype=dtype, device=device),
            torch.empty(n, k, dtype=torch.long, device=device), torch.empty(n, dtype=torch.bool, device=device))


class _TokenStatsFromLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, tokens, k, chunk, inv_temperature):
        b, t, v = logits.shape
        n = b * t
        y = tokens.reshape(n)
        dev, cdt = logits.device, _compute_dtype(logits.dtype)
        logp, lse, ent, topk_logp, topk_ids, rank1 = _empty_outputs(n, k, cdt, dev)
        rows = min(chunk, max(n, 1))
        work = torch.empty(rows, v, dtype=cdt, device=dev)
        # float32 logits at temperature 1 are read in place; anything else is converted into one reused buffer.
        zbuf = None if (logits.dtype == cdt and inv_temperature == 1.0) else torch.empty_like(work)
        for start, stop, block in _logit_blocks(logits, chunk):
            z = _scaled_float(block, inv_temperature, zbuf)
            out = _chunk_forward(z, y[start:stop], k, work)
            for dst, src in zip((logp, lse, ent, topk_logp, topk_ids, rank1), out):
                dst[start:stop] = src
        del work, zbuf
        ctx.save_for_backward(logits, y, lse, topk_ids)
        ctx.chunk, ctx.inv_temperature = chunk, inv_temperature
        ctx.mark_non_differentiable(ent, topk_ids, rank1)
        return (logp.view(b, t), ent.view(b, t), topk_logp.view(b, t, k), topk_ids.view(b, t, k),
                rank1.view(b, t))

    @staticmethod
    def backward(ctx, g_logp, _g_ent, g_topk, _g_ids, _g_rank1):
        logits, y, lse, topk_ids = ctx.saved_tensors
        if g_logp is None and g_topk is None:
            return None, None, None, None, None
        n, k = topk_ids.shape
        g_logp = _zeros_if_none(g_logp, lse).reshape(n)
        g_topk = _zeros_if_none(g_topk, topk_ids.to(lse.dtype)).reshape(n, k)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        grad_flat = grad.view(n, -1)
        same = logits.dtype == lse.dtype
        # float32 logits: the gradient is computed in place in its own output rows; else in one reused buffer.
        zbuf = None if same else torch.empty(min(ctx.chunk, n), logits.shape[-1], dtype=lse.dtype,
                                             device=logits.device)
        for start, stop, block in _logit_blocks(logits, ctx.chunk):
            sl = slice(start, stop)
            z = grad_flat[sl].copy_(block) if same else zbuf[: stop - start].copy_(block)
            if ctx.inv_temperature != 1.0:
                z.mul_(ctx.inv_temperature)
            gz = _chunk_grad_(z, lse[sl], y[sl], topk_ids[sl], g_logp[sl], g_topk[sl], ctx.inv_temperature)
            if not same:
                grad_flat[sl].copy_(gz)
        return grad, None, None, None, None


def _check_common(tokens, b, t, v, top_k, chunk_size, temperature, fn, what):
    if tokens.shape != (b, t):
        raise ValueError(f"{fn}: tokens must have shape [B, T] = {[b, t]} to match {what}, got {list(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.is_complex():
        raise TypeError(f"{fn}: tokens must be an integer tensor of token ids, got {tokens.dtype}")
    if not isinstance(top_k, int) or not 1 <= top_k <= v:
        raise ValueError(f"{fn}: top_k must be an int in [1, vocab size = {v}], got {top_k!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"{fn}: chunk_size must be a positive int (tokens per chunk) or None, got {chunk_size!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{fn}: temperature must be a finite number > 0, got {temperature!r}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= v):
        raise ValueError(f"{fn}: token ids must lie in [0, {v - 1}] (the vocabulary), got min {int(tokens.min())} "
                         f"and max {int(tokens.max())}")


def token_stats(logits: torch.Tensor, tokens: torch.Tensor, top_k: int = 3, chunk_size: Optional[int] = None,
                temperature: float = 1.0) -> TokenStats:
    """SimKO's per-token statistics from logits, in chunks of `chunk_size` tokens.

    logits [B, T, V] (float32, bf16 or fp16; computed in float32 chunk by chunk), tokens [B, T] integer ids of the
    sampled tokens, aligned with the logits (position t of `logits` predicts `tokens[:, t]`).
    `temperature`: the logits are divided by it, so log-probs match those of sampling at that temperature.
    `chunk_size`: tokens per chunk; None picks ~64M logits per chunk (441 tokens at V = 152k).
    Returns TokenStats (see its docstring); logp and topk_logp carry gradients to `logits`. Backward recomputes
    each chunk's softmax from the saved logits instead of keeping float32 copies alive.
    """
    if logits.dim() != 3:
        raise ValueError(f"token_stats: logits must be [B, T, V], got shape {list(logits.shape)}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"token_stats: logits must be a floating-point tensor, got {logits.dtype}")
    b, t, v = logits.shape
    _check_common(tokens, b, t, v, top_k, chunk_size, temperature, "token_stats", "logits [B, T, V]")
    chunk = chunk_size or max(1, _AUTO_CHUNK_ELEMENTS // v)
    return TokenStats(*_TokenStatsFromLogits.apply(logits, tokens.to(device=logits.device, dtype=torch.long),
                                                   top_k, chunk, 1.0 / float(temperature)))


# ----------------------------------------------------------------------------------------------------------------
# token_stats_from_hidden: the fused LM head. Never materialises [B*T, V].


class _TokenStatsFromHidden(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, k, chunk, inv_temperature):
        b, t, h = hidden.shape
        n = b * t
        x = hidden.reshape(n, h)
        y = tokens.reshape(n)
        dev, cdt = hidden.device, _compute_dtype(hidden.dtype)
        logp, lse, ent, topk_logp, topk_ids, rank1 = _empty_outputs(n, k, cdt, dev)
        bufs = _logit_buffers(min(chunk, max(n, 1)), weight, cdt)
        work = torch.empty_like(bufs[1])
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            z = _chunk_logits(x[sl], weight, bias, inv_temperature, *bufs)
            out = _chunk_forward(z, y[sl], k, work)
            for dst, src in zip((logp, lse, ent, topk_logp, topk_ids, rank1), out):
                dst[sl] = src
        del bufs, work
        ctx.save_for_backward(x, weight, bias, y, lse, topk_ids)
        ctx.chunk, ctx.inv_temperature, ctx.hidden_shape = chunk, inv_temperature, hidden.shape
        ctx.mark_non_differentiable(ent, topk_ids, rank1)
        return (logp.view(b, t), ent.view(b, t), topk_logp.view(b, t, k), topk_ids.view(b, t, k),
                rank1.view(b, t))

    @staticmethod
    def backward(ctx, g_logp, _g_ent, g_topk, _g_ids, _g_rank1):
        x, weight, bias, y, lse, topk_ids = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if (g_logp is None and g_topk is None) or not (need_x or need_w or need_b):
            return None, None, None, None, None, None, None
        n, k = topk_ids.shape
        g_logp = _zeros_if_none(g_logp, lse).reshape(n)
        g_topk = _zeros_if_none(g_topk, topk_ids.to(lse.dtype)).reshape(n, k)
        dt = weight.dtype
        grad_x = torch.empty_like(x) if need_x else None
        # Low-precision weights: accumulate the weight gradient over chunks in float32 (one extra V x H float32
        # buffer), as one big matmul would; full-precision weights accumulate in place.
        acc_dt = torch.float32 if dt in (torch.float16, torch.bfloat16) else dt
        grad_w = torch.zeros(weight.shape, dtype=acc_dt, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=acc_dt, device=weight.device) if need_b else None
        low_buf, f_buf = _logit_buffers(min(ctx.chunk, n), weight, lse.dtype)
        for start in range(0, n, ctx.chunk):
            sl = slice(start, min(start + ctx.chunk, n))
            z = _chunk_logits(x[sl], weight, bias, ctx.inv_temperature, low_buf, f_buf)  # the recomputation
            gz = _chunk_grad_(z, lse[sl], y[sl], topk_ids[sl], g_logp[sl], g_topk[sl], ctx.inv_temperature)
            gz = gz if gz.dtype == dt else low_buf[: gz.shape[0]].copy_(gz)
            if need_x:
                torch.mm(gz, weight, out=grad_x[sl])
            if need_w:
                if acc_dt == dt:
                    grad_w.addmm_(gz.t(), x[sl])
                else:
                    grad_w += gz.t() @ x[sl]
            if need_b:
                grad_b += gz.sum(0, dtype=acc_dt)
        del low_buf, f_buf
        grad_x = grad_x.view(ctx.hidden_shape) if need_x else None
        grad_w = grad_w.to(dt) if need_w else None
        grad_b = grad_b.to(bias.dtype) if need_b else None
        return grad_x, grad_w, grad_b, None, None, None, None


def _logit_buffers(rows, weight, cdt):
    """Reusable [rows, V] buffers: one in the weight's dtype for the matmul when that is not the compute dtype
    (bf16/fp16), and one in the compute dtype."""
    v = weight.shape[0]
    low = None if weight.dtype == cdt else torch.empty(rows, v, dtype=weight.dtype, device=weight.device)
    return low, torch.empty(rows, v, dtype=cdt, device=weight.device)


def _chunk_logits(x, weight, bias, inv_temperature, low_buf, f_buf):
    """float32 logits of one chunk, (x @ W^T + b) / T, written into the buffers: matmul in the weight's dtype,
    then upcast."""
    n = x.shape[0]
    out = f_buf[:n] if low_buf is None else low_buf[:n]
    if bias is None:
        torch.mm(x, weight.t(), out=out)
    else:
        torch.addmm(bias, x, weight.t(), out=out)
    z = out if low_buf is None else f_buf[:n].copy_(out)
    if inv_temperature != 1.0:
        z.mul_(inv_temperature)
    return z


def token_stats_from_hidden(hidden: torch.Tensor, weight: torch.Tensor, tokens: torch.Tensor, top_k: int = 3,
                            chunk_size: int = 256, temperature: float = 1.0,
                            bias: Optional[torch.Tensor] = None) -> TokenStats:
    """The same statistics as `token_stats`, straight from the last hidden states and the LM-head weight.

    hidden [B, T, H], weight [V, H] (an nn.Linear's `.weight`; bias [V] optional), tokens [B, T].
    logits = (hidden @ weight.T + bias) / temperature are computed `chunk_size` tokens at a time and never stored;
    backward recomputes each chunk (one extra matmul) and returns gradients to hidden, weight and bias. Peak extra
    memory is a few chunk_size x V float32 buffers (+ one V x H float32 accumulator for bf16/fp16 weights), instead
    of several B*T x V tensors. The default 256 keeps the peak at about a fifth of the naive path's at V = 152k (see
    benchmarks/bench_simko.py); on CPU, 128-512 ran within ~10% of each other. Larger chunks may be faster on a GPU
    (not measured here).
    """
    if hidden.dim() != 3:
        raise ValueError(f"token_stats_from_hidden: hidden must be [B, T, H], got shape {list(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[2]:
        raise ValueError(f"token_stats_from_hidden: weight must be [V, H] with H = {hidden.shape[2]} (hidden's last "
                         f"dim), got shape {list(weight.shape)}")
    if not (hidden.dtype.is_floating_point and weight.dtype == hidden.dtype):
        raise TypeError(f"token_stats_from_hidden: hidden and weight must share one floating dtype, got "
                        f"{hidden.dtype} and {weight.dtype}")
    if bias is not None and (bias.shape != (weight.shape[0],) or bias.dtype != weight.dtype):
        raise ValueError(f"token_stats_from_hidden: bias must be [V] = [{weight.shape[0]}] in {weight.dtype}, got "
                         f"{list(bias.shape)} in {bias.dtype}")
    b, t, _ = hidden.shape
    v = weight.shape[0]
    _check_common(tokens, b, t, v, top_k, chunk_size, temperature, "token_stats_from_hidden", "hidden [B, T, H]")
    return TokenStats(*_TokenStatsFromHidden.apply(hidden, weight, bias,
                                                   tokens.to(device=hidden.device, dtype=torch.long), top_k,
                                                   chunk_size or 256, 1.0 / float(temperature)))


if __name__ == "__main__":
    # A tiny demonstration: one SimKO step on random logits, and what the gate and the top-K spread touch.
    torch.manual_seed(0)
    B, T, V = 4, 12, 50
    logits = (torch.randn(B, T, V) * 3).requires_grad_()
    tokens = torch.distributions.Categorical(logits=logits.detach()).sample()
    stats = token_stats(logits, tokens, top_k=3)
    mask = torch.ones(B, T, dtype=torch.bool)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    old_logp = stats.logp.detach()  # stands in for the rollout's log-probs: the same policy, so gamma = 1
    loss, metrics = policy_loss(stats.logp, old_logp, adv, mask, stats)  # SimKO at the paper's alpha, lambda, tau
    loss.backward()
    print(f"loss {loss.item():.4f}")
    print({k: round(v, 4) for k, v in metrics.items()})
    print("concentration", {k: [round(x, 3) for x in v] for k, v in concentration(stats.topk_logp, mask).items()})
