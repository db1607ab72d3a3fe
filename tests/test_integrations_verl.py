"""integrations/verl.py: Pass@k advantages as verl advantage estimators, SimKO as a verl policy loss.

The estimator functions are plain tensor code and are tested everywhere (the main environment has no verl:
importing the module without verl is itself part of the check). Where verl is installed, the registration, verl's own
`compute_advantage` with a hydra-composed config and the `VERL_USE_EXTERNAL_MODULES` route are tested too.
The SimKO tests need verl: its fsdp engine's forward on a tiny Llama (the engine object without the FSDP
wrapping, which needs a GPU; one gloo process), the registered loss against `simko.policy_loss` and against the
official SimKO loss re-implemented below, and one optimizer step of verl's engine against the same step computed
directly. CI runs this file with verl 0.9.1 in its own environment (`bash .ci/verl`: torch, then
integrations/requirements-verl.txt, then `pip install --no-deps verl==0.9.1`; no vLLM, no GPU) and fails on a skip.
"""
import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import passk_at_k
import simko
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


# ---------------------------------------------------------------------------------------------------------------
# SimKO (needs verl)
# ---------------------------------------------------------------------------------------------------------------


P, R, V = 5, 6, 48  # prompt columns (left-padded), response columns (right-padded), vocabulary


@pytest.fixture(scope="module")
def verl_simko():
    """verl's modules for the SimKO tests, a one-process gloo group (verl's engine all-reduces the token count)."""
    pytest.importorskip("verl.workers.engine.fsdp.transformer_impl", reason="needs verl, in its own environment: "
                        "pip install -r integrations/requirements-verl.txt && "
                        "pip install --no-deps verl==0.9.1 (bash .ci/verl build)")
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    yield
    if started:
        dist.destroy_process_group()


def tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():  # larger logits than the init's, so the top-K and the entropies spread out
        model.lm_head.weight.mul_(40)
    return model


def make_engine(model, lr=0.0):
    """verl 0.9.1's FSDPEngineWithLMHead around a plain module: the attributes its forward, backward and optimizer
    step read, set as FSDPEngine.__init__ / initialize would with one process, no sequence parallelism."""
    from types import SimpleNamespace

    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    engine = FSDPEngineWithLMHead.__new__(FSDPEngineWithLMHead)
    engine.module = model
    engine.engine_config = SimpleNamespace(entropy_checkpointing=False, entropy_from_logits_with_chunking=False,
                                           use_no_sync_for_gradient_accumulation=True, pad_to_length=False)
    engine.pad_to_length, engine.pad_to_length_bucket = False, 1
    engine.use_ulysses_sp, engine.ulysses_sequence_parallel_size, engine.ulysses_device_mesh = False, 1, None
    engine._autocast_dtype, engine.scaler, engine._qat_enabled = torch.float32, None, False
    engine.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    engine.optimizer_config = SimpleNamespace(clip_grad=1e9)
    return engine


