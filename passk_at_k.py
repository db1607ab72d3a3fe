"""Pass@k as a metric and as a training signal.

Pass@k is the probability that at least one of k sampled answers is correct. Chen et al. (2021) estimate it without
bias from n >= k samples of which c are correct:

    pass@k = 1 - C(n - c, k) / C(n, k)                                   -> pass_at_k, pass_at_k_curve

**Pass@k Training** (Chen, Qin, Wu, Ling, Ye, Zhao, Shi 2025, arXiv 2508.10751) turns that metric into the reward.
GRPO rewards each response by itself (Pass@1) and normalises within the group of N responses to a prompt. Pass@k
Training instead rewards a *group of k responses* by its best member, so a prompt that is solved once in a while
is worth exploring, and a wrong response that sits in a successful group is not punished. The loss (GRPO / DAPO
clipped surrogate) is unchanged: only the advantage changes. Three ways to get one advantage per response:

1. *Full sampling*: cut the N responses into N // k disjoint groups, reward = max, normalise the group rewards
   across groups, every member gets its group's advantage.                  -> passk_advantages_full
2. *Bootstrap sampling*: draw many random k-subsets and average, for each response, the advantages of the subsets
   that contain it.                                                          -> passk_advantages_bootstrap
3. *Analytical*: the limit of (2) where every one of the C(N, k) subsets is a group (paper Section 3.3,
   Eqs. 11-15). With N_neg wrong responses out of N:
       rho   = 1 - C(N_neg, k) / C(N, k)            mean group reward = the pass@k estimate        (Eq. 11)
       sigma = sqrt(rho (1 - rho))                   std of the group rewards                       (Eq. 12)
       A_pos = (1 - rho) / sigma                     a correct response is in successful groups only (Eq. 14)
       A_neg = (1 - rho - q) / sigma,  q = C(N_neg - 1, k - 1) / C(N - 1, k - 1)                     (Eq. 15)
                                                                             -> passk_advantages_analytical
   q is the chance that the other k - 1 members of a group holding a given wrong response are wrong too. Since
   1 - rho = (N_neg / N) q this simplifies to
       A_pos =  (N_neg / N) q / sigma = sqrt((1 - rho) / rho),      A_neg = -(N_pos / N) q / sigma,
   so the advantages of a prompt sum to zero. For k = 1, q = 1 and rho = N_pos / N: exactly GRPO's
   (r - mean) / std.                                                          -> grpo_advantages
   Pass@k Training is thus GRPO with a per-prompt weight that falls with accuracy: hard prompts weigh more, and
   prompts that are solved in nearly every k-subset (N_neg < k) get nothing.

The paper's Section 4 reads the analytical form as *advantage design* and tries variants:
    combination (Eq. 18)     A = (N_pos/N) A_passk + (1 - N_pos/N) A_pass1  -> combination_advantages
    entropy-adaptive         high-entropy prompts use Pass@1, the rest Pass@k -> entropy_adaptive_advantages
    exceeding Pass@k (Eq. 17) A' = f(N_pos) A with f ~ 1/log(N_pos + 0.5)   -> exceeding_passk_advantages
and analyses them through the sum of absolute advantages of a group as a function of N_pos
    eta = N_pos |A_pos| + N_neg |A_neg|                                      -> eta

One registry names them all, with one signature, for trainers to dispatch on (train.py, integrations/):
    ADVANTAGES = {"grpo", "passk", "passk_bootstrap", "passk_full", "combination", "entropy_adaptive",
                  "exceeding"} -> functions;  compute_advantages(name, rewards, k, ...)

Numerics. Binomials overflow float64 near N = 1030, and the official code returns NaN near N = 2048, k = 1024.
Nothing here forms a binomial: the one ratio of binomials needed, C(n - c, k) / C(n, k), is a product of factors
(1 - k/i) in [0, 1], summed as ``log1p`` terms in float64 whatever the input dtype (``_log_binom_ratio``). Every
degenerate group (all wrong, all right, N_neg < k, k == N) gets advantage exactly 0, never NaN.

Rewards are binarised before anything else: a response is correct when ``reward > threshold`` (default 0.5), so
0/1 rewards, booleans and graded rewards in [0, 1] all work; Pass@k of a graded reward is not defined otherwise.

Only torch and the standard library are imported: copy this file into your trainer and it works.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import torch

# ---------------------------------------------------------------------------------------------------------------
# Pass@k as a metric
# ---------------------------------------------------------------------------------------------------------------


def _log_binom_ratio(n, c, k) -> torch.Tensor:
    """log( C(n - c, k) / C(n, k) ), elementwise over broadcast tensors (or ints), float64; -inf where n - c < k.

    The one binomial ratio of this file (pass@k is 1 minus it; the analytical advantage needs two of them). Written
    as a product of factors in [0, 1] so that no binomial is ever formed:
        C(n - c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i),
    summed as ``log1p`` terms: accurate to a few ulps for n = 100,000, where float binomials overflow near n = 1030.
    C(n - c, k) = 0 when n - c < k (also for n - c < 0), hence the -inf there.
    """
    n, c, k = torch.broadcast_tensors(*(torch.as_tensor(x, dtype=torch.float64) for x in (n, c, k)))
    zero = (n - c) < k
    c = torch.where(zero, 0.0, c)                 # no terms where the ratio is 0 anyway (they would divide by i <= 0)
    total = torch.zeros_like(n)
    max_c = int(c.max().item()) if c.numel() else 0
    chunk = max(1, (1 << 22) // max(n.numel(), 1))  # at most ~4M terms (32 MB) in flight
    for start in range(0, max_c, chunk):
        j = torch.arange(start, min(start + chunk, max_c), device=n.device, dtype=torch.float64)
        i = n.unsqueeze(-1) - j                   # i = n, n - 1, ..., n - c + 1
        valid = j < c.unsqueeze(-1)
        term = torch.log1p(-k.unsqueeze(-1) / torch.where(valid, i, 1.0))
        total = total + torch.where(valid, term, 0.0).sum(-1)
    return torch.where(zero, -math.inf, total)


def pass_at_k(n, c, k):
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` are correct (Chen et al. 2021).

    ``1 - C(n - c, k) / C(n, k)``, computed as ``-expm1(log ratio)`` (see :func:`_log_binom_ratio`) so that nothing
    overflows (n = 100,000 is fine) and the result is accurate to ~1e-15. It is exactly 1 when ``n - c < k``
    (every k-subset holds a correct sample) and exactly 0 when ``c == 0``.

    Args:
        n, c, k: Python ints (returns a float) or integer tensors / ints that broadcast (returns a float64
            tensor of the broadcast shape). Requires ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    scalar = all(isinstance(x, int) for x in (n, c, k))
    n_t, c_t, k_t = torch.broadcast_tensors(*(torch.as_tensor(x, dtype=torch.float64) for x in (n, c, k)))
    if bool(((c_t < 0) | (c_t > n_t)).any()):
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if bool(((k_t < 1) | (k_t > n_t)).any()):
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got n={n}, k={k}")
    # pass@k = 1 - C(n - c, k) / C(n, k);  -expm1(x) = 1 - exp(x), accurate near 0;  -expm1(-inf) = 1
    out = -torch.expm1(_log_binom_ratio(n_t, c_t, k_t))
    return float(out) if scalar else out


def pass_at_k_curve(correct: torch.Tensor, ks=None) -> dict[int, float]:
    """Mean unbiased pass@k over problems for several k.

    Args:
        correct: bool (or 0/1) tensor ``[problems, n]``, ``n`` samples per problem.
        ks: the k values; default 1, 2, 4, ... <= n, and n itself.
    Returns:
        ``{k: mean over problems of pass@k}`` (Python floats).
    """
    if correct.dim() != 2 or correct.shape[1] == 0:
        raise ValueError(f"correct must be [problems, n] with n >= 1, got shape {tuple(correct.shape)}")
    n = correct.shape[1]
    if ks is None:
        ks = [2 ** i for i in range(n.bit_length()) if 2 ** i <= n]
        if ks[-1] != n:
            ks.append(n)
    c = (correct > 0).sum(-1).to(torch.float64).cpu()
    return {int(k): float(pass_at_k(n, c, int(k)).mean()) for k in ks}


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers for the advantages
# ---------------------------------------------------------------------------------------------------------------


def _correct(rewards: torch.Tensor, threshold: float) -> torch.Tensor:
    """``[P, N]`` rewards -> bool tensor, correct = ``reward > threshold`` (bool input is used as is)."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [prompts, N], got shape {tuple(rewards.shape)}")
    return rewards if rewards.dtype == torch.bool else rewards > threshold


