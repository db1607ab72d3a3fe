"""Tests for passk_at_k.py: exact values, definitions by brute force, edge cases, numerics."""
import itertools
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings, strategies as st

import passk_at_k as P


def exact_a_pos(N, n_pos, k):
    """sqrt((1 - R_bar) / R_bar) from exact integer binomials (R_bar = the prompt's pass@k)."""
    fail = Fraction(math.comb(N - n_pos, k), math.comb(N, k))
    return 0.0 if fail == 0 else math.sqrt(fail / (1 - fail))


def rewards_row(n_pos, n):
    return torch.tensor([[1.0] * n_pos + [0.0] * (n - n_pos)], dtype=torch.float64)


def brute_force_passk(rewards, k):
    """The definition, written independently of the module: every k-subset is a group with reward = max;
    group rewards are normalised with the population std; each response averages the advantages of the groups
    that contain it."""
    N = len(rewards)
    groups = list(itertools.combinations(range(N), k))
    g = [max(rewards[i] for i in grp) for grp in groups]
    mean = sum(g) / len(g)
    std = math.sqrt(sum((x - mean) ** 2 for x in g) / len(g))
    if std == 0:
        return [0.0] * N
    adv = [(x - mean) / std for x in g]
    out = []
    for i in range(N):
        mine = [a for a, grp in zip(adv, groups) if i in grp]
        out.append(sum(mine) / len(mine))
    return out


# ------------------------------------------------------------------------------------------------ pass@k estimator

def exact_pass_at_k(n, c, k):
    if n - c < k:
        return Fraction(1)
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_exact_small():
    for n in range(1, 31):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert P.pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), abs=1e-12, rel=0)


@pytest.mark.parametrize("n,c,k", [(100_000, 1, 1), (100_000, 3, 1000), (100_000, 50, 100), (100_000, 99_000, 5),
                                   (100_000, 10, 99_990), (100_000, 0, 7), (100_000, 100_000, 1), (2048, 1, 1024)])
def test_pass_at_k_large_n_exact(n, c, k):
    got = P.pass_at_k(n, c, k)
    assert math.isfinite(got)
    assert got == pytest.approx(float(exact_pass_at_k(n, c, k)), abs=1e-12, rel=0)


def test_pass_at_k_tensor_broadcast_matches_scalar():
    c = torch.tensor([0, 1, 5, 10, 63, 64])
    got = P.pass_at_k(64, c, 8)
    assert got.dtype == torch.float64 and got.shape == (6,)
    for ci, g in zip(c.tolist(), got.tolist()):
        assert g == pytest.approx(float(exact_pass_at_k(64, ci, 8)), abs=1e-14)
    ks = torch.tensor([[1], [4], [64]])
    grid = P.pass_at_k(64, c, ks)
    assert grid.shape == (3, 6)
    assert grid[2].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError, match=f"n={n}"):
        P.pass_at_k(n, c, k)


def test_pass_at_k_curve_default_ks_and_values():
    correct = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0] * 6], dtype=torch.bool)
    curve = P.pass_at_k_curve(correct)
    assert list(curve) == [1, 2, 4, 6]
    for k, v in curve.items():
        want = (exact_pass_at_k(6, 1, k) + exact_pass_at_k(6, 2, k) + 0) / 3
        assert v == pytest.approx(float(want), abs=1e-14)
    assert list(P.pass_at_k_curve(torch.ones(2, 8, dtype=torch.bool))) == [1, 2, 4, 8]
    assert P.pass_at_k_curve(correct, ks=[3]) == {3: pytest.approx(float((exact_pass_at_k(6, 1, 3)
                                                                           + exact_pass_at_k(6, 2, 3)) / 3))}


# ------------------------------------------------------------------------------------------------ analytical

def test_analytical_equals_enumeration_for_every_small_case():
    for N in range(2, 11):
        for k in range(1, N):
            for n_pos in range(N + 1):
                r = [1.0] * n_pos + [0.0] * (N - n_pos)
                got = P.passk_advantages_analytical(torch.tensor([r], dtype=torch.float64), k)[0].tolist()
                want = brute_force_passk(r, k)
                assert got == pytest.approx(want, abs=1e-9), (N, k, n_pos)


def test_exhaustive_helper_matches_brute_force():
    for N, k in [(5, 2), (7, 3), (8, 7), (6, 1)]:
        for n_pos in range(N + 1):
            r = [0.0] * (N - n_pos) + [1.0] * n_pos            # correct ones last: order must not matter
            got = P.passk_advantages_exhaustive(torch.tensor([r]), k)[0].tolist()
            assert got == pytest.approx(brute_force_passk(r, k), abs=1e-6)


