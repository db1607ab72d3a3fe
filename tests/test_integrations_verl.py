"""integrations/verl.py: Pass@k advantages as verl advantage estimators.

The estimator functions are plain tensor code and are tested everywhere (the main environment has no verl:
importing the module without verl is itself part of the check). Where verl is installed, the registration, verl's own
`compute_advantage` with a hydra-composed config and the `VERL_USE_EXTERNAL_MODULES` route are tested too.
CI runs this file with verl 0.9.1 in its own environment (`bash .ci/verl`: torch, then
integrations/requirements-verl.txt, then `pip install --no-deps verl==0.9.1`; no vLLM, no GPU) and fails on a skip.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import passk_at_k
from integrations import verl as iv

ROOT = Path(__file__).resolve().parents[1]


def verl_batch(rewards_by_prompt, T=7, seed=0):
    """A verl-style batch: responses of each prompt scattered in random order, the 0/1 outcome reward on the last
    response token (as verl's reward managers place it), random response lengths."""
    g = torch.Generator().manual_seed(seed)
    rows = [(f"uid-{p}", r) for p, rs in enumerate(rewards_by_prompt) for r in rs]
    order = torch.randperm(len(rows), generator=g).tolist()
    rows = [rows[i] for i in order]
    lengths = torch.randint(1, T + 1, (len(rows),), generator=g)
    mask = (torch.arange(T) < lengths.unsqueeze(1)).float()
    token_rewards = torch.zeros(len(rows), T)
    token_rewards[torch.arange(len(rows)), lengths - 1] = torch.tensor([float(r) for _, r in rows])
    index = np.array([uid for uid, _ in rows], dtype=object)
    return token_rewards, mask, index


REWARDS = [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]


def per_group(token_rewards, index, fn):
    """Reference: loop over prompts, call `fn` on that prompt's [1, n] rewards (batch order), scatter back."""
    scores = token_rewards.sum(-1).double()
    out = torch.zeros(len(index), dtype=torch.float64)
    for uid in dict.fromkeys(index.tolist()):
        rows = [i for i, u in enumerate(index) if u == uid]
        out[rows] = fn(scores[rows].unsqueeze(0)).flatten()
    return out


def test_analytical_matches_passk_per_prompt_and_broadcasts_over_tokens():
    token_rewards, mask, index = verl_batch(REWARDS)
    adv, ret = iv.ESTIMATORS["passk"](token_rewards, mask, index=index, config={"passk_k": 2})
    assert adv.shape == mask.shape and adv.dtype == token_rewards.dtype
    assert torch.equal(adv, ret)
    assert torch.all(adv[mask == 0] == 0)
    want = per_group(token_rewards, index, lambda r: passk_at_k.passk_advantages_analytical(r, 2))
    # every response token carries its response's advantage
    torch.testing.assert_close(adv, (want.float().unsqueeze(1) * mask), rtol=0, atol=1e-7)
    # the check has teeth: Pass@k differs from GRPO on these rewards, and hand values for one group hold.
    grpo = per_group(token_rewards, index, passk_at_k.grpo_advantages)
    assert not torch.allclose(want, grpo, atol=1e-3)
    # prompt 0: N = 6, N_pos = 1, k = 2 -> R_bar = 1 - C(5,2)/C(6,2) = 1/3, A_pos = sqrt((1-R)/R) = sqrt(2)
    first_correct = [i for i, u in enumerate(index) if u == "uid-0" and token_rewards[i].sum() == 1][0]
    assert adv[first_correct, 0].item() == pytest.approx(2 ** 0.5, abs=1e-6)


def test_groups_of_different_sizes_and_plain_list_index():
    rewards = [[1, 0, 0, 0], [1, 0, 1, 0, 0, 0], [0, 1, 1]]
    token_rewards, mask, index = verl_batch(rewards, seed=3)
    adv, _ = iv.ESTIMATORS["passk"](token_rewards, mask, index=list(index), config={"passk_k": 2})
    want = per_group(token_rewards, index, lambda r: passk_at_k.passk_advantages_analytical(r, 2))
    torch.testing.assert_close(adv[:, 0].double(), want * mask[:, 0].double(), rtol=0, atol=1e-7)


class AttrConfig:
    """Like verl's AlgoConfig dataclass: attributes and a Mapping-style get."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def get(self, key, default=None):
        return getattr(self, key, default)


@pytest.mark.parametrize("name, fn", [
    ("passk_full", lambda r: passk_at_k.passk_advantages_full(r, 3)),
    ("combination", lambda r: passk_at_k.combination_advantages(r, 3)),
    ("exceeding", lambda r: passk_at_k.exceeding_passk_advantages(r, 3, scale=0.9)),
    ("pkpo", lambda r: passk_at_k.pkpo_advantages(r, 3)),
    ("pkpo_maxk", lambda r: passk_at_k.pkpo_advantages(r, 3, continuous=True)),
    ("passk_bootstrap", None),
])
def test_other_estimators(name, fn, monkeypatch):
    import itertools

    monkeypatch.setattr(iv, "_bootstrap_calls", itertools.count())  # as in a fresh process: call number 0
    token_rewards, mask, index = verl_batch(REWARDS, seed=1)
    cfg = AttrConfig(passk_k=3, passk_exceeding_scale=0.9, passk_seed=5, passk_bootstrap_groups=10)
    adv, _ = iv.ESTIMATORS[name](token_rewards, mask, index=index, config=cfg)
    if name == "passk_bootstrap":
        # all five groups have size 6, so they are drawn in one call, from a generator seeded with
        # passk_seed * 1_000_003 + the call number (0 here)
        gen = torch.Generator().manual_seed(5 * 1_000_003)
        order = list(dict.fromkeys(index.tolist()))
        rows = torch.tensor([[i for i, u in enumerate(index) if u == uid] for uid in order])
        scores = token_rewards.sum(-1).double()[rows]
        want = torch.zeros(len(index), dtype=torch.float64)
        want[rows.flatten()] = passk_at_k.passk_advantages_bootstrap(scores, 3, num_groups=10,
                                                                     generator=gen).flatten()
        # the next step draws new groups
        again, _ = iv.ESTIMATORS["passk_bootstrap"](token_rewards, mask, index=index, config=cfg)
        assert not torch.equal(adv, again)
    else:
        want = per_group(token_rewards, index, fn)
    torch.testing.assert_close(adv[:, 0].double(), want * mask[:, 0].double(), rtol=0, atol=1e-6)


def test_threshold_binarises_graded_rewards():
    token_rewards, mask, index = verl_batch(REWARDS, seed=2)
    graded = token_rewards * 0.7  # correct responses score 0.7, wrong ones 0
    a, _ = iv.ESTIMATORS["passk"](graded, mask, index=index, config={"passk_k": 2})
    b, _ = iv.ESTIMATORS["passk"](token_rewards, mask, index=index, config={"passk_k": 2})
    assert torch.equal(a, b)
    c, _ = iv.ESTIMATORS["passk"](graded, mask, index=index, config={"passk_k": 2, "passk_threshold": 0.8})
    assert torch.all(c == 0)  # nothing above 0.8: every group all-wrong


def test_names_are_the_registry_names():
    assert set(iv.ESTIMATORS) <= set(passk_at_k.ADVANTAGES)
    assert set(passk_at_k.ADVANTAGES) - set(iv.ESTIMATORS) == {"grpo", "entropy_adaptive"}
    assert all(fn.__name__ == name for name, fn in iv.ESTIMATORS.items())


def test_clear_errors():
    token_rewards, mask, index = verl_batch(REWARDS)
    with pytest.raises(ValueError, match=r"\+algorithm.passk_k=8"):
        iv.ESTIMATORS["passk"](token_rewards, mask, index=index, config={})
    with pytest.raises(ValueError, match=r"\+algorithm.passk_k=8"):
        iv.ESTIMATORS["passk"](token_rewards, mask, index=index, config=None)
    with pytest.raises(ValueError, match="rollout.n"):
        iv.ESTIMATORS["passk"](token_rewards, mask, index=index, config={"passk_k": 7})
    with pytest.raises(ValueError, match="integer >= 1"):
        iv.ESTIMATORS["passk"](token_rewards, mask, index=index, config={"passk_k": 0})
    with pytest.raises(ValueError, match="uid"):
        iv.ESTIMATORS["passk"](token_rewards, mask, index=None, config={"passk_k": 2})
    with pytest.raises(ValueError, match=r"\[bs, T\]"):
        iv.ESTIMATORS["passk"](token_rewards[:, 0], mask, index=index, config={"passk_k": 2})


# ---------------------------------------------------------------------------------------------------------------
# With verl installed
# ---------------------------------------------------------------------------------------------------------------


def test_registered_with_verl():
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos", reason="needs verl, in its own environment: "
                                     "pip install -r integrations/requirements-verl.txt && "
                                     "pip install --no-deps verl==0.9.1 (bash .ci/verl build)")
    assert iv.register_passk_estimators() == list(iv.ESTIMATORS)  # idempotent: already registered on import
    for name, fn in iv.ESTIMATORS.items():
        assert core_algos.get_adv_estimator_fn(name) is fn
    assert core_algos.get_adv_estimator_fn("grpo_passk") is not iv.ESTIMATORS["passk"]  # verl's own is untouched


def test_verl_compute_advantage_end_to_end():
    """verl's own trainer-side `compute_advantage` on a DataProto, with the `algorithm` config composed by hydra
    from verl's ppo_trainer.yaml and the README's command-line overrides."""
    ray_trainer = pytest.importorskip("verl.trainer.ppo.ray_trainer", reason="needs verl, in its own environment: "
                                      "pip install -r integrations/requirements-verl.txt && "
                                      "pip install --no-deps verl==0.9.1 (bash .ci/verl build)")
    hydra = pytest.importorskip("hydra", reason="needs verl, in its own environment: "
                                "pip install -r integrations/requirements-verl.txt && "
                                "pip install --no-deps verl==0.9.1 (bash .ci/verl build)")
    import verl
    from verl import DataProto

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with hydra.initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = hydra.compose(config_name="ppo_trainer", overrides=[
            "algorithm.adv_estimator=passk", "+algorithm.passk_k=2", "actor_rollout_ref.rollout.n=6"])
    token_rewards, mask, index = verl_batch(REWARDS)
    data = DataProto.from_dict(tensors={"token_level_rewards": token_rewards, "response_mask": mask},
                               non_tensors={"uid": index})
    out = ray_trainer.compute_advantage(data, adv_estimator=cfg.algorithm.adv_estimator, gamma=cfg.algorithm.gamma,
                                        lam=cfg.algorithm.lam, num_repeat=cfg.actor_rollout_ref.rollout.n,
                                        config=cfg.algorithm)
    want = per_group(token_rewards, index, lambda r: passk_at_k.passk_advantages_analytical(r, 2))
    torch.testing.assert_close(out.batch["advantages"], want.float().unsqueeze(1) * mask, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_verl_external_modules_env_registers():
    pytest.importorskip("verl.trainer.ppo.core_algos", reason="needs verl, in its own environment: "
                        "pip install -r integrations/requirements-verl.txt && "
                        "pip install --no-deps verl==0.9.1 (bash .ci/verl build)")
    env = dict(os.environ, PYTHONPATH=str(ROOT), VERL_USE_EXTERNAL_MODULES="integrations.verl")
    code = ("import verl\nfrom verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY as R\n"
            f"print(sorted(n for n in R if n in {sorted(iv.ESTIMATORS)!r}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(sorted(iv.ESTIMATORS))
