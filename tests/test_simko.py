"""Tests for simko.py: token statistics against a full log_softmax, the fused LM head's gradients, and the SimKO
policy loss against an explicit, hand-written gradient w.r.t. the logits."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import simko

D64 = torch.float64


# ---------------------------------------------------------------------------------------------------------------
# Naive references, written independently of simko.py.


def naive_stats(logits, tokens, k, temperature=1.0):
    """Full log_softmax in float64: logp, entropy, topk_logp, topk_ids, is_rank1."""
    lp = (logits.to(D64) / temperature).log_softmax(-1)
    logp = lp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(lp.exp() * lp).sum(-1)
    top = lp.topk(k, dim=-1)
    return logp, entropy, top.values, top.indices, tokens == lp.argmax(-1)


def ref_quantile(values, q):
    """Linear-interpolation quantile of a 1-D list (numpy's / torch's default), written out."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def plain_clipped_surrogate(logp, old_logp, adv, mask, clip_low=0.2, clip_high=0.28, agg="token_mean", max_len=None):
    """The GRPO/DAPO loss, the textbook way."""
    adv = adv[:, None].expand_as(logp) if adv.dim() == 1 else adv
    ratio = torch.exp(logp - old_logp)
    per_tok = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high))
    m = mask.to(logp.dtype)
    if agg == "token_mean":
        return (per_tok * m).sum() / m.sum()
    if agg == "seq_mean_token_mean":
        rows = [(per_tok[i] * m[i]).sum() / m[i].sum() for i in range(len(m)) if m[i].sum() > 0]
        return torch.stack(rows).mean()
    return ((per_tok * m).sum(1) / (max_len or logp.shape[1])).mean()


