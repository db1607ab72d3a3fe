"""rollout.py: the sampled log-probs are the policy's, padding does not leak, EOS ends a response."""
import math

import pytest
import torch

import countdown
import rollout


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
    ro = rollout.rollout(model, tokenizer, PROMPTS, 3, max_new_tokens=10, temperature=temperature, generator=g)
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
    ro = rollout.rollout(model, tokenizer, PROMPTS, 2, max_new_tokens=8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=ro.input_ids, attention_mask=ro.attention_mask,
                       position_ids=rollout.position_ids(ro.attention_mask)).logits
    P = ro.prompt_len
    logp = torch.log_softmax(logits[:, P - 1:-1].float(), -1).gather(-1, ro.input_ids[:, P:, None]).squeeze(-1)
    torch.testing.assert_close(logp * ro.response_mask, ro.logp, atol=2e-5, rtol=0)


def test_eos_ends_each_response_and_padding_follows(tiny):
    model, tokenizer = tiny
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ro = rollout.rollout(model, tokenizer, PROMPTS * 8, 4, max_new_tokens=12, generator=torch.Generator().manual_seed(2))
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
    ro = rollout.rollout(model, tokenizer, PROMPTS, 2, max_new_tokens=12)
    assert ro.response_mask.shape == (8, 1)
    assert (ro.input_ids[:, -1] == tokenizer.eos_token_id).all() and not ro.truncated.any()
    assert ro.texts == [""] * 8


def test_same_generator_seed_same_samples_and_different_seed_differs(tiny):
    model, tokenizer = tiny
    a = rollout.rollout(model, tokenizer, PROMPTS, 4, max_new_tokens=8, generator=torch.Generator().manual_seed(5))
    b = rollout.rollout(model, tokenizer, PROMPTS, 4, max_new_tokens=8, generator=torch.Generator().manual_seed(5))
    c = rollout.rollout(model, tokenizer, PROMPTS, 4, max_new_tokens=8, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.logp, b.logp)
    assert a.texts != c.texts


def test_encode_prompts_left_pads():
    tokenizer = countdown.build_tokenizer()
    ids, mask = rollout.encode_prompts(tokenizer, ["12>", "1,2,3>6:"])
    assert ids.shape == mask.shape == (2, 8)
    assert mask[0].tolist() == [0] * 5 + [1] * 3 and mask[1].tolist() == [1] * 8
    assert (ids[0, :5] == tokenizer.pad_token_id).all()
    assert tokenizer.decode(ids[0, 5:].tolist()) == "12>"
    assert rollout.position_ids(mask)[0].tolist() == [0] * 5 + [0, 1, 2]
    with pytest.raises(ValueError, match="zero tokens"):
        rollout.encode_prompts(tokenizer, [""])


def test_top_p_filter_keeps_the_smallest_nucleus():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: torch.isfinite(rollout._top_p_filter(logits, p))[0].tolist()
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.8) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    assert kept(0.01) == [True, False, False, False]          # the top token always survives
    shuffled = logits[:, [2, 0, 3, 1]]                         # order in the vocabulary does not matter
    assert torch.isfinite(rollout._top_p_filter(shuffled, 0.8))[0].tolist() == [False, True, False, True]


def test_top_p_sampling_never_leaves_the_nucleus_and_logp_ignores_the_cut(tiny):
    model, tokenizer = tiny
    g = torch.Generator().manual_seed(0)
    ids, mask = rollout.encode_prompts(tokenizer, PROMPTS * 16)
    resp, rmask, logp, _, _ = rollout.sample(model, ids, mask, max_new_tokens=1, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id, top_p=0.3, generator=g)
    with torch.no_grad():
        last = model(input_ids=ids, attention_mask=mask, position_ids=rollout.position_ids(mask)).logits[:, -1]
    full = torch.log_softmax(last, -1)
    allowed = torch.isfinite(rollout._top_p_filter(full, 0.3))
    assert allowed.gather(-1, resp).all()
    torch.testing.assert_close(logp[:, 0], full.gather(-1, resp)[:, 0], atol=2e-5, rtol=0)


