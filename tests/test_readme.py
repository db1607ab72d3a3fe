"""The README's code is exercised: its Python snippets run, the TRL snippet is the one its test runs, the Hugging
Face example does what its comments say, and the test command it gives is the one CI runs."""
import os
import re

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_the_snippets():
    assert len(PYTHON_BLOCKS) >= 5


def _hf_block():
    (block,) = [b for b in PYTHON_BLOCKS if "model.generate(" in b]
    return block


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_snippet_runs(index):
    code = PYTHON_BLOCKS[index]
    if "PassKGRPOTrainer(" in code:
        # Needs TRL: tests/test_integrations_trl.py takes this block from README.md and runs it as it is.
        source = open(os.path.join(ROOT, "tests", "test_integrations_trl.py"), encoding="utf-8").read()
        assert 'if "PassKGRPOTrainer(" in b)' in source and "exec(compile(README_TRL_SNIPPET" in source
        assert sum("PassKGRPOTrainer(" in b for b in PYTHON_BLOCKS) == 1
        return
    exec(compile(code, f"README.md python block {index}", "exec"), {})


def test_readme_hf_example_means_what_it_says():
    """The one-position shift, the mask with its EOS, the row order and old_logp, checked on the example's own
    variables against a token-by-token recomputation."""
    torch.manual_seed(3)
    ns = {}
    exec(compile(_hf_block(), "README.md HF example", "exec"), ns)
    model, seq, response, mask, L = ns["model"], ns["seq"], ns["response"], ns["mask"], ns["L"]
    P, N, eos = ns["P"], ns["N"], model.config.eos_token_id
    T = response.shape[1]
    for row in range(P * N):
        hits = (response[row] == eos).nonzero().flatten().tolist()
        length = hits[0] + 1 if hits else T                         # up to and including the first EOS
        assert mask[row].tolist() == [True] * length + [False] * (T - length)
        assert (seq[row, :L] == seq[(row // N) * N, :L]).all()      # rows p*N .. p*N + N-1 share prompt p
    with torch.no_grad():                                           # logp of token t from a forward of seq[:, :L+t]
        for t in (0, 1, T - 1):
            lp = model(seq[:, :L + t]).logits[:, -1].log_softmax(-1).gather(1, response[:, t:t + 1]).squeeze(1)
            torch.testing.assert_close(ns["stats"].logp[:, t].detach(), lp, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ns["old_logp"][:, t], lp, rtol=1e-5, atol=1e-5)
    assert not ns["old_logp"].requires_grad
    rewards, adv = ns["rewards"], ns["advantages"]
    assert rewards.shape == (P, N) and torch.equal(rewards.flatten(), (response[:, 0] % 2 == 0).float())
    assert adv.shape == (P * N,) and adv.abs().sum() > 0
    assert 0 < int((~mask).sum()), "this seed samples an EOS before the end, so the mask check has teeth"
    assert ns["metrics"]["ratio_mean"] == pytest.approx(1.0, abs=1e-5)   # old_logp is the same policy's


def test_readme_test_command_is_the_one_ci_runs():
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert re.search(r"&& python -m pytest\s", README)
    assert re.search(r"^python -m pytest$", ci, flags=re.M)
    assert "pip install torch==2.13.0" in README and "python train.py" in README
