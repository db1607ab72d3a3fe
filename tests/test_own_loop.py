"""docs/own-loop.md's loop for real prompts does what its text says: left padding with position ids gives every row
the log-probs it has alone, pad = EOS keeps the EOS in the mask, and a batch with no mixed group warns."""
import os
import re
import warnings

import pytest
import torch

import simko

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKS = re.findall(r"```python\n(.*?)```", open(os.path.join(ROOT, "docs/own-loop.md"), encoding="utf-8").read(),
                    flags=re.S)
(REAL,) = [b for b in BLOCKS if "padding_side" in b]


def run_block(seed):
    torch.manual_seed(seed)
    ns = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(REAL, "docs/own-loop.md real-prompt loop", "exec"), ns)
    return ns, caught


@pytest.fixture(scope="module")
def loop():
    return run_block(seed=1)


def test_left_padded_rows_get_the_log_probs_they_have_alone(loop):
    ns, _ = loop
    model, seq, response, mask, L = ns["model"], ns["seq"], ns["response"], ns["mask"], ns["L"]
    prompt_att, stats, old_logp = ns["prompt_att"], ns["stats"], ns["old_logp"]
    lengths = prompt_att.sum(1)
    assert lengths.min() < L, "the prompts differ in length, so some row is left-padded"
    with torch.no_grad():
        for row in range(seq.shape[0]):
            alone = seq[row, L - int(lengths[row]):]                  # the row without its left padding
            logp = model(alone[None]).logits[0].log_softmax(-1)       # position t predicts token t + 1
            n = int(mask[row].sum())
            want = logp[int(lengths[row]) - 1 + torch.arange(n), response[row, :n]]
            torch.testing.assert_close(stats.logp[row, :n].detach(), want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(old_logp[row, :n], want, rtol=1e-5, atol=1e-5)


def test_without_position_ids_learned_positions_shift_a_padded_row():
    # What the text warns of, on a model with learned absolute positions: the padded forward without position_ids
    # gives other log-probs than the row alone; with them, the same.
    from transformers import GPT2Config, GPT2LMHeadModel
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=2, bos_token_id=0,
                                       eos_token_id=0)).eval()
    x = torch.randint(1, 50, (1, 6))
    padded, att = torch.cat([torch.zeros(1, 2, dtype=torch.long), x], 1), torch.tensor([[0, 0] + [1] * 6])
    with torch.no_grad():
        alone = model(x).logits[0].log_softmax(-1)
        without = model(padded, attention_mask=att).logits[0, 2:].log_softmax(-1)
        with_ids = model(padded, attention_mask=att, position_ids=(att.cumsum(1) - 1).clamp_min(0)).logits[0, 2:]
    assert (without - alone).abs().max() > 0.05
    torch.testing.assert_close(with_ids.log_softmax(-1), alone, rtol=1e-5, atol=1e-5)


def test_pad_is_eos_and_the_mask_keeps_the_first_eos(loop):
    ns, _ = loop
    tok, response, mask = ns["tok"], ns["response"], ns["mask"]
    assert tok.pad_token_id == tok.eos_token_id
    ended = [(r, int((response[r] == tok.eos_token_id).nonzero()[0])) for r in range(response.shape[0])
             if (response[r] == tok.eos_token_id).any()]
    assert any(t < response.shape[1] - 1 for _, t in ended), "this seed samples an EOS before the last column"
    for r, t in ended:
        assert mask[r, :t + 1].all() and not mask[r, t + 1:].any()    # up to and including the first EOS
        assert not (response[r] != tok.pad_token_id)[t]                # a `!= pad` mask would drop it


def test_a_batch_with_no_mixed_group_warns_and_its_loss_is_zero(loop):
    ns, caught = loop
    check_groups = ns["check_groups"]
    assert ns["rewards"].max() > 0 and not any("trains nothing" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_groups(torch.tensor([[1.0, 0.0], [0.0, 0.0]])).tolist() == [True, False]
    for rewards in (torch.zeros(2, 8), torch.ones(2, 8)):
        with pytest.warns(UserWarning, match="trains nothing"):
            assert not check_groups(rewards).any()
        adv = ns["passk_at_k"].passk_advantages_analytical(rewards, 4).flatten()
        loss, _ = simko.policy_loss(ns["stats"].logp, ns["old_logp"], adv, ns["mask"], ns["stats"])
        assert loss.item() == 0.0