def test_sample_for_eval_returns_n_per_prompt_in_order(tiny):
    model, tokenizer = tiny
    out = rollout.sample_for_eval(model, tokenizer, PROMPTS, 5, max_new_tokens=6, batch_size=7,
                            generator=torch.Generator().manual_seed(0))
    assert len(out) == len(PROMPTS) and all(len(row) == 5 for row in out)
    ref = rollout.sample_for_eval(model, tokenizer, PROMPTS, 5, max_new_tokens=6, batch_size=1000,
                            generator=torch.Generator().manual_seed(0))
    assert len(ref) == len(PROMPTS)


def test_bad_temperature_is_rejected(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="temperature must be > 0"):
        rollout.rollout(model, tokenizer, PROMPTS, 2, max_new_tokens=4, temperature=0.0)


def test_multiple_eos_ids_stop_a_row(tiny):
    model, tokenizer = tiny
    comma = tokenizer.convert_tokens_to_ids(",")
    ro = rollout.rollout(model, tokenizer, PROMPTS * 4, 4, max_new_tokens=12, generator=torch.Generator().manual_seed(4),
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
    ids, mask = rollout.encode_prompts(tokenizer, ["3,7,4>25:"] * n)
    resp, _, logp, _, _ = rollout.sample(model, ids, mask, max_new_tokens=1, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id, temperature=temperature,
                                   generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = (model(input_ids=ids[:1]).logits[0, -1] / temperature).softmax(-1)
    freq = torch.bincount(resp[:, 0], minlength=probs.shape[0]).float() / n
    assert (freq - probs).abs().max() < 4 * math.sqrt(0.25 / n)            # 4 sigma of the worst case
    torch.testing.assert_close(logp[:, 0], probs.log()[resp[:, 0]], atol=2e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# The decode loop itself: random-number use, deprecations, top-K statistics, and the static cache


def _no_cache_reference(model, ids, mask, max_new_tokens, eos, pad, temperature, generator):
    """The sampling loop written naively: a full forward over the whole sequence at every step, no KV cache."""
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    tokens, logps = [], []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=rollout.position_ids(mask)).logits[:, -1]
        logp_all = torch.log_softmax(logits.float() / temperature, -1)
        token = torch.multinomial(logp_all.softmax(-1), 1, generator=generator).squeeze(-1)
        token = torch.where(done, pad, token)
        tokens.append(token)
        logps.append(torch.where(done, 0.0, logp_all.gather(-1, token[:, None]).squeeze(-1)))
        done = done | (token == eos)
        if done.all():
            break
        ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, (~done | (token == eos)).long()[:, None]], 1)
    return torch.stack(tokens, 1), torch.stack(logps, 1)