def make_batch(B=4, T=24, V=30, seed=0, dtype=D64):
    """Logits with a spread of entropies, tokens half argmax (rank-1) / half sampled, ragged mask."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(B, T, 1, generator=g, dtype=D64) * 4 + 0.3  # per-token temperature -> varied entropy
    logits = (torch.randn(B, T, V, generator=g, dtype=D64) * scale).to(dtype)
    sampled = torch.multinomial(logits.to(D64).softmax(-1).view(-1, V), 1, generator=g).view(B, T)
    use_argmax = torch.rand(B, T, generator=g) < 0.5
    tokens = torch.where(use_argmax, logits.argmax(-1), sampled)
    lengths = torch.tensor([T, T - 5, T - 9, T - 2][:B])
    mask = torch.arange(T)[None] < lengths[:, None]
    return logits, tokens, mask, g


# ---------------------------------------------------------------------------------------------------------------
# token_stats


@pytest.mark.parametrize("chunk", [None, 1, 7, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_token_stats_matches_full_log_softmax(chunk, temperature):
    logits, tokens, _, _ = make_batch(dtype=torch.float32)
    s = simko.token_stats(logits, tokens, top_k=4, chunk_size=chunk, temperature=temperature)
    ref = naive_stats(logits, tokens, 4, temperature)
    for got, want in zip(s[:3], ref[:3]):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.to(D64), want, atol=2e-5, rtol=1e-5)
    assert torch.equal(s.topk_ids, ref[3])
    assert torch.equal(s.is_rank1, ref[4])
    assert s.is_rank1.any() and not s.is_rank1.all()
    assert (s.topk_logp[..., :-1] >= s.topk_logp[..., 1:]).all()  # sorted descending
    assert not s.entropy.requires_grad


def test_chunked_equals_unchunked_values_and_grads():
    logits, tokens, _, g = make_batch(dtype=torch.float32)
    w1, w2 = torch.randn(tokens.shape, generator=g), torch.randn(*tokens.shape, 3, generator=g)
    outs = []
    for chunk in (1, 5, 10_000):
        x = logits.clone().requires_grad_()
        s = simko.token_stats(x, tokens, top_k=3, chunk_size=chunk)
        ((s.logp * w1).sum() + (s.topk_logp * w2.float()).sum()).backward()
        outs.append((s.logp, s.entropy, s.topk_logp, x.grad))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_token_stats_gradients_vs_full_log_softmax_autograd():
    logits, tokens, _, g = make_batch()
    w1, w2 = torch.randn(tokens.shape, generator=g, dtype=D64), torch.randn(*tokens.shape, 3, generator=g, dtype=D64)
    x1 = logits.clone().requires_grad_()
    s = simko.token_stats(x1, tokens, top_k=3, chunk_size=7, temperature=1.7)
    ((s.logp * w1).sum() + (s.topk_logp * w2).sum()).backward()
    x2 = logits.clone().requires_grad_()
    lp = (x2 / 1.7).log_softmax(-1)
    ref_logp = lp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    ref_top = lp.gather(-1, s.topk_ids)
    ((ref_logp * w1).sum() + (ref_top * w2).sum()).backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-12, rtol=1e-10)


def test_token_stats_gradcheck_and_strided_logits():
    # logits[:, :-1] (what a trainer slices from a model's output) cannot be viewed flat: the row-wise path.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 9, generator=g, dtype=D64, requires_grad=True)
    y = torch.randint(0, 9, (2, 5), generator=g)
    f = lambda x: tuple(simko.token_stats(x[:, :-1], y, top_k=3, chunk_size=2, temperature=0.8)[i] for i in (0, 2))
    assert torch.autograd.gradcheck(f, (x,))
    s = simko.token_stats(x[:, :-1], y, top_k=3)
    torch.testing.assert_close(s.logp, naive_stats(x[:, :-1].detach(), y, 3)[0])


def test_only_one_output_used_in_backward():
    logits, tokens, _, _ = make_batch()
    for pick in (0, 2):
        x = logits.clone().requires_grad_()
        simko.token_stats(x, tokens, top_k=2, chunk_size=5)[pick].sum().backward()
        x2 = logits.clone().requires_grad_()
        lp = x2.log_softmax(-1)
        ref = lp.gather(-1, tokens.unsqueeze(-1)) if pick == 0 else lp.topk(2, dim=-1).values
        ref.sum().backward()
        torch.testing.assert_close(x.grad, x2.grad)


def test_bf16_logits_computed_in_float32():
    logits, tokens, _, _ = make_batch(dtype=torch.bfloat16)
    x = logits.clone().requires_grad_()
    s = simko.token_stats(x, tokens, top_k=3, chunk_size=8)
    assert all(t.dtype == torch.float32 for t in (s.logp, s.entropy, s.topk_logp))
    ref = naive_stats(logits.to(D64), tokens, 3)  # exact maths on the bf16 values
    torch.testing.assert_close(s.logp.to(D64), ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s.entropy.to(D64), ref[1], atol=1e-5, rtol=1e-5)
    s.logp.sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()


def test_float32_entropy_accurate_at_large_vocab():
    # 60k-way float32 reductions: the entropy must stay within a few 1e-6 nats of the float64 value (a batched-dot
    # accumulation, for one, is ~1e-3 nats off here).
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(1, 4, 60_000, generator=g) * 2 + 5
    tokens = torch.randint(0, 60_000, (1, 4), generator=g)
    s = simko.token_stats(logits, tokens, top_k=3, chunk_size=2)
    ref = naive_stats(logits, tokens, 3)
    assert (s.entropy.to(D64) - ref[1]).abs().max() < 2e-5
    assert (s.logp.to(D64) - ref[0]).abs().max() < 2e-5


def test_masked_vocabulary_entries():
    # -inf logits (a masked vocabulary) contribute nothing: finite entropy, correct log-probs and gradients.
    g = torch.Generator().manual_seed(13)
    logits = torch.randn(2, 5, 12, generator=g, dtype=D64)
    logits[..., 8:] = -math.inf
    tokens = torch.randint(0, 8, (2, 5), generator=g)
    x = logits.clone().requires_grad_()
    s = simko.token_stats(x, tokens, top_k=3, chunk_size=3)
    ref = naive_stats(logits[..., :8], tokens, 3)
    for got, want in zip(s[:3], ref[:3]):
        torch.testing.assert_close(got, want)
    s.logp.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[..., 8:].eq(0).all()


def test_rank1_ties_count_as_rank1():
    logits = torch.zeros(1, 2, 5)
    logits[0, 0, [1, 3]] = 2.0  # tokens 1 and 3 tie for the max
    s = simko.token_stats(logits, torch.tensor([[3, 0]]), top_k=2)
    assert s.is_rank1.tolist() == [[True, True]]  # position 1 is uniform: every token is rank-1
    torch.testing.assert_close(s.entropy[0, 1], torch.tensor(math.log(5)))


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 9), v=st.integers(2, 40), k=st.integers(1, 5),
       chunk=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_token_stats_property(b, t, v, k, chunk, seed):
    k = min(k, v)
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g, dtype=D64) * 3
    tokens = torch.randint(0, v, (b, t), generator=g)
    s = simko.token_stats(logits, tokens, top_k=k, chunk_size=chunk)
    ref = naive_stats(logits, tokens, k)
    for got, want in zip(s[:3], ref[:3]):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(s.topk_logp, ref[2])


# ---------------------------------------------------------------------------------------------------------------
# token_stats_from_hidden


@pytest.mark.parametrize("with_bias", [False, True])
def test_from_hidden_equals_from_logits_values_and_grads(with_bias):
    g = torch.Generator().manual_seed(2)
    B, T, H, V = 3, 10, 6, 50
    hidden = torch.randn(B, T, H, generator=g, dtype=D64)
    weight = torch.randn(V, H, generator=g, dtype=D64)
    bias = torch.randn(V, generator=g, dtype=D64) if with_bias else None
    tokens = torch.randint(0, V, (B, T), generator=g)
    w1, w2 = torch.randn(B, T, generator=g, dtype=D64), torch.randn(B, T, 3, generator=g, dtype=D64)

    def run(fused):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        bb = bias.clone().requires_grad_() if with_bias else None
        if fused:
            s = simko.token_stats_from_hidden(h, w, tokens, top_k=3, chunk_size=4, temperature=0.9, bias=bb)
        else:
            logits = h @ w.t() + (bb if with_bias else 0)
            s = simko.token_stats(logits, tokens, top_k=3, temperature=0.9)
        ((s.logp * w1).sum() + (s.topk_logp * w2).sum()).backward()
        return list(s[:3]) + [h.grad, w.grad] + ([bb.grad] if with_bias else [])

    for a, b in zip(run(True), run(False)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_from_hidden_gradcheck():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 5, 4, generator=g, dtype=D64, requires_grad=True)
    w = torch.randn(11, 4, generator=g, dtype=D64, requires_grad=True)
    y = torch.randint(0, 11, (2, 5), generator=g)
    f = lambda h, w: tuple(simko.token_stats_from_hidden(h, w, y, top_k=2, chunk_size=3, temperature=1.3)[i]
                           for i in (0, 2))
    assert torch.autograd.gradcheck(f, (h, w))


def test_from_hidden_bf16_and_frozen_head():
    g = torch.Generator().manual_seed(4)
    h32 = torch.randn(2, 7, 16, generator=g)
    w32 = torch.randn(40, 16, generator=g) * 0.3
    y = torch.randint(0, 40, (2, 7), generator=g)
    h = h32.bfloat16().requires_grad_()
    w = w32.bfloat16()  # frozen: no weight gradient requested
    s = simko.token_stats_from_hidden(h, w, y, top_k=3, chunk_size=5)
    assert s.logp.dtype == torch.float32
    ref = naive_stats(h.detach().to(D64) @ w.to(D64).t(), y, 3)
    torch.testing.assert_close(s.logp.to(D64), ref[0], atol=0.05, rtol=0.02)  # bf16 matmul rounding
    s.logp.sum().backward()
    assert h.grad.dtype == torch.bfloat16 and w.grad is None and torch.isfinite(h.grad).all()


def test_from_hidden_bf16_weight_and_bias_grads():
    # bf16 head with bias, trained: gradients land in bf16 and agree with float64 autograd on the same bf16 values.
    g = torch.Generator().manual_seed(12)
    h = torch.randn(2, 9, 16, generator=g).bfloat16().requires_grad_()
    w = (torch.randn(40, 16, generator=g) * 0.3).bfloat16().requires_grad_()
    bb = torch.randn(40, generator=g).bfloat16().requires_grad_()
    y = torch.randint(0, 40, (2, 9), generator=g)
    w1 = torch.randn(2, 9, generator=g)
    s = simko.token_stats_from_hidden(h, w, y, top_k=3, chunk_size=4, temperature=0.8, bias=bb)
    ((s.logp * w1).sum() + s.topk_logp.sum()).backward()
    h64, w64, b64 = (t.detach().to(D64).requires_grad_() for t in (h, w, bb))
    lp = ((h64 @ w64.t() + b64) / 0.8).log_softmax(-1)
    # the same top-K ids: bf16 logits tie or swap near-equal candidates that float64 logits order differently
    ((lp.gather(-1, y.unsqueeze(-1)).squeeze(-1) * w1.to(D64)).sum() + lp.gather(-1, s.topk_ids).sum()).backward()
    for got, want in ((h.grad, h64.grad), (w.grad, w64.grad), (bb.grad, b64.grad)):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.to(D64), want, atol=0.03 * want.abs().max().item(), rtol=0.03)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_token_stats_errors():
    x, y = torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))
    with pytest.raises(ValueError, match=r"logits must be \[B, T, V\]"):
        simko.token_stats(x[0], y)
    with pytest.raises(ValueError, match="tokens must have shape"):
        simko.token_stats(x, y[:, :2])
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 4\]"):
        simko.token_stats(x, y + 5)
    with pytest.raises(TypeError, match="integer tensor"):
        simko.token_stats(x, y.float())
    with pytest.raises(ValueError, match="top_k must be an int in"):
        simko.token_stats(x, y, top_k=6)
    with pytest.raises(ValueError, match="temperature must be"):
        simko.token_stats(x, y, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size must be"):
        simko.token_stats(x, y, chunk_size=0)
    with pytest.raises(ValueError, match=r"weight must be \[V, H\]"):
        simko.token_stats_from_hidden(x, torch.randn(5, 4), y)
    with pytest.raises(ValueError, match="bias must be"):
        simko.token_stats_from_hidden(x, torch.randn(7, 5), y, bias=torch.randn(6))


def test_policy_loss_errors():
    lp = torch.zeros(2, 3)
    m = torch.ones(2, 3, dtype=torch.bool)
    a = torch.ones(2)
    for kwargs, msg in [({"agg": "mean"}, "agg must be one of"), ({"gate": "x"}, "gate must be one of"),
                        ({"penalty": "x"}, "penalty must be one of"), ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
                        ({"lam": 0.0}, "lam must be > 0"), ({"tau": 1.2}, "tau must be a quantile"),
                        ({"clip_low": 1.0}, "clip_low"), ({"max_len": 0}, "max_len")]:
        with pytest.raises(ValueError, match=msg):
            simko.policy_loss(lp, lp, a, m, **kwargs)
    with pytest.raises(ValueError, match=r"advantages must be \[B\]"):
        simko.policy_loss(lp, lp, torch.ones(3), m)
    with pytest.raises(ValueError, match="old_logp and mask"):
        simko.policy_loss(lp, lp[:, :2], a, m)


# ---------------------------------------------------------------------------------------------------------------
# policy_loss: GRPO when SimKO is off


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
@pytest.mark.parametrize("per_token_adv", [False, True])
def test_alpha0_lam1_is_plain_clipped_surrogate(agg, per_token_adv):
    logits, tokens, mask, g = make_batch()
    mask[2] = False  # an empty response
    stats = simko.token_stats(logits, tokens, top_k=3)
    old = stats.logp + (torch.rand(stats.logp.shape, generator=g, dtype=D64) - 0.5) * 1.2
    adv = torch.randn(4, 24, generator=g, dtype=D64) if per_token_adv else torch.tensor([1.0, -0.5, 2.0, -1.5], dtype=D64)
    logp1 = stats.logp.detach().clone().requires_grad_()
    runs = [simko.policy_loss(logp1, old, adv, mask, stats, alpha=0.0, lam=1.0, agg=agg, max_len=30)[0],
            simko.policy_loss(logp1, old, adv, mask, None, agg=agg, max_len=30)[0]]
    logp2 = stats.logp.detach().clone().requires_grad_()
    ref = plain_clipped_surrogate(logp2, old, adv, mask, agg=agg, max_len=30)
    (g_ref,) = torch.autograd.grad(ref, logp2)
    for loss in runs:
        (g_got,) = torch.autograd.grad(loss, logp1)
        assert loss.item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-14)
        torch.testing.assert_close(g_got, g_ref, atol=1e-14, rtol=1e-12)
    assert g_ref.abs().sum() > 0 and (g_ref[mask] == 0).any()  # some tokens clipped, some not


def test_padding_garbage_never_leaks():
    lp = torch.tensor([[-1.0, math.inf], [-0.5, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.2, -math.inf], [-0.5, math.nan]])
    mask = torch.tensor([[True, False], [True, False]])
    adv = torch.tensor([[1.0, math.nan], [-1.0, math.inf]])
    for agg in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        loss, metrics = simko.policy_loss(lp, old, adv, mask, agg=agg)
        (g,) = torch.autograd.grad(loss, lp)
        assert torch.isfinite(loss) and torch.isfinite(g).all() and g[:, 1].eq(0).all()
        assert all(math.isfinite(v) for k, v in metrics.items() if k != "entropy")


def test_no_valid_tokens_gives_zero_loss_with_graph():
    lp = torch.zeros(2, 3, requires_grad=True)
    loss, metrics = simko.policy_loss(lp, lp.detach(), torch.ones(2), torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and lp.grad.eq(0).all() and metrics["gated_frac"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# policy_loss: the SimKO gradient against the formula, w.r.t. the logits


def simko_grad_reference(logits, tokens, old_logp, adv, mask, *, alpha, lam, tau, k, clip_low, clip_high, penalty):
    """dLoss/dlogits for agg="token_mean", written token by token from the module docstring's formula (float64)."""
    B, T, V = logits.shape
    p = logits.softmax(-1)
    lp = p.log()
    ent = -(p * lp).sum(-1)
    grad = torch.zeros_like(logits)
    n_valid = int(mask.sum())
    cats = set()
    for b in range(B):
        valid = [t for t in range(T) if mask[b, t]]
        thr = ref_quantile([ent[b, t].item() for t in valid], tau)
        for t in valid:
            y = tokens[b, t].item()
            order = torch.argsort(lp[b, t], descending=True)
            topk = order[:k].tolist()
            a = adv[b].item()
            ratio = math.exp(lp[b, t, y].item() - old_logp[b, t].item())
            gated = ent[b, t].item() > thr
            rank1 = lp[b, t, y].item() >= lp[b, t, order[0]].item()
            scale = 1.0  # d gamma~ / d gamma
            if gated and a < 0 and rank1:
                if penalty == "advantage":
                    a = lam * a
                else:
                    scale = lam
            rt = scale * ratio
            # max(-A r, -A clip(r)): the unclipped branch (and its gradient) is active iff
            active = (a > 0 and rt <= 1 + clip_high) or (a < 0 and rt >= 1 - clip_low)
            cats.add((a > 0, gated, active))
            if not active:
                continue
            coef = -a * scale * ratio / n_valid  # dL/dlogp(y) before the spread
            onehot = lambda i: torch.nn.functional.one_hot(torch.tensor(i), V).to(D64)
            d_y = onehot(y) - p[b, t]
            if gated and a > 0:
                d_top = sum(onehot(i) - p[b, t] for i in topk) / k
                grad[b, t] = coef * ((1 - alpha) * d_y + alpha * d_top)
            else:
                grad[b, t] = coef * d_y
    return grad, cats