def actor_config(*overrides):
    """verl's actor config (FSDPActorConfig) composed by hydra from ppo_trainer.yaml with the README's overrides."""
    import hydra
    import verl
    from verl.utils.config import omega_conf_to_dataclass

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with hydra.initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = hydra.compose(config_name="ppo_trainer", overrides=[
            "actor_rollout_ref.actor.policy_loss.loss_mode=simko", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.actor.rollout_n=4",
            *overrides])
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def verl_actor_batch(model, seed=0, temperature=1.0, remove_padding=True, micro_batch_size=4):
    """A verl actor batch as the trainer sends it (left-padded prompts, right-padded responses sampled from the
    model, old log-probs, advantages, 0/1 token_level_scores), converted by verl's left_right_2_no_padding.
    Returns (data TensorDict, plain dict of the padded tensors)."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    g = torch.Generator().manual_seed(seed)
    B = 4
    plen = torch.tensor([5, 2, 4, 3])
    rlen = torch.tensor([6, 3, 1, 5])
    prompts = torch.randint(1, V, (B, P), generator=g)
    pmask = (torch.arange(P) >= P - plen.unsqueeze(1)).long()
    rmask = (torch.arange(R) < rlen.unsqueeze(1)).long()
    attention_mask = torch.cat([pmask, rmask], 1)
    position_ids = (attention_mask.cumsum(1) - 1).clamp_min(0)
    input_ids = torch.cat([prompts * pmask, torch.zeros(B, R, dtype=torch.long)], 1)
    with torch.no_grad():  # sample the responses from the model, token by token
        for t in range(R):
            step = model(input_ids=input_ids[:, :P + t], attention_mask=attention_mask[:, :P + t],
                         position_ids=position_ids[:, :P + t]).logits[:, -1]
            input_ids[:, P + t] = torch.multinomial(torch.softmax(step / temperature, -1), 1, generator=g)[:, 0]
    input_ids[:, P:] *= rmask
    responses = input_ids[:, P:]
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        logp = torch.log_softmax(logits[:, P - 1:-1] / temperature, -1).gather(-1, responses.unsqueeze(-1))[..., 0]
    old = (logp + 0.3 * torch.randn(B, R, generator=g)) * rmask  # some ratios outside the clip range
    correct = torch.tensor([1.0, 0.0, 1.0, 0.0])
    advantages = torch.tensor([0.8, -1.2, 0.5, -0.7]).unsqueeze(1) * rmask
    scores = torch.zeros(B, R)
    scores[torch.arange(B), rlen - 1] = correct
    plain = dict(prompts=prompts * pmask, responses=responses, attention_mask=attention_mask, input_ids=input_ids,
                 position_ids=position_ids, response_mask=rmask.float(), old_log_probs=old, advantages=advantages,
                 token_level_scores=scores, plen=plen, rlen=rlen)
    td = TensorDict({k: v.clone() for k, v in plain.items() if k not in ("plen", "rlen")}, batch_size=[B])
    td = left_right_2_no_padding(td)
    tu.assign_non_tensor(td, temperature=temperature, use_remove_padding=remove_padding, use_fused_kernels=False,
                         calculate_entropy=False, use_dynamic_bsz=False, micro_batch_size_per_gpu=micro_batch_size,
                         global_batch_size=B, dp_size=1, batch_num_tokens=None)
    return td, plain


def response_logits(logits, plain, remove_padding):
    """[B, R, V]: the logits that predict each response token, cut from the model's output by hand (packed:
    [1, total, V], sequences back to back; padded: [B, S, V], each sequence from column 0)."""
    plen, rlen = plain["plen"], plain["rlen"]
    rows = []
    offset = 0
    for i in range(len(plen)):
        start = (offset if remove_padding else 0) + int(plen[i]) - 1
        row = logits[0 if remove_padding else i, start:start + int(rlen[i])]
        rows.append(torch.cat([row, row.new_zeros(R - int(rlen[i]), row.shape[-1])]))
        offset += int(plen[i] + rlen[i])
    return torch.stack(rows)


def engine_forward(engine, micro_batch, config):
    """What verl's FSDPEngineWithLMHead.forward_step does, keeping the graph: inputs, model, outputs, ppo_loss.
    Returns (loss, metrics, the model's raw logits)."""
    from verl.workers.utils.losses import ppo_loss

    loss_fn = functools.partial(ppo_loss, config=config)
    inputs, output_args = engine.prepare_model_inputs(micro_batch=micro_batch)
    raw = engine.module(**inputs, use_cache=False)
    model_output = engine.prepare_model_outputs(output=raw, output_args=output_args, micro_batch=micro_batch,
                                                logits_processor_func=loss_fn)
    loss, metrics = loss_fn(model_output=model_output, data=micro_batch, dp_group=None)
    return loss, metrics, raw.logits


def direct_simko(resp_logits, plain, temperature, **overrides):
    """simko.policy_loss with the official settings on logits [B, R, V], as the plug-in documents it."""
    stats = simko.token_stats(resp_logits, plain["responses"], top_k=simko.PAPER_TOP_K, temperature=temperature)
    return simko.policy_loss(stats.logp, plain["old_log_probs"], plain["advantages"], plain["response_mask"], stats,
                             clip_low=0.2, clip_high=0.2, correct=plain["token_level_scores"].sum(-1) == 1,
                             spread_on="correct", **overrides)[0]


def max_grad_diff(a, b, params):
    ga = torch.autograd.grad(a, params, retain_graph=True)
    gb = torch.autograd.grad(b, params, retain_graph=True)
    scale = max(x.abs().max().item() for x in gb)
    assert scale > 0
    return max((x - y).abs().max().item() for x, y in zip(ga, gb)), scale



@pytest.mark.parametrize("remove_padding, temperature", [(True, 1.0), (True, 0.7), (False, 1.0), (False, 0.7)])
def test_simko_forward_statistics_equal_token_stats(verl_simko, remove_padding, temperature):
    """The wrapped prepare_model_outputs of verl's fsdp engine: SimKO's statistics for the response tokens equal
    simko.token_stats on the same logits, and verl's log_probs are unchanged."""
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    model = tiny_llama()
    engine = make_engine(model)
    data, plain = verl_actor_batch(model, temperature=temperature, remove_padding=remove_padding)
    inputs, output_args = engine.prepare_model_inputs(micro_batch=data)
    raw = model(**inputs, use_cache=False)
    out = engine.prepare_model_outputs(raw, output_args, data, functools.partial(ppo_loss, config=actor_config()))
    got = iv._pending.stats
    want = simko.token_stats(response_logits(raw.logits, plain, remove_padding), plain["responses"], top_k=3,
                             temperature=temperature)
    mask = plain["response_mask"].bool()
    assert mask.sum() < mask.numel()  # padding present
    for name in ("logp", "entropy"):
        torch.testing.assert_close(got[name][mask], getattr(want, name)[mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(got["topk_logp"][mask], want.topk_logp[mask], rtol=0, atol=1e-5)
    assert torch.equal(got["is_rank1"][mask], want.is_rank1[mask])
    assert got["is_rank1"][mask].any() and not got["is_rank1"][mask].all()
    assert torch.equal(got["correct"], torch.tensor([True, False, True, False]))
    assert got["topk_logp"].requires_grad and got["topk_logp"].grad_fn is not None
    # verl's own log-probs (the wrapper off: vanilla loss) equal the ones from SimKO's pass
    out_vanilla = engine.prepare_model_outputs(
        raw, output_args, data, functools.partial(ppo_loss, config=actor_config(
            "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla")))
    assert iv._pending.stats is None
    torch.testing.assert_close(no_padding_2_padding(out["log_probs"], data)[mask],
                               no_padding_2_padding(out_vanilla["log_probs"], data)[mask], rtol=0, atol=1e-5)
    assert not tu_get(data, "distillation_only")  # the flag the wrapper sets for verl's part is restored


def tu_get(data, key):
    from verl.utils import tensordict_utils as tu

    return tu.get_non_tensor_data(data=data, key=key, default=False)


@pytest.mark.parametrize("remove_padding", [True, False])
def test_simko_loss_equals_simko_policy_loss_on_verl_micro_batch(verl_simko, remove_padding):
    """verl's ppo_loss with loss_mode=simko on a verl micro-batch equals simko.policy_loss (official settings) on the
    same logits: value and gradient with respect to every model parameter."""
    model = tiny_llama(1)
    engine = make_engine(model)
    data, plain = verl_actor_batch(model, seed=1, temperature=0.7, remove_padding=remove_padding)
    loss, metrics, logits = engine_forward(engine, data, actor_config())
    want = direct_simko(response_logits(logits, plain, remove_padding), plain, 0.7)
    assert loss.item() == pytest.approx(want.item(), abs=1e-6)
    diff, scale = max_grad_diff(loss, want, list(model.parameters()))
    print(f"simko vs simko.policy_loss: value diff {abs(loss.item() - want.item()):.2e}, grad diff {diff:.2e} "
          f"(max |grad| {scale:.2e})")
    assert diff <= 1e-5 * max(1.0, scale)
    assert 0 < metrics["actor/simko_gated_frac"].values[0] < 1
    # the check has teeth: the plain clipped surrogate (alpha 0, lambda 1) differs in value
    plain_loss = direct_simko(response_logits(logits, plain, remove_padding), plain, 0.7, alpha=0.0, lam=1.0)
    assert abs(plain_loss.item() - want.item()) > 1e-4


def official_simko_loss(old_log_prob, old_log_probs_topk, log_prob, topk_log_probs, entropy, advantages, eos_mask,
                        cliprange, token_level_scores, max_token, mix_topk_coef=0.01, tau=0.8):
    """The official SimKO loss, re-implemented from `compute_policy_loss_simko` (CLR-Lab/SimKO,
    verl/trainer/ppo/core_algos.py) with its operations in its order. [bs, T] tensors, top-K [bs, T, K];
    max_token: 1.0 where the sampled token is the argmax."""
    correct = token_level_scores.sum(-1) == 1
    K = topk_log_probs.size(-1)
    diff_bar = log_prob - old_log_prob
    diff_topk = topk_log_probs - old_log_probs_topk
    top_i_terms = (torch.exp(diff_bar.detach()).unsqueeze(-1) / (torch.exp(diff_topk.detach()) + 1e-8)
                   * torch.exp(diff_topk))
    topk_sum = top_i_terms.sum(-1)
    mask = eos_mask > 0
    threshold = torch.stack([torch.quantile(entropy[b][mask[b]] if mask[b].any() else entropy[b], tau)
                             for b in range(entropy.shape[0])]).view(-1, 1)
    w = (entropy > threshold).float()
    mix_topk = mix_topk_coef * w * mask
    correct_mask = correct.view(-1, 1).expand_as(log_prob) & mask
    ratio = torch.exp(log_prob - old_log_prob)
    ratio = torch.where(correct_mask, (1.0 - mix_topk) * ratio + (mix_topk / float(K)) * topk_sum, ratio)
    neg = (advantages.sum(-1) < 0).unsqueeze(-1) & (max_token > 0) & (entropy > threshold)
    advantages = advantages * torch.ones_like(advantages).masked_fill(neg, 1.1)
    losses = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange))
    return (losses * eos_mask).sum() / eos_mask.sum()


def test_simko_loss_equals_official_loss(verl_simko):
    """The registered loss, on verl's forward, equals the official SimKO loss on the same logits (the official
    statistics: entropy, argmax flag, top-K log-probs of the current and the old logits), value and gradient."""
    model = tiny_llama(2)
    old_model = tiny_llama(2)
    with torch.no_grad():  # the rollout policy: a nearby model, so the old top-K log-probs differ from the new
        for p in old_model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    engine = make_engine(model)
    data, plain = verl_actor_batch(old_model, seed=2)
    loss, _, logits = engine_forward(engine, data, actor_config())
    resp = response_logits(logits, plain, True)
    with torch.no_grad():
        old_resp = old_model(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"],
                             position_ids=plain["position_ids"]).logits[:, P - 1:-1]
    logp_v = resp.log_softmax(-1)
    topk_idx = resp.detach().topk(3, dim=-1).indices
    responses = plain["responses"]
    official = official_simko_loss(
        old_log_prob=plain["old_log_probs"], old_log_probs_topk=old_resp.log_softmax(-1).gather(-1, topk_idx),
        log_prob=logp_v.gather(-1, responses.unsqueeze(-1))[..., 0], topk_log_probs=logp_v.gather(-1, topk_idx),
        entropy=-(logp_v.exp() * logp_v).sum(-1).detach(), advantages=plain["advantages"],
        eos_mask=plain["response_mask"], cliprange=0.2, token_level_scores=plain["token_level_scores"],
        max_token=(resp.argmax(-1) == responses).float())
    diff, scale = max_grad_diff(loss, official, list(model.parameters()))
    print(f"simko vs official: value diff {abs(loss.item() - official.item()):.2e}, grad diff {diff:.2e} "
          f"(max |grad| {scale:.2e})")
    assert loss.item() == pytest.approx(official.item(), abs=1e-6)
    assert diff <= 1e-5 * max(1.0, scale)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_simko_micro_batches_add_up_to_the_mini_batch_loss(mode):
    """With verl's global-batch info (dp_size, batch_num_tokens, global_batch_size) each micro-batch's loss is
    scaled so that the micro-batches add up to simko.policy_loss over the mini-batch, for every loss_agg_mode;
    dp_size multiplies (FSDP averages the ranks' gradients)."""
    g = torch.Generator().manual_seed(4)
    B, T, K = 6, 7, 3
    mask = (torch.arange(T) < torch.tensor([7, 3, 2, 5, 1, 6]).unsqueeze(1)).float()  # no empty response: verl
    # divides seq-mean modes by global_batch_size, every sequence, where simko skips empty ones
    logits = torch.randn(B, T, 20, generator=g, requires_grad=True)
    tokens = torch.randint(0, 20, (B, T), generator=g)
    stats = simko.token_stats(logits, tokens, top_k=K)
    old = stats.logp.detach() + 0.2 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, 1, generator=g).expand(B, T) * mask
    correct = torch.tensor([True, False, True, True, False, False])
    agg = iv.SIMKO_AGGREGATIONS[mode]
    want = simko.policy_loss(stats.logp, old, adv, mask, stats, clip_low=0.2, clip_high=0.2, agg=agg, max_len=9,
                             correct=correct, spread_on="correct")[0]
    info = {"dp_size": 2, "batch_num_tokens": int(mask.sum()), "global_batch_size": B, "loss_scale_factor": 9}
    config = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "global_batch_info": info,
              "policy_loss": {"loss_mode": "simko"}}
    fn = iv.simko_policy_loss
    total = 0
    for rows in (slice(0, 2), slice(2, 6)):
        iv._pending.stats = {"logp": stats.logp[rows], "entropy": stats.entropy[rows],
                             "topk_logp": stats.topk_logp[rows], "is_rank1": stats.is_rank1[rows],
                             "correct": correct[rows]}
        total = total + fn(old[rows], stats.logp[rows], adv[rows], mask[rows], mode, config)[0]
    assert total.item() == pytest.approx(2 * want.item(), abs=1e-6)
    g_total, = torch.autograd.grad(total, logits, retain_graph=True)
    g_want, = torch.autograd.grad(2 * want, logits)
    torch.testing.assert_close(g_total, g_want, rtol=0, atol=1e-6)