def test_cached_decode_draws_the_same_random_numbers_as_a_no_cache_loop(tiny):
    # Pins the default path's tokens and random-number consumption: same generator -> same tokens, same final state.
    model, tokenizer = tiny
    ids, mask = rollout.encode_prompts(tokenizer, PROMPTS * 6)
    g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    resp, rmask, logp, _, _ = rollout.sample(model, ids, mask, max_new_tokens=10, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id, temperature=0.8, generator=g1)
    ref_tokens, ref_logp = _no_cache_reference(model, ids, mask, 10, tokenizer.eos_token_id,
                                               tokenizer.pad_token_id, 0.8, g2)
    assert torch.equal(resp, ref_tokens)
    torch.testing.assert_close(logp, ref_logp, atol=2e-5, rtol=0)
    assert torch.equal(g1.get_state(), g2.get_state())
    assert 0 < int((rmask.sum(1) < 10).sum()) < resp.shape[0]            # some rows ended early, some did not


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("G", [1, 4])
@pytest.mark.parametrize("seed, temperature, top_p", [(0, 1.0, 1.0), (1, 0.7, 0.9), (2, 1.3, 1.0)])
def test_each_prompt_prefilled_once_gives_bit_for_bit_the_rollout_of_prefilling_every_copy(
        tiny, one_thread, G, seed, temperature, top_p):
    # sample(group_size=G) prefills each prompt once and copies its KV cache to its G rows. On one CPU thread that
    # is bit for bit what prefilling the G copies gives (the LM head still sees G copies: a matrix product of
    # fewer than 4 rows rounds differently): the same tokens, log-probs, entropies, top-K and random numbers drawn.
    model, tokenizer = tiny
    kw = dict(max_new_tokens=12, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
              temperature=temperature, top_p=top_p, stats_top_k=3)
    prefill_rows = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: prefill_rows.append(out.shape))
    try:
        for prompts in (PROMPTS, PROMPTS[:1], ["5>", "9,12,9>27:"], PROMPTS * 4):   # 1 to 16 prompts, left-padded
            ids, mask = rollout.encode_prompts(tokenizer, prompts)
            g_once, g_each = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            prefill_rows.clear()
            once = rollout.sample(model, ids, mask, group_size=G, generator=g_once, **kw)
            assert prefill_rows[0][:2] == ids.shape                        # one prefill row per prompt
            each = rollout.sample(model, ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0), generator=g_each, **kw)
            names = ("tokens", "mask", "logp", "entropy", "truncated", "topk_logp")
            for name, a, b in zip(names, once, each, strict=True):
                assert torch.equal(a, b), name
            assert torch.equal(g_once.get_state(), g_each.get_state())
            assert once[0].shape[0] == len(prompts) * G
    finally:
        hook.remove()
    assert (mask == 0).any() and (once[1].sum(1) < once[1].shape[1]).any()   # left padding and early EOS exercised
    ro = rollout.rollout(model, tokenizer, PROMPTS, G, max_new_tokens=4, generator=torch.Generator().manual_seed(seed))
    ids, mask = rollout.encode_prompts(tokenizer, PROMPTS)                 # rows [i*G, (i+1)*G) continue prompt i
    assert torch.equal(ro.input_ids[:, :ro.prompt_len], ids.repeat_interleave(G, 0))
    assert torch.equal(ro.attention_mask[:, :ro.prompt_len], mask.repeat_interleave(G, 0))


def test_rollout_makes_no_deprecated_transformers_call(tiny):
    # Any DeprecationWarning / FutureWarning raised inside a rollout is an error, and so is transformers' own
    # "deprecated" log line (it is logged once per process, so its memo is cleared first).
    import logging
    import warnings
    model, tokenizer = tiny
    hf_logger = logging.getLogger("transformers")
    if hasattr(logging.Logger.warning_once, "cache_clear"):
        logging.Logger.warning_once.cache_clear()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    hf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            warnings.simplefilter("error", FutureWarning)
            for static in (False, True):
                rollout.rollout(model, tokenizer, PROMPTS, 2, max_new_tokens=6, static_cache=static, stats_top_k=2,
                          generator=torch.Generator().manual_seed(0))
                rollout.sample_for_eval(model, tokenizer, PROMPTS, 2, max_new_tokens=4, static_cache=static)
    finally:
        hf_logger.removeHandler(handler)
    assert not [r.getMessage() for r in records if "deprecat" in r.getMessage().lower()]