def test_published_values_N32_k8():
    adv = P.passk_advantages_analytical(rewards_row(1, 32), 8)[0]
    assert adv[0].item() == pytest.approx(1.7320508, abs=1e-7)
    assert adv[0].item() == pytest.approx(math.sqrt((32 - 8) / 8), abs=1e-12)
    assert adv[1:].tolist() == pytest.approx([-0.0558726] * 31, abs=1e-7)
    assert adv[1].item() == pytest.approx(-math.sqrt(3) / 31, abs=1e-12)


def test_simplified_form():
    # A_pos = (N_neg/N) q / sigma, A_neg = -(N_pos/N) q / sigma with q = C(N_neg-1, k-1) / C(N-1, k-1).
    N, k = 20, 5
    for n_pos in range(1, N - k + 1):
        n_neg = N - n_pos
        q = math.comb(n_neg - 1, k - 1) / math.comb(N - 1, k - 1)
        r_bar = 1 - math.comb(n_neg, k) / math.comb(N, k)
        sigma = math.sqrt(r_bar * (1 - r_bar))
        adv = P.passk_advantages_analytical(rewards_row(n_pos, N), k)[0]
        assert adv[0].item() == pytest.approx(n_neg / N * q / sigma, rel=1e-12)
        assert adv[-1].item() == pytest.approx(-n_pos / N * q / sigma, rel=1e-12)
        assert adv[0].item() == pytest.approx((1 - r_bar) / sigma, rel=1e-12)                          # Eq. 14
        assert adv[-1].item() == pytest.approx((1 - r_bar - q) / sigma, rel=1e-12)                     # Eq. 15


def test_k1_is_grpo():
    g = torch.Generator().manual_seed(1)
    r = (torch.rand(200, 16, generator=g) < torch.rand(200, 1, generator=g)).double()
    torch.testing.assert_close(P.passk_advantages_analytical(r, 1), P.grpo_advantages(r), rtol=0, atol=1e-12)


def test_grpo_advantages_definition_and_flat_rows():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3], [2.0, 4.0, 6.0, 8.0]], dtype=torch.float64)
    adv = P.grpo_advantages(r)
    assert adv[0].tolist() == pytest.approx([math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)])
    assert adv[1].tolist() == [0.0, 0.0, 0.0, 0.0]               # no float fuzz from mean/std of 0.3s
    want = (r[2] - 5.0) / math.sqrt(5.0)
    assert adv[2].tolist() == pytest.approx(want.tolist())


def test_sum_to_zero_and_signs():
    g = torch.Generator().manual_seed(2)
    r = (torch.rand(500, 32, generator=g) < torch.rand(500, 1, generator=g)).float()
    for k in (1, 2, 4, 8, 16, 31):
        adv = P.passk_advantages_analytical(r, k).double()
        assert adv.sum(-1).abs().max().item() < 1e-5
        assert (adv[r > 0] >= 0).all() and (adv[r == 0] <= 0).all()


@pytest.mark.parametrize("N,k,n_pos", [(8, 3, 0), (8, 3, 8), (8, 3, 6), (8, 3, 7), (8, 7, 4), (8, 7, 2),
                                       (4096, 4095, 17), (32, 8, 25), (32, 8, 31)])
def test_degenerate_groups_are_exactly_zero(N, k, n_pos):
    # all wrong, all right, N_neg < k: every response gets exactly 0 (not NaN, not 1e-17).
    adv = P.passk_advantages_analytical(rewards_row(n_pos, N), k)
    assert (adv == 0).all()


@pytest.mark.parametrize("k", [1, 2, 64, 1024, 2047, 2048, 3000, 4095])
def test_large_N_is_finite_and_consistent(k):
    N = 4096
    e = P.eta(N, k)
    assert torch.isfinite(e).all()
    n_pos = torch.tensor([1, 2, 10, 1000, 2048, 3000, 4090])
    r = (torch.arange(N).unsqueeze(0) < n_pos.unsqueeze(1)).double()
    adv = P.passk_advantages_analytical(r, k)
    assert torch.isfinite(adv).all()
    assert adv.sum(-1).abs().max().item() < 1e-3 * max(1.0, adv.abs().max().item())
    # A_pos = sqrt((1 - R_bar) / R_bar) with R_bar = pass@k, against exact integer binomials.
    for i, p in enumerate(n_pos.tolist()):
        assert adv[i, 0].item() == pytest.approx(exact_a_pos(N, p, k), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("k", [0, -1, 9, 2.0, True])
def test_bad_k_raises_with_values(k):
    with pytest.raises(ValueError, match=r"k=.*N=8"):
        P.passk_advantages_analytical(torch.zeros(2, 8), k)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="prompts, N"):
        P.passk_advantages_analytical(torch.zeros(8), 2)
    with pytest.raises(ValueError, match="prompt_entropy"):
        P.entropy_adaptive_advantages(torch.zeros(3, 8), 2, torch.zeros(4))


