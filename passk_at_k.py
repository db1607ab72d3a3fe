"""Pass@k as a metric and as a training signal.

Pass@k is the probability that at least one of k sampled answers is correct. Chen et al. (2021) estimate it without
bias from n >= k samples of which c are correct:

    pass@k = 1 - C(n - c, k) / C(n, k)                                   -> pass_at_k, pass_at_k_curve

**Pass@k Training** (Chen, Qin, Wu, Ling, Ye, Zhao, Shi 2025, arXiv 2508.10751; section and equation numbers below
are those of its v1) turns that metric into the reward. GRPO rewards each response by itself (Pass@1) and normalises
within the group of N responses to a prompt. Pass@k Training instead rewards a *group of k responses* by its best
member, so a prompt that is solved once in a while is worth exploring, and a wrong response that sits in a
successful group is not punished. The loss (GRPO / DAPO clipped surrogate) is unchanged: only the advantage
changes. Three ways to get one advantage per response:

1. *Full sampling* (§2.2): cut the N responses into N // k disjoint groups, reward = max, normalise the group
   rewards across groups, every member gets its group's advantage.         -> passk_advantages_full
2. *Bootstrap sampling* (§2.3): draw many random k-subsets and average, for each response, the advantages of the
   subsets that contain it.                                                  -> passk_advantages_bootstrap
3. *Analytical* (§2.4, derivation in App. B): the limit of (2) where every one of the C(N, k) subsets is a group.
   With N_neg wrong responses out of N:
       rho   = 1 - C(N_neg, k) / C(N, k)            mean group reward = the pass@k estimate        (Eq. 11)
       sigma = sqrt(rho (1 - rho))                   std of the group rewards                       (Eq. 12)
       A_pos = (1 - rho) / sigma                     a correct response is in successful groups only (Eq. 14)
       A_neg = (1 - rho - q) / sigma,  q = C(N_neg - 1, k - 1) / C(N - 1, k - 1)                     (Eq. 15)
                                                                             -> passk_advantages_analytical
   q is the chance that the other k - 1 members of a group holding a given wrong response are wrong too. Since
   1 - rho = (N_neg / N) q this simplifies to
       A_pos =  (N_neg / N) q / sigma = sqrt((1 - rho) / rho),      A_neg = -(N_pos / N) q / sigma,
   so the advantages of a prompt sum to zero. For k = 1, q = 1 and rho = N_pos / N: exactly GRPO's
   (r - mean) / std with the population std, as the paper's Eqs. 1-3 write it. -> grpo_advantages
   Pass@k Training is thus GRPO with a per-prompt weight that falls with accuracy: hard prompts weigh more, and
   prompts that are solved in nearly every k-subset (N_neg < k) get nothing.

The paper's §4 reads the analytical form as *implicit reward design*. It analyses advantages through the sum of
absolute advantages of a group as a function of N_pos (§4.1.1)
    eta = N_pos |A_pos| + N_neg |A_neg|                             (Eq. 16)  -> eta
and tries variants (§4.2):
    exceeding Pass@k (§4.2.1, Eq. 17)  A' = f(N_pos) A, f ~ 1/log(N_pos + 0.5) -> exceeding_passk_advantages
    combination (§4.2.2, Eq. 18)       A = (N_pos/N) A_passk + (1 - N_pos/N) A_pass1 -> combination_advantages
    adaptive training (§4.2.3)         the half of the prompts with the highest mean entropy use Pass@1, the rest
                                       Pass@k                               -> entropy_adaptive_advantages

k = N is refused by every Pass@k-Training advantage: the only k-subset is the whole set, every group has the same
reward, every advantage is 0 and nothing trains.

**PKPO** (Walder & Karkhanis 2025, arXiv 2505.15201) optimises pass@k (binary rewards) or max@k (E[max of k
rewards], continuous rewards) with an unbiased policy gradient for any k <= n. Averaging the score-function
gradient of max over all k-subsets I of the n samples gives per-sample *effective rewards*; PKPO's estimator
s^(loo-1) subtracts, inside each subset, the max of the other k - 1 members, a baseline that does
not depend on sample i. Scaled by n, so that the usual mean over responses of A_i grad log pi(y_i) is the gradient,
with J a uniformly random (k-1)-subset of the *other* n - 1 responses:
    A_i^s        = k E_J[max(g_i, max g_J)]                                  (no baseline)
    A_i^(loo-1)  = k E_J[max(g_i, max g_J) - max g_J]                         (PKPO's s^(loo-1), the default)
For binary rewards with c correct:
    A^(loo-1) = k C(n - c, k - 1) / C(n - 1, k - 1) for a correct response (k times the chance that it is the only
    success of its group), 0 for a wrong one;   A^s = k (correct),  k (1 - q) (wrong, q as in Eq. 15).
For continuous rewards, sort g ascending: A^(loo-1) at sorted position p is k sum_{j < p} (g_(j+1) - g_(j)) W_(j+1),
with W_m = C(m, k - 1) / C(n - 1, k - 1) the chance that a (k-1)-subset of the others lies in their m smallest; a
sum of non-negative terms. k = 1 leaves J empty: there the baseline is the mean of the other rewards (RLOO).
k = n is allowed (J is then all the others: only a response that beats every other one is rewarded).
                                                                             -> pkpo_advantages
*PKPO and Pass@k Training.* With binary rewards the analytical Pass@k advantage is PKPO's unbaselined effective
reward, divided by k, centred by the pass@k estimate rho of the *whole* group and divided by sigma:
    k sigma A^passk = A^s - k rho                                            (exact; tested)
rho depends on response i through the share k / N of the subsets that hold it, so the centring is not a baseline
in the strict sense: E[mean_i (A^s_i - k rho) grad log pi(y_i)] = (1 - k/N) grad pass@k, exactly (tested on a
Bernoulli bandit). Where they coincide: the direction of each prompt's expected gradient, and the order of the
advantages (every correct response above every wrong one). Where they differ: Pass@k Training shrinks the gradient
by 1 - k/N (to nothing at k = N) and weights each prompt by 1 / (k sigma), a data-dependent normalisation like
GRPO's std; its advantages sum to 0 per prompt. PKPO's loo-1 is unbiased for grad pass@k, gives wrong responses
exactly 0, and has no per-prompt normalisation. Thrampoulidis, Mahdavi & Deng (2025, arXiv 2510.23049) read both
families as advantage shaping, i.e. REINFORCE on a surrogate of pass@k; the identity above is that reading made
exact for these two.

**Schedules.** The paper's best Pass@1 numbers come from changing the advantage during training: Pass@k, then
Pass@1, "P@k T. + P@1 T." (§3.5; Tables 2, 3); that pair twice, "(P@k T. + P@1 T.) x 2" (App. E.1, Table 5); and
Pass@1 -> Pass@k -> Pass@1 (Fig. 1's curve). PKPO anneals k during training. A schedule
string "NAME[@K]:STEPS,..." names the phases, e.g. "pkpo@8:100,pkpo@1:100"  -> Phase, parse_schedule, phase_at

One registry names every advantage, with one signature, for trainers to dispatch on:
    ADVANTAGES = {"grpo", "passk", "passk_bootstrap", "passk_full", "combination", "entropy_adaptive",
                  "exceeding", "pkpo", "pkpo_maxk"} -> functions;  compute_advantages(name, rewards, k, ...)

The Pass@k paper's training and evaluation settings (App. A.2) are named constants: PAPER_CLIP, PAPER_LR, ...

Numerics. Binomials overflow float64 near N = 1030, and the official code returns NaN near N = 2048, k = 1024.
Nothing here forms a binomial: every ratio of binomials needed is C(n - c, k) / C(n, k), a product of factors
(1 - k/i) in [0, 1], summed as ``log1p`` terms in float64 whatever the input dtype (``_log_binom_ratio``). Every
degenerate group (all wrong, all right, N_neg < k) gets advantage exactly 0, never NaN.

Rewards are binarised before anything else in every Pass@k entry: a response is correct when ``reward > threshold``
(default 0.5), so 0/1 rewards, booleans and graded rewards in [0, 1] all work; Pass@k of a graded reward is not
defined otherwise. "grpo" and "pkpo_maxk" use the rewards as they are.

Only torch and the standard library are imported: copy this file into your trainer and it works.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, NamedTuple

import torch

# The Pass@k paper's settings (arXiv 2508.10751 v1, App. A.2 unless noted). It trains with DAPO, keeping only the
# decoupled clip ("clip-higher") and the token-level loss (also §2.1); no KL, no entropy regularisation.
# SimKO's official code clips symmetrically: see simko.PAPER_CLIP.
PAPER_CLIP = (0.2, 0.28)            # (eps_low, eps_high)
PAPER_LR, PAPER_WARMUP_STEPS = 1e-6, 10
PAPER_PROMPT_BATCH, PAPER_MINI_BATCH, PAPER_N = 128, 32, 32      # prompts per step, per optimiser step; rollouts
PAPER_KS = (4, 8, 16)               # the k values of §3.4
PAPER_EVAL_TEMPERATURE, PAPER_EVAL_TOP_P = 1.0, 0.95

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


def check_k(k: int, N: int, advantage: str = "passk") -> None:
    """Raise a ValueError unless group size k suits ``advantage`` (a name of ``ADVANTAGES``) at N responses a prompt.

    1 <= k < N for the Pass@k-Training advantages: at k = N the only group of k responses is the whole set, so every
    advantage is exactly 0. PKPO is defined up to k = N; GRPO ignores k. The one k rule: trainers call this.
    """
    if advantage == "grpo":
        return
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= N:
        raise ValueError(f"k must be an integer with 1 <= k <= N (the group size); got k={k!r}, N={N}")
    if k == N and not advantage.startswith("pkpo"):
        raise ValueError(f"k = N = {N} is refused: the only group of k responses is the whole set of N, so every "
                         f"group has the same reward, every advantage is 0 and nothing trains; use k < N "
                         f"(or 'pkpo', which is defined at k = N)")


def _out_dtype(rewards: torch.Tensor) -> torch.dtype:
    return rewards.dtype if rewards.is_floating_point() else torch.float32


def _normalise_rows(x: torch.Tensor, unbiased_std: bool = False, eps: float = 0.0) -> torch.Tensor:
    """(x - mean) / (std + eps) per row, population std unless ``unbiased_std``; rows without spread give exactly 0."""
    flat = x.amax(-1, keepdim=True) == x.amin(-1, keepdim=True)
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, correction=1 if unbiased_std else 0, keepdim=True) + eps
    return torch.where(flat, torch.zeros_like(x), (x - mean) / torch.where(flat, torch.ones_like(std), std))


# ---------------------------------------------------------------------------------------------------------------
# Pass@1: the GRPO baseline
# ---------------------------------------------------------------------------------------------------------------


def grpo_advantages(rewards: torch.Tensor, unbiased_std: bool = False, eps: float = 0.0) -> torch.Tensor:
    """GRPO (Pass@1) advantage: ``(r - mean(r)) / (std(r) + eps)`` within each prompt's group.

    The default std is the population std (divide by N), as the Pass@k paper writes it, so that k = 1 of the
    analytical Pass@k advantage reproduces it exactly. ``unbiased_std=True, eps=1e-6`` is what verl's GRPO (and
    so SimKO's official code) computes: ``torch.std`` divides by N - 1, a factor sqrt(N / (N - 1)) smaller
    advantage (1.069x at N = 8). Rewards are used as they are (no binarisation: GRPO is defined for any scalar
    reward). A prompt whose rewards are all equal gets exactly 0.

    Args:
        rewards: ``[prompts, N]``.
        unbiased_std: divide the squared deviations by N - 1 instead of N.
        eps: added to the std.
    Returns:
        ``[prompts, N]`` advantages, dtype of ``rewards`` (float32 for integer/bool input).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [prompts, N], got shape {tuple(rewards.shape)}")
    if unbiased_std and rewards.shape[1] < 2:
        raise ValueError(f"unbiased_std needs N >= 2 responses per prompt, got N={rewards.shape[1]}")
    return _normalise_rows(rewards.to(torch.float64), unbiased_std, eps).to(_out_dtype(rewards))


