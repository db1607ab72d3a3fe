"""train.py's method options: advantage schedules (and their resume), the loss options PSR / NSR / W-REINFORCE,
SimKO's spread condition, the named clip settings and GRPO's std."""
import copy
import json
import math

import pytest
import torch

import passk_at_k as pk
import simko
import train
from test_train import TINY, _err, _policy, _run, _stable, _tiny_rollout, parity_reward  # noqa: F401 (fixture)


# ----------------------------------------------------------------------------------------------------------------
# --schedule

def test_schedule_phases_and_the_switch_alias():
    args = train.parse_args(["--schedule", "grpo:2,passk@2:3,pkpo@8:1"])
    assert train.schedule_of(args) == [pk.Phase("grpo", 4, 2), pk.Phase("passk", 2, 3), pk.Phase("pkpo", 8, 1)]
    # --switch-to-grpo-at N is --schedule ADVANTAGE:N,grpo:1, step for step
    alias = train.schedule_of(train.parse_args(["--switch-to-grpo-at", "3", "--advantage", "passk_full"]))
    spelled = pk.parse_schedule("passk_full:3,grpo:1", 4)
    assert [pk.phase_at(alias, s) for s in range(8)] == [pk.phase_at(spelled, s) for s in range(8)]
    assert [pk.phase_at(alias, s).advantage for s in range(5)] == ["passk_full"] * 3 + ["grpo"] * 2
    assert train.schedule_of(train.parse_args(["--switch-to-grpo-at", "0"])) == [pk.Phase("grpo", 4, 1)]
    assert train.schedule_of(train.parse_args([])) == [pk.Phase("passk", 4, 1)]


@pytest.mark.parametrize("argv, message", [
    (["--schedule", "passk:3,grpo"], "--schedule: schedule 'passk:3,grpo', part 2 'grpo': expected NAME[@K]:STEPS"),
    (["--schedule", "pass:3"], "unknown advantage 'pass'"),
    (["--schedule", "grpo:0"], "STEPS must be an integer >= 1"),
    (["--schedule", "grpo:2,passk@8:2"], "--schedule: phase passk@8: k = N = 8 is refused"),
    (["--schedule", "pkpo@9:2"], "--schedule: phase pkpo@9: k must be an integer with 1 <= k <= N (the group size); "
                                 "got k=9, N=8"),
    (["--schedule", "grpo:2", "--switch-to-grpo-at", "3"], "--schedule replaces --switch-to-grpo-at"),
    (["--schedule", "grpo:2", "--loss", "nsr"], "--loss nsr takes its advantages from the rewards alone"),
    (["--loss", "psr2"], "invalid choice: 'psr2'"),
    (["--w-reinforce-weight", "-1"], "--w-reinforce-weight must be >= 0, got -1.0"),
    (["--simko-spread-on", "reward"], "invalid choice: 'reward'"),
    (["--clip", "dapo"], "invalid choice: 'dapo'"),
    (["--grpo-std", "sample"], "invalid choice: 'sample'"),
])
def test_bad_method_flags_name_the_flag(capsys, argv, message):
    assert message in _err(capsys, argv)


def test_k_equal_to_the_group_size_is_refused_with_the_reason_except_for_pkpo(capsys):
    assert "every advantage is 0 and nothing trains" in _err(capsys, ["--k", "8"])
    assert train.parse_args(["--advantage", "pkpo", "--k", "8"]).k == 8      # PKPO is defined at k = N
    assert train.parse_args(["--schedule", "grpo:1,pkpo@8:1"]).schedule == "grpo:1,pkpo@8:1"
    assert train.parse_args(["--loss", "psr", "--k", "8"]).k == 8             # the baselines do not use k


