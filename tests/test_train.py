"""train.py: configuration and data errors, the update's arithmetic, end-to-end runs, resume, the HF path."""
import copy
import json
import os
import sys

import pytest
import torch

import countdown
import rollout
import simko
import train
import train_io
import verify
from conftest import save_tiny_chat_llama

# Small everything: 8 held-out problems x 4 samples, 4 prompts x 4 responses per step, responses <= 8 tokens.
TINY = ["--eval-problems", "8", "--eval-samples", "4", "--prompts-per-step", "4", "--group-size", "4", "--k", "2",
        "--max-new-tokens", "8", "--no-progress"]


def _err(capsys, argv):
    with pytest.raises(SystemExit) as e:
        train.parse_args(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Fail fast: flags

@pytest.mark.parametrize("argv, message", [
    (["--k", "9", "--group-size", "8"], "--k: k must be an integer with 1 <= k <= N (the group size); got k=9, N=8"),
    (["--k", "8", "--group-size", "8"], "--k: k = N = 8 is refused"),
    (["--k", "8", "--group-size", "8", "--advantage", "exceeding"], "the only group of k responses is the whole set"),
    (["--k", "0"], "--k: k must be an integer with 1 <= k <= N"),
    (["--mini-batches", "0"], "--mini-batches must be in [1, --prompts-per-step=16]"),
    (["--mini-batches", "17"], "--mini-batches must be in [1, --prompts-per-step=16]"),
    (["--mini-batches", "5", "--prompts-per-step", "4"], "--mini-batches must be in [1, --prompts-per-step=4]"),
    (["--group-size", "1", "--k", "1"], "--group-size must be >= 2"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--temperature", "0"], "--temperature must be > 0"),
    (["--clip-low", "1"], "--clip-low must be in [0, 1)"),
    (["--clip-high", "-0.1"], "--clip-high must be >= 0"),
    (["--simko-alpha", "1.5"], "--simko-alpha must be in [0, 1]"),
    (["--simko-lambda", "0"], "--simko-lambda must be > 0"),
    (["--simko-tau", "1.2"], "--simko-tau is a quantile"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--steps", "-1"], "--steps must be >= 0"),
    (["--prompts-per-step", "0"], "--prompts-per-step must be >= 1"),
    (["--kl-coef", "-0.1"], "--kl-coef must be >= 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--advantage", "pass_at_k"], "invalid choice: 'pass_at_k'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--data", "x.jsonl"], "--data needs --model"),
    (["--model", "some/model"], "--model needs --data"),
    (["--resume"], "--resume needs --out"),
])
def test_bad_flags_fail_with_a_message_naming_the_flag(capsys, argv, message):
    err = _err(capsys, argv)
    assert message in err
    usage, error = err.strip().splitlines()              # a short usage line, not the whole flag list, then the error
    assert usage == "usage: train.py [--flag VALUE ...]  (`train.py --help` lists every flag)"
    assert error.startswith("train.py: error: ")


def test_progress_is_a_line_each_tenth_where_output_is_not_a_terminal(capsys):
    lines = []                                           # (pytest's stderr is no terminal)
    bar = train_io.progress(range(20), "RL", False, lines.append)
    for i in bar:
        bar.set_postfix(reward=f"{i / 10:.1f}")
    bar.close()
    assert [line.split(",")[0] for line in lines] == [f"RL: {n}/20" for n in range(2, 21, 2)]
    assert lines[1].endswith(", reward 0.3") and lines[-1].endswith(", reward 1.9")
    resumed = []
    assert list(train_io.progress(range(15, 20), "RL", False, resumed.append, total=20, initial=15)) == [15, 16, 17,
                                                                                                           18, 19]
    assert [line.split(",")[0] for line in resumed] == ["RL: 16/20", "RL: 18/20", "RL: 20/20"]
    quiet = []
    assert list(train_io.progress(range(3), "RL", True, quiet.append)) == [0, 1, 2] and quiet == []
    assert capsys.readouterr().err == ""


def test_a_log_in_a_file_gets_flushed_lines_and_no_library_bars(capsys, monkeypatch):
    import transformers.modeling_gguf_pytorch_utils as gguf_loading
    monkeypatch.setattr(gguf_loading, "tqdm", gguf_loading.tqdm)            # restored after the test
    flushed = []
    monkeypatch.setattr(sys.stdout, "flush", lambda: flushed.append(True))
    log = train_io.quiet_libraries()                    # (pytest's stderr is no terminal)
    assert list(gguf_loading.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...")) == [0, 1, 2]
    log("RL: 8/80, 8s")
    out = capsys.readouterr()
    assert out.out == "RL: 8/80, 8s\n" and flushed and "de-quantizing" not in out.err


def test_flags_and_their_checks_are_built_from_the_dataclass(capsys):
    from dataclasses import dataclass

    @dataclass
    class Toy:
        on: bool = train_io.flag(True, "a switch", group="toys")
        off: bool = train_io.flag(False, "another")
        rate: float = train_io.flag(0.5, "a rate", check=train_io.within("(0, 1]"))
        name: str | None = train_io.flag(None, "a name", shown="later",
                                         check=lambda v, c: ": not x" if v == "x" else None)
    p = train_io.build_parser(Toy, "toy")
    assert vars(p.parse_args(["--no-on", "--off", "--rate", "1"])) == {"on": False, "off": True, "rate": 1.0,
                                                                      "name": None}
    assert vars(p.parse_args([])) == {"on": True, "off": False, "rate": 0.5, "name": None}
    assert [p._option_string_actions[f].help for f in ("--off", "--rate", "--name")] == \
        ["another (default off)", "a rate (default 0.5)", "a name (default: later)"]
    for argv, message in [(["--rate", "0"], "error: --rate must be in (0, 1], got 0.0"),
                          (["--rate", "1.5"], "--rate must be in (0, 1], got 1.5"), (["--name", "x"], "--name: not x")]:
        with pytest.raises(SystemExit):
            train_io.check_fields(p, Toy(**vars(p.parse_args(argv))))
        assert message in capsys.readouterr().err
    train_io.check_fields(p, Toy(rate=1.0))                                   # the closed end is allowed


def test_k_is_only_checked_against_the_group_size_when_an_advantage_uses_it():
    assert train.parse_args(["--advantage", "grpo", "--group-size", "4"]).k == 4     # GRPO ignores k


def test_missing_files_and_resume_without_checkpoint(capsys, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert "--data: no such file" in _err(capsys, ["--model", str(model), "--data", str(tmp_path / "nope.jsonl")])
    assert "no checkpoint in" in _err(capsys, ["--resume", "--out", str(tmp_path)])
    (tmp_path / "metrics.jsonl").write_text("")
    assert "already holds a run" in _err(capsys, ["--out", str(tmp_path)])


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache holding one model, Org/Name (its config.json), and no network at all."""
    import huggingface_hub
    from huggingface_hub import constants
    cache = tmp_path / "hub"
    snapshot = cache / "models--Org--Name" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--Org--Name" / "refs").mkdir()
    (cache / "models--Org--Name" / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def unreachable(*a, **k):
        raise ConnectionError("no network in tests")
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    return cache


def test_every_bad_model_fails_in_one_line_before_anything_loads(capsys, tmp_path, hub_cache, monkeypatch):
    from huggingface_hub import constants
    data = ["--data", __file__]
    assert train.parse_args(["--model", "Org/Name", *data]).model == "Org/Name"         # cached: it loads offline
    (tmp_path / "empty").mkdir()
    for model, message in [
            ("./nope", "--model: no such directory: ./nope"),
            ("runs/x/checkpont", "--model: no such directory: runs/x/checkpont"),      # a path, not a Hub name
            (str(tmp_path / "empty"), "is a directory without config.json"),
            (__file__, "is a file; --model takes a model directory, a Hub name or a .gguf file"),
            ("no-such-org/x", "--model: no-such-org/x is no local directory, is not in the Hugging Face cache, and "
                              "the Hub cannot be reached (ConnectionError)")]:
        err = _err(capsys, ["--model", model, *data])
        assert message in err, (model, err)
        assert len(err.strip().splitlines()) == 2 and "--help" in err.splitlines()[0]    # usage line, error line
    monkeypatch.setattr(constants, "is_offline_mode", lambda: True)
    assert "not in the Hugging Face cache (offline mode: HF_HUB_OFFLINE)" in _err(capsys, ["--model", "no-such-org/x",
                                                                                           *data])
    assert train.parse_args(["--model", "Org/Name", *data]).model == "Org/Name"


def test_a_hub_name_offline_fails_fast_from_the_command_line(tmp_path):
    """HF_HUB_OFFLINE=1 and a name that is not cached: two lines on stderr, no traceback, no retries, exit 2."""
    import subprocess
    import sys
    import time
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "OMP_NUM_THREADS": "1"}
    start = time.time()
    run = subprocess.run([sys.executable, "train.py", "--model", "no-such-org/x", "--data", __file__],
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == "" and time.time() - start < 60
    assert run.stderr.splitlines() == [
        "usage: train.py [--flag VALUE ...]  (`train.py --help` lists every flag)",
        "train.py: error: --model: no-such-org/x is no local directory and is not in the Hugging Face cache "
        "(offline mode: HF_HUB_OFFLINE)"]


def test_simko_flag_pair_and_defaults():
    a = train.parse_args([])
    assert (a.advantage, a.k, a.simko, a.simko_topk, a.simko_alpha, a.simko_lambda, a.simko_tau) == \
        ("passk", 4, True, 3, 0.01, 1.1, 0.8)
    assert (a.clip_low, a.clip_high, a.loss_agg, a.kl_coef) == (0.2, 0.28, "token_mean", 0.0)
    assert a.mini_batches == 4 and train.parse_args(["--prompts-per-step", "2"]).mini_batches == 2
    assert (a.simko_gate, a.simko_penalty, a.decode, a.warmup_variant, a.reward_fallback) == \
        ("row_quantile", "advantage", "dynamic", "headroom", "none")
    assert train.parse_args(["--no-simko"]).simko is False
    assert a.max_new_tokens == 12 and a.out.startswith("runs")


# ----------------------------------------------------------------------------------------------------------------
# Fail fast: data files

def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("lines, message", [
    (['{"problem": "1+1?", "answer": "2"}', '{"problem": "2+2?", "answer": "4"'], ":2: not valid JSON"),
    (['[1, 2]'], ":1: expected a JSON object, got list"),
    (['{"problem": "1+1?", "answer": "2"}', '', '{"question": "x", "answer": ""}'],
     ":3: needs a non-empty string field 'answer'"),
    (['{"answer": "2"}'], ":1: needs a non-empty string field 'problem' or 'question'"),
    (['{"problem": "p", "solution": "so \\\\boxed{}"}'], ":1: the answer 'so \\\\boxed{}' has an empty \\boxed{}"),
    ([''], "no problems (the file is empty)"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, lines, message):
    path = _write(tmp_path / "d.jsonl", lines)
    with pytest.raises(ValueError) as e:
        train_io.load_jsonl(path)
    assert path in str(e.value) and message in str(e.value)


def test_jsonl_fields_alternatives(tmp_path):
    path = _write(tmp_path / "d.jsonl", ['{"question": "q1", "answer": "work #### 5"}',
                                         '{"problem": "q2", "solution": "thus \\\\boxed{x^2}"}',
                                         '{"problem": "q3", "answer": 12}', '{"problem": "q4", "answer": "  7 "}'])
    assert train_io.load_jsonl(path) == [{"problem": "q1", "gold": "work #### 5"},     # as written: verify reads it
                                         {"problem": "q2", "gold": "thus \\boxed{x^2}"},
                                         {"problem": "q3", "gold": "12"}, {"problem": "q4", "gold": "7"}]


def test_the_data_path_scores_with_verify_own_gold_rule(tmp_path):
    """A JSONL answer reaches task.reward as written, so train.py scores a response exactly as verify.reward does on
    that answer: a MATH answer with two boxes between words, and a GSM8K solution ending in `#### 72`."""
    math_answer = "So \\boxed{3} apples and \\boxed{8} pears."
    gsm8k_answer = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                    "altogether in April and May.\n#### 72")
    path = _write(tmp_path / "d.jsonl", [json.dumps({"problem": "fruit?", "answer": math_answer}),
                                         json.dumps({"question": "clips?", "answer": gsm8k_answer})] * 4)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    args = train.parse_args(["--model", str(model), "--data", path, "--eval-data", path, "--reward-workers", "0",
                             "--prompts-per-step", "2"])
    task = train.load_task(args)
    fruit, clips = task.train[0], task.train[1]
    cases = [("\\boxed{3, 8}", fruit, 1.0), ("\\boxed{8}", fruit, 0.0), ("\\boxed{3}", fruit, 0.0),
             ("The answer is 72.", clips, 1.0), ("\\boxed{72}", clips, 1.0), ("\\boxed{24}", clips, 0.0),
             ("#### 72", clips, 1.0)]
    responses, problems, expected = zip(*cases)
    assert task.reward(list(responses), list(problems)) == list(expected)
    # the same verdicts as verify.reward on the raw answers: one gold rule
    assert [verify.reward(r, p["gold"]) for r, p, _ in cases] == list(expected)


def test_data_errors_surface_before_any_model_is_loaded(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model was loaded before the data was checked")
    monkeypatch.setattr(train_io, "load_hf_model", boom)
    monkeypatch.setattr(train_io, "warmed_up_model", boom)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    bad = _write(tmp_path / "bad.jsonl", ['{"problem": "a", "answer": "1"}', "not json"])
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        train.main(["--model", str(model_dir), "--data", bad, "--out", str(tmp_path / "o1")])
    small = _write(tmp_path / "small.jsonl", ['{"problem": "a", "answer": "1"}'] * 3)
    with pytest.raises(ValueError, match="larger than the training set"):
        train.main(["--model", str(model_dir), "--data", small, "--eval-data", small, "--out", str(tmp_path / "o2")])


# ----------------------------------------------------------------------------------------------------------------
# The embedded task

def test_countdown_checker_is_exact_and_safe():
    assert countdown.reward("3*7+4", (3, 7, 4), 25) == 1.0
    assert countdown.reward("(4+3*7)", (3, 7, 4), 25) == 1.0
    assert countdown.reward("3*7+4", (3, 7, 4), 26) == 0.0
    assert countdown.reward("3*7+4+0", (3, 7, 4), 25) == 0.0          # extra number
    assert countdown.reward("7*7-4*6", (3, 7, 4), 25) == 0.0          # wrong numbers
    assert countdown.reward("8/(3-8/3)", (8, 3, 8), 24) == 0.0        # four numbers for three
    assert countdown.reward("8/(3-8/3)", (8, 3, 8, 3), 24) == 1.0     # exact rationals: 8 / (1/3) = 24
    assert countdown.reward("1/(2-2)", (1, 2, 2), 1) == 0.0           # division by zero is just wrong
    for evil in ("__import__('os')", "9**9**9", "(" * 500 + "1" + ")" * 500, "1" * 5000, "", "3 * 7 + 4x"):
        assert countdown.reward(evil, (3, 7, 4), 25) == 0.0


def test_countdown_split_is_fixed_disjoint_and_every_listed_solution_is_correct():
    train_set, held_out = countdown.make_problems()
    assert len(held_out) == countdown.HELD_OUT
    assert not {p["prompt"] for p in train_set} & {p["prompt"] for p in held_out}
    assert held_out[0]["prompt"] == "4,7,6>5:"                        # fixed by SPLIT_SEED, not by --seed
    for p in held_out + train_set[:300]:
        assert p["solutions"] and all(countdown.reward(s, p["numbers"], p["target"]) == 1.0 for s in p["solutions"])
    several = sum(len(p["solutions"]) >= 2 for p in train_set) / len(train_set)
    assert several > 0.9                                               # most problems have several answers


def test_tokenizer_roundtrips_through_save_and_autotokenizer(tmp_path):
    from transformers import AutoTokenizer
    tok = countdown.build_tokenizer()
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "12,3,9>30:(12-9)*3+9/3"
    assert again(text)["input_ids"] == tok(text)["input_ids"] and len(tok(text)["input_ids"]) == len(text)
    assert again.decode(again(text)["input_ids"]) == text
    assert (again.eos_token_id, again.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)


# ----------------------------------------------------------------------------------------------------------------
# The update

def _tiny_rollout(seed=0):
    tok = countdown.build_tokenizer()
    model = countdown.build_model(tok, hidden=32, layers=2, heads=2, seed=seed).eval()
    ro = rollout.rollout(model, tok, ["3,7,4>25:", "1,2>3:", "9,9,9>27:"], 4, max_new_tokens=8,
                   generator=torch.Generator().manual_seed(seed))
    return model, tok, ro


def _reference_gradient(model, ro, adv, agg, simko_on):
    """The gradient of simko.policy_loss over the whole batch (every row), computed by hand."""
    m = copy.deepcopy(model)
    pos = rollout.position_ids(ro.attention_mask)
    P = ro.prompt_len
    logits = m(input_ids=ro.input_ids, attention_mask=ro.attention_mask, position_ids=pos).logits[:, P - 1:-1]
    stats = simko.token_stats(logits, ro.input_ids[:, P:], top_k=3)
    loss, _ = simko.policy_loss(stats.logp, ro.logp, adv, ro.response_mask, stats if simko_on else None,
                                alpha=0.01 if simko_on else 0.0, lam=1.1 if simko_on else 1.0, tau=0.5,
                                gate="absolute", agg=agg, max_len=ro.response_mask.shape[1])
    loss.backward()
    return torch.cat([p.grad.flatten() for p in m.parameters()])


def _policy(model):
    return train.Policy(model, tokenizer=None, eos_ids=[1])


def _sgd_update(model, ro, adv, argv, monkeypatch=None):
    """train.update with SGD at lr 1: returns (the step, i.e. the gradient; metrics; rows forwarded)."""
    args = train.parse_args(["--group-size", "4", "--k", "2", "--max-grad-norm", "1e9", "--mini-batches", "1", *argv])
    m = copy.deepcopy(model)
    before = [p.detach().clone() for p in m.parameters()]
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    rows = []
    if monkeypatch is not None:
        real = train.response_token_stats
        monkeypatch.setattr(train, "response_token_stats",
                            lambda model, ids, *a, **k: rows.append(ids.shape[0]) or real(model, ids, *a, **k))
    metrics = train.update(_policy(m), opt, sched, ro, adv, args)
    return torch.cat([(b - p.detach()).flatten() for b, p in zip(before, m.parameters())]), metrics, rows


@pytest.mark.parametrize("agg", simko.AGGREGATIONS)
@pytest.mark.parametrize("simko_on", [True, False])
def test_micro_batches_give_the_full_batch_gradient(agg, simko_on):
    model, _, ro = _tiny_rollout()
    adv = torch.randn(ro.input_ids.shape[0])
    flags = ["--loss-agg", agg, "--simko-gate", "absolute", "--simko-tau", "0.5"] + ([] if simko_on else ["--no-simko"])
    grads, logged = [], []
    for micro in (0, 5):
        g, metrics, _ = _sgd_update(model, ro, adv, ["--micro-batch-size", str(micro), *flags])
        grads.append(g)
        logged.append(metrics)
        assert metrics["grad_norm"] > 0
        if simko_on:
            assert metrics["gated_frac"] > 0 and metrics["spread_frac_of_gated"] > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    assert logged[0] == pytest.approx(logged[1], rel=1e-5, abs=1e-7)    # the metrics too (fractions of gated tokens)
    torch.testing.assert_close(grads[0], _reference_gradient(model, ro, adv, agg, simko_on), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("agg", simko.AGGREGATIONS)
@pytest.mark.parametrize("simko_on", [True, False])
def test_rows_with_zero_advantage_are_left_out_and_the_gradient_is_unchanged(agg, simko_on, monkeypatch):
    model, _, ro = _tiny_rollout()
    adv = torch.randn(12)
    adv[4:8] = 0.0        # a group whose responses were all right (or all wrong)
    adv[1] = 0.0          # and a single row (Pass@k gives 0 to some rows of a mixed group)
    flags = ["--loss-agg", agg, "--simko-gate", "absolute", "--simko-tau", "0.5", "--micro-batch-size", "3"]
    g, metrics, rows = _sgd_update(model, ro, adv, flags + ([] if simko_on else ["--no-simko"]), monkeypatch)
    assert sum(rows) == 7 and metrics["updated_rows_frac"] == pytest.approx(7 / 12)
    # the same gradient as the whole batch's loss, zero rows included in its normaliser
    torch.testing.assert_close(g, _reference_gradient(model, ro, adv, agg, simko_on), atol=1e-6, rtol=1e-4)


def test_zero_advantage_rows_are_kept_where_they_matter(monkeypatch):
    model, _, ro = _tiny_rollout()
    adv = torch.zeros(12)
    adv[0], adv[3] = 1.0, -1.0
    _, _, rows = _sgd_update(model, ro, adv, ["--simko-gate", "batch_quantile"], monkeypatch)
    assert sum(rows) == 12        # the batch quantile of the entropies is taken over every row's tokens
    monkeypatch.undo()
    _, m, rows = _sgd_update(model, ro, torch.zeros(12), [], monkeypatch)
    assert rows == [] and m["updated_rows_frac"] == 0.0 and m["grad_norm"] == 0.0 and m["gated_frac"] is None


def test_the_metrics_of_a_step_without_forward_are_the_loss_functions_own():
    one = torch.zeros(1, 1)
    assert tuple(simko.policy_loss(one, one, one[0], one + 1)[1]) == train.LOSS_METRICS


def _adamw(model, lr):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def test_one_mini_batch_is_exactly_one_step_on_the_whole_batch():
    model, _, ro = _tiny_rollout()
    adv = torch.randn(12)
    args = train.parse_args(["--group-size", "4", "--k", "2", "--mini-batches", "1"])
    a = copy.deepcopy(model)
    metrics = train.update(_policy(a), *_adamw(a, 1e-2), ro, adv, args)
    # the same step by hand: one forward of every row, the paper's loss, clip, AdamW
    b = copy.deepcopy(model).train()
    opt, _ = _adamw(b, 1e-2)
    stats = train.response_token_stats(b, ro.input_ids, ro.attention_mask, ro.prompt_len, args, stats_from_hidden=False)
    loss, ref = simko.policy_loss(stats.logp, ro.logp, adv, ro.response_mask, stats, alpha=0.01, lam=1.1, tau=0.8,
                                  max_len=ro.response_mask.shape[1])
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(b.parameters(), 1.0)
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))      # bit for bit
    assert metrics["grad_norm"] == float(grad_norm) and metrics["loss"] == loss.item()
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-5)         # one step: pi = pi_old ...
    assert metrics["clip_frac_low"] == metrics["clip_frac_high"] == 0.0  # ... and the clip never acts


def test_mini_batches_are_successive_steps_where_the_ratio_moves_and_the_clip_acts():
    model, _, ro = _tiny_rollout()
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5] * 3)
    argv = ["--group-size", "4", "--k", "2", "--lr", "0.05", "--mini-batches", "1"]
    a = copy.deepcopy(model)
    metrics = train.update(_policy(a), *_adamw(a, 0.05), ro, adv, train.parse_args(argv + ["--mini-batches", "3"]))
    assert abs(metrics["ratio_mean"] - 1.0) > 0.01
    assert metrics["clip_frac_low"] + metrics["clip_frac_high"] > 0
    # exactly three one-step updates, one per group, in order, each with its own loss normaliser
    b = copy.deepcopy(model)
    opt, sched = _adamw(b, 0.05)
    for g in range(3):
        rows = slice(4 * g, 4 * g + 4)
        part = ro._replace(**{f: getattr(ro, f)[rows] for f in ro._fields
                              if isinstance(getattr(ro, f), torch.Tensor)}, texts=ro.texts[rows])
        train.update(_policy(b), opt, sched, part, adv[rows], train.parse_args(argv))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_token_stats_from_hidden_equal_those_from_logits():
    model, _, ro = _tiny_rollout(seed=1)
    args = train.parse_args([])
    a = train.response_token_stats(model, ro.input_ids, ro.attention_mask, ro.prompt_len, args, stats_from_hidden=False)
    b = train.response_token_stats(model, ro.input_ids, ro.attention_mask, ro.prompt_len, args, stats_from_hidden=True)
    m = ro.response_mask.bool()
    torch.testing.assert_close(a.logp[m], b.logp[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(a.entropy[m], b.entropy[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(a.topk_logp[m], b.topk_logp[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(a.logp[m], ro.logp[m], atol=2e-5, rtol=0)    # = the sampler's own log-probs


def test_advantage_step_uses_the_registry_with_each_prompts_entropy():
    import passk_at_k as pk
    from types import SimpleNamespace
    r = torch.tensor([[1., 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    ent = torch.tensor([0.1, 0.5, 0.3])
    mask = torch.tensor([[1., 1, 0]] * 12)
    ro = SimpleNamespace(entropy=ent.repeat_interleave(4)[:, None] * mask, response_mask=mask)
    args = train.parse_args(["--k", "2", "--seed", "3"])
    with pytest.raises(ValueError, match="unknown advantage 'exceed'"):
        train.advantages_of(r, ro, "exceed", args, 0)          # never a silent fall-through
    torch.testing.assert_close(train.advantages_of(r, ro, "grpo", args, 0), pk.grpo_advantages(r))
    torch.testing.assert_close(train.advantages_of(r, ro, "passk", args, 0), pk.passk_advantages_analytical(r, 2))
    torch.testing.assert_close(train.advantages_of(r, ro, "entropy_adaptive", args, 0),
                               pk.entropy_adaptive_advantages(r, 2, ent))
    for method in train.ADVANTAGES:
        a = train.advantages_of(r, ro, method, args, 0)
        assert a.shape == r.shape and torch.isfinite(a).all() and (a[2] == 0).all()
        assert torch.equal(a, train.advantages_of(r, ro, method, args, 0))    # seeded by --seed and the step


# ----------------------------------------------------------------------------------------------------------------
# End to end on the embedded task (random-init model: no warm-up, and a reward the model can actually get)

@pytest.fixture
def parity_reward(monkeypatch):
    """Reward = 1 for an even-length response: mixed groups from step 1, so every code path gets a signal."""
    monkeypatch.setattr(countdown, "reward", lambda response, numbers, target: float(len(response) % 2 == 0))


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    result = train.main(["--out", str(out), "--warmup-cache", str(tmp_path / "wc"), "--sft-steps", "0", *TINY, *extra])
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return result, lines


def _check_run(result, lines, steps, simko_on, method):
    train_lines = [l for l in lines if l["type"] == "train"]
    evals = [l for l in lines if l["type"] == "eval"]
    assert [l["step"] for l in train_lines] == list(range(1, steps + 1))
    assert evals[0]["step"] == 0 and evals[-1]["step"] == steps
    assert set(evals[0]) >= {f"pass@{k}" for k in range(1, 5)}
    for e in evals:     # per held-out problem, how many of its 4 samples were right; pass@1 is their mean / 4
        assert len(e["correct"]) == 8 and all(0 <= c <= 4 for c in e["correct"])
        assert e["pass@1"] == pytest.approx(sum(e["correct"]) / 32)
    assert all(l["advantage"] == method for l in train_lines)
    for l in train_lines:
        keys = ["reward_mean", "zero_variance_frac", "adv_abs_mean", "entropy", "gated_frac", "clip_frac_low",
                "grad_norm", "response_len", "updated_rows_frac", "rollout_tokens_per_s", "time_rollout",
                "time_reward", "time_update", "rank1_prob", "rank3_prob", "rank5_prob", "rank1_logp"]
        for key in keys:
            assert isinstance(l[key], float) and l[key] == l[key], key
        assert not any(k.startswith("conc_") or k == "rollout_entropy" for k in l)
    assert any(l["adv_abs_mean"] > 0 and l["grad_norm"] > 0 for l in train_lines)
    spread = sum(l["spread_frac_of_gated"] + l["penalty_frac_of_gated"] for l in train_lines)
    assert (spread > 0) if simko_on else (spread == 0)
    assert result["before"].keys() == result["after"].keys() and "pass@4" in result["after"]
    assert os.path.isfile(os.path.join(result["out"], "checkpoint", "model.safetensors"))


def test_end_to_end_default_algorithm(tmp_path, parity_reward):
    result, lines = _run(tmp_path, "passk", "--steps", "3")
    _check_run(result, lines, 3, True, "passk")
    assert os.path.isfile(tmp_path / "passk" / "pass_at_k.md")


def test_end_to_end_grpo_baseline_without_simko(tmp_path, parity_reward):
    result, lines = _run(tmp_path, "grpo", "--steps", "3", "--advantage", "grpo", "--no-simko")
    _check_run(result, lines, 3, False, "grpo")


def test_concentration_and_entropy_come_from_every_rollout_row(tmp_path, parity_reward, monkeypatch):
    seen = []
    real = train.rollout_batch
    monkeypatch.setattr(train, "rollout_batch", lambda *a: seen.append(real(*a)) or seen[-1])
    _, lines = _run(tmp_path, "conc", "--steps", "3", "--advantage", "grpo")
    steps = [l for l in lines if l["type"] == "train"]
    assert any(l["updated_rows_frac"] < 1 for l in steps)                 # some rows were left out of the update...
    for l, ro in zip(steps, seen):                                         # ... but not out of the metrics
        c = simko.concentration(ro.topk_logp, ro.response_mask)
        assert [l[f"rank{i}_prob"] for i in range(1, 6)] == c["prob"]
        assert [l[f"rank{i}_logp"] for i in range(1, 6)] == c["logp"]
        assert l["entropy"] == pytest.approx((ro.entropy * ro.response_mask).sum().item() / ro.response_mask.sum().item())
        assert 1 >= l["rank1_prob"] >= l["rank2_prob"] >= l["rank5_prob"] > 0


def test_static_decode_trains_like_dynamic(tmp_path, parity_reward):
    # the same tokens (so the same rewards, lengths and held-out counts); log-probs agree to float precision
    dyn, static = [_run(tmp_path, d, "--steps", "2", "--decode", d)[1] for d in ("dynamic", "static")]
    for a, b in zip(_stable(dyn), _stable(static)):
        assert {k: v for k, v in a.items() if isinstance(v, float)} == pytest.approx(
            {k: v for k, v in b.items() if isinstance(v, float)}, rel=1e-3, abs=1e-4)
        assert (a["reward_mean"], a["response_len"]) == (b["reward_mean"], b["response_len"])
    assert [l["correct"] for l in dyn if l["type"] == "eval"] == [l["correct"] for l in static if l["type"] == "eval"]


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in train.ADVANTAGES if m not in ("passk",)])
@pytest.mark.parametrize("simko_flag", ["--simko", "--no-simko"])
def test_end_to_end_every_advantage(tmp_path, parity_reward, method, simko_flag):
    result, lines = _run(tmp_path, "run", "--steps", "2", "--advantage", method, simko_flag)
    _check_run(result, lines, 2, simko_flag == "--simko", method)


def test_switch_to_grpo_and_kl(tmp_path, parity_reward):
    result, lines = _run(tmp_path, "sw", "--steps", "3", "--switch-to-grpo-at", "2", "--kl-coef", "0.1",
                         "--micro-batch-size", "5", "--gen-batch-size", "3", "--mini-batches", "1")
    methods = [l["advantage"] for l in lines if l["type"] == "train"]
    assert methods == ["passk", "passk", "grpo"]
    kls = [l["kl"] for l in lines if l["type"] == "train"]
    assert kls[0] == pytest.approx(0.0, abs=1e-6) and kls[-1] > 0       # one step per batch: starts at the reference


@pytest.mark.slow
def test_rl_raises_the_reward_it_is_given(tmp_path, monkeypatch):
    # A reward the random-init model can reach: stop within 3 characters. 25 GRPO steps must raise it clearly.
    monkeypatch.setattr(countdown, "reward", lambda response, numbers, target: float(len(response) <= 3))
    _, lines = _run(tmp_path, "learn", "--steps", "25", "--advantage", "grpo", "--lr", "3e-3",
                    "--prompts-per-step", "8", "--group-size", "8", "--eval-every", "0")
    rewards = [l["reward_mean"] for l in lines if l["type"] == "train"]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:2]) / 2 + 0.3


def test_warmup_is_cached_and_reused(tmp_path, capsys):
    args = ["--warmup-cache", str(tmp_path / "wc"), "--sft-steps", "3", "--steps", "0", *TINY]
    a = train.main(["--out", str(tmp_path / "a"), *args])
    first = capsys.readouterr().out
    b = train.main(["--out", str(tmp_path / "b"), *args])
    second = capsys.readouterr().out
    assert "caching to" in first and "reusing" in second
    assert a["before"] == b["before"]                 # same warm start, same evaluation randomness
    assert len(os.listdir(tmp_path / "wc")) == 1


def test_warmup_variant_is_passed_on_and_cached_apart(tmp_path, monkeypatch):
    seen = []
    real = countdown.warm_up
    monkeypatch.setattr(countdown, "warm_up", lambda *a, **k: seen.append(k.get("variant", "full")) or real(*a, **k))
    for variant in countdown.WARMUP_VARIANTS:
        train.main(["--out", str(tmp_path / variant), "--warmup-cache", str(tmp_path / "wc"), "--sft-steps", "1",
                    "--steps", "0", "--warmup-variant", variant, *TINY])
    assert seen == list(countdown.WARMUP_VARIANTS) and len(os.listdir(tmp_path / "wc")) == len(seen)


# ----------------------------------------------------------------------------------------------------------------
# Resume

VOLATILE = ("time_", "rollout_tokens_per_s", "update_tokens_per_s", "seconds")


def _stable(lines):
    return [{k: v for k, v in l.items() if not k.startswith(VOLATILE)} for l in lines if l["type"] == "train"]


def test_resume_reproduces_the_uninterrupted_run(tmp_path, parity_reward, capsys):
    common = ["--sft-steps", "0", "--warmup-cache", str(tmp_path / "wc"), *TINY, "--eval-every", "0",
              "--advantage", "passk_bootstrap"]
    full = tmp_path / "full"
    train.main(["--out", str(full), "--steps", "4", *common])
    part = tmp_path / "part"
    train.main(["--out", str(part), "--steps", "2", *common])            # "killed" after step 2's checkpoint
    os.rename(part / "checkpoint", part / "checkpoint.old")              # ... even mid-save: the old copy is used
    with open(part / "metrics.jsonl", "a") as f:                          # lines written after the checkpoint
        f.write(json.dumps({"type": "train", "step": 3, "reward_mean": -1}) + "\n")
    capsys.readouterr()
    train.main(["--out", str(part), "--steps", "4", "--resume", *common])
    assert "resuming" in capsys.readouterr().out
    read = lambda d: [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    a, b = _stable(read(full)), _stable(read(part))
    assert [l["step"] for l in b] == [1, 2, 3, 4]
    assert a == b
    assert a[0]["reward_mean"] != a[1]["reward_mean"] or a[0]["loss"] != a[1]["loss"]   # steps really differ


def test_resume_with_no_flags_continues_the_run_as_configured(tmp_path, parity_reward, monkeypatch, capsys):
    flags = ["--sft-steps", "0", "--warmup-cache", str(tmp_path / "wc"), *TINY, "--steps", "4", "--eval-every", "3",
             "--save-every", "2", "--lr", "3e-4", "--advantage", "grpo", "--no-simko", "--seed", "5"]
    train.main(["--out", str(tmp_path / "full"), *flags])
    real = train.rl_step

    def killed_in_step_3(step, *a):
        if step == 2:
            raise KeyboardInterrupt("killed")
        return real(step, *a)
    monkeypatch.setattr(train, "rl_step", killed_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        train.main(["--out", str(tmp_path / "part"), *flags])            # dies after step 2's checkpoint
    monkeypatch.setattr(train, "rl_step", real)
    capsys.readouterr()
    train.main(["--resume", "--out", str(tmp_path / "part")])            # nothing else: config.json has the rest
    assert "resuming" in capsys.readouterr().out
    read = lambda d: [json.loads(l) for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    strip = lambda lines: [{k: v for k, v in l.items() if not k.startswith(VOLATILE)} for l in lines]
    full, part = strip(read("full")), strip(read("part"))
    assert [(l["type"], l["step"]) for l in part] == [("eval", 0), ("train", 1), ("train", 2), ("train", 3),
                                                      ("eval", 3), ("train", 4), ("eval", 4)]   # --eval-every 3 kept
    assert part == full and all(l["advantage"] == "grpo" for l in part if l["type"] == "train")
    # a later resume may extend the schedule; the change is reported and saved for the next resume
    train.main(["--resume", "--out", str(tmp_path / "part"), "--steps", "5"])
    assert "--steps 4 -> 5" in capsys.readouterr().out
    assert json.loads((tmp_path / "part" / "config.json").read_text())["steps"] == 5


@pytest.mark.parametrize("flag, value", [("--lr", "1e-3"), ("--advantage", "passk"), ("--group-size", "8"),
                                         ("--seed", "1"), ("--simko", None), ("--mini-batches", "1")])
def test_resume_refuses_changes_that_redefine_the_run(tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    train.main(["--out", str(out), "--sft-steps", "0", "--warmup-cache", str(tmp_path / "wc"), *TINY, "--steps", "1",
                "--advantage", "grpo", "--no-simko"])
    capsys.readouterr()
    err = _err(capsys, ["--resume", "--out", str(out), flag] + ([value] if value else []))
    assert f"--resume cannot change {flag}" in err and "start a new run" in err
    # the same values again are no change, and how it runs may change
    args = train.parse_args(["--resume", "--out", str(out), "--advantage", "grpo", "--steps", "3", "--threads", "2",
                             "--micro-batch-size", "2"])
    assert (args.steps, args.threads, args.micro_batch_size, args.group_size, args.k) == (3, 2, 2, 4, 2)


def test_every_flag_has_help_with_its_default():
    for action in train.build_parser()._actions:
        if action.dest == "help":
            continue
        text = action.help or ""
        assert "default" in text and "None" not in (text % vars(action) if "%(" in text else text), action.dest


def test_resume_help_lists_exactly_the_flags_a_resume_may_change():
    import re
    text = train.build_parser()._option_string_actions["--resume"].help
    assert set(re.findall(r"--([a-z-]+)", text)) - {"out"} == \
        {k.replace("_", "-") for k in train.RESUME_MAY_CHANGE} - {"out", "resume"}


def test_the_warmup_cache_goes_beside_out_not_into_the_working_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    out = tmp_path / "elsewhere" / "run1"
    train.main(["--out", str(out), "--sft-steps", "0", "--steps", "0", "--warmup-variant", "full", *TINY])
    assert os.listdir(tmp_path / "cwd") == []                             # no stray runs/
    assert os.listdir(tmp_path / "elsewhere" / "warmup") == ["countdown-sft0-10229ac30a"]
    printed = capsys.readouterr().out
    for name in ("metrics.jsonl", "config.json", "checkpoint/", "pass_at_k.md"):
        assert name in printed and os.path.exists(out / name.rstrip("/"))
    table = (out / "pass_at_k.md").read_text()       # --steps 0: one evaluation, so one row, not two equal ones
    assert "| after (step 0) |" in table and "before" not in table
    assert train.parse_args([]).warmup_cache == os.path.abspath("runs/warmup")


# ----------------------------------------------------------------------------------------------------------------
# A Hugging Face model from disk (tiny Llama + chat template + JSONL data)

@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf")
    save_tiny_chat_llama(d / "model")
    _write(d / "train.jsonl", [json.dumps({"question": f"What is {i} + {i}?", "answer": f"{i} plus {i} #### {2 * i}"})
                               for i in range(12)])
    _write(d / "test.jsonl", [json.dumps({"problem": f"Compute ${i}^2$.", "solution": f"It is $\\boxed{{{i * i}}}$."})
                              for i in range(4)])
    return d


@pytest.mark.parametrize("hidden, extra", [("on", ["--grad-checkpointing"]), ("off", [])])
def test_hf_model_path_end_to_end(tmp_path, hf_model_dir, hidden, extra):
    d = hf_model_dir
    out = tmp_path / "run"
    result = train.main(["--model", str(d / "model"), "--data", str(d / "train.jsonl"), "--eval-data",
                         str(d / "test.jsonl"), "--out", str(out), "--steps", "2", "--prompts-per-step", "2",
                         "--group-size", "2", "--k", "1", "--max-new-tokens", "6", "--eval-samples", "2",
                         "--reward-workers", "0", "--micro-batch-size", "3", "--stats-from-hidden", hidden,
                         "--no-progress", *extra])
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines if l["type"] == "train"] == [1, 2]
    assert all(l["response_len"] <= 6 and l["grad_norm"] == l["grad_norm"] for l in lines if l["type"] == "train")
    assert set(result["after"]) == {"pass@1", "pass@2"}
    from transformers import AutoModelForCausalLM, AutoTokenizer
    AutoModelForCausalLM.from_pretrained(out / "checkpoint")
    assert AutoTokenizer.from_pretrained(out / "checkpoint").chat_template


def test_hf_prompt_and_reward_wiring(hf_model_dir):
    d = hf_model_dir
    args = train.parse_args(["--model", str(d / "model"), "--data", str(d / "train.jsonl"), "--eval-data",
                             str(d / "test.jsonl"), "--reward-workers", "0", "--prompts-per-step", "2"])
    task = train.load_task(args)
    assert len(task.train) == 12 and task.eval[3] == {"problem": "Compute $3^2$.", "gold": "It is $\\boxed{9}$."}
    _, tok = train_io.load_hf_model(str(d / "model"), args)
    prompt = task.prompt(task.train[2], tok)
    assert prompt == f"U:What is 2 + 2?\n{train_io.INSTRUCTION}\nA:"
    assert task.reward(["so \\boxed{4}", "\\boxed{5}", "#### 4"], task.train[2:3] * 3) == [1.0, 0.0, 1.0]


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    final = str(tmp_path / "checkpoint")

    def good(d):
        open(os.path.join(d, "trainer_state.pt"), "w").write("v1")

    def dies_halfway(d):
        open(os.path.join(d, "trainer_state.pt"), "w").write("v2-partial")
        raise KeyboardInterrupt("killed mid-save")

    train_io.atomic_save(good, final)
    with pytest.raises(KeyboardInterrupt):
        train_io.atomic_save(dies_halfway, final)
    assert open(os.path.join(final, "trainer_state.pt")).read() == "v1"
    assert train.find_checkpoint(str(tmp_path)) == final
    train_io.atomic_save(lambda d: open(os.path.join(d, "trainer_state.pt"), "w").write("v3"), final)
    assert open(os.path.join(final, "trainer_state.pt")).read() == "v3"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]                 # no temporary or old copies left


def test_reward_fallback_reaches_verify(hf_model_dir, monkeypatch):
    d = hf_model_dir
    seen = {}
    monkeypatch.setattr(verify, "batch_reward", lambda texts, golds, **kw: seen.update(kw) or [0.0] * len(texts))
    for fallback in verify.FALLBACKS:
        args = train.parse_args(["--model", str(d / "model"), "--data", str(d / "train.jsonl"), "--prompts-per-step",
                                 "2", "--reward-fallback", fallback])
        train.load_task(args).reward(["x"], [{"problem": "p", "gold": "1"}])
        assert seen["fallback"] == fallback


def test_without_eval_data_the_last_tenth_is_held_out(hf_model_dir, tmp_path):
    d = hf_model_dir
    args = train.parse_args(["--model", str(d / "model"), "--data", str(d / "train.jsonl"), "--prompts-per-step", "2"])
    task = train.load_task(args)
    assert [p["gold"] for p in task.eval] == ["11 plus 11 #### 22"] and len(task.train) == 11   # the last one
    one = _write(tmp_path / "one.jsonl", ['{"problem": "a", "answer": "1"}'])
    args = train.parse_args(["--model", str(d / "model"), "--data", one, "--prompts-per-step", "1"])
    with pytest.raises(ValueError, match="too few to hold out"):
        train.load_task(args)


def test_probe_measures_the_mechanism_on_fixed_prompts_and_leaves_training_alone(tmp_path, parity_reward,
                                                                                  monkeypatch):
    # --probe-problems: the probe's own generator, so the training steps equal a run without it
    _, plain = _run(tmp_path, "plain", "--steps", "4", "--advantage", "grpo")
    seen = []
    real = train.rollout_batch
    monkeypatch.setattr(train, "rollout_batch", lambda *a: seen.append(real(*a)) or seen[-1])
    _, lines = _run(tmp_path, "probed", "--steps", "4", "--advantage", "grpo", "--probe-problems", "3",
                    "--probe-every", "2", "--no-eval-before")
    train_lines = lambda ls: [l for l in ls if l["type"] == "train"]
    assert [l["reward_mean"] for l in train_lines(lines)] == [l["reward_mean"] for l in train_lines(plain)]
    assert [l["step"] for l in lines if l["type"] == "eval"] == [4]          # no step-0 evaluation
    probes = [l for l in lines if l["type"] == "probe"]
    assert [p["step"] for p in probes] == [0, 2, 4]
    # the probes' rollouts: 3 held-out prompts x --group-size 4, the first three rollouts after each probe's step
    probe_rollouts = [ro for ro in seen if ro.input_ids.shape[0] == 3 * 4]
    assert len(probe_rollouts) == 3
    for p, ro in zip(probes, probe_rollouts):
        m = ro.response_mask.bool()
        c = simko.concentration(ro.topk_logp, m.float())
        assert p["all"]["tokens"] == int(m.sum())
        assert [p["all"][f"rank{i}_prob"] for i in range(1, 6)] == c["prob"]
        assert p["all"]["entropy"] == pytest.approx(ro.entropy[m].mean().item())
        # the high-entropy tokens: those at or above the 80th percentile of the probe's entropies
        high = m & (ro.entropy >= p["high_entropy"]["threshold"])
        assert p["high_entropy"]["tokens"] == int(high.sum()) and 0 < high.sum() < m.sum()
        assert [p["high_entropy"][f"rank{i}_prob"] for i in range(1, 6)] == simko.concentration(
            ro.topk_logp, high.float())["prob"]
        assert p["high_entropy"]["entropy"] > p["all"]["entropy"]
    # the same prompts and random numbers at every probe: the step-0 probe is reproduced by a probe-only run
    _, again = _run(tmp_path, "again", "--steps", "0", "--advantage", "grpo", "--probe-problems", "3")
    assert [l for l in again if l["type"] == "probe"][0] == probes[0]
    table = (tmp_path / "probed" / "pass_at_k.md").read_text()
    assert "before" not in table and "| after (step 4) |" in table