def test_stats_top_k_are_the_tempered_distributions_top_log_probs(tiny):
    model, tokenizer = tiny
    plain = rollout.rollout(model, tokenizer, PROMPTS, 3, max_new_tokens=10, temperature=0.7, top_p=0.9,
                      generator=torch.Generator().manual_seed(3))
    ro = rollout.rollout(model, tokenizer, PROMPTS, 3, max_new_tokens=10, temperature=0.7, top_p=0.9, stats_top_k=4,
                   generator=torch.Generator().manual_seed(3))
    assert plain.topk_logp is None
    assert torch.equal(plain.input_ids, ro.input_ids) and torch.equal(plain.logp, ro.logp)   # no extra randomness
    T = ro.response_mask.shape[1]
    assert ro.topk_logp.shape == (12, T, 4) and ro.topk_logp.dtype == torch.float32
    m = ro.response_mask.bool()
    assert (ro.topk_logp[~m] == 0).all()
    with torch.no_grad():
        logits = model(input_ids=ro.input_ids, attention_mask=ro.attention_mask,
                       position_ids=rollout.position_ids(ro.attention_mask)).logits
    P = ro.prompt_len
    ref = torch.log_softmax(logits[:, P - 1:-1].float() / 0.7, -1).topk(4, -1).values   # before the top-p cut
    torch.testing.assert_close(ro.topk_logp[m], ref[m], atol=2e-5, rtol=0)
    assert (ro.topk_logp[m][:, 0] >= ro.logp[m] - 1e-6).all()
    with pytest.raises(ValueError, match="stats_top_k"):
        rollout.rollout(model, tokenizer, PROMPTS, 1, max_new_tokens=2, stats_top_k=len(tokenizer) + 1)


def _assert_same_rollout(a, b):
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)
    assert torch.equal(a.response_mask, b.response_mask) and torch.equal(a.truncated, b.truncated)
    assert a.texts == b.texts and a.prompt_len == b.prompt_len
    torch.testing.assert_close(a.logp, b.logp, atol=2e-5, rtol=0)
    torch.testing.assert_close(a.entropy, b.entropy, atol=2e-5, rtol=0)
    if a.topk_logp is not None:
        torch.testing.assert_close(a.topk_logp, b.topk_logp, atol=2e-5, rtol=0)


@pytest.mark.parametrize("temperature, top_p, seed", [(1.0, 1.0, 0), (0.7, 0.9, 1), (1.3, 1.0, 2)])
def test_static_cache_decode_equals_dynamic(tiny, temperature, top_p, seed):
    model, tokenizer = tiny
    runs = {}
    for static in (False, True, True):            # the second static call reuses (and resets) the cache
        g = torch.Generator().manual_seed(seed)
        ro = rollout.rollout(model, tokenizer, PROMPTS * 3, 4, max_new_tokens=12, temperature=temperature, top_p=top_p,
                       generator=g, static_cache=static, stats_top_k=3)
        runs.setdefault(static, []).append((ro, g.get_state()))
    (dyn, g_dyn), = runs[False]
    for ro, g_state in runs[True]:
        _assert_same_rollout(dyn, ro)
        assert torch.equal(g_dyn, g_state)                         # same random numbers drawn
    n = dyn.response_mask.sum(1)
    assert (n < 12).any() and dyn.truncated.any()                  # EOS mid-way and rows that ran to the end
    assert (dyn.attention_mask[:, :dyn.prompt_len] == 0).any()     # left padding exercised


def test_static_cache_with_several_eos_ids_early_stop_and_new_shapes(tiny):
    model, tokenizer = tiny
    comma = tokenizer.convert_tokens_to_ids(",")
    for prompts, G, max_new in [(PROMPTS, 2, 12), (PROMPTS[:3] * 5, 3, 7), (["5>"], 5, 60)]:
        kw = dict(max_new_tokens=max_new, eos_token_id=[tokenizer.eos_token_id, comma])
        a = rollout.rollout(model, tokenizer, prompts, G, generator=torch.Generator().manual_seed(4), **kw)
        b = rollout.rollout(model, tokenizer, prompts, G, generator=torch.Generator().manual_seed(4), static_cache=True,
                      **kw)
        _assert_same_rollout(a, b)
    stopper = countdown.build_model(tokenizer, hidden=32, layers=2, heads=2, seed=3).eval()
    with torch.no_grad():                       # every row stops at step 1: one column, as in the dynamic path
        stopper.lm_head = torch.nn.Linear(32, len(tokenizer), bias=True)
        stopper.lm_head.weight.data.zero_()
        stopper.lm_head.bias.data.fill_(-30.0)
        stopper.lm_head.bias.data[tokenizer.eos_token_id] = 30.0
    ro = rollout.rollout(stopper, tokenizer, PROMPTS, 2, max_new_tokens=12, static_cache=True)
    assert ro.response_mask.shape == (8, 1) and not ro.truncated.any()
    rollout.release_static_cache(stopper)
    assert stopper not in rollout._STATIC


