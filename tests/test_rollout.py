"""rollout.py: the sampled log-probs are the policy's, padding does not leak, EOS ends a response."""
import math

import pytest
import torch

import countdown
import rollout as R


@pytest.fixture(scope="module")
def tiny():
    tokenizer = countdown.build_tokenizer()
    model = countdown.build_model(tokenizer, hidden=32, layers=2, heads=2, seed=3).eval()
    return model, tokenizer


PROMPTS = ["3,7,4>25:", "1,2,3>6:", "9,12,9>27:", "5>"]   # different lengths: left padding matters


def _forward_logp(model, ids, temperature):
    """log pi(token_t | tokens_<t) of every token after the first, for ONE unpadded row."""
    logits = model(input_ids=ids[None]).logits[0, :-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, ids[1:, None]).squeeze(-1), logits


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logp_and_entropy_equal_unpadded_teacher_forced_forward(tiny, temperature):
    model, tokenizer = tiny
    g = torch.Generator().manual_seed(0)
    ro = R.rollout(model, tokenizer, PROMPTS, 3, max_new_tokens=10, temperature=temperature, generator=g)
    assert ro.input_ids.shape[0] == len(PROMPTS) * 3
    checked = 0
    for row in range(ro.input_ids.shape[0]):
        real = ro.attention_mask[row].bool()
        ids = ro.input_ids[row][real]                          # the row alone: no padding at all
        n_resp = int(ro.response_mask[row].sum())
        with torch.no_grad():
            logp, logits = _forward_logp(model, ids, temperature)
        ref_logp = logp[-n_resp:]
        ref_entropy = -(logits.log_softmax(-1).exp() * logits.log_softmax(-1)).sum(-1)[-n_resp:]
        torch.testing.assert_close(ro.logp[row, :n_resp], ref_logp, atol=2e-5, rtol=0)
        torch.testing.assert_close(ro.entropy[row, :n_resp], ref_entropy, atol=2e-5, rtol=0)
        assert (ro.logp[row, n_resp:] == 0).all() and (ro.entropy[row, n_resp:] == 0).all()
        checked += n_resp
    assert checked > 20


def test_padded_batch_forward_with_position_ids_matches(tiny):
    # The batched teacher-forced forward that train.py runs (left padding + position_ids) gives the same numbers.
    model, tokenizer = tiny
    ro = R.rollout(model, tokenizer, PROMPTS, 2, max_new_tokens=8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=ro.input_ids, attention_mask=ro.attention_mask,
                       position_ids=R.position_ids(ro.attention_mask)).logits
    P = ro.prompt_len
    logp = torch.log_softmax(logits[:, P - 1:-1].float(), -1).gather(-1, ro.input_ids[:, P:, None]).squeeze(-1)
    torch.testing.assert_close(logp * ro.response_mask, ro.logp, atol=2e-5, rtol=0)


def test_eos_ends_each_response_and_padding_follows(tiny):
    model, tokenizer = tiny
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ro = R.rollout(model, tokenizer, PROMPTS * 8, 4, max_new_tokens=12, generator=torch.Generator().manual_seed(2))
    resp = ro.input_ids[:, ro.prompt_len:]
    ended = 0
    for row in range(resp.shape[0]):
        n = int(ro.response_mask[row].sum())
        m = ro.response_mask[row]
        assert (m[:n] == 1).all() and (m[n:] == 0).all()                  # a contiguous prefix
        assert (resp[row, n:] == pad).all()
        assert (resp[row, :n - 1] != eos).all()                           # no EOS before the last real token
        if ro.truncated[row]:
            assert n == 12 and resp[row, n - 1] != eos
        else:
            assert resp[row, n - 1] == eos
            ended += 1
        assert "<eos>" not in ro.texts[row] and "<pad>" not in ro.texts[row]
        assert ro.texts[row] == tokenizer.decode(resp[row, :n - (0 if ro.truncated[row] else 1)].tolist(),
                                              skip_special_tokens=True)
    assert 0 < ended < resp.shape[0]                                       # both cases were exercised
    assert (ro.attention_mask[:, ro.prompt_len:] == ro.response_mask.long()).all()


def test_stops_early_when_every_row_has_ended(tiny):
    model, tokenizer = tiny
    model = countdown.build_model(tokenizer, hidden=32, layers=2, heads=2, seed=3).eval()
    with torch.no_grad():                       # make EOS overwhelmingly likely: every row stops at step 1
        model.lm_head = torch.nn.Linear(32, len(tokenizer), bias=True)
        model.lm_head.weight.data.zero_()
        model.lm_head.bias.data.fill_(-30.0)
        model.lm_head.bias.data[tokenizer.eos_token_id] = 30.0
    ro = R.rollout(model, tokenizer, PROMPTS, 2, max_new_tokens=12)
    assert ro.response_mask.shape == (8, 1)
    assert (ro.input_ids[:, -1] == tokenizer.eos_token_id).all() and not ro.truncated.any()
    assert ro.texts == [""] * 8


