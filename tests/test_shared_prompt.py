"""rollout.response_forward: one prompt forward per distinct prompt gives the plain forward's log-probs and gradients.

The plain forward runs every row's prompt + response; the shared one runs each distinct prompt once and its
responses over the copied KV cache. The same sums are then split over other matrix shapes, so the numbers agree to
float rounding, not bit for bit: in float32 the log-probs within 2e-5 (absolute) and every parameter gradient within
1e-4 of its largest entry (relative to the gradient's max-norm), the same bounds as the rollout's cached decode.
In float64 the log-probs agree to 1e-12, which shows that the difference is rounding only; the gradients there
agree to 1e-6 only, because Llama's RMSNorm computes in float32 whatever the model's dtype, so the backward rounds
the float64 difference to float32.
"""
import pytest
import torch

import countdown
import rollout
import simko

from conftest import save_tiny_chat_llama


def _countdown_model(dtype=torch.float32):
    tokenizer = countdown.build_tokenizer()
    model = countdown.build_model(tokenizer, hidden=32, layers=2, heads=2, seed=3).to(dtype)
    return model, tokenizer


@pytest.fixture(scope="module")
def chat_llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = save_tiny_chat_llama(tmp_path_factory.mktemp("chat"))
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def _batch(model, tokenizer, prompts, G, max_new_tokens=7, seed=0):
    """A rollout batch: prompts of different lengths (left padding), G responses each, some ended early."""
    g = torch.Generator().manual_seed(seed)
    ro = rollout.rollout(model.eval(), tokenizer, prompts, G, max_new_tokens=max_new_tokens, generator=g)
    assert ro.response_mask.sum(1).min() < ro.response_mask.shape[1]     # some row ended: right padding too
    assert (ro.attention_mask[:, 0] == 0).any()                          # some prompt is left-padded
    return ro


def _plain(model, ids, mask, P, hidden):
    """train.py's plain forward: every row whole, positions from the mask; outputs at columns [P-1, P+R-1)."""
    pos = rollout.position_ids(mask)
    if hidden:
        base = getattr(model, model.base_model_prefix)
        return base(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False
                    ).last_hidden_state[:, P - 1:-1]
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, P - 1:-1]


def _logp_and_grads(model, ro, rows, shared, hidden):
    """The response log-probs [b, R] of `rows` and the parameter gradients of a loss that weighs every token."""
    model.train()
    model.zero_grad(set_to_none=True)
    ids, mask, P = ro.input_ids[rows], ro.attention_mask[rows], ro.prompt_len
    tokens = ids[:, P:]
    out = (rollout.response_forward(model, ids, mask, P, hidden=hidden) if shared else _plain(model, ids, mask, P, hidden))
    if hidden:
        stats = simko.token_stats_from_hidden(out, model.get_output_embeddings().weight, tokens)
    else:
        stats = simko.token_stats(out, tokens)
    m = ro.response_mask[rows]
    # distinct weights per token, so that a gradient summed from the wrong rows or positions cannot pass
    w = torch.arange(1, m.numel() + 1, dtype=stats.logp.dtype).view_as(m) / m.numel()
    ((stats.logp * m * w).sum() + (stats.topk_logp[..., 0] * m).sum() * 0.1).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.eval()
    return (stats.logp * m).detach(), grads


def _assert_close(a, b, atol, grad_rtol):
    (logp_a, grads_a), (logp_b, grads_b) = a, b
    torch.testing.assert_close(logp_a, logp_b, atol=atol, rtol=0)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 5
    for name in grads_a:
        scale = grads_b[name].abs().max()
        assert scale > 0, name
        err = (grads_a[name] - grads_b[name]).abs().max() / scale
        assert err < grad_rtol, f"{name}: max |shared - plain| / max |plain| = {err:.2e}"


# rows: all of them; a partial selection (the zero-advantage skip) that drops whole groups and parts of groups
SELECTIONS = {"all": None, "partial": [0, 2, 3, 6, 7, 10, 11]}


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("hidden", [False, True])
def test_chat_llama_logp_and_grads_equal_the_plain_forward(chat_llama, selection, hidden):
    model, tokenizer = chat_llama
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": c}], tokenize=False,
                                             add_generation_prompt=True) for c in ("12+7=?", "3*4", "100-58=?")]
    ro = _batch(model, tokenizer, prompts, G=4)
    rows = torch.arange(ro.input_ids.shape[0]) if SELECTIONS[selection] is None else torch.tensor(SELECTIONS[selection])
    _assert_close(_logp_and_grads(model, ro, rows, True, hidden), _logp_and_grads(model, ro, rows, False, hidden),
                  atol=2e-5, grad_rtol=1e-4)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("selection", SELECTIONS)