def test_dtypes_devices_and_threshold():
    base = torch.tensor([[1, 0, 0, 1, 0, 0, 0, 0]])
    want = P.passk_advantages_analytical(base.double(), 4)
    assert P.passk_advantages_analytical(base.bool(), 4).dtype == torch.float32
    assert P.passk_advantages_analytical(base, 4).dtype == torch.float32
    half = P.passk_advantages_analytical(base.half(), 4)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), want, atol=2e-3, rtol=0)
    graded = torch.tensor([[0.9, 0.2, 0.5, 0.51, 0.0, 0.1, 0.3, 0.4]])      # > 0.5 counts: entries 0 and 3
    torch.testing.assert_close(P.passk_advantages_analytical(graded, 4).double(), want.to(torch.float64), atol=1e-6,
                               rtol=0)
    strict = P.passk_advantages_analytical(graded, 4, threshold=0.05)        # 7 of 8 correct at this threshold: N_neg < k
    assert (strict == 0).all()


# ------------------------------------------------------------------------------------------------ sampling variants

def test_full_sampling_matches_definition():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    adv = P.passk_advantages_full(r, 2)[0].tolist()
    # groups (0,1) (2,3) (4,5) -> rewards 1, 0, 1 -> mean 2/3, std sqrt(2)/3
    a1, a0 = (1 / 3) / (math.sqrt(2) / 3), (-2 / 3) / (math.sqrt(2) / 3)
    assert adv == pytest.approx([a1, a1, a0, a0, a1, a1])
    # leftovers get 0; a single group (N < 2k) carries no contrast
    r7 = torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    adv7 = P.passk_advantages_full(r7, 3)[0]
    assert adv7[6].item() == 0.0
    assert adv7[:6].tolist() == pytest.approx([0.0] * 6)                    # both groups succeed: flat
    assert (P.passk_advantages_full(torch.tensor([[1.0, 0, 0, 0, 0]]), 3) == 0).all()