@pytest.mark.parametrize("penalty", ["advantage", "ratio"])
@pytest.mark.parametrize("alpha,lam", [(0.3, 1.5), (1.0, 1.0), (0.0, 2.0)])
def test_simko_gradient_matches_formula(penalty, alpha, lam):
    logits, tokens, mask, g = make_batch(B=4, T=24, V=30, seed=5)
    logp0 = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    old = logp0 + (torch.rand(logp0.shape, generator=g, dtype=D64) - 0.5) * 1.0  # ratios in ~[0.6, 1.65]
    adv = torch.tensor([1.0, -0.7, 0.4, -1.3], dtype=D64)
    kw = dict(alpha=alpha, lam=lam, tau=0.6, clip_low=0.2, clip_high=0.28, penalty=penalty)
    x = logits.clone().requires_grad_()
    stats = simko.token_stats(x, tokens, top_k=3, chunk_size=11)
    loss, metrics = simko.policy_loss(stats.logp, old, adv, mask, stats, **kw)
    loss.backward()
    ref, cats = simko_grad_reference(logits, tokens, old, adv, mask, k=3, **kw)
    # every (sign, gated, clip-active) combination is exercised
    assert cats == {(s, gt, ac) for s in (True, False) for gt in (True, False) for ac in (True, False)}
    assert metrics["penalty_frac_of_gated"] > 0 and metrics["spread_frac_of_gated"] > 0
    torch.testing.assert_close(x.grad, ref, atol=1e-13, rtol=1e-10)