def _binarise(rewards: torch.Tensor, threshold: float) -> torch.Tensor:
    """``[P, N]`` rewards -> float64 0/1 tensor on the same device (see :func:`_correct`)."""
    return _correct(rewards, threshold).to(torch.float64)


def _check_k(k: int, N: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= N:
        raise ValueError(f"k must be an integer with 1 <= k <= N (the group size); got k={k!r}, N={N}")


def _out_dtype(rewards: torch.Tensor) -> torch.dtype:
    return rewards.dtype if rewards.is_floating_point() else torch.float32


def _normalise_rows(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per row with the population std; rows without spread give exactly 0."""
    flat = x.amax(-1, keepdim=True) == x.amin(-1, keepdim=True)
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, correction=0, keepdim=True)
    return torch.where(flat, torch.zeros_like(x), (x - mean) / torch.where(flat, torch.ones_like(std), std))


# ---------------------------------------------------------------------------------------------------------------
# Pass@1: the GRPO baseline
# ---------------------------------------------------------------------------------------------------------------


def grpo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """GRPO (Pass@1) advantage: ``(r - mean(r)) / std(r)`` within each prompt's group.

    The std is the population std (divide by N), as in the Pass@k paper, so that k = 1 of the analytical
    Pass@k advantage reproduces it exactly. Rewards are used as they are (no binarisation: GRPO is defined for
    any scalar reward). A prompt whose rewards are all equal gets exactly 0.

    Args:
        rewards: ``[prompts, N]``.
    Returns:
        ``[prompts, N]`` advantages, dtype of ``rewards`` (float32 for integer/bool input).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [prompts, N], got shape {tuple(rewards.shape)}")
    return _normalise_rows(rewards.to(torch.float64)).to(_out_dtype(rewards))


# ---------------------------------------------------------------------------------------------------------------
# Pass@k: analytical (Section 3.3, Eqs. 11-15)
# ---------------------------------------------------------------------------------------------------------------


def _analytical(n_pos: torch.Tensor, N: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A_pos and A_neg of a prompt with ``n_pos`` correct responses out of N (any shape; float64 results of the same
    shape), the paper's equations as written. Exactly 0 wherever sigma = 0."""
    # Eq. 11: rho = 1 - C(N_neg, k) / C(N, k), the mean group reward (= the pass@k estimate).
    # 1 - rho is kept as computed: rounding 1 - (1 - x) would lose an x below 1e-16.
    one_minus_rho = torch.exp(_log_binom_ratio(N, n_pos, k))
    rho = 1.0 - one_minus_rho
    # Eq. 12: sigma = sqrt(rho (1 - rho)), the std of the group rewards.
    sigma = torch.sqrt(rho * one_minus_rho)
    # q = C(N_neg - 1, k - 1) / C(N - 1, k - 1): the chance that the k - 1 other members of a group holding a given
    # wrong response are all wrong, i.e. that the group fails.
    q = torch.exp(_log_binom_ratio(N - 1, n_pos, k - 1))
    # sigma = 0: all wrong (rho = 0), or all right / N_neg < k / k = N (rho = 1). No group disagrees: advantage 0.
    flat = sigma == 0
    sigma = torch.where(flat, 1.0, sigma)
    # Eq. 14: A_pos = (1 - rho) / sigma. A correct response is only ever in successful groups.
    a_pos = torch.where(flat, 0.0, one_minus_rho / sigma)
    # Eq. 15: A_neg = (1 - rho - q) / sigma.
    a_neg = torch.where(flat, 0.0, (one_minus_rho - q) / sigma)
    # Simplified, since 1 - rho = (N_neg / N) q:
    #     A_pos = (N_neg / N) q / sigma = sqrt((1 - rho) / rho),    A_neg = -(N_pos / N) q / sigma,
    # so N_pos A_pos + N_neg A_neg = 0, and k = 1 (q = 1, rho = N_pos / N) is GRPO's (r - mean) / std.
    return a_pos, a_neg


def passk_advantages_analytical(rewards: torch.Tensor, k: int, threshold: float = 0.5) -> torch.Tensor:
    """Analytical Pass@k-Training advantage (paper Section 3.3, Eqs. 11-15), vectorised over prompts.

    Every response of a prompt with ``N_pos`` correct out of ``N`` gets ``A_pos`` (if correct) or ``A_neg``:
        rho = 1 - C(N_neg, k) / C(N, k),   sigma = sqrt(rho (1 - rho)),
        A_pos = (1 - rho) / sigma,          A_neg = (1 - rho - C(N_neg - 1, k - 1) / C(N - 1, k - 1)) / sigma.
    Both depend on the prompt only through N_pos; no binomial is formed (see :func:`_log_binom_ratio`), so N = 4096
    with any k is finite and accurate to ~1e-11 relative (tested against exact integers).

    Args:
        rewards: ``[prompts, N]``; correct means ``reward > threshold`` (bool input is used as is).
        k: group size, ``1 <= k <= N``; k = 1 gives exactly :func:`grpo_advantages` of the 0/1 rewards.
        threshold: binarisation threshold.
    Returns:
        ``[prompts, N]`` advantages (dtype of ``rewards``, float32 for bool/int), summing to 0 per prompt; exactly 0
        for prompts that are all wrong, all right, have N_neg < k, or when k == N.
    """
    correct = _correct(rewards, threshold)                               # [P, N] bool
    N = correct.shape[1]
    _check_k(k, N)
    # A_pos and A_neg depend on a prompt only through N_pos: evaluate the equations once per distinct N_pos.
    n_pos, which = torch.unique(correct.sum(-1), return_inverse=True)   # [U] distinct N_pos, [P] index into them
    a_pos, a_neg = _analytical(n_pos, N, k)                             # [U] each
    adv = torch.where(correct, a_pos[which, None], a_neg[which, None])  # [P, N]
    return adv.to(_out_dtype(rewards))


def eta(N: int, k: int) -> torch.Tensor:
    """Sum of absolute advantages of a group, ``N_pos |A_pos| + N_neg |A_neg|``, for N_pos = 0..N.

    The paper's analysis tool: how much total gradient weight a prompt receives as a function of its accuracy.
    For Pass@1 (k = 1) it is ``2 sqrt(N_pos N_neg)``, peaking at 50% accuracy; larger k moves the peak to harder
    prompts (lower N_pos) and cuts off easy ones (N_neg < k gives 0).

    Returns:
        float64 tensor ``[N + 1]``, entry i for N_pos = i.
    """
    _check_k(k, N)
    n_pos = torch.arange(N + 1, dtype=torch.float64)
    a_pos, a_neg = _analytical(n_pos, N, k)
    return n_pos * a_pos.abs() + (N - n_pos) * a_neg.abs()


# ---------------------------------------------------------------------------------------------------------------
# Pass@k: sampling-based estimates (Sections 3.1-3.2)
# ---------------------------------------------------------------------------------------------------------------


def _group_advantages_to_responses(r: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Given 0/1 rewards ``r [P, N]`` and groups ``members [P, G, k]`` (response indices), normalise the group
    rewards (max of members) across the G groups of each prompt and return, per response, the mean advantage of
    the groups that contain it (0 for a response in no group). float64 ``[P, N]``."""
    P, N = r.shape
    group_reward = torch.gather(r, 1, members.flatten(1)).view_as(members).amax(-1)      # [P, G]
    group_adv = _normalise_rows(group_reward)                                            # [P, G]
    total = torch.zeros(P, N, dtype=torch.float64, device=r.device)
    count = torch.zeros(P, N, dtype=torch.float64, device=r.device)
    src = group_adv.unsqueeze(-1).expand_as(members).flatten(1)
    total.scatter_add_(1, members.flatten(1), src)
    count.scatter_add_(1, members.flatten(1), torch.ones_like(src))
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def passk_advantages_full(rewards: torch.Tensor, k: int, threshold: float = 0.5) -> torch.Tensor:
    """Pass@k advantage by *full sampling*: consecutive disjoint groups of k.

    Responses ``[0, k)``, ``[k, 2k)``, ... form ``N // k`` groups (the responses of a prompt are i.i.d. samples,
    so consecutive grouping is a uniformly random partition). Group reward = max of its members' rewards,
    normalised GRPO-style (population std) across the groups of the prompt; each member gets its group's
    advantage, so a wrong response in a successful group is pushed *up*. The ``N % k`` leftover responses get 0,
    and so does every response when the groups do not disagree (e.g. N < 2k: a single group).

    Args / returns: as :func:`passk_advantages_analytical`.
    """
    r = _binarise(rewards, threshold)
    P, N = r.shape
    _check_k(k, N)
    G = N // k
    members = torch.arange(G * k, device=r.device).view(1, G, k).expand(P, G, k)
    return _group_advantages_to_responses(r, members).to(_out_dtype(rewards))


def passk_advantages_bootstrap(rewards: torch.Tensor, k: int, num_groups: int | None = None,
                               generator: torch.Generator | None = None, threshold: float = 0.5) -> torch.Tensor:
    """Pass@k advantage by *bootstrap sampling*: ``num_groups`` random k-subsets per prompt.

    Each group is k *distinct* responses drawn uniformly (independently per group and per prompt). Group
    rewards (max) are normalised across the groups of the prompt, and each response gets the **mean** of the
    advantages of the groups that contain it (0 if none does).

    Why the mean: the paper's text says the advantages of a response's groups are summed, but its normalising
    factor is lost in the text we have. As ``num_groups`` grows, the group statistics tend to R_bar and sigma over
    all C(N, k) subsets, and the mean over the groups holding response i tends to E[(max - R_bar) / sigma | i in
    group], which is exactly the analytical A_pos / A_neg. The plain sum is about ``num_groups * k / N`` times
    larger and grows with the number of groups. (Tested: the mean converges to the analytical advantage.)

    Args:
        rewards: ``[prompts, N]``.
        k: group size, ``1 <= k <= N``.
        num_groups: groups per prompt; default N (the paper's choice).
        generator: optional ``torch.Generator`` for reproducible draws (must live on the rewards' device).
        threshold: binarisation threshold.
    Returns:
        ``[prompts, N]`` advantages (dtype of ``rewards``, float32 for bool/int).
    """
    r = _binarise(rewards, threshold)
    P, N = r.shape
    _check_k(k, N)
    G = N if num_groups is None else int(num_groups)
    if G < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    # k distinct indices per group: the first k of a uniformly random permutation (argsort of uniform noise).
    noise = torch.rand(P, G, N, generator=generator, device=r.device)
    members = noise.argsort(-1)[..., :k]
    return _group_advantages_to_responses(r, members).to(_out_dtype(rewards))


def passk_advantages_exhaustive(rewards: torch.Tensor, k: int, threshold: float = 0.5,
                                max_subsets: int = 1_000_000) -> torch.Tensor:
    """Pass@k advantage over *all* C(N, k) subsets by explicit enumeration (the definition, for small N).

    Slow (C(N, k) groups per prompt) and only for checking and teaching: the analytical formula is its
    closed form. Raises ``ValueError`` if C(N, k) exceeds ``max_subsets``.
    """
    r = _binarise(rewards, threshold)
    P, N = r.shape
    _check_k(k, N)
    if math.comb(N, k) > max_subsets:
        raise ValueError(f"C({N}, {k}) = {math.comb(N, k)} subsets exceeds max_subsets={max_subsets}")
    members = torch.tensor(list(itertools.combinations(range(N), k)), device=r.device)
    return _group_advantages_to_responses(r, members.unsqueeze(0).expand(P, -1, -1)).to(_out_dtype(rewards))


# ---------------------------------------------------------------------------------------------------------------
# Advantage design (Section 4)
# ---------------------------------------------------------------------------------------------------------------


def combination_advantages(rewards: torch.Tensor, k: int, threshold: float = 0.5) -> torch.Tensor:
    """Eq. 18: ``A = (N_pos/N) A_passk + (1 - N_pos/N) A_pass1``, per prompt.

    Mixes the two advantages by the prompt's accuracy: the more often a prompt is solved, the more it is trained
    with Pass@k (which stops pushing solved prompts), the harder it is, the more with Pass@1 (which gives a
    single success a large advantage). Both parts use the binarised rewards.
    """
    r = _binarise(rewards, threshold)
    _check_k(k, r.shape[1])
    acc = r.mean(-1, keepdim=True)
    adv = acc * passk_advantages_analytical(r, k).double() + (1 - acc) * _normalise_rows(r)
    return adv.to(_out_dtype(rewards))


def entropy_adaptive_advantages(rewards: torch.Tensor, k: int, prompt_entropy: torch.Tensor,
                                threshold: float = 0.5) -> torch.Tensor:
    """Entropy-adaptive advantage: the half of the prompts with the highest policy entropy use Pass@1, the other
    half use Pass@k.

    A prompt whose responses already have high entropy is exploring: it gets the exploiting Pass@1 signal; a
    low-entropy (collapsed) prompt gets the exploring Pass@k signal. "Top 50%" is by rank within the batch: the
    ``P // 2`` prompts of highest entropy (ties broken by prompt order), so a batch of one prompt uses Pass@k.

    Args:
        rewards: ``[prompts, N]``.
        k: group size for the Pass@k part.
        prompt_entropy: ``[prompts]``, e.g. the mean token entropy of each prompt's responses.
    """
    r = _binarise(rewards, threshold)
    P, N = r.shape
    _check_k(k, N)
    if prompt_entropy.shape != (P,):
        raise ValueError(f"prompt_entropy must have shape [{P}] (one value per prompt), "
                         f"got {tuple(prompt_entropy.shape)}")
    order = torch.sort(prompt_entropy.to(r.device, torch.float64), descending=True, stable=True).indices
    use_pass1 = torch.zeros(P, dtype=torch.bool, device=r.device)
    use_pass1[order[: P // 2]] = True
    adv = torch.where(use_pass1.unsqueeze(-1), _normalise_rows(r), passk_advantages_analytical(r, k).double())
    return adv.to(_out_dtype(rewards))


def exceeding_passk_advantages(rewards: torch.Tensor, k: int, scale: float = 0.4, threshold: float = 0.5
                               ) -> torch.Tensor:
    """Eq. 17, "exceeding Pass@k": the analytical Pass@k advantage times ``f(N_pos) = scale / ln(N_pos + 0.5)``.

    f falls with the number of correct responses, so prompts solved once or twice are amplified relative to
    prompts that are solved often. The constant is ambiguous in the paper text we have ("4 / 10log(N_pos + 0.5)");
    we read it as ``4 / (10 ln(N_pos + 0.5))``, i.e. ``scale = 0.4`` with the natural log, which makes
    f(1) = 0.99 ~ 1 (a single success keeps its Pass@k advantage) and f(N_pos) < 1 beyond. Pass another
    ``scale`` for another reading (e.g. ``4 ln(10)`` for ``4 / log10(N_pos + 0.5)``). N_pos = 0 has f < 0 but all
    its advantages are 0 anyway.
    """
    r = _binarise(rewards, threshold)
    _check_k(k, r.shape[1])
    n_pos = r.sum(-1, keepdim=True)
    f = torch.where(n_pos > 0, scale / torch.log(n_pos + 0.5), torch.zeros_like(n_pos))
    return (f * passk_advantages_analytical(r, k).double()).to(_out_dtype(rewards))


# ---------------------------------------------------------------------------------------------------------------
# The registry: one name per advantage, one signature (used by train.py and integrations/)
# ---------------------------------------------------------------------------------------------------------------
# Every entry is fn(rewards [P, N], k, *, entropy=None, generator=None, threshold=0.5, num_groups=None, scale=0.4)
# -> [P, N]. Entries ignore the keywords they do not use: entropy ([P], each prompt's mean token entropy) is for
# "entropy_adaptive" only, generator and num_groups for "passk_bootstrap", scale for "exceeding"; threshold (the
# binarisation) for every Pass@k entry ("grpo" uses the rewards as they are).


def _grpo(rewards, k, *, entropy=None, generator=None, threshold=0.5, num_groups=None, scale=0.4):
    return grpo_advantages(rewards)


def _passk(rewards, k, *, entropy=None, generator=None, threshold=0.5, num_groups=None, scale=0.4):
    return passk_advantages_analytical(rewards, k, threshold=threshold)


def _passk_bootstrap(rewards, k, *, entropy=None, generator=None, threshold=0.5, num_groups=None, scale=0.4):
    return passk_advantages_bootstrap(rewards, k, num_groups=num_groups, generator=generator, threshold=threshold)


def _passk_full(rewards, k, *, entropy=None, generator=None, threshold=0.5, num_groups=None, scale=0.4):
    return passk_advantages_full(rewards, k, threshold=threshold)


def _combination(rewards, k, *, entropy=None, generator=None, threshold=0.5, num_groups=None, scale=0.4):
    return combination_advantages(rewards, k, threshold=threshold)


def _entropy_adaptive(rewards, k, *, entropy=None, generator=None, threshold=0.5, num_groups=None, scale=0.4):
    if entropy is None:
        raise ValueError("advantage 'entropy_adaptive' needs entropy= (a [prompts] tensor: the mean token entropy "
                         "of each prompt's responses)")
    return entropy_adaptive_advantages(rewards, k, entropy, threshold=threshold)


def _exceeding(rewards, k, *, entropy=None, generator=None, threshold=0.5, num_groups=None, scale=0.4):
    return exceeding_passk_advantages(rewards, k, scale=scale, threshold=threshold)


ADVANTAGES: dict[str, Callable[..., torch.Tensor]] = {
    "grpo": _grpo,                            # Pass@1                       -> grpo_advantages
    "passk": _passk,                          # analytical, Eqs. 11-15       -> passk_advantages_analytical
    "passk_bootstrap": _passk_bootstrap,      # bootstrap sampling           -> passk_advantages_bootstrap
    "passk_full": _passk_full,                # full sampling                -> passk_advantages_full
    "combination": _combination,              # Eq. 18                       -> combination_advantages
    "entropy_adaptive": _entropy_adaptive,    # Section 4                    -> entropy_adaptive_advantages
    "exceeding": _exceeding,                  # exceeding Pass@k (Eq. 17)    -> exceeding_passk_advantages
}


def compute_advantages(name: str, rewards: torch.Tensor, k: int, *, entropy: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, threshold: float = 0.5,
                       num_groups: int | None = None, scale: float = 0.4) -> torch.Tensor:
    """``ADVANTAGES[name](rewards [P, N], k, ...)`` -> ``[P, N]``; an unknown name raises ValueError listing the
    valid ones. See the registry's comment for which keywords each entry reads."""
    if name not in ADVANTAGES:
        raise ValueError(f"unknown advantage {name!r}; valid names: {', '.join(ADVANTAGES)}")
    return ADVANTAGES[name](rewards, k, entropy=entropy, generator=generator, threshold=threshold,
                            num_groups=num_groups, scale=scale)


# ---------------------------------------------------------------------------------------------------------------
# `python passk_at_k.py`: a teaching table
# ---------------------------------------------------------------------------------------------------------------


def _demo() -> None:
    N = 32
    print(f"Analytical Pass@k advantages for a group of N = {N} responses (A_pos: each correct response, "
          f"A_neg: each wrong one,\neta = N_pos|A_pos| + N_neg|A_neg|: total weight of the prompt). k = 1 is GRPO.\n")
    ks = (1, 4, 8, 16)
    tables = {k: (*_analytical(torch.arange(N + 1), N, k), eta(N, k)) for k in ks}
    print("N_pos | " + " | ".join(f"{'k=' + str(k):^26}" for k in ks))
    print("      | " + " | ".join(f"{'A_pos':>8}{'A_neg':>9}{'eta':>8} " for _ in ks))
    for n_pos in (0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 31, 32):
        cells = [f"{a[n_pos]:8.4f}{b[n_pos]:9.4f}{e[n_pos]:8.3f} " for a, b, e in (tables[k] for k in ks)]
        print(f"{n_pos:5d} | " + " | ".join(cells))

    n, k = 8, 3
    print(f"\nThe same from the definition: every one of the C({n}, {k}) = {math.comb(n, k)} subsets is a group "
          f"(reward = max), group\nrewards normalised, each response averages the advantages of the groups that "
          f"hold it.\n")
    print(f"N_pos | {'A_pos analytical':>17} {'enumerated':>11} | {'A_neg analytical':>17} {'enumerated':>11}")
    for n_pos in range(n + 1):
        r = torch.tensor([[1.0] * n_pos + [0.0] * (n - n_pos)], dtype=torch.float64)
        ana = passk_advantages_analytical(r, k)[0]
        enu = passk_advantages_exhaustive(r, k)[0]
        pos = f"{ana[0]:17.6f} {enu[0]:11.6f}" if n_pos > 0 else f"{'-':>17} {'-':>11}"
        neg = f"{ana[-1]:17.6f} {enu[-1]:11.6f}" if n_pos < n else f"{'-':>17} {'-':>11}"
        print(f"{n_pos:5d} | {pos} | {neg}")


if __name__ == "__main__":
    _demo()