def test_full_sampling_is_independent_code_path_of_brute_force():
    g = torch.Generator().manual_seed(3)
    r = (torch.rand(50, 12, generator=g) < 0.4).double()
    adv = P.passk_advantages_full(r, 3)
    for row, a in zip(r.tolist(), adv.tolist()):
        groups = [row[i:i + 3] for i in range(0, 12, 3)]
        gr = [max(x) for x in groups]
        m = sum(gr) / 4
        s = math.sqrt(sum((x - m) ** 2 for x in gr) / 4)
        want = [0.0] * 12 if s == 0 else [(gr[i // 3] - m) / s for i in range(12)]
        assert a == pytest.approx(want, abs=1e-12)


def test_bootstrap_converges_to_analytical():
    N, k = 8, 3
    r = torch.cat([rewards_row(p, N) for p in range(N + 1)])
    ana = P.passk_advantages_analytical(r, k)
    g = torch.Generator().manual_seed(0)
    small = P.passk_advantages_bootstrap(r, k, num_groups=64, generator=g)
    big = P.passk_advantages_bootstrap(r, k, num_groups=40_000, generator=g)
    err_small = (small - ana).abs().max().item()
    err_big = (big - ana).abs().max().item()
    assert err_big < 0.03
    assert err_big < err_small / 3


def test_bootstrap_default_groups_reproducible_and_bounded():
    r = (torch.rand(10, 16) < 0.3).float()
    a = P.passk_advantages_bootstrap(r, 4, generator=torch.Generator().manual_seed(5))
    b = P.passk_advantages_bootstrap(r, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == r.shape and torch.isfinite(a).all()
    assert (P.passk_advantages_bootstrap(torch.zeros(3, 16), 4) == 0).all()
    with pytest.raises(ValueError, match="num_groups"):
        P.passk_advantages_bootstrap(r, 4, num_groups=0)


# ------------------------------------------------------------------------------------------------ advantage design

def test_combination_definition():
    r = torch.cat([rewards_row(p, 16) for p in range(17)])
    acc = r.mean(-1, keepdim=True)
    want = acc * P.passk_advantages_analytical(r, 4) + (1 - acc) * P.grpo_advantages(r)
    torch.testing.assert_close(P.combination_advantages(r, 4), want, rtol=0, atol=1e-12)


def test_entropy_adaptive_uses_pass1_for_high_entropy_half():
    r = torch.cat([rewards_row(p, 8) for p in (1, 2, 3, 4, 5)])
    ent = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.2])
    adv = P.entropy_adaptive_advantages(r, 3, ent)
    g, pk = P.grpo_advantages(r), P.passk_advantages_analytical(r, 3)
    for i, use_pass1 in enumerate([False, True, False, True, False]):      # 5 // 2 = 2 highest: prompts 1, 3
        torch.testing.assert_close(adv[i], (g if use_pass1 else pk)[i], rtol=0, atol=1e-12)
    one = P.entropy_adaptive_advantages(r[:1], 3, ent[:1])
    torch.testing.assert_close(one, pk[:1], rtol=0, atol=1e-12)


def test_exceeding_scale_function():
    r = torch.cat([rewards_row(p, 16) for p in range(17)])
    base = P.passk_advantages_analytical(r, 4)
    adv = P.exceeding_passk_advantages(r, 4)
    for p in range(1, 17):
        torch.testing.assert_close(adv[p], base[p] * 0.4 / math.log(p + 0.5), rtol=1e-12, atol=1e-15)
    assert (adv[0] == 0).all()
    adv10 = P.exceeding_passk_advantages(r, 4, scale=4 * math.log(10))
    torch.testing.assert_close(adv10[3], base[3] * 4 / math.log10(3.5), rtol=1e-12, atol=1e-15)


def test_eta():
    N = 32
    e1 = P.eta(N, 1)
    n_pos = torch.arange(N + 1, dtype=torch.float64)
    torch.testing.assert_close(e1, 2 * torch.sqrt(n_pos * (N - n_pos)), rtol=1e-12, atol=1e-12)
    assert int(e1.argmax()) == N // 2
    peaks = [int(P.eta(N, k).argmax()) for k in (1, 4, 8, 16)]
    assert peaks == sorted(peaks, reverse=True) and peaks[-1] < peaks[0]    # larger k -> harder prompts weigh most
    assert (P.eta(N, 8)[N - 7:] == 0).all()                                  # N_neg < k: nothing


# ------------------------------------------------------------------------------------------------ properties

@settings(max_examples=150, deadline=None)
@given(N=st.integers(2, 64), data=st.data())
def test_property_analytical(N, data):
    k = data.draw(st.integers(1, N - 1))
    n_pos = data.draw(st.integers(0, N))
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 10**6))))
    r = rewards_row(n_pos, N)[:, perm]
    adv = P.passk_advantages_analytical(r, k)
    assert torch.isfinite(adv).all()
    assert abs(adv.sum().item()) < 1e-9 * max(1.0, adv.abs().max().item() * N)
    # the prompt's mean group reward is pass@k, and A_pos = sqrt((1 - pass@k) / pass@k)
    if 0 < n_pos:
        assert adv[r > 0][0].item() == pytest.approx(exact_a_pos(N, n_pos, k), rel=1e-9, abs=1e-300)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), data=st.data())
def test_property_pass_at_k_exact(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    assert P.pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), abs=1e-12, rel=0)


# ---------------------------------------------------------------------------------------------------------------
# The registry


def test_registry_names_and_dispatch():
    assert tuple(P.ADVANTAGES) == ("grpo", "passk", "passk_bootstrap", "passk_full", "combination",
                                   "entropy_adaptive", "exceeding", "pkpo", "pkpo_maxk")
    r = torch.tensor([[1.0, 0, 0, 0, 1, 0, 0, 0], [0.9, 0.2, 0, 0, 0, 0, 0, 0]])
    ent = torch.tensor([0.3, 0.1])
    want = {
        "grpo": P.grpo_advantages(r),
        "passk": P.passk_advantages_analytical(r, 2),
        "passk_bootstrap": P.passk_advantages_bootstrap(r, 2, num_groups=5, generator=torch.Generator().manual_seed(3)),
        "passk_full": P.passk_advantages_full(r, 2),
        "combination": P.combination_advantages(r, 2),
        "entropy_adaptive": P.entropy_adaptive_advantages(r, 2, ent),
        "exceeding": P.exceeding_passk_advantages(r, 2, scale=0.7),
        "pkpo": P.pkpo_advantages(r, 2),
        "pkpo_maxk": P.pkpo_advantages(r, 2, continuous=True),
    }
    for name, expected in want.items():
        got = P.compute_advantages(name, r, 2, entropy=ent, generator=torch.Generator().manual_seed(3), num_groups=5,
                                   scale=0.7)
        torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(P.ADVANTAGES[name](r, 2, entropy=ent, generator=torch.Generator().manual_seed(3),
                                                      num_groups=5, scale=0.7), expected, rtol=0, atol=0)
    # the threshold reaches every Pass@k entry: at 0.1 the 0.2 reward counts as correct
    torch.testing.assert_close(P.compute_advantages("passk", r, 2, threshold=0.1),
                               P.passk_advantages_analytical(r, 2, threshold=0.1))
    torch.testing.assert_close(P.compute_advantages("pkpo", r, 2, threshold=0.1),
                               P.pkpo_advantages(r, 2, threshold=0.1))
    # unbiased_std reaches "grpo" only
    torch.testing.assert_close(P.compute_advantages("grpo", r, 2, unbiased_std=True),
                               P.grpo_advantages(r, unbiased_std=True))