def test_simko_gradient_finite_differences():
    # Independent of the hand-written formula: finite differences of the whole pipeline (token_stats -> gate -> lam
    # penalty -> clip) w.r.t. the logits, in float64. alpha = 0 here because with alpha > 0 the gradient is, by
    # design (the stop-gradient), not the derivative of the loss value; that case is checked against the formula.
    logits, tokens, mask, g = make_batch(B=2, T=8, V=7, seed=9)
    old = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1) + 0.05
    adv = torch.tensor([1.0, -1.0], dtype=D64)

    def loss_of(x):
        s = simko.token_stats(x, tokens, top_k=2)
        return simko.policy_loss(s.logp, old, adv, mask, s, alpha=0.0, lam=1.3, tau=0.5)[0]

    assert torch.autograd.gradcheck(loss_of, (logits.clone().requires_grad_(),))


def test_loss_value_does_not_depend_on_alpha():
    logits, tokens, mask, g = make_batch(seed=6)
    stats = simko.token_stats(logits.clone().requires_grad_(), tokens, top_k=3)
    old = stats.logp.detach() + (torch.rand(stats.logp.shape, generator=g, dtype=D64) - 0.5)
    adv = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=D64)
    losses = [simko.policy_loss(stats.logp, old, adv, mask, stats, alpha=a)[0] for a in (0.0, 0.01, 0.5, 1.0)]
    for l in losses[1:]:
        assert l.item() == pytest.approx(losses[0].item(), rel=1e-14)
    g0 = torch.autograd.grad(losses[0], stats.topk_logp, retain_graph=True, allow_unused=True)[0]
    g1 = torch.autograd.grad(losses[2], stats.topk_logp, retain_graph=True)[0]
    assert (g0 is None or g0.abs().sum() == 0) and g1.abs().sum() > 0  # ... but its gradient does