def test_countdown_model_logp_and_grads_equal_the_plain_forward(selection, attention):
    model, tokenizer = _countdown_model()
    model.set_attn_implementation(attention)
    ro = _batch(model, tokenizer, ["3,7,4>25:", "5>", "1,2,3>6:"], G=4, max_new_tokens=9)
    rows = torch.arange(ro.input_ids.shape[0]) if SELECTIONS[selection] is None else torch.tensor(SELECTIONS[selection])
    _assert_close(_logp_and_grads(model, ro, rows, True, False), _logp_and_grads(model, ro, rows, False, False),
                  atol=2e-5, grad_rtol=1e-4)


@pytest.mark.parametrize("hidden", [False, True])
def test_in_float64_the_difference_is_rounding_only(hidden):
    model, tokenizer = _countdown_model(torch.float64)
    ro = _batch(model, tokenizer, ["3,7,4>25:", "5>", "1,2,3>6:"], G=4, max_new_tokens=9)
    rows = torch.tensor(SELECTIONS["partial"])
    _assert_close(_logp_and_grads(model, ro, rows, True, hidden), _logp_and_grads(model, ro, rows, False, hidden),
                  atol=1e-12, grad_rtol=1e-6)


def test_wrong_sharing_is_detected():
    # The check above can fail: two groups whose prompts differ in one token give other log-probs and gradients when
    # one of them is (wrongly) forwarded with the other's prompt.
    model, tokenizer = _countdown_model(torch.float64)
    ro = rollout.rollout(model.eval(), tokenizer, ["3,7,4>25:", "3,7,4>26:"], 3, max_new_tokens=9,
                   generator=torch.Generator().manual_seed(0))
    swapped = ro._replace(input_ids=torch.cat([ro.input_ids[:, :ro.prompt_len].flip(0),
                                               ro.input_ids[:, ro.prompt_len:]], 1))
    rows = torch.arange(6)
    with pytest.raises(AssertionError):
        _assert_close(_logp_and_grads(model, swapped, rows, True, False),
                      _logp_and_grads(model, ro, rows, False, False), atol=1e-6, grad_rtol=1e-6)


def _fed(ro, i):
    """Row i's real tokens up to its last response token (exclusive): what the plain forward needs outputs of."""
    P, n = ro.prompt_len, int(ro.response_mask[i].sum())
    return ro.input_ids[i, :P][ro.attention_mask[i, :P].bool()].tolist() + ro.input_ids[i, P:P + n - 1].tolist()


@pytest.mark.parametrize("max_tokens, sequences", [(2048, 1), (30, 3)])
def test_every_distinct_prefix_is_forwarded_once_and_no_padding(max_tokens, sequences):
    model, tokenizer = _countdown_model()
    ro = _batch(model, tokenizer, ["3,7,4>25:", "5>", "3,7,4>2:"], G=4, max_new_tokens=9)
    rows = [0, 1, 5, 6, 8, 9]
    seen = []
    hook = model.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"]),
                                                 with_kwargs=True)
    try:
        with torch.no_grad():
            out = rollout.response_forward(model.eval(), ro.input_ids[rows], ro.attention_mask[rows], ro.prompt_len,
                                     max_tokens=max_tokens)
    finally:
        hook.remove()
    with torch.no_grad():
        plain = _plain(model, ro.input_ids[rows], ro.attention_mask[rows], ro.prompt_len, hidden=False)
    R_ = ro.input_ids.shape[1] - ro.prompt_len
    assert out.shape == (6, R_, len(tokenizer))
    # one forward; per packed sequence, one token per distinct prefix of its rows (prompts 0 and 2 share "3,7,4>2")
    (fed,) = seen
    assert fed.shape[0] == sequences
    if sequences == 1:
        prefixes = {tuple(_fed(ro, i)[:d + 1]) for i in rows for d in range(len(_fed(ro, i)))}
        assert fed.shape[1] == len(prefixes) < sum(len(_fed(ro, i)) for i in rows)
    # a row's padding positions hold zeros, its real ones the plain forward's outputs
    valid = ro.response_mask[rows].bool()
    assert (out[~valid] == 0).all()
    torch.testing.assert_close(out[valid], plain[valid], atol=2e-5, rtol=0)


def test_one_response_token_and_bad_shapes():
    model, tokenizer = _countdown_model()
    ids, mask = rollout.encode_prompts(tokenizer, ["3,7,4>25:", "5>"])
    ids = torch.cat([ids, torch.tensor([[5], [6]])], 1)
    mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
    P = ids.shape[1] - 1
    with torch.no_grad():
        out = rollout.response_forward(model.eval(), ids, mask, P)
        plain = _plain(model, ids, mask, P, hidden=False)
    assert out.shape == (2, 1, len(tokenizer))
    torch.testing.assert_close(out, plain, atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="prompt_len"):
        rollout.response_forward(model, ids, mask, ids.shape[1])
    with pytest.raises(ValueError, match="attention_mask"):
        rollout.response_forward(model, ids, mask[:, 1:], P)
    holey = torch.cat([mask[:, :P], torch.tensor([[0, 1], [1, 1]])], 1)   # row 0's response starts with a hole
    with pytest.raises(ValueError, match="first n >= 1 response tokens"):
        rollout.response_forward(model, torch.cat([ids, ids[:, -1:]], 1), holey, P)
