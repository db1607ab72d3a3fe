"""reasoning-gym tasks as RLVR data: `train.py --model M --data 'rg:TASK?param=value&...'`.

reasoning-gym (`pip install reasoning-gym`) generates procedural reasoning problems offline, each with its gold
answer and a task-specific scorer. This file turns a data spec into what train.py needs - a training split, a
disjoint held-out split and a 0/1 reward - and nothing else (it imports no model code).

**The spec.** `rg:TASK` or `rg:TASK?KEY=VALUE&KEY=VALUE`. TASK is a reasoning-gym dataset name
(`basic_arithmetic`, `chain_sum`, ...; an unknown name is an error that lists them all). KEYs are the fields of
the task's own config dataclass, with reasoning-gym's names and defaults; a value is read with the type of the
field's default (`max_terms=2`, `allow_negation=false`, `operators=+,-` for a list). Two keys are ours as much as
the task's: `size` (how many problems are generated, default 2000) and `seed` (the data seed, default 0; it is not
`--seed`, so runs with different seeds or algorithms see the same problems). Quote the spec in a shell (`&`).

**The splits.** The `size` generated problems are deduplicated by question text, in generation order; the last
10 % (at most 500) are the held-out split, the rest the training split, so no held-out question is ever trained on
(the same rule as a JSONL without `--eval-data`). Small parameter spaces yield fewer distinct problems than `size`.

**The reward.** The prompt asks for the final answer in `\\boxed{}`. For the tasks in `VERIFY_TASKS` the answer is
one exact number and correctness is numeric equality, so the response is judged by `verify.reward` against the
gold (it reads `\\boxed{}`, `####` and the explicit anchors, and knows `-3`, `-3.0` and `\\frac{6}{2}` are one
number). Every other task is judged by reasoning-gym's own scorer on the extracted final answer
(`verify.extract_answer`: the last box or anchor; none gives 0), binarised: 1 only for full marks (score >= 1),
because many scorers give partial credit to a wrong answer (0.01 for a parseable one, a share of the length
for one that contains the gold). `verify` cannot judge those tasks: some need a canonical form that equivalence
would accept wrongly (`fraction_simplification` wants lowest terms, `prime_factorization` an ordered product),
some are not math (`word_sorting`, `calendar_arithmetic`), some compare with a tolerance (`power_function`).
"""
from __future__ import annotations

import dataclasses
import typing

PREFIX = "rg:"
DEFAULT_SIZE = 2000
DEFAULT_SEED = 0
MAX_HELD_OUT = 500
INSTALL = "pip install reasoning-gym==0.1.25"

# The answer is one exact number and the task's own scorer is numeric equality: judged by verify.reward.
# (tests/test_reasoning_gym_task.py checks, for each, that the boxed gold earns 1 from both verify and the scorer
# and that a wrong number earns 0 from both.)
VERIFY_TASKS = frozenset({
    "basic_arithmetic", "chain_sum", "products", "decimal_chain_sum", "gcd", "lcm", "count_bits", "count_primes",
    "leg_counting", "letter_counting", "number_sequence", "simple_equations", "gsm_symbolic", "rectangle_count",
    "simple_geometry",
})


def is_spec(data: str | None) -> bool:
    return isinstance(data, str) and data.startswith(PREFIX)


def _datasets() -> dict:
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise ValueError(f"--data rg:... needs the reasoning-gym package: {INSTALL}") from None
    return DATASETS


def _field_default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _convert(text: str, default, annotation, where: str):
    """The string `text` as a value of the type of `default` (the config field's default)."""
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()
    if choices:
        if text not in [str(c) for c in choices]:
            raise ValueError(f"{where}: must be one of {', '.join(map(str, choices))}")
        return next(c for c in choices if str(c) == text)
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{where}: must be true or false")
        return text.lower() in ("true", "1")
    if isinstance(default, (int, float)):
        try:
            return type(default)(text)
        except ValueError:
            raise ValueError(f"{where}: must be of type {type(default).__name__}") from None
    if isinstance(default, (list, tuple)):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if default and isinstance(default[0], (int, float)) and not isinstance(default[0], bool):
            parts = [_convert(p, default[0], None, where) for p in parts]
        return type(default)(parts)
    if default is None and text.lower() in ("none", "null"):
        return None
    if default is None:
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text
    return text