def test_lam_scales_exactly_gated_rank1_tokens_of_negative_responses():
    logits, tokens, mask, g = make_batch(seed=7)
    stats = simko.token_stats(logits, tokens, top_k=3)
    old = stats.logp.detach().clone()  # ratio 1: nothing clipped, so lam is a pure multiplier
    adv = torch.tensor([-1.0, 1.0, -0.5, -2.0], dtype=D64)
    grads = []
    for lam in (1.0, 1.7):
        lp = stats.logp.detach().clone().requires_grad_()
        loss, m = simko.policy_loss(lp, old, adv, mask, stats, lam=lam, tau=0.8)
        grads.append(torch.autograd.grad(loss, lp)[0])
    ent = stats.entropy
    expect = torch.zeros_like(mask)
    for b in range(4):
        thr = ref_quantile(ent[b][mask[b]].tolist(), 0.8)
        expect[b] = mask[b] & (ent[b] > thr) & stats.is_rank1[b] & (adv[b] < 0)
    assert expect.sum() >= 3 and (expect[1] == 0).all()
    torch.testing.assert_close(grads[1][expect], 1.7 * grads[0][expect], rtol=1e-14, atol=0)
    torch.testing.assert_close(grads[1][~expect], grads[0][~expect], rtol=0, atol=0)
    n_gated = sum(int((mask[b] & (ent[b] > ref_quantile(ent[b][mask[b]].tolist(), 0.8))).sum()) for b in range(4))
    assert m["penalty_frac_of_gated"] == pytest.approx(int(expect.sum()) / n_gated)