def test_static_cache_sample_for_eval_equals_dynamic(tiny):
    model, tokenizer = tiny
    kw = dict(max_new_tokens=8, batch_size=7)
    a = rollout.sample_for_eval(model, tokenizer, PROMPTS, 3, generator=torch.Generator().manual_seed(9), **kw)
    b = rollout.sample_for_eval(model, tokenizer, PROMPTS, 3, generator=torch.Generator().manual_seed(9),
                          static_cache=True, **kw)
    assert a == b


@pytest.mark.gpu
def test_static_cache_decode_on_cuda_is_compiled_and_equals_dynamic():
    # On CUDA the static path runs the one-token step through torch.compile (CUDA graphs); float32, so the tokens
    # must agree with the eager dynamic path exactly and the statistics to float tolerance, with no eager fallback.
    import warnings
    from torch._dynamo.utils import counters
    tokenizer = countdown.build_tokenizer()
    model = countdown.build_model(tokenizer, hidden=64, layers=2, heads=4, seed=1).cuda().eval()
    skips = counters["inductor"]["cudagraph_skips"]
    runs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)                      # the compile-failure fallback warns
        for static in (False, True, True):
            g = torch.Generator(device="cuda").manual_seed(0)
            runs.append(rollout.rollout(model, tokenizer, PROMPTS * 4, 4, max_new_tokens=12, generator=g,
                                  static_cache=static, stats_top_k=3))
    for ro in runs[1:]:
        _assert_same_rollout(runs[0], ro)
    assert rollout._STATIC[model]["fn"] is rollout._compiled_step
    assert counters["inductor"]["cudagraph_skips"] == skips          # captured as a CUDA graph, not just compiled


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")   # (torch's own)
def test_compiled_static_step_traces_as_one_graph_and_equals_dynamic(tiny, monkeypatch):
    # The path CUDA takes, run on CPU: the one-token step through torch.compile as one whole graph (fullgraph: a
    # graph break would raise; the aot_eager backend needs no C++ compiler). Same rollout as the dynamic path.
    # And if the first compiled step fails, the rollout warns and decodes eagerly, with the same result.
    model, tokenizer = tiny
    compiled = torch.compile(rollout._one_token_forward, backend="aot_eager", fullgraph=True, dynamic=False)
    monkeypatch.setattr(rollout, "COMPILE_DEVICES", ("cpu",))
    monkeypatch.setattr(rollout, "_COMPILED", [compiled])
    kw = dict(max_new_tokens=12, stats_top_k=3)
    dyn = rollout.rollout(model, tokenizer, PROMPTS * 3, 4, generator=torch.Generator().manual_seed(0), **kw)
    rollout.release_static_cache(model)
    try:
        for _ in range(2):
            ro = rollout.rollout(model, tokenizer, PROMPTS * 3, 4, generator=torch.Generator().manual_seed(0),
                           static_cache=True, **kw)
            _assert_same_rollout(dyn, ro)
            assert rollout._STATIC[model]["fn"] is rollout._compiled_step and rollout._STATIC[model]["compiled_ok"]

        def broken(*args):
            raise RuntimeError("cannot compile")
        monkeypatch.setattr(rollout, "_COMPILED", [broken])
        rollout.release_static_cache(model)
        with pytest.warns(RuntimeWarning, match="torch.compile of the static decode step failed"):
            ro = rollout.rollout(model, tokenizer, PROMPTS * 3, 4, generator=torch.Generator().manual_seed(0),
                           static_cache=True, **kw)
        _assert_same_rollout(dyn, ro)
        assert rollout._STATIC[model]["fn"] is rollout._one_token_forward
    finally:
        rollout.release_static_cache(model)
        torch._dynamo.reset()


