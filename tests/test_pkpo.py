"""Tests for PKPO's estimators, the schedules, and the GRPO std option in passk_at_k.py."""
import itertools
import math
from fractions import Fraction

import pytest
import torch

import passk_at_k as P


def brute_force_pkpo(g, k, baseline):
    """The definition as the PKPO paper writes it, independently of the module: the effective reward of sample i is
    (1 / C(n, k)) sum over the k-subsets I that hold i of [max_I g - max_{I without i} g] (loo-1) or of max_I g
    (none), here times n (so that the mean over samples is the gradient). k = 1, loo-1: the leave-one-out mean."""
    n = len(g)
    out = []
    for i in range(n):
        if k == 1 and baseline == "loo-1":
            out.append(Fraction(g[i]) - Fraction(sum(g) - g[i]) / (n - 1))
            continue
        total = Fraction(0)
        for I in itertools.combinations(range(n), k):
            if i not in I:
                continue
            top = max(g[j] for j in I)
            rest = [g[j] for j in I if j != i]
            total += top - (max(rest) if baseline == "loo-1" else 0)
        out.append(total * n / math.comb(n, k))
    return [float(x) for x in out]


@pytest.mark.parametrize("baseline", P.PKPO_BASELINES)
def test_pkpo_binary_equals_enumeration_for_every_small_case(baseline):
    for n in range(2, 9):
        for k in range(1, n + 1):
            for c in range(n + 1):
                r = [1] * c + [0] * (n - c)
                got = P.pkpo_advantages(torch.tensor([r], dtype=torch.float64), k, baseline=baseline)[0].tolist()
                assert got == pytest.approx(brute_force_pkpo(r, k, baseline), abs=1e-12), (n, k, c)


@pytest.mark.parametrize("baseline", P.PKPO_BASELINES)
def test_pkpo_continuous_equals_enumeration(baseline):
    g = torch.Generator().manual_seed(0)
    for n in range(2, 8):
        for k in range(1, n + 1):
            # integer rewards with ties, so Fractions are exact and ties are exercised
            r = torch.randint(-3, 4, (4, n), generator=g).double()
            got = P.pkpo_advantages(r, k, baseline=baseline, continuous=True)
            for row, a in zip(r.tolist(), got.tolist()):
                assert a == pytest.approx(brute_force_pkpo([int(x) for x in row], k, baseline), abs=1e-12), (n, k)