def test_ratio_penalty_moves_the_clip():
    # penalty="ratio": lam * gamma inside the clip. A < 0 and gamma = 1.25 (within the clip), lam = 1.1 -> the
    # token loss is -A * 1.375, not clipped; and with clip_high tight the value is lam * gamma, not lam * clip.
    logits = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], dtype=D64)
    tokens = torch.tensor([[0, 0]])
    stats = simko.token_stats(logits, tokens, top_k=2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    old = stats.logp - math.log(1.25)
    kw = dict(gate="absolute", tau=0.5, lam=1.1, clip_low=0.2, clip_high=0.28)
    # only position 0 is peaked -> low entropy, position 1 uniform -> gated, is_rank1 (tie)
    assert stats.entropy[0, 0] < 0.5 < stats.entropy[0, 1] and stats.is_rank1.all()
    loss_r, _ = simko.policy_loss(stats.logp, old, torch.tensor([-1.0]), mask, stats, penalty="ratio", **kw)
    loss_a, _ = simko.policy_loss(stats.logp, old, torch.tensor([-1.0]), mask, stats, penalty="advantage", **kw)
    assert loss_r.item() == pytest.approx((1.25 + 1.1 * 1.25) / 2, rel=1e-12)
    assert loss_a.item() == pytest.approx((1.25 + 1.1 * 1.25) / 2, rel=1e-12)  # inside the clip: they agree
    old2 = stats.logp - math.log(0.75)  # gamma = 0.75 < 0.8: clipped for A < 0; lam * gamma = 0.825 is not
    loss_r2, _ = simko.policy_loss(stats.logp, old2, torch.tensor([-1.0]), mask, stats, penalty="ratio", **kw)
    loss_a2, _ = simko.policy_loss(stats.logp, old2, torch.tensor([-1.0]), mask, stats, penalty="advantage", **kw)
    assert loss_r2.item() == pytest.approx((0.8 + 0.825) / 2, rel=1e-12)
    assert loss_a2.item() == pytest.approx((0.8 + 1.1 * 0.8) / 2, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# The gate


@pytest.mark.parametrize("tau", [0.8, 0.5, 0.0, 1.0])
def test_row_quantile_gate_fraction(tau):
    g = torch.Generator().manual_seed(8)
    B, T = 3, 101
    lengths = [101, 40, 7]
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    ent = torch.rand(B, T, generator=g, dtype=D64) * 3  # distinct entropies
    ent = torch.where(mask, ent, 100.0)  # padding has huge entropy: must be ignored
    stats = simko.TokenStats(torch.zeros(B, T, dtype=D64), ent, torch.zeros(B, T, 2, dtype=D64),
                             torch.zeros(B, T, 2, dtype=torch.long), torch.ones(B, T, dtype=torch.bool))
    _, m = simko.policy_loss(torch.zeros(B, T, dtype=D64), torch.zeros(B, T, dtype=D64), torch.ones(B, dtype=D64),
                             mask, stats, tau=tau)
    # With n distinct values, "strictly above the linear-interpolation quantile" keeps n - 1 - floor(tau (n - 1)).
    expected = [n - 1 - math.floor(tau * (n - 1)) for n in lengths]
    assert m["gated_frac"] == pytest.approx(sum(expected) / sum(lengths), rel=1e-12)
    if tau == 0.8:
        assert expected[0] / lengths[0] == pytest.approx(0.2, abs=0.01)  # about 1 - tau of every response


def test_batch_quantile_and_absolute_gates():
    logits, tokens, mask, g = make_batch(seed=10)
    stats = simko.token_stats(logits, tokens, top_k=3)
    ent = stats.entropy
    lp = stats.logp.detach()
    adv = torch.ones(4, dtype=D64)
    thr = ref_quantile(ent[mask].tolist(), 0.7)
    _, m = simko.policy_loss(lp, lp, adv, mask, stats, gate="batch_quantile", tau=0.7)
    assert m["gated_frac"] == pytest.approx(float((ent[mask] > thr).double().mean()), rel=1e-12)
    _, m = simko.policy_loss(lp, lp, adv, mask, stats, gate="absolute", tau=1.5)
    assert m["gated_frac"] == pytest.approx(float((ent[mask] > 1.5).double().mean()), rel=1e-12)
    assert 0 < m["gated_frac"] < 1 and m["spread_frac_of_gated"] == 1.0
    assert "entropy" not in m  # the caller has stats.entropy; one quantity, one name


def test_metrics_clip_fractions():
    lp = torch.zeros(1, 6, dtype=D64)
    old = -torch.log(torch.tensor([[0.5, 0.9, 1.0, 1.2, 1.5, 2.0]], dtype=D64))  # ratios
    adv = torch.tensor([[-1.0, -1.0, 1.0, 1.0, 1.0, -1.0]], dtype=D64)
    mask = torch.ones(1, 6, dtype=torch.bool)
    _, m = simko.policy_loss(lp, old, adv, mask)
    assert m["clip_frac_low"] == pytest.approx(1 / 6) and m["clip_frac_high"] == pytest.approx(1 / 6)
    assert m["ratio_mean"] == pytest.approx((0.5 + 0.9 + 1.0 + 1.2 + 1.5 + 2.0) / 6)
    assert m["gated_frac"] == 0.0 and m["spread_frac_of_gated"] == 0.0 and m["penalty_frac_of_gated"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# concentration, and the behaviour SimKO exists for


def test_concentration_values():
    probs = torch.tensor([[[0.6, 0.3, 0.1], [0.5, 0.25, 0.25], [0.9, 0.05, 0.05]]], dtype=D64)
    mask = torch.tensor([[True, True, False]])
    c = simko.concentration(probs.log(), mask)
    assert c["prob"] == pytest.approx([0.55, 0.275, 0.175])
    assert c["logp"] == pytest.approx([(math.log(0.6) + math.log(0.5)) / 2, (math.log(0.3) + math.log(0.25)) / 2,
                                       (math.log(0.1) + math.log(0.25)) / 2])
    empty = simko.concentration(probs.log(), torch.zeros(1, 3, dtype=torch.bool))
    assert all(math.isnan(x) for x in empty["prob"] + empty["logp"])


def test_simko_keeps_top1_lower_than_grpo():
    # A toy policy: 32 independent positions over 12 tokens, always rewarded for its sampled token (A = +1). GRPO's
    # push piles mass onto whatever it samples; SimKO spreads a share alpha of the push over the top-3.
    def train(alpha):
        torch.manual_seed(0)
        logits = (torch.randn(1, 32, 12, dtype=D64) * 0.5).requires_grad_()
        opt = torch.optim.SGD([logits], lr=32.0)  # token_mean divides by 32 positions
        mask = torch.ones(1, 32, dtype=torch.bool)
        for _ in range(40):
            with torch.no_grad():
                tokens = logits.softmax(-1).argmax(-1)  # "sampled" = rank-1, the concentrating case
            s = simko.token_stats(logits, tokens, top_k=3)
            loss, _ = simko.policy_loss(s.logp, s.logp.detach(), torch.ones(1, dtype=D64), mask, s, alpha=alpha,
                                        gate="absolute", tau=0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return simko.concentration(simko.token_stats(logits.detach(), tokens, top_k=3).topk_logp, mask)["prob"]

    grpo, simko_ = train(0.0), train(0.5)
    assert grpo[0] > 0.9 and simko_[0] < grpo[0] - 0.2 and simko_[1] > grpo[1]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_from_hidden_matches_float64_reference(dtype):
    g = torch.Generator().manual_seed(14)
    h = torch.randn(2, 300, 64, generator=g)
    w = torch.randn(5000, 64, generator=g) * 0.2
    y = torch.randint(0, 5000, (2, 300), generator=g)
    hc, wc = h.cuda().to(dtype).requires_grad_(), w.cuda().to(dtype).requires_grad_()
    s = simko.token_stats_from_hidden(hc, wc, y.cuda(), top_k=3, chunk_size=128)
    (s.logp.sum() + s.topk_logp.sum()).backward()
    h64, w64 = hc.detach().cpu().to(D64).requires_grad_(), wc.detach().cpu().to(D64).requires_grad_()
    lp = (h64 @ w64.t()).log_softmax(-1)
    (lp.gather(-1, y.unsqueeze(-1)).sum() + lp.gather(-1, s.topk_ids.cpu()).sum()).backward()
    tol = 1e-3 if dtype == torch.float32 else 0.05
    torch.testing.assert_close(s.logp.cpu().to(D64), lp.gather(-1, y.unsqueeze(-1)).squeeze(-1).detach(),
                               atol=tol * 10, rtol=tol)
    for got, want in ((hc.grad, h64.grad), (wc.grad, w64.grad)):
        torch.testing.assert_close(got.cpu().to(D64), want, atol=tol * want.abs().max().item(), rtol=tol)


@pytest.mark.slow
def test_benchmark_script_runs_and_methods_agree():
    # Smoke test of benchmarks/bench_simko.py at a toy size: every method runs, and all agree with the naive one.
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "bench_simko.py"), "--vocab", "500",
                        "--hidden", "16", "--tokens", "40", "--chunk-size", "16", "--repeats", "1", "--threads", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if not line.startswith(("#", "method"))}
    assert set(rows) == {"naive", "official", "logits", "fused"}
    assert all(float(row[-1]) < 1e-4 for row in rows.values())  # max rel diff vs naive


def test_public_choice_tuples_are_what_policy_loss_accepts():
    assert simko.GATES[0] == "row_quantile" and simko.AGGREGATIONS[0] == "token_mean"
    assert simko.PENALTIES[0] == "advantage"
    logp = torch.zeros(2, 3, requires_grad=True)
    stats = simko.token_stats(torch.randn(2, 3, 7), torch.zeros(2, 3, dtype=torch.long))
    mask = torch.ones(2, 3, dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0])
    for key, values in (("gate", simko.GATES), ("agg", simko.AGGREGATIONS), ("penalty", simko.PENALTIES)):
        for value in values:
            simko.policy_loss(logp, logp.detach(), adv, mask, stats, alpha=0.01, lam=1.1, **{key: value})
        with pytest.raises(ValueError, match=key):
            simko.policy_loss(logp, logp.detach(), adv, mask, stats, **{key: "nope"})


# ---------------------------------------------------------------------------------------------------------------
# The readable reference, the API's defaults, the metric names


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_reference_stats_match_naive_and_chunked(temperature):
    logits, tokens, mask, g = make_batch(seed=11)
    ref = simko.token_stats_reference(logits, tokens, top_k=4, temperature=temperature)
    for got, want in zip(ref, naive_stats(logits, tokens, 4, temperature)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    a = simko.token_stats_reference(x1, tokens, top_k=4, temperature=temperature)
    b = simko.token_stats(x2, tokens, top_k=4, chunk_size=7, temperature=temperature)
    for name in a._fields:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12, msg=name)
    w1, w2 = torch.randn(a.logp.shape, generator=g, dtype=D64), torch.randn(a.topk_logp.shape, generator=g, dtype=D64)
    ((a.logp * w1).sum() + (a.topk_logp * w2).sum()).backward()
    ((b.logp * w1).sum() + (b.topk_logp * w2).sum()).backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)
    assert not a.entropy.requires_grad