def test_static_cache_under_bf16_autocast_with_one_dtype_per_layer(tiny, monkeypatch):
    # Under autocast the keys leave RoPE in fp32 and the values their projection in bf16. Some transformers versions
    # (5.17) allocate a static layer's values in its keys' dtype; emulate that allocation and check that the static
    # decode still runs and samples what the dynamic one does.
    from transformers.cache_utils import StaticLayer
    original = StaticLayer.lazy_initialization

    def keys_dtype_for_both(self, key_states, value_states, *args, **kwargs):
        return original(self, key_states, value_states.to(key_states.dtype), *args, **kwargs)
    monkeypatch.setattr(StaticLayer, "lazy_initialization", keys_dtype_for_both)
    model, tokenizer = tiny
    runs = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for static in (False, True):
            g = torch.Generator().manual_seed(0)
            runs.append(rollout.rollout(model, tokenizer, PROMPTS, 2, max_new_tokens=8, generator=g, static_cache=static))
    rollout.release_static_cache(model)
    assert torch.equal(runs[0].input_ids, runs[1].input_ids)
    torch.testing.assert_close(runs[0].logp, runs[1].logp, atol=2e-2, rtol=0)


@pytest.mark.parametrize("seed, temperature, top_p", [(0, 1.0, 1.0), (1, 0.7, 0.9), (2, 1.3, 1.0), (3, 0.3, 1.0)])
def test_shared_prompt_forwards_each_distinct_prefix_once_and_the_rollout_is_the_same(tiny, one_thread, seed,
                                                                                      temperature, top_p):
    # shared_prompt: each decode step forwards one cache row per distinct prefix (prompt + response so far) of the rows
    # that go on; stopped rows leave the cache. The random numbers drawn are those of decoding every row; on one CPU
    # thread the tokens are the same and the statistics agree to float rounding (the matrix products see fewer rows).
    model, tokenizer = tiny
    G = 4
    ids, mask = rollout.encode_prompts(tokenizer, PROMPTS * 2)
    kw = dict(max_new_tokens=12, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
              temperature=temperature, top_p=top_p, stats_top_k=3, group_size=G)
    rows = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: rows.append(out.shape[0]))
    try:
        runs = {}
        for shared in (False, True):
            g = torch.Generator().manual_seed(seed)
            rows.clear()
            runs[shared] = (rollout.sample(model, ids, mask, generator=g, shared_prompt=shared, **kw), g.get_state(),
                            list(rows))
    finally:
        hook.remove()
    (full, g_full, rows_full), (shared, g_shared, rows_shared) = runs[False], runs[True]
    for name, a, b in zip(("tokens", "mask", "logp", "entropy", "truncated", "topk_logp"), full, shared, strict=True):
        if a.dtype in (torch.long, torch.bool) or name == "mask":
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
    assert torch.equal(g_full, g_shared)
    tokens, going = full[0].tolist(), full[1].bool()
    batch, R = going.shape
    assert rows_full == rows_shared[:1] + [batch] * (R - 1)         # one prefill row per prompt, then every row
    # step t feeds response token t of the rows that go on (token t + 1 exists): one row per distinct prefix
    distinct = [len({(row // G, tuple(tokens[row][:t + 1])) for row in range(batch) if going[row, t + 1]})
                for t in range(R - 1)]
    assert rows_shared[1:] == distinct
    assert sum(distinct) < (R - 1) * batch                          # stopped rows left the cache
    if temperature < 0.5:                                            # (the tiny model's samples rarely agree above)
        assert (going[:, 1:].sum(0) > torch.tensor(distinct)).any()  # rows with one prefix were forwarded once
    assert (~going).any() and full[4].any()                          # rows stopped early, and rows ran to the end


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("shared_prompt", [False, True])
def test_each_prompt_prefilled_once_is_the_plain_rollout_in_float64(static, shared_prompt, device):
    # The plain rollout prefills every one of a prompt's G rows and decodes every row to the end. Prefilling each prompt
    # once (either cache) and, under shared_prompt, forwarding each distinct prefix once changes only the float
    # rounding: in float64 the same generator draws the same tokens and the statistics agree within 1e-10 (on CUDA
    # the static cache's step is compiled).
    tokenizer = countdown.build_tokenizer()
    model = countdown.build_model(tokenizer, hidden=32, layers=2, heads=2, seed=3).to(device, torch.float64).eval()
    kw = dict(max_new_tokens=12, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
              temperature=0.9, stats_top_k=3)
    prefill_rows = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: prefill_rows.append(out.shape[0]))
    early = left_padded = truncated = 0
    try:
        for prompts, G, seed in ((PROMPTS, 3, 0), (PROMPTS[:3] * 2, 5, 1), (["5>"], 8, 2), (PROMPTS, 16, 3)):
            ids, mask = (x.to(device) for x in rollout.encode_prompts(tokenizer, prompts))
            g_once, g_plain = (torch.Generator(device=device).manual_seed(seed) for _ in range(2))
            prefill_rows.clear()
            once = rollout.sample(model, ids, mask, group_size=G, static_cache=static, shared_prompt=shared_prompt,
                                  generator=g_once, **kw)
            assert prefill_rows[0] == len(prompts)                         # one prefill row per prompt
            plain = rollout.sample(model, ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0), generator=g_plain,
                                   **kw)
            for name, a, b in zip(("tokens", "mask", "logp", "entropy", "truncated", "topk_logp"), once, plain,
                                  strict=True):
                if a.dtype in (torch.long, torch.bool) or name == "mask":
                    assert torch.equal(a, b), name
                else:
                    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
            assert torch.equal(g_once.get_state(), g_plain.get_state())
            early += int((once[1].sum(1) < once[1].shape[1]).sum())
            truncated += int(once[4].sum())
            left_padded += int((mask == 0).any())
        # sample_for_eval (n samples per problem) goes through the same sampler
        a = rollout.sample_for_eval(model, tokenizer, PROMPTS, 6, max_new_tokens=10, batch_size=12,
                                    generator=torch.Generator(device=device).manual_seed(4), static_cache=static,
                                    shared_prompt=shared_prompt)
        b = rollout.sample_for_eval(model, tokenizer, PROMPTS, 6, max_new_tokens=10, batch_size=12,
                                    generator=torch.Generator(device=device).manual_seed(4))
        assert a == b
    finally:
        hook.remove()
        rollout.release_static_cache(model)
    assert early and truncated and left_padded                       # EOS mid-way, rows to the end, left padding


def test_multinomial_draws_what_torch_multinomial_draws():
    # rollout._multinomial is torch.multinomial(probs, 1) computed with vectorised kernels: the same tokens and the
    # same random numbers consumed, at a real vocabulary, with peaked, flat, one-hot and zero-probability entries.
    for seed, (B, V) in enumerate([(64, 49152), (7, 5), (1, 1000), (33, 151936)]):
        logits = torch.randn(B, V, generator=torch.Generator().manual_seed(seed)) * (1 + 4 * seed)
        logits[0, :V // 2] = float("-inf")                                   # half the vocabulary impossible
        probs = logits.softmax(-1)
        probs[-1] = 0.0
        probs[-1, V - 1] = 1.0                                               # one certain token
        g_torch, g_ours = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for _ in range(3):
            want = torch.multinomial(probs, 1, generator=g_torch).squeeze(-1)
            got = rollout._multinomial(probs, g_ours)
            assert torch.equal(got, want)
            assert torch.equal(g_ours.get_state(), g_torch.get_state())
        assert got[-1] == V - 1 and (got[0] >= V // 2)