def parse_spec(spec: str) -> tuple[str, dict]:
    """'rg:TASK?key=value&...' -> (TASK, {field: typed value}) with `size` and `seed` always set.

    Raises ValueError naming the valid tasks for an unknown TASK and the valid keys (with their defaults) for an
    unknown key; the values are checked by the task's own config validation in `load`."""
    if not is_spec(spec):
        raise ValueError(f"not a reasoning-gym spec (rg:TASK?key=value&...): {spec!r}")
    name, _, query = spec[len(PREFIX):].partition("?")
    datasets = _datasets()
    if name not in datasets:
        raise ValueError(f"--data {spec}: unknown reasoning-gym task {name!r}; valid tasks: "
                         f"{', '.join(sorted(datasets))}")
    fields = {f.name: f for f in dataclasses.fields(datasets[name][1])}
    params = {"size": DEFAULT_SIZE, "seed": DEFAULT_SEED}
    for item in filter(None, query.split("&")):
        key, eq, text = item.partition("=")
        key = key.strip()
        if key not in fields:
            valid = ", ".join(f"{k} (default {_field_default(f)!r})" for k, f in fields.items())
            raise ValueError(f"--data {spec}: unknown parameter {key!r} for task {name}; valid: {valid}")
        if not eq:
            raise ValueError(f"--data {spec}: parameter {key!r} has no value (write {key}=VALUE)")
        default = _field_default(fields[key])
        params[key] = _convert(text.strip(), DEFAULT_SIZE if key == "size" else DEFAULT_SEED if key == "seed"
                               else default, fields[key].type, f"--data {spec}: {key}={text!r}")
    if params["size"] < 2:
        raise ValueError(f"--data {spec}: size must be >= 2 (a training and a held-out problem), "
                         f"got {params['size']}")
    return name, params


def load(spec: str, *, reward_timeout: float = 5.0, reward_workers: int | None = None, **verify_kwargs):
    """Build the task of `spec`: (train, held_out, reward, scorer).

    Problems are dicts {"problem": question, "gold": gold answer, "entry": the reasoning-gym item}. `reward(texts,
    problems) -> list[float]` gives 1.0 or 0.0 per response; `scorer` is "verify" or "reasoning-gym" (which of the
    two judges this task). `reward_timeout`, `reward_workers` and `verify_kwargs` (e.g. `fallback=`) go to
    `verify.batch_reward`, so they apply to the tasks judged by verify; reasoning-gym's scorers run in-process,
    without a time limit."""
    name, params = parse_spec(spec)
    import reasoning_gym

    try:
        dataset = reasoning_gym.create_dataset(name, **params)
    except (AssertionError, ValueError, TypeError) as e:
        raise ValueError(f"--data {spec}: invalid parameters for {name}: {e or type(e).__name__} "
                         f"(parsed as {params})") from None
    problems, seen = [], set()
    for entry in dataset:
        if entry["question"] not in seen:
            seen.add(entry["question"])
            problems.append({"problem": entry["question"], "gold": str(entry["answer"]), "entry": entry})
    n_held_out = min(MAX_HELD_OUT, max(1, len(problems) // 10))
    if len(problems) - n_held_out < 1:
        raise ValueError(f"--data {spec}: only {len(problems)} distinct problem(s); raise size= or widen the "
                         f"task's parameters")
    train, held_out = problems[:-n_held_out], problems[-n_held_out:]

    import verify

    if name in VERIFY_TASKS:
        def reward(texts, probs):
            return [float(r) for r in verify.batch_reward(texts, [p["gold"] for p in probs], timeout=reward_timeout,
                                                          workers=reward_workers, **verify_kwargs)]
        return train, held_out, reward, "verify"

    def reward(texts, probs):
        return [score_binary(dataset, verify.extract_answer(t), p["entry"]) for t, p in zip(texts, probs)]
    return train, held_out, reward, "reasoning-gym"


def score_binary(dataset, answer: str | None, entry: dict) -> float:
    """reasoning-gym's scorer, binarised: 1.0 for full marks, else 0.0 (no answer, partial credit, a scorer error)."""
    if answer is None:
        return 0.0
    try:
        return 1.0 if dataset.score_answer(answer, entry) >= 1.0 else 0.0
    except Exception:          # a scorer that chokes on a malformed answer has judged it wrong
        return 0.0