def test_stats_given_means_simko_at_the_paper_values():
    # The API choice: with stats, policy_loss IS SimKO (alpha = 0.01, lam = 1.1) unless told otherwise.
    logits, tokens, mask, g = make_batch(seed=12)
    old = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1) + 0.1
    adv = torch.tensor([1.0, -0.7, 0.4, -1.3], dtype=D64)

    def grad_of(**kw):
        x = logits.clone().requires_grad_()
        s = simko.token_stats(x, tokens, top_k=3)
        loss, m = simko.policy_loss(s.logp, old, adv, mask, s, **kw)
        loss.backward()
        return loss.item(), x.grad, m

    v_default, g_default, m = grad_of()
    v_paper, g_paper, _ = grad_of(alpha=simko.PAPER_ALPHA, lam=simko.PAPER_LAMBDA, tau=simko.PAPER_TAU)
    v_grpo, g_grpo, _ = grad_of(alpha=0.0, lam=1.0)
    assert (simko.PAPER_ALPHA, simko.PAPER_LAMBDA, simko.PAPER_TAU, simko.PAPER_TOP_K) == (0.01, 1.1, 0.8, 3)
    assert v_default == v_paper and torch.equal(g_default, g_paper)
    assert m["spread_frac_of_gated"] > 0 and m["penalty_frac_of_gated"] > 0
    assert (g_default - g_grpo).abs().max() > 1e-4  # SimKO really changes the gradient
    plain = plain_clipped_surrogate(logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1), old, adv,
                                    mask)
    assert v_grpo == pytest.approx(plain.item(), rel=1e-12)
    # Without stats it is GRPO, and SimKO's knobs are refused rather than silently ignored.
    lp = torch.zeros(2, 3)
    m2 = torch.ones(2, 3, dtype=torch.bool)
    simko.policy_loss(lp, lp, torch.ones(2), m2, None, alpha=0.0, lam=1.0)  # explicit "off" is fine
    for kw in ({"alpha": 0.01}, {"lam": 1.1}):
        with pytest.raises(ValueError, match="need stats="):
            simko.policy_loss(lp, lp, torch.ones(2), m2, None, **kw)


def test_every_metric_is_documented():
    lp = torch.zeros(2, 3)
    _, m = simko.policy_loss(lp, lp, torch.ones(2), torch.ones(2, 3, dtype=torch.bool))
    assert set(m) == {"clip_frac_low", "clip_frac_high", "ratio_mean", "gated_frac", "spread_frac_of_gated",
                      "penalty_frac_of_gated"}
    for key in m:
        assert f"\n        {key} " in simko.policy_loss.__doc__


# ---------------------------------------------------------------------------------------------------------------
# The analysis baselines (PSR, NSR, W-REINFORCE), the spread condition, the paper constants


def test_sample_advantages_definitions():
    c = torch.tensor([True, False, True, False])
    assert simko.sample_advantages(c, "psr").tolist() == [1.0, 0.0, 1.0, 0.0]
    assert simko.sample_advantages(c, "nsr").tolist() == [0.0, -1.0, 0.0, -1.0]
    assert simko.sample_advantages(c, "w_reinforce").tolist() == pytest.approx([0.1, -1.0, 0.1, -1.0])
    assert simko.sample_advantages(c.long(), "w_reinforce", weight=0.5).tolist() == [0.5, -1.0, 0.5, -1.0]
    with pytest.raises(ValueError, match="loss must be one of"):
        simko.sample_advantages(c, "clip")
    with pytest.raises(ValueError, match="correct must be \\[B\\]"):
        simko.sample_advantages(c.view(2, 2), "psr")
    with pytest.raises(ValueError, match="weight"):
        simko.sample_advantages(c, "w_reinforce", weight=-1.0)


@pytest.mark.parametrize("loss,a_correct,a_wrong,n", [("psr", 1.0, 0.0, 3), ("nsr", 0.0, -1.0, 2),
                                                       ("w_reinforce", 0.1, -1.0, 5)])
def test_psr_nsr_w_reinforce_loss_by_hand(loss, a_correct, a_wrong, n):
    # 2 responses x 3 tokens, response 0 correct, the last token of response 1 (wrong) is padding. Ratios inside the
    # clip range: loss = -(1 / n) sum_t A_b gamma_bt, d loss / d logp_bt = -(1 / n) A_b gamma_bt, where n counts the
    # tokens of the responses the loss keeps (Zhu et al.'s code cuts the batch first): PSR the correct one's 3, NSR
    # the wrong one's 2, W-REINFORCE all 5.
    old = torch.zeros(2, 3, dtype=D64)
    delta = torch.tensor([[0.05, -0.1, 0.02], [0.1, -0.03, 9.0]], dtype=D64)
    logp = (old + delta).requires_grad_()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    correct = torch.tensor([True, False])
    value, _ = simko.policy_loss(logp, old, None, mask, loss=loss, correct=correct)
    value.backward()
    g = delta.exp()
    a = [a_correct, a_wrong]
    want_value = -(a[0] * g[0].sum() + a[1] * g[1, :2].sum()) / n
    assert value.item() == pytest.approx(want_value.item(), rel=1e-12, abs=1e-15)
    want_grad = torch.tensor([[-a[0] * g[0, t].item() / n for t in range(3)],
                              [-a[1] * g[1, 0].item() / n, -a[1] * g[1, 1].item() / n, 0.0]], dtype=D64)
    torch.testing.assert_close(logp.grad, want_grad, rtol=1e-12, atol=1e-15)
    # and it is the clipped loss of those advantages over the kept responses, exactly
    keep = {"psr": correct, "nsr": ~correct, "w_reinforce": torch.ones(2, dtype=torch.bool)}[loss]
    plain = plain_clipped_surrogate(logp.detach(), old, torch.tensor(a, dtype=D64), mask & keep.unsqueeze(1))
    assert value.item() == pytest.approx(plain.item(), rel=1e-12, abs=1e-15)