def test_simko_registration_config_and_errors(verl_simko):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    assert iv.register_simko() == "simko"  # idempotent: registered and wrapped once, on import
    assert get_policy_loss_fn("simko") is iv.simko_policy_loss
    assert FSDPEngineWithLMHead.prepare_model_outputs._simko_wrapped
    assert not hasattr(FSDPEngineWithLMHead.prepare_model_outputs.__wrapped__, "_simko_wrapped")
    # defaults: the official values; the hydra target takes the simko_* keys from the command line
    assert iv.simko_settings(actor_config()) == {"simko_top_k": 3, "simko_alpha": 0.01, "simko_lambda": 1.1,
                                                 "simko_tau": 0.8, "simko_spread_on": "correct"}
    cfg = actor_config("actor_rollout_ref.actor.policy_loss._target_=integrations.verl.SimKOPolicyLossConfig",
                       "+actor_rollout_ref.actor.policy_loss.simko_top_k=5",
                       "+actor_rollout_ref.actor.policy_loss.simko_spread_on=advantage")
    assert isinstance(cfg.policy_loss, iv.SimKOPolicyLossConfig)
    assert iv.simko_settings(cfg)["simko_top_k"] == 5 and iv.simko_settings(cfg)["simko_spread_on"] == "advantage"
    assert (cfg.clip_ratio_low, cfg.clip_ratio_high, cfg.loss_agg_mode) == (0.2, 0.2, "token-mean")
    x = torch.zeros(2, 3)
    iv._pending.stats = None
    with pytest.raises(ValueError, match="use_fused_kernels=False"):
        iv.simko_policy_loss(x, x, x, x + 1, "token-mean", cfg)
    stats = {"logp": x, "entropy": x, "topk_logp": x.unsqueeze(-1), "is_rank1": x.bool(), "correct": None}
    for mode, match in (("token-sum", "loss_agg_mode"), ("token-mean", "token_level_scores")):
        iv._pending.stats = dict(stats)
        with pytest.raises(ValueError, match=match):
            iv.simko_policy_loss(x, x, x, x + 1, mode, actor_config())
    iv._pending.stats = dict(stats)
    with pytest.raises(ValueError, match="rollout_correction"):
        iv.simko_policy_loss(x, x, x, x + 1, "token-mean", actor_config(), rollout_is_weights=x)
    with pytest.raises(ValueError, match="simko_top_k"):
        iv.simko_settings({"policy_loss": {"simko_top_k": 0}})