def test_schedule_is_followed_step_by_step_and_carries_through_resume(tmp_path, parity_reward, monkeypatch, capsys):
    schedule = ["--schedule", "grpo:1,passk@3:2,pkpo@4:1", "--eval-every", "0", "--save-every", "1"]
    _, full = _run(tmp_path, "full", "--steps", "5", *schedule)
    steps = [l for l in full if l["type"] == "train"]
    assert [(l["advantage"], l["k"]) for l in steps] == [("grpo", 2), ("passk", 3), ("passk", 3), ("pkpo", 4),
                                                         ("pkpo", 4)]               # the last phase runs on
    real = train.rl_step

    def killed_in_step_4(step, *a):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return real(step, *a)
    monkeypatch.setattr(train, "rl_step", killed_in_step_4)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "part", "--steps", "5", *schedule)           # dies after step 3's checkpoint, in phase 2
    monkeypatch.setattr(train, "rl_step", real)
    train.main(["--resume", "--out", str(tmp_path / "part")])       # the schedule comes back from config.json
    part = [json.loads(l) for l in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert _stable(part) == _stable(full)
    assert "--resume cannot change --schedule" in _err(capsys, ["--resume", "--out", str(tmp_path / "part"),
                                                                "--schedule", "grpo:5"])


# ----------------------------------------------------------------------------------------------------------------
# --loss psr | nsr | w_reinforce

def _grad(model, ro, adv, argv, correct=None):
    args = train.parse_args(["--group-size", "4", "--k", "2", "--max-grad-norm", "1e9", "--mini-batches", "1", *argv])
    m = copy.deepcopy(model)
    before = [p.detach().clone() for p in m.parameters()]
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    metrics = train.update(_policy(m), opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), ro, adv, args,
                           correct)
    return torch.cat([(b - p.detach()).flatten() for b, p in zip(before, m.parameters())]), metrics, args


def _by_hand(model, ro, tau_=0.8, **loss_kwargs):
    """The gradient of one simko.policy_loss over the whole batch, with SimKO at the paper's values (gate tau_)."""
    m = copy.deepcopy(model)
    stats = train.response_token_stats(m, ro.input_ids, ro.attention_mask, ro.prompt_len, train.parse_args([]),
                                       stats_from_hidden=False)
    loss, metrics = simko.policy_loss(stats.logp, ro.logp, mask=ro.response_mask, stats=stats, alpha=0.01, lam=1.1,
                                      tau=tau_, max_len=ro.response_mask.shape[1], **loss_kwargs)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in m.parameters()]), metrics


@pytest.mark.parametrize("loss", ["psr", "nsr", "w_reinforce"])
def test_loss_options_train_on_the_baselines_advantages(loss):
    model, _, ro = _tiny_rollout()
    rewards = torch.tensor([[1., 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]])
    correct = rewards.reshape(-1) > 0.5
    args = train.parse_args(["--group-size", "4", "--loss", loss])
    adv = train.advantages_of(rewards, ro, "passk", args, 0)                   # --advantage is not used
    expected = {"psr": rewards, "nsr": rewards - 1, "w_reinforce": torch.where(rewards > 0.5, 0.1, -1.0)}[loss]
    assert torch.equal(adv, expected)
    g, metrics, _ = _grad(model, ro, adv.reshape(-1), ["--loss", loss, "--simko"], correct)
    ref, _ = _by_hand(model, ro, advantages=None, loss=loss, correct=correct)    # the library's own loss=
    torch.testing.assert_close(g, ref, atol=1e-6, rtol=1e-4)
    skipped = {"psr": ~correct, "nsr": correct, "w_reinforce": torch.zeros(12, dtype=torch.bool)}[loss]
    assert metrics["updated_rows_frac"] == pytest.approx(1 - skipped.float().mean().item())   # A = 0 rows skipped


@pytest.mark.parametrize("loss", ["psr", "nsr", "w_reinforce"])
def test_loss_options_run_end_to_end_and_log_the_concentration(tmp_path, parity_reward, loss):
    _, lines = _run(tmp_path, loss, "--steps", "2", "--loss", loss, "--no-simko")
    for l in [l for l in lines if l["type"] == "train"]:
        assert l["advantage"] == loss
        r = l["reward_mean"]
        assert l["adv_mean"] == pytest.approx({"psr": r, "nsr": r - 1, "w_reinforce": 0.1 * r - (1 - r)}[loss])
        assert 1 >= l["rank1_prob"] >= l["rank2_prob"] > 0 and isinstance(l["rank1_logp"], float)
    config = json.loads((tmp_path / loss / "config.json").read_text())
    assert (config["loss"], config["w_reinforce_weight"]) == (loss, simko.PAPER_W_REINFORCE_WEIGHT)


# ----------------------------------------------------------------------------------------------------------------
# --simko-spread-on