# ---------------------------------------------------------------------------------------------------------------
# Pass@k: analytical (§2.4 and App. B, Eqs. 11-15)
# ---------------------------------------------------------------------------------------------------------------


def _analytical(n_pos: torch.Tensor, N: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A_pos and A_neg of a prompt with ``n_pos`` correct responses out of N (any shape; float64 results of the same
    shape): Eqs. 11-15 as the module docstring writes them. Exactly 0 wherever sigma = 0."""
    # Eq. 11: rho, the mean group reward (= the pass@k estimate).
    # 1 - rho is kept as computed: rounding 1 - (1 - x) would lose an x below 1e-16.
    one_minus_rho = torch.exp(_log_binom_ratio(N, n_pos, k))
    rho = 1.0 - one_minus_rho
    # Eq. 12: sigma, the std of the group rewards.
    sigma = torch.sqrt(rho * one_minus_rho)
    # q of Eq. 15: the chance that the k - 1 other members of a group holding a given wrong response are all wrong.
    q = torch.exp(_log_binom_ratio(N - 1, n_pos, k - 1))
    # sigma = 0: all wrong (rho = 0), or all right / N_neg < k (rho = 1). No group disagrees: advantage 0.
    flat = sigma == 0
    sigma = torch.where(flat, 1.0, sigma)
    # Eq. 14: A_pos. A correct response is only ever in successful groups.
    a_pos = torch.where(flat, 0.0, one_minus_rho / sigma)
    # Eq. 15: A_neg.
    a_neg = torch.where(flat, 0.0, (one_minus_rho - q) / sigma)
    return a_pos, a_neg


def passk_advantages_analytical(rewards: torch.Tensor, k: int, threshold: float = 0.5) -> torch.Tensor:
    """Analytical Pass@k-Training advantage (§2.4 and App. B; Eqs. 11-15 in the module docstring), vectorised over
    prompts.

    Every response of a prompt with ``N_pos`` correct out of ``N`` gets ``A_pos`` (if correct) or ``A_neg``; both
    depend on the prompt only through N_pos. No binomial is formed (see :func:`_log_binom_ratio`), so N = 4096 with
    any k < N is finite and accurate to ~1e-11 relative (tested against exact integers).

    Args:
        rewards: ``[prompts, N]``; correct means ``reward > threshold`` (bool input is used as is).
        k: group size, ``1 <= k < N`` (k = N raises: every advantage would be 0); k = 1 gives exactly
            :func:`grpo_advantages` of the 0/1 rewards.
        threshold: binarisation threshold.
    Returns:
        ``[prompts, N]`` advantages (dtype of ``rewards``, float32 for bool/int), summing to 0 per prompt; exactly 0
        for prompts that are all wrong, all right, or have N_neg < k.
    """
    correct = _correct(rewards, threshold)                               # [P, N] bool
    N = correct.shape[1]
    check_k(k, N)
    # A_pos and A_neg depend on a prompt only through N_pos: evaluate the equations once per distinct N_pos.
    n_pos, which = torch.unique(correct.sum(-1), return_inverse=True)   # [U] distinct N_pos, [P] index into them
    a_pos, a_neg = _analytical(n_pos, N, k)                             # [U] each
    adv = torch.where(correct, a_pos[which, None], a_neg[which, None])  # [P, N]
    return adv.to(_out_dtype(rewards))


def eta(N: int, k: int) -> torch.Tensor:
    """Sum of absolute advantages of a group (Eq. 16, §4.1.1), for N_pos = 0..N.

    The paper's analysis tool: how much total gradient weight a prompt receives as a function of its accuracy.
    For Pass@1 (k = 1) it is ``2 sqrt(N_pos N_neg)``, peaking at 50% accuracy; larger k moves the peak to harder
    prompts (lower N_pos) and cuts off easy ones (N_neg < k gives 0).

    Returns:
        float64 tensor ``[N + 1]``, entry i for N_pos = i.
    """
    check_k(k, N)
    n_pos = torch.arange(N + 1, dtype=torch.float64)
    a_pos, a_neg = _analytical(n_pos, N, k)
    return n_pos * a_pos.abs() + (N - n_pos) * a_neg.abs()


# ---------------------------------------------------------------------------------------------------------------
# Pass@k: sampling-based estimates (§2.2 full sampling, §2.3 bootstrap sampling)
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
    check_k(k, N)
    G = N // k
    members = torch.arange(G * k, device=r.device).view(1, G, k).expand(P, G, k)
    return _group_advantages_to_responses(r, members).to(_out_dtype(rewards))


def passk_advantages_bootstrap(rewards: torch.Tensor, k: int, num_groups: int | None = None,
                               generator: torch.Generator | None = None, threshold: float = 0.5) -> torch.Tensor:
    """Pass@k advantage by *bootstrap sampling*: ``num_groups`` random k-subsets per prompt.

    Each group is k *distinct* responses drawn uniformly (independently per group and per prompt). Group
    rewards (max) are normalised across the groups of the prompt, and each response gets the **mean** of the
    advantages of the groups that contain it (0 if none does).

    Why the mean: §2.3's text says the advantages of a response's groups are summed; its Eq. 6 carries a
    normalising factor whose denominator does not survive in the available text, and App. B.3 derives the analytical
    advantage as the average over the C(N - 1, k - 1) groups that hold the response. As ``num_groups`` grows, the
    group statistics tend to R_bar and sigma over all C(N, k) subsets, and the mean over the groups holding
    response i tends to E[(max - R_bar) / sigma | i in group], which is exactly the analytical A_pos / A_neg. The
    plain sum is about ``num_groups * k / N`` times larger and grows with the number of groups. (Tested: the mean
    converges to the analytical advantage.)

    Args:
        rewards: ``[prompts, N]``.
        k: group size, ``1 <= k < N``.
        num_groups: groups per prompt; default N (the paper's choice).
        generator: optional ``torch.Generator`` for reproducible draws (must live on the rewards' device).
        threshold: binarisation threshold.
    Returns:
        ``[prompts, N]`` advantages (dtype of ``rewards``, float32 for bool/int).
    """
    r = _binarise(rewards, threshold)
    P, N = r.shape
    check_k(k, N)
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
    check_k(k, N)
    if math.comb(N, k) > max_subsets:
        raise ValueError(f"C({N}, {k}) = {math.comb(N, k)} subsets exceeds max_subsets={max_subsets}")
    members = torch.tensor(list(itertools.combinations(range(N), k)), device=r.device)
    return _group_advantages_to_responses(r, members.unsqueeze(0).expand(P, -1, -1)).to(_out_dtype(rewards))


# ---------------------------------------------------------------------------------------------------------------
# Advantage design (§4)
# ---------------------------------------------------------------------------------------------------------------


def combination_advantages(rewards: torch.Tensor, k: int, threshold: float = 0.5) -> torch.Tensor:
    """Combination, Eq. 18 (module docstring), per prompt.

    Mixes the two advantages by the prompt's accuracy: the more often a prompt is solved, the more it is trained
    with Pass@k (which stops pushing solved prompts), the harder it is, the more with Pass@1 (which gives a
    single success a large advantage). Both parts use the binarised rewards.
    """
    r = _binarise(rewards, threshold)
    check_k(k, r.shape[1])
    acc = r.mean(-1, keepdim=True)
    adv = acc * passk_advantages_analytical(r, k).double() + (1 - acc) * _normalise_rows(r)
    return adv.to(_out_dtype(rewards))


def entropy_adaptive_advantages(rewards: torch.Tensor, k: int, prompt_entropy: torch.Tensor,
                                threshold: float = 0.5) -> torch.Tensor:
    """Adaptive training (§4.2.3): the half of the prompts with the highest policy entropy use Pass@1, the other
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
    check_k(k, N)
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
    """Exceeding Pass@k (§4.2.1, Eq. 17): the analytical Pass@k advantage times ``f(N_pos) = scale / ln(N_pos + 0.5)``.

    f falls with the number of correct responses, so prompts solved once or twice are amplified relative to
    prompts that are solved often. The constant is ambiguous in the available paper text ("4 / 10log(N_pos + 0.5)");
    we read it as ``4 / (10 ln(N_pos + 0.5))``, i.e. ``scale = 0.4`` with the natural log, which makes
    f(1) = 0.99 ~ 1 (a single success keeps its Pass@k advantage) and f(N_pos) < 1 beyond. Pass another
    ``scale`` for another reading (e.g. ``4 ln(10)`` for ``4 / log10(N_pos + 0.5)``). N_pos = 0 has f < 0 but all
    its advantages are 0 anyway.
    """
    r = _binarise(rewards, threshold)
    check_k(k, r.shape[1])
    n_pos = r.sum(-1, keepdim=True)
    f = torch.where(n_pos > 0, scale / torch.log(n_pos + 0.5), torch.zeros_like(n_pos))
    return (f * passk_advantages_analytical(r, k).double()).to(_out_dtype(rewards))


# ---------------------------------------------------------------------------------------------------------------
# PKPO: unbiased pass@k / max@k policy-gradient rewards (Walder & Karkhanis 2025)
# ---------------------------------------------------------------------------------------------------------------

# The allowed values of pkpo_advantages's baseline= (the first is the default).
PKPO_BASELINES = ("loo-1", "none")


def _pkpo_binary(correct: torch.Tensor, k: int, baseline: str) -> torch.Tensor:
    """PKPO effective rewards for 0/1 rewards in closed form (module docstring), float64 ``[P, N]``."""
    P, N = correct.shape
    c = correct.sum(-1, keepdim=True).to(torch.float64)                  # [P, 1] correct responses per prompt
    if k == 1 and baseline == "loo-1":
        # The leave-one-out mean of the other rewards as baseline (RLOO): f_i - (c - f_i) / (N - 1).
        f = correct.to(torch.float64)
        return f - (c - f) / (N - 1)
    if baseline == "loo-1":
        # A^(loo-1), binary form (module docstring): k P(the k - 1 others are all wrong) if correct, else 0.
        alone = torch.exp(_log_binom_ratio(N - 1, (c - 1).clamp_min(0), k - 1))
        return torch.where(correct, k * alone, torch.zeros_like(alone))
    # A^s, binary form (module docstring); q of Eq. 15.
    q = torch.exp(_log_binom_ratio(N - 1, c, k - 1))
    return torch.where(correct, torch.full_like(q, float(k)), k * (1.0 - q))


def _pkpo_continuous(g: torch.Tensor, k: int, baseline: str) -> torch.Tensor:
    """PKPO effective rewards for real rewards ``g [P, N]`` (float64), sorted-order closed form (module docstring)."""
    P, N = g.shape
    if k == 1:
        # k = 1: A^s = g_i; loo-1 has an empty J, so the baseline is the mean of the others (RLOO).
        return g if baseline == "none" else g - (g.sum(-1, keepdim=True) - g) / (N - 1)
    gs, order = g.sort(-1)                                               # ascending, [P, N]
    # W_m (module docstring), m = 0..N-1, as a product without binomials: W_m = prod_{j = m+1}^{N-1} (1 - (k-1)/j),
    # 0 for m < k - 1; summed as log1p terms from the top, so W_(N-1) = 1 exactly.
    j = torch.arange(1, N, dtype=torch.float64, device=g.device)       # [N-1]
    term = torch.where(j >= k - 1, torch.log1p(-(k - 1) / j), -math.inf)
    tail = torch.flip(torch.cumsum(torch.flip(term, [0]), 0), [0])       # tail[m] = sum_{j = m+1}^{N-1}, m = 0..N-2
    W = torch.exp(torch.cat([tail, tail.new_zeros(1)]))                  # [N]
    # A^(loo-1), continuous form (module docstring): a cumulative sum of non-negative terms.
    d = gs[:, 1:] - gs[:, :-1]                                           # [P, N-1]
    loo1 = torch.zeros_like(gs)
    loo1[:, 1:] = k * torch.cumsum(d * W[1:], -1)
    out = loo1
    if baseline == "none":
        # + k E_J[max g_J]: the others of position p are gs without p; with w_r = W_r - W_(r-1) the chance that
        # the max of J is the r-th smallest other (r = 1..N-1), E = sum_{r <= p} w_r gs[r-1] + sum_{r > p} w_r gs[r].
        w = W[1:] - W[:-1]                                               # [N-1], w[r-1] = w_r
        below = torch.cumsum(w * gs[:, :-1], -1)                         # [P, N-1], entry p-1: sum_{r <= p}
        above = torch.flip(torch.cumsum(torch.flip(w * gs[:, 1:], [-1]), -1), [-1])  # entry r-1: sum_{r' >= r}
        e_max = torch.zeros_like(gs)
        e_max[:, 1:] += below
        e_max[:, :-1] += above
        out = loo1 + k * e_max
    return torch.empty_like(out).scatter_(-1, order, out)


def pkpo_advantages(rewards: torch.Tensor, k: int, baseline: str = "loo-1", continuous: bool = False,
                    threshold: float = 0.5) -> torch.Tensor:
    """PKPO's pass@k (binary) or max@k (``continuous=True``) effective rewards, scaled by N (module docstring).

    ``mean_i A_i grad log pi(y_i)`` is an unbiased estimate of grad pass@k (or grad max@k) for every ``1 <= k <= N``,
    k = N included. The formulas have no binomial and no N x N tensor beyond one ``[N]`` weight vector: N = 4096 is
    finite and exact to ~1e-12 (tested against enumeration of subsets for small N).

    Args:
        rewards: ``[prompts, N]``; binarised at ``threshold`` unless ``continuous`` (bool input is used as is).
        k: 1 <= k <= N.
        baseline: "loo-1" (PKPO's s^(loo-1): the max of the other k - 1 members of each subset; at k = 1 the mean
            of the other rewards) or "none" (the plain effective reward s, scaled by N).
        continuous: use the rewards as real numbers (max@k) instead of binarising them (pass@k). On 0/1 rewards
            both give the same values.
    Returns:
        ``[prompts, N]`` (dtype of ``rewards``, float32 for bool/int).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [prompts, N], got shape {tuple(rewards.shape)}")
    N = rewards.shape[1]
    check_k(k, N, "pkpo")
    if baseline not in PKPO_BASELINES:
        raise ValueError(f"baseline must be one of {PKPO_BASELINES}, got {baseline!r}")
    if k == 1 and baseline == "loo-1" and N < 2:
        raise ValueError("pkpo with k = 1 uses the leave-one-out mean as baseline and needs N >= 2 responses")
    if continuous:
        rewards_f = rewards.to(torch.float64)
        if not bool(torch.isfinite(rewards_f).all()):
            raise ValueError("pkpo_advantages(continuous=True) needs finite rewards")
        adv = _pkpo_continuous(rewards_f, k, baseline)
    else:
        adv = _pkpo_binary(_correct(rewards, threshold), k, baseline)
    return adv.to(_out_dtype(rewards))


# ---------------------------------------------------------------------------------------------------------------
# Schedules: the advantage (and k) by training step
# ---------------------------------------------------------------------------------------------------------------


class Phase(NamedTuple):
    """One phase of a schedule: train with advantage ``advantage`` (a name of ADVANTAGES) and group size ``k`` for
    ``steps`` RL steps (the last phase of a schedule continues until training ends)."""

    advantage: str
    k: int
    steps: int


def parse_schedule(spec: str, default_k: int) -> list[Phase]:
    """``"NAME[@K]:STEPS,NAME[@K]:STEPS,..."`` -> phases, in order.

    NAME is a key of ADVANTAGES, K >= 1 the group size (default ``default_k``), STEPS >= 1 the phase's number of RL
    steps; the last phase continues past its count until training ends. Examples: the paper's "P@k T. + P@1 T."
    (§3.5, Tables 2, 3) is ``"passk:100,grpo:100"``; its Pass@1 -> Pass@k -> Pass@1 (Fig. 1) is
    ``"grpo:50,passk:100,grpo:50"``; its "(P@k + P@1) x 2" (Table 5) is
    ``"passk:50,grpo:50,passk:50,grpo:50"``; PKPO's k annealing is ``"pkpo@8:100,pkpo@1:100"``. Whether K fits the
    group size N is `check_k`'s rule, which the trainer applies to each phase (the names' functions call it too).

    Raises ValueError naming the bad part and the allowed values.
    """
    if isinstance(default_k, bool) or not isinstance(default_k, int) or default_k < 1:
        raise ValueError(f"default_k must be an integer >= 1, got {default_k!r}")
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"schedule must be 'NAME[@K]:STEPS' joined by commas, e.g. 'grpo:50,passk:100', got {spec!r}")
    phases = []
    for i, part in enumerate(spec.split(",")):
        where = f"schedule {spec!r}, part {i + 1} {part.strip()!r}"
        head, colon, steps_s = part.strip().partition(":")
        if not colon:
            raise ValueError(f"{where}: expected NAME[@K]:STEPS (e.g. 'passk@8:100')")
        name, at, k_s = head.strip().partition("@")
        name = name.strip()
        if name not in ADVANTAGES:
            raise ValueError(f"{where}: unknown advantage {name!r}; allowed: {', '.join(ADVANTAGES)}")
        k = default_k
        if at:
            if not k_s.strip().isdigit() or int(k_s) < 1:
                raise ValueError(f"{where}: K must be an integer >= 1, got {k_s.strip()!r}")
            k = int(k_s)
        if not steps_s.strip().isdigit() or int(steps_s) < 1:
            raise ValueError(f"{where}: STEPS must be an integer >= 1, got {steps_s.strip()!r}")
        phases.append(Phase(name, k, int(steps_s)))
    return phases


def phase_at(phases: list[Phase], step: int) -> Phase:
    """The phase that RL step ``step`` (the number of steps already done, 0-based) trains in.

    Phase i covers steps [sum of the steps of the phases before it, that + its own steps); past the total, the last phase.
    """
    if not phases:
        raise ValueError("phase_at needs at least one phase")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0 (RL steps done), got {step!r}")
    end = 0
    for phase in phases:
        end += phase.steps
        if step < end:
            return phase
    return phases[-1]


# ---------------------------------------------------------------------------------------------------------------
# The registry: one name per advantage, one signature (used by train.py and integrations/)
# ---------------------------------------------------------------------------------------------------------------
# Every entry is fn(rewards [P, N], k, *, entropy=None, generator=None, threshold=0.5, num_groups=None, scale=0.4,
# unbiased_std=False) -> [P, N]. Entries ignore the keywords they do not use: entropy ([P], each prompt's mean token
# entropy) is for "entropy_adaptive" only, generator and num_groups for "passk_bootstrap", scale for "exceeding",
# unbiased_std for "grpo"; threshold (the binarisation) for every entry but "grpo" and "pkpo_maxk", which use the
# rewards as they are. Every Pass@k-Training entry refuses k = N; "pkpo" and "pkpo_maxk" accept it.


def _grpo(rewards, k, *, unbiased_std=False, **_):
    return grpo_advantages(rewards, unbiased_std=unbiased_std)


def _passk(rewards, k, *, threshold=0.5, **_):
    return passk_advantages_analytical(rewards, k, threshold=threshold)


def _passk_bootstrap(rewards, k, *, generator=None, threshold=0.5, num_groups=None, **_):
    return passk_advantages_bootstrap(rewards, k, num_groups=num_groups, generator=generator, threshold=threshold)


def _passk_full(rewards, k, *, threshold=0.5, **_):
    return passk_advantages_full(rewards, k, threshold=threshold)


def _combination(rewards, k, *, threshold=0.5, **_):
    return combination_advantages(rewards, k, threshold=threshold)


def _entropy_adaptive(rewards, k, *, entropy=None, threshold=0.5, **_):
    if entropy is None:
        raise ValueError("advantage 'entropy_adaptive' needs entropy= (a [prompts] tensor: the mean token entropy "
                         "of each prompt's responses)")
    return entropy_adaptive_advantages(rewards, k, entropy, threshold=threshold)


def _exceeding(rewards, k, *, threshold=0.5, scale=0.4, **_):
    return exceeding_passk_advantages(rewards, k, scale=scale, threshold=threshold)


def _pkpo(rewards, k, *, threshold=0.5, **_):
    return pkpo_advantages(rewards, k, threshold=threshold)


def _pkpo_maxk(rewards, k, **_):
    return pkpo_advantages(rewards, k, continuous=True)


ADVANTAGES: dict[str, Callable[..., torch.Tensor]] = {
    "grpo": _grpo,                            # Pass@1                       -> grpo_advantages
    "passk": _passk,                          # analytical, Eqs. 11-15       -> passk_advantages_analytical
    "passk_bootstrap": _passk_bootstrap,      # bootstrap sampling, §2.3     -> passk_advantages_bootstrap
    "passk_full": _passk_full,                # full sampling, §2.2          -> passk_advantages_full
    "combination": _combination,              # §4.2.2, Eq. 18               -> combination_advantages
    "entropy_adaptive": _entropy_adaptive,    # §4.2.3                       -> entropy_adaptive_advantages
    "exceeding": _exceeding,                  # §4.2.1, Eq. 17               -> exceeding_passk_advantages
    "pkpo": _pkpo,                            # PKPO pass@k, s^(loo-1)       -> pkpo_advantages
    "pkpo_maxk": _pkpo_maxk,                  # PKPO max@k (real rewards)    -> pkpo_advantages(continuous=True)
}


def compute_advantages(name: str, rewards: torch.Tensor, k: int, *, entropy: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, threshold: float = 0.5,
                       num_groups: int | None = None, scale: float = 0.4, unbiased_std: bool = False
                       ) -> torch.Tensor:
    """``ADVANTAGES[name](rewards [P, N], k, ...)`` -> ``[P, N]``; an unknown name raises ValueError listing the
    valid ones. See the registry's comment for which keywords each entry reads."""
    if name not in ADVANTAGES:
        raise ValueError(f"unknown advantage {name!r}; valid names: {', '.join(ADVANTAGES)}")
    return ADVANTAGES[name](rewards, k, entropy=entropy, generator=generator, threshold=threshold,
                            num_groups=num_groups, scale=scale, unbiased_std=unbiased_std)


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