def test_registry_errors():
    r = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="exceeding_passk.*valid names: grpo, passk, .*exceeding"):
        P.compute_advantages("exceeding_passk", r, 2)
    with pytest.raises(ValueError, match="entropy_adaptive.*needs entropy="):
        P.compute_advantages("entropy_adaptive", r, 2)


@pytest.mark.parametrize("k", [1, 7, 100, 1024, 3000])
def test_large_N_a_neg_exact(k):
    # Eq. 15 subtracts two binomial ratios; against exact integers: A_neg^2 = (N_pos/N)^2 q^2 / (rho (1 - rho)).
    N = 4096
    for n_pos in (1, 3, 50, 900):
        n_neg = N - n_pos
        fail = Fraction(math.comb(n_neg, k), math.comb(N, k))
        q = Fraction(math.comb(n_neg - 1, k - 1), math.comb(N - 1, k - 1))
        got = P.passk_advantages_analytical(rewards_row(n_pos, N), k)[0, -1].item()
        if fail == 0:
            assert got == 0.0
            continue
        want = -math.sqrt(Fraction(n_pos, N) ** 2 * q ** 2 / (fail * (1 - fail)))
        assert got == pytest.approx(want, rel=1e-9, abs=1e-300), (n_pos, k)


@pytest.mark.parametrize("N", [2, 8, 32])
def test_k_equal_to_group_size_is_refused_with_the_reason(N):
    # Every k-subset is the whole group: one group, no spread, every Pass@k-Training advantage is 0. Refused.
    r = (torch.arange(N).unsqueeze(0) < torch.arange(N + 1).unsqueeze(1)).double()    # N_pos = 0..N
    for name in ("passk", "passk_bootstrap", "passk_full", "combination", "entropy_adaptive", "exceeding"):
        with pytest.raises(ValueError, match=rf"k = N = {N} is refused.*every advantage is 0 and nothing trains"):
            P.compute_advantages(name, r, N, entropy=torch.zeros(N + 1))
    for fn in (P.passk_advantages_analytical, P.passk_advantages_full, P.passk_advantages_bootstrap,
               P.passk_advantages_exhaustive, P.combination_advantages, P.exceeding_passk_advantages):
        with pytest.raises(ValueError, match="nothing trains"):
            fn(r, N)
    with pytest.raises(ValueError, match="nothing trains"):
        P.eta(N, N)
    # GRPO ignores k, PKPO is defined at k = N (only a response that beats all others is rewarded).
    torch.testing.assert_close(P.compute_advantages("grpo", r, N), P.grpo_advantages(r))
    adv = P.compute_advantages("pkpo", r, N)
    assert torch.isfinite(adv).all() and (adv[1, 0] == N) and (adv[1, 1:] == 0).all() and (adv[2] == 0).all()


def test_N4096_every_k_is_finite_and_balanced():
    # k from 1 to 4096 in steps of 65 (plus the ends), 64 random accuracies each: never NaN/inf, sums to 0 per prompt.
    N = 4096
    g = torch.Generator().manual_seed(4)
    n_pos = torch.randint(0, N + 1, (64,), generator=g)
    r = (torch.arange(N).unsqueeze(0) < n_pos.unsqueeze(1)).double()              # [64, N], float64 out
    for k in [*range(1, N, 65), N - 1]:
        adv = P.passk_advantages_analytical(r, k)
        assert torch.isfinite(adv).all(), k
        assert (adv.sum(-1).abs() <= 1e-8 * adv.abs().amax(-1).clamp_min(1.0)).all(), k