def test_simko_update_step_end_to_end(verl_simko, monkeypatch):
    """verl's engine runs one training step with loss_mode=simko (train_batch: zero_grad, forward_backward_batch
    over two micro-batches with the global token normalisation, optimizer step), and the parameters move as the
    same SGD step on simko.policy_loss over the whole mini-batch, computed directly from a padded forward.

    verl 0.9.1 has no CPU platform: forward_backward_batch moves its token count to `get_device_id()`, which asks
    torch.cuda; the test points that one call at the CPU. The FSDP wrapping itself needs a GPU (make_engine)."""
    import copy

    from verl.plugin.platform import get_platform
    from verl.workers.utils.losses import ppo_loss

    monkeypatch.setattr(type(get_platform()), "current_device", lambda self: "cpu")

    lr = 0.5
    model = tiny_llama(3)
    reference = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    engine = make_engine(model, lr=lr)
    data, plain = verl_actor_batch(model, seed=3, temperature=0.7, micro_batch_size=2)
    del data["batch_num_tokens"], data["dp_size"]  # forward_backward_batch computes them
    out = engine.train_batch(data, loss_function=functools.partial(ppo_loss, config=actor_config()))
    assert len(out["metrics"]["actor/simko_gated_frac"].values) == 2  # two micro-batches
    moved = [p.detach() - b for p, b in zip(model.parameters(), before)]

    logits = reference(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"],
                       position_ids=plain["position_ids"]).logits[:, P - 1:-1]
    loss = direct_simko(logits, plain, 0.7)
    grads = torch.autograd.grad(loss, list(reference.parameters()), retain_graph=True)
    want = [-lr * g for g in grads]
    scale = max(w.abs().max().item() for w in want)
    diff = max((m - w).abs().max().item() for m, w in zip(moved, want))
    print(f"update_step end to end: max |delta - direct delta| {diff:.2e} (max |delta| {scale:.2e})")
    assert scale > 1e-4
    assert diff <= 1e-4 * scale
    # teeth: the GRPO step (plain clipped surrogate) moves the parameters differently
    plain_grads = torch.autograd.grad(direct_simko(logits, plain, 0.7, alpha=0.0, lam=1.0),
                                      list(reference.parameters()))
    assert max((m + lr * g).abs().max().item() for m, g in zip(moved, plain_grads)) > 100 * diff