def test_spread_condition_reaches_the_loss():
    model, _, ro = _tiny_rollout()
    # a wrong response with A > 0 (as in a successful group under passk_full) and a right one with A < 0
    adv = torch.tensor([1.0, 0.5, -1.0, -0.5] * 3)
    correct = torch.tensor([True, False, True, False] * 3)
    by_adv, m_adv, _ = _grad(model, ro, adv, ["--simko-tau", "0"], correct)
    by_correct, m_correct, _ = _grad(model, ro, adv, ["--simko-tau", "0", "--simko-spread-on", "correct"], correct)
    ref, ref_metrics = _by_hand(model, ro, advantages=adv, spread_on="correct", correct=correct, tau_=0.0)
    torch.testing.assert_close(by_correct, ref, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(by_adv, by_correct, atol=1e-7)
    assert m_correct["spread_frac_of_gated"] == pytest.approx(ref_metrics["spread_frac_of_gated"], rel=1e-5)
    assert m_correct["spread_frac_of_gated"] != pytest.approx(m_adv["spread_frac_of_gated"])
    assert train.parse_args([]).simko_spread_on == "advantage"                  # the default


# ----------------------------------------------------------------------------------------------------------------
# --clip and GRPO's std

@pytest.mark.parametrize("argv, name, low, high", [
    ([], "passk", 0.2, 0.28),                                                  # Pass@k + SimKO: the Pass@k paper's
    (["--advantage", "grpo"], "simko", 0.2, 0.2),                              # SimKO alone: SimKO's official code
    (["--schedule", "grpo:5"], "simko", 0.2, 0.2),
    (["--switch-to-grpo-at", "0"], "simko", 0.2, 0.2),
    (["--advantage", "grpo", "--no-simko"], "passk", 0.2, 0.28),
    (["--schedule", "grpo:5,passk:5"], "passk", 0.2, 0.28),
    (["--advantage", "grpo", "--loss", "psr"], "simko", 0.2, 0.2),            # Zhu et al.'s runs: verl's 0.2
    (["--loss", "nsr", "--clip", "passk"], "passk", 0.2, 0.28),
    (["--clip", "simko"], "simko", 0.2, 0.2),
    (["--advantage", "grpo", "--clip", "passk"], "passk", 0.2, 0.28),
    (["--clip", "simko", "--clip-high", "0.3"], "simko", 0.2, 0.3),            # a flag overrides its preset
    (["--clip-low", "0.1"], "passk", 0.1, 0.28),
])
def test_clip_presets_resolve_as_documented(argv, name, low, high):
    args = train.parse_args(argv)
    assert (args.clip, args.clip_low, args.clip_high) == (name, low, high)


@pytest.mark.parametrize("argv, simko_on", [([], True), (["--loss", "psr"], False), (["--loss", "nsr"], False),
                                             (["--loss", "w_reinforce"], False), (["--loss", "psr", "--simko"], True),
                                             (["--no-simko"], False)])
def test_the_analysis_baselines_resolve_to_zhu_et_al_settings_unless_overridden(argv, simko_on):
    assert train.parse_args(argv).simko is simko_on


def test_clip_presets_are_the_papers_constants_and_the_help_says_so():
    assert train.CLIPS == {"passk": pk.PAPER_CLIP, "simko": simko.PAPER_CLIP}
    assert pk.PAPER_CLIP == (0.2, 0.28) and simko.PAPER_CLIP == (0.2, 0.2)
    text = train.build_parser()._option_string_actions["--clip"].help
    assert "'passk' 0.2 / 0.28" in text and "'simko' a symmetric 0.2" in text and "SimKO alone" in text


def test_a_resumed_run_keeps_its_clip(tmp_path):
    out = tmp_path / "run"
    train.main(["--out", str(out), "--sft-steps", "0", "--warmup-cache", str(tmp_path / "wc"), *TINY, "--steps", "1",
                "--advantage", "grpo", "--eval-problems", "2"])
    config = json.loads((out / "config.json").read_text())
    assert (config["clip"], config["clip_low"], config["clip_high"]) == ("simko", 0.2, 0.2)
    args = train.parse_args(["--resume", "--out", str(out)])
    assert (args.clip, args.clip_low, args.clip_high) == ("simko", 0.2, 0.2)


def test_grpo_std_option():
    from types import SimpleNamespace
    r = torch.tensor([[1., 0, 0, 0, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]])
    ro = SimpleNamespace()
    population = train.advantages_of(r, ro, "grpo", train.parse_args([]), 0)
    unbiased = train.advantages_of(r, ro, "grpo", train.parse_args(["--grpo-std", "unbiased"]), 0)
    torch.testing.assert_close(population, pk.grpo_advantages(r))
    torch.testing.assert_close(population / unbiased, torch.full_like(r, math.sqrt(8 / 7)))     # 1.069x at N = 8