def test_pkpo_continuous_on_binary_rewards_equals_binary_form():
    r = (torch.rand(64, 16, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    for k in (1, 2, 5, 16):
        for b in P.PKPO_BASELINES:
            torch.testing.assert_close(P.pkpo_advantages(r, k, baseline=b, continuous=True),
                                       P.pkpo_advantages(r, k, baseline=b), rtol=0, atol=1e-12)


def test_pkpo_loo1_binary_closed_form_values():
    # n = 8, c = 2, k = 4: a correct response is alone in its group when the 3 others come from the 6 wrong ones:
    # C(6, 3) / C(7, 3) = 20 / 35; times k = 4 -> 16 / 7. Wrong responses get 0.
    r = torch.tensor([[1.0, 1, 0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    adv = P.pkpo_advantages(r, 4)[0]
    assert adv[:2].tolist() == pytest.approx([16 / 7] * 2, abs=1e-14) and (adv[2:] == 0).all()
    # no baseline: correct k = 4, wrong k (1 - C(5, 3) / C(7, 3)) = 4 (1 - 10 / 35) = 20 / 7
    adv = P.pkpo_advantages(r, 4, baseline="none")[0]
    assert adv.tolist() == pytest.approx([4.0] * 2 + [20 / 7] * 6, abs=1e-14)


def test_pkpo_is_unbiased_for_the_pass_at_k_gradient():
    # Bernoulli bandit: each of n samples is correct with p = sigmoid(theta); score of a sample d/dtheta log pi = f - p.
    # E[(1/n) sum_i A_i (f_i - p)] over c ~ Binomial(n, p), exactly, equals d/dtheta pass@k = k (1-p)^(k-1) p (1-p).
    for n, k in [(8, 1), (8, 3), (8, 8), (16, 4)]:
        for p in (0.05, 0.3, 0.7):
            truth = k * (1 - p) ** (k - 1) * p * (1 - p)
            for b in P.PKPO_BASELINES:
                r = (torch.arange(n).unsqueeze(0) < torch.arange(n + 1).unsqueeze(1)).double()   # c = 0..n
                adv = P.pkpo_advantages(r, k, baseline=b)
                e = sum(math.comb(n, c) * p ** c * (1 - p) ** (n - c)
                        * (c * adv[c, 0].item() * (1 - p) * (c > 0) + (n - c) * adv[c, -1].item() * (-p) * (c < n))
                        for c in range(n + 1)) / n
                assert e == pytest.approx(truth, rel=1e-10, abs=1e-15), (n, k, p, b)


def test_pkpo_relation_to_passk_training():
    # Exact identity (module docstring): A^passk = (A^s / k - rho) / sigma, for every N_pos, wherever sigma > 0.
    for n in (4, 8, 32):
        r = (torch.arange(n).unsqueeze(0) < torch.arange(n + 1).unsqueeze(1)).double()
        for k in range(1, n):
            s = P.pkpo_advantages(r, k, baseline="none")
            rho = P.pass_at_k(n, r.sum(-1).long(), k).unsqueeze(-1)
            sigma = torch.sqrt(rho * (1 - rho))
            ok = sigma > 0
            want = torch.where(ok, (s / k - rho) / torch.where(ok, sigma, 1.0), 0.0)
            torch.testing.assert_close(P.passk_advantages_analytical(r, k), want, rtol=1e-10, atol=1e-10)


def test_pkpo_and_passk_training_differ_by_the_self_including_centring():
    # k sigma A^passk = A^s - k rho. PKPO's A^s is unbiased (test above); rho holds response i in a share k / N of
    # its subsets, so the centring shrinks the expected gradient: E[mean_i k sigma A^passk_i (f_i - p)] is exactly
    # (1 - k / N) d pass@k / d theta. Computed exactly on the Bernoulli bandit for several N, k, p.
    for n, k in [(8, 1), (8, 4), (16, 4), (64, 4), (12, 11)]:
        for p in (0.1, 0.3, 0.8):
            r = (torch.arange(n).unsqueeze(0) < torch.arange(n + 1).unsqueeze(1)).double()
            a = P.passk_advantages_analytical(r, k)
            rho = P.pass_at_k(n, torch.arange(n + 1), k)
            sigma = torch.sqrt(rho * (1 - rho))
            pmf = [math.comb(n, c) * p ** c * (1 - p) ** (n - c) for c in range(n + 1)]
            scaled = sum(pmf[c] * k * sigma[c].item() * (c * a[c, 0].item() * (1 - p) * (c > 0)
                                                         + (n - c) * a[c, -1].item() * (-p) * (c < n))
                         for c in range(n + 1)) / n
            truth = k * (1 - p) ** (k - 1) * p * (1 - p)
            assert scaled == pytest.approx(truth * (1 - k / n), rel=1e-10), (n, k, p)
    # where they coincide: every correct response above every wrong one, in both
    r = torch.tensor([[1.0, 0, 0, 1, 0, 0, 0, 0]])
    a, b = P.passk_advantages_analytical(r, 3)[0], P.pkpo_advantages(r, 3)[0]
    assert a[0] > a[1] and b[0] > b[1] and b[1] == 0 and abs(a.sum().item()) < 1e-6


@pytest.mark.parametrize("k", [1, 2, 64, 1024, 4095, 4096])
def test_pkpo_N4096_stable(k):
    N = 4096
    n_pos = torch.tensor([0, 1, 3, 100, 2048, 4000, 4096])
    r = (torch.arange(N).unsqueeze(0) < n_pos.unsqueeze(1)).double()
    adv = P.pkpo_advantages(r, k)
    assert torch.isfinite(adv).all()
    for i, c in enumerate(n_pos.tolist()):
        if k == 1:
            want = 1 - (c - 1) / (N - 1) if c else None
        else:
            want = float(k * Fraction(math.comb(N - c, k - 1), math.comb(N - 1, k - 1))) if c else None
        if want is not None:
            assert adv[i, 0].item() == pytest.approx(want, rel=1e-9, abs=1e-300), (k, c)
    # the sorted-order (continuous) form on the same 0/1 rewards: the same values
    torch.testing.assert_close(P.pkpo_advantages(r, k, continuous=True), adv, rtol=1e-10, atol=1e-12)
    # continuous rewards: finite, and the best response gets the most (at k = N, baseline none: all get k max g).
    g = torch.randn(2, N, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for b in P.PKPO_BASELINES:
        a = P.pkpo_advantages(g, k, baseline=b, continuous=True)
        assert torch.isfinite(a).all()
        assert (a.gather(-1, g.argmax(-1, keepdim=True)) == a.amax(-1, keepdim=True)).all()


def test_pkpo_arguments():
    with pytest.raises(ValueError, match="baseline must be one of"):
        P.pkpo_advantages(torch.zeros(1, 4), 2, baseline="loo")
    with pytest.raises(ValueError, match="1 <= k <= N"):
        P.pkpo_advantages(torch.zeros(1, 4), 5)
    with pytest.raises(ValueError, match="N >= 2"):
        P.pkpo_advantages(torch.zeros(1, 1), 1)
    with pytest.raises(ValueError, match="finite"):
        P.pkpo_advantages(torch.tensor([[0.0, math.nan]]), 1, continuous=True)
    assert P.pkpo_advantages(torch.tensor([[True, False, False]]), 2).dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
# GRPO's std


def test_grpo_unbiased_std_option():
    r = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 1], [1.0, 1, 1, 1, 1, 1, 1, 1]])
    pop = P.grpo_advantages(r)
    unb = P.grpo_advantages(r, unbiased_std=True)
    assert (unb[1] == 0).all()
    torch.testing.assert_close(unb[0], pop[0] * math.sqrt(7 / 8), rtol=1e-12, atol=0)     # 1/1.069 at N = 8
    # verl's: (r - mean) / (torch.std(r) + 1e-6)
    want = (r[0] - r[0].mean()) / (torch.std(r[0]) + 1e-6)
    torch.testing.assert_close(P.grpo_advantages(r, unbiased_std=True, eps=1e-6)[0], want, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="N >= 2"):
        P.grpo_advantages(torch.ones(2, 1), unbiased_std=True)


# ---------------------------------------------------------------------------------------------------------------
# Schedules


def test_parse_schedule_examples():
    Ph = P.Phase
    assert P.parse_schedule("grpo:50,passk:100,grpo:50", 8) == [Ph("grpo", 8, 50), Ph("passk", 8, 100),
                                                                Ph("grpo", 8, 50)]
    assert P.parse_schedule(" pkpo@8:100 , pkpo@4:100", 2) == [Ph("pkpo", 8, 100), Ph("pkpo", 4, 100)]
    assert P.parse_schedule("passk@1:1", 4) == [Ph("passk", 1, 1)]


@pytest.mark.parametrize("spec,match", [
    ("", "NAME\\[@K\\]:STEPS"),
    ("grpo", "part 1 'grpo': expected NAME\\[@K\\]:STEPS"),
    ("grpo:50,pass_k:10", "part 2 'pass_k:10': unknown advantage 'pass_k'; allowed: grpo, passk, .*pkpo"),
    ("passk@0:10", "K must be an integer >= 1, got '0'"),
    ("passk@x:10", "K must be an integer >= 1, got 'x'"),
    ("passk:0", "STEPS must be an integer >= 1, got '0'"),
    ("passk:-5", "STEPS must be an integer >= 1, got '-5'"),
    ("passk:10,", "part 2 '': expected"),
])
def test_parse_schedule_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        P.parse_schedule(spec, 8)


def test_parse_schedule_default_k_checked():
    with pytest.raises(ValueError, match="default_k"):
        P.parse_schedule("passk:10", 0)


def test_phase_at_boundaries_and_last_phase_continues():
    phases = P.parse_schedule("grpo:2,passk@4:3,grpo:1", 8)
    got = [P.phase_at(phases, s) for s in range(9)]
    assert [(p.advantage, p.k) for p in got] == [("grpo", 8)] * 2 + [("passk", 4)] * 3 + [("grpo", 8)] * 4
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        P.phase_at(phases, -1)
    with pytest.raises(ValueError, match="at least one phase"):
        P.phase_at([], 0)
