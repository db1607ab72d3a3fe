"""`--data rg:TASK?...`: spec parsing, the disjoint seeded splits, the reward and which scorer judges, the errors."""
import sys

import pytest

pytest.importorskip("reasoning_gym",
                    reason='needs reasoning-gym: pip install -e ".[real]" (reasoning-gym==0.1.25)')

import reasoning_gym_task as T  # noqa: E402
import verify  # noqa: E402

SPEC = "rg:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=2&size=400"


def test_parse_spec_types_and_defaults():
    name, params = T.parse_spec("rg:basic_arithmetic?max_terms=3&allow_negation=false&operators=+,-"
                                "&format_style=natural")
    assert name == "basic_arithmetic"
    assert params == {"size": T.DEFAULT_SIZE, "seed": T.DEFAULT_SEED, "max_terms": 3, "allow_negation": False,
                      "operators": ("+", "-"), "format_style": "natural"}
    assert T.parse_spec("rg:chain_sum") == ("chain_sum", {"size": T.DEFAULT_SIZE, "seed": T.DEFAULT_SEED})
    assert T.parse_spec("rg:chain_sum?size=50&seed=3")[1] == {"size": 50, "seed": 3}
    assert T.is_spec("rg:chain_sum") and not T.is_spec("data.jsonl") and not T.is_spec(None)


def test_splits_are_disjoint_seeded_and_follow_the_jsonl_rule():
    train, held_out, reward, scorer = T.load(SPEC, reward_workers=0)
    assert scorer == "verify"
    questions = [p["problem"] for p in train + held_out]
    assert len(set(questions)) == len(questions)                       # deduplicated, so disjoint by question
    assert not {p["problem"] for p in train} & {p["problem"] for p in held_out}
    assert len(held_out) == (len(train) + len(held_out)) // 10 and len(train) + len(held_out) <= 400
    again, again_held, _, _ = T.load(SPEC, reward_workers=0)
    assert [p["problem"] for p in again] == [p["problem"] for p in train]   # the data seed fixes the split
    assert [p["problem"] for p in again_held] == [p["problem"] for p in held_out]
    other, _, _, _ = T.load(SPEC + "&seed=1", reward_workers=0)
    assert [p["problem"] for p in other][:20] != [p["problem"] for p in train][:20]
    p = held_out[0]
    assert p["gold"] == str(p["entry"]["answer"]) and p["problem"] == p["entry"]["question"]


def test_held_out_is_capped_at_500():
    train, held_out, _, _ = T.load("rg:chain_sum?size=6000", reward_workers=0)
    assert len(held_out) == 500 and len(train) + 500 <= 6000


@pytest.mark.parametrize("task", sorted(T.VERIFY_TASKS))
def test_verify_tasks_agree_with_their_own_scorer(task):
    """For every task judged by verify: the boxed gold earns 1 and a wrong number 0, from verify and from the
    task's scorer alike (so verify is a faithful judge there, and it also reads unboxed anchors and 6/2 == 3)."""
    import reasoning_gym
    train, held_out, reward, scorer = T.load(f"rg:{task}?size=30", reward_workers=0)
    assert scorer == "verify"
    dataset = reasoning_gym.create_dataset(task, size=30, seed=T.DEFAULT_SEED)
    probs = (train + held_out)[:8]
    right = [f"So the result is \\boxed{{{p['gold']}}}." for p in probs]
    wrong = [f"\\boxed{{{float(p['gold']) + 1:g}}}" for p in probs]
    assert reward(right, probs) == [1.0] * len(probs)
    assert reward(wrong, probs) == [0.0] * len(probs)
    assert [T.score_binary(dataset, verify.extract_answer(t), p["entry"]) for t, p in zip(right, probs)] == \
        [1.0] * len(probs)
    assert [T.score_binary(dataset, verify.extract_answer(t), p["entry"]) for t, p in zip(wrong, probs)] == \
        [0.0] * len(probs)


def test_scorer_tasks_use_reasoning_gym_binarised():
    train, held_out, reward, scorer = T.load("rg:fraction_simplification?size=20", reward_workers=0)
    assert scorer == "reasoning-gym" and "fraction_simplification" not in T.VERIFY_TASKS
    p = held_out[0]
    num, den = p["entry"]["metadata"]["simplified_numerator"], p["entry"]["metadata"]["simplified_denominator"]
    unreduced = f"\\boxed{{{2 * num}/{2 * den}}}"
    # verify would call the unreduced fraction equal; the task asks for lowest terms, and its scorer says no
    assert verify.reward(unreduced, f"{num}/{den}") == 1.0
    assert reward([f"\\boxed{{{num}/{den}}}", unreduced, "no box, no anchor"], [p] * 3) == [1.0, 0.0, 0.0]


def test_partial_credit_is_not_reward():
    import reasoning_gym
    dataset = reasoning_gym.create_dataset("base_conversion", size=3, seed=0)
    entry = dataset[0]
    partial = entry["answer"] + " (converted)"             # the base scorer gives len(gold)/len(answer) for this
    assert 0 < dataset.score_answer(partial, entry) < 1
    assert T.score_binary(dataset, partial, entry) == 0.0
    assert T.score_binary(dataset, entry["answer"], entry) == 1.0
    assert T.score_binary(dataset, None, entry) == 0.0


@pytest.mark.parametrize("spec, message", [
    ("rg:no_such_task", "unknown reasoning-gym task 'no_such_task'; valid tasks: ab, "),
    ("rg:basic_arithmetic?foo=1", "unknown parameter 'foo' for task basic_arithmetic; valid: min_terms (default 2)"),
    ("rg:basic_arithmetic?min_terms=two", "min_terms='two': must be of type int"),
    ("rg:basic_arithmetic?allow_negation=maybe", "allow_negation='maybe': must be true or false"),
    ("rg:basic_arithmetic?format_style=fancy", "format_style='fancy': must be one of simple, natural"),
    ("rg:basic_arithmetic?min_terms", "parameter 'min_terms' has no value"),
    ("rg:basic_arithmetic?min_terms=0", "invalid parameters for basic_arithmetic: min_terms must be positive"),
    ("rg:basic_arithmetic?size=1", "size must be >= 2"),
])
def test_errors_say_what_is_valid(spec, message):
    with pytest.raises(ValueError, match="^--data " + spec.replace("?", r"\?") + ": .*") as e:
        T.load(spec)
    assert message in str(e.value)
    if "unknown reasoning-gym task" in message:
        assert "basic_arithmetic" in str(e.value) and "chain_sum" in str(e.value)


def test_too_few_distinct_problems(monkeypatch):
    import reasoning_gym
    same = {"question": "1 + 1 = ?", "answer": "2", "metadata": {}}
    monkeypatch.setattr(reasoning_gym, "create_dataset", lambda name, **kw: [dict(same)] * kw["size"])
    with pytest.raises(ValueError, match="only 1 distinct problem"):
        T.load("rg:chain_sum?size=50")


def test_missing_package_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym.factory", None)      # import fails as if not installed
    with pytest.raises(ValueError, match="pip install reasoning-gym"):
        T.parse_spec("rg:chain_sum")