def test_psr_clips_like_the_official_code():
    # Outside the clip range the gradient stops (the official code feeds these advantages to the same clipped loss).
    old = torch.zeros(1, 2, dtype=D64)
    logp = torch.tensor([[0.5, 0.0]], dtype=D64, requires_grad=True)       # gamma = e^0.5 > 1.2
    value, m = simko.policy_loss(logp, old, None, torch.ones(1, 2, dtype=torch.bool), loss="psr",
                                 correct=torch.tensor([True]), clip_low=0.2, clip_high=0.2)
    value.backward()
    assert value.item() == pytest.approx(-(1.2 + 1.0) / 2, rel=1e-12)
    assert logp.grad.tolist() == [[0.0, -0.5]] and m["clip_frac_high"] == 0.5


def test_loss_option_errors():
    lp = torch.zeros(2, 3)
    m = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="loss must be one of"):
        simko.policy_loss(lp, lp, torch.ones(2), m, loss="reinforce")
    with pytest.raises(ValueError, match="need correct="):
        simko.policy_loss(lp, lp, None, m, loss="nsr")
    with pytest.raises(ValueError, match="pass advantages=None"):
        simko.policy_loss(lp, lp, torch.ones(2), m, loss="nsr", correct=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs advantages"):
        simko.policy_loss(lp, lp, None, m)
    with pytest.raises(ValueError, match="spread_on must be one of"):
        simko.policy_loss(lp, lp, torch.ones(2), m, spread_on="reward")
    with pytest.raises(ValueError, match="need correct="):
        simko.policy_loss(lp, lp, torch.ones(2), m, spread_on="correct")
    assert simko.LOSSES == ("clip", "psr", "nsr", "w_reinforce") and simko.SPREAD_ON == ("advantage", "correct")


def test_spread_on_correct_vs_advantage_under_passk_full_sampling():
    # Pass@k full sampling, k = 2: responses (0, 1) form a successful group, (2, 3) a failed one. Response 1 is
    # wrong but gets A > 0. The top-K spread is the only path by which the loss reaches topk_logp, so its gradient
    # there shows who got the spread: under "advantage" responses 0 and 1, under "correct" (official) only 0.
    import passk_at_k
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    adv = passk_at_k.passk_advantages_full(rewards, 2)[0].double()
    assert adv.tolist() == pytest.approx([1.0, 1.0, -1.0, -1.0]) and rewards[0, 1] == 0
    correct = rewards[0] > 0.5
    B, T, V = 4, 5, 9
    logits = torch.randn(B, T, V, generator=torch.Generator().manual_seed(0), dtype=D64)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(B, T, dtype=torch.bool)

    def spread_rows(spread_on):
        x = logits.clone()
        s = simko.token_stats_reference(x, tokens, top_k=3)
        topk = s.topk_logp.detach().requires_grad_()
        s = s._replace(topk_logp=topk)
        loss, m = simko.policy_loss(s.logp.detach(), s.logp.detach(), adv, mask, s, tau=0.0, gate="absolute",
                                    lam=1.0, spread_on=spread_on, correct=correct)
        loss.backward()
        # every token is gated (absolute threshold 0); the gradient w.r.t. each top-K log-prob of a spread token is
        # -(A / n_tokens) * alpha * gamma / K with gamma = 1.
        return topk.grad, m

    g_adv, m_adv = spread_rows("advantage")
    g_cor, m_cor = spread_rows("correct")
    per = -simko.PAPER_ALPHA / 3 / (B * T)
    torch.testing.assert_close(g_adv[:2], torch.full((2, T, 3), per, dtype=D64), rtol=1e-12, atol=0)
    assert (g_adv[2:] == 0).all()
    torch.testing.assert_close(g_cor[0], torch.full((T, 3), per, dtype=D64), rtol=1e-12, atol=0)
    assert (g_cor[1:] == 0).all()
    assert m_adv["spread_frac_of_gated"] == 0.5 and m_cor["spread_frac_of_gated"] == 0.25


def test_paper_constants():
    assert simko.PAPER_CLIP == (0.2, 0.2)                    # official ppo_trainer.yaml clip_ratio: 0.2
    assert simko.PAPER_W_REINFORCE_WEIGHT == 0.1
    import passk_at_k
    assert passk_at_k.PAPER_CLIP == (0.2, 0.28)
    assert (simko.PAPER_LR, simko.PAPER_N, simko.PAPER_PROMPT_BATCH, simko.PAPER_MINI_BATCH) == (1e-6, 8, 1024, 256)
    assert (passk_at_k.PAPER_LR, passk_at_k.PAPER_WARMUP_STEPS, passk_at_k.PAPER_N) == (1e-6, 10, 32)
    assert (passk_at_k.PAPER_EVAL_TEMPERATURE, passk_at_k.PAPER_EVAL_TOP_P) == (1.0, 0.95)
    # the symmetric clip is what policy_loss applies when passed
    old = torch.zeros(1, 1, dtype=D64)
    lp = torch.tensor([[0.25]], dtype=D64)
    v, _ = simko.policy_loss(lp, old, torch.ones(1, dtype=D64), torch.ones(1, 1, dtype=torch.bool),
                             clip_low=simko.PAPER_CLIP[0], clip_high=simko.PAPER_CLIP[1])
    assert v.item() == pytest.approx(-1.2)