def test_same_generator_seed_same_samples_and_different_seed_differs(tiny):
    model, tokenizer = tiny
    a = R.rollout(model, tokenizer, PROMPTS, 4, max_new_tokens=8, generator=torch.Generator().manual_seed(5))
    b = R.rollout(model, tokenizer, PROMPTS, 4, max_new_tokens=8, generator=torch.Generator().manual_seed(5))
    c = R.rollout(model, tokenizer, PROMPTS, 4, max_new_tokens=8, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.logp, b.logp)
    assert a.texts != c.texts


def test_encode_prompts_left_pads():
    tokenizer = countdown.build_tokenizer()
    ids, mask = R.encode_prompts(tokenizer, ["12>", "1,2,3>6:"])
    assert ids.shape == mask.shape == (2, 8)
    assert mask[0].tolist() == [0] * 5 + [1] * 3 and mask[1].tolist() == [1] * 8
    assert (ids[0, :5] == tokenizer.pad_token_id).all()
    assert tokenizer.decode(ids[0, 5:].tolist()) == "12>"
    assert R.position_ids(mask)[0].tolist() == [0] * 5 + [0, 1, 2]
    with pytest.raises(ValueError, match="zero tokens"):
        R.encode_prompts(tokenizer, [""])


def test_top_p_filter_keeps_the_smallest_nucleus():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: torch.isfinite(R._top_p_filter(logits, p))[0].tolist()
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.8) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    assert kept(0.01) == [True, False, False, False]          # the top token always survives
    shuffled = logits[:, [2, 0, 3, 1]]                         # order in the vocabulary does not matter
    assert torch.isfinite(R._top_p_filter(shuffled, 0.8))[0].tolist() == [False, True, False, True]


def test_top_p_sampling_never_leaves_the_nucleus_and_logp_ignores_the_cut(tiny):
    model, tokenizer = tiny
    g = torch.Generator().manual_seed(0)
    ids, mask = R.encode_prompts(tokenizer, PROMPTS * 16)
    resp, rmask, logp, _, _ = R.sample(model, ids, mask, max_new_tokens=1, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id, top_p=0.3, generator=g)
    with torch.no_grad():
        last = model(input_ids=ids, attention_mask=mask, position_ids=R.position_ids(mask)).logits[:, -1]
    full = torch.log_softmax(last, -1)
    allowed = torch.isfinite(R._top_p_filter(full, 0.3))
    assert allowed.gather(-1, resp).all()
    torch.testing.assert_close(logp[:, 0], full.gather(-1, resp)[:, 0], atol=2e-5, rtol=0)


def test_sample_for_eval_returns_n_per_prompt_in_order(tiny):
    model, tokenizer = tiny
    out = R.sample_for_eval(model, tokenizer, PROMPTS, 5, max_new_tokens=6, batch_size=7,
                            generator=torch.Generator().manual_seed(0))
    assert len(out) == len(PROMPTS) and all(len(row) == 5 for row in out)
    ref = R.sample_for_eval(model, tokenizer, PROMPTS, 5, max_new_tokens=6, batch_size=1000,
                            generator=torch.Generator().manual_seed(0))
    assert len(ref) == len(PROMPTS)


def test_bad_temperature_is_rejected(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="temperature must be > 0"):
        R.rollout(model, tokenizer, PROMPTS, 2, max_new_tokens=4, temperature=0.0)


def test_multiple_eos_ids_stop_a_row(tiny):
    model, tokenizer = tiny
    comma = tokenizer.convert_tokens_to_ids(",")
    ro = R.rollout(model, tokenizer, PROMPTS * 4, 4, max_new_tokens=12, generator=torch.Generator().manual_seed(4),
                   eos_token_id=[tokenizer.eos_token_id, comma])
    resp = ro.input_ids[:, ro.prompt_len:]
    for row in range(resp.shape[0]):
        n = int(ro.response_mask[row].sum())
        stops = [t in (tokenizer.eos_token_id, comma) for t in resp[row, :n].tolist()]
        assert not any(stops[:-1]) and (stops[-1] or ro.truncated[row])
        assert "," not in ro.texts[row]


def test_sampled_frequencies_follow_the_tempered_distribution(tiny):
    model, tokenizer = tiny
    n, temperature = 6000, 0.5
    ids, mask = R.encode_prompts(tokenizer, ["3,7,4>25:"] * n)
    resp, _, logp, _, _ = R.sample(model, ids, mask, max_new_tokens=1, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id, temperature=temperature,
                                   generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = (model(input_ids=ids[:1]).logits[0, -1] / temperature).softmax(-1)
    freq = torch.bincount(resp[:, 0], minlength=probs.shape[0]).float() / n
    assert (freq - probs).abs().max() < 4 * math.sqrt(0.25 / n)            # 4 sigma of the worst case
    torch.testing.assert_close(logp[:, 0], probs.log()[resp[:, 0]], atol=2e-5, rtol=0)
