"""The embedded default task: Countdown-3, a ~1M-parameter Llama and a character tokenizer, all built from code.

`python train.py` must run offline, on a laptop CPU, in minutes, and still show what Pass@k Training and SimKO are
about: a policy that keeps *several* correct answers alive instead of collapsing onto one. Countdown is a good fit.
A problem gives three numbers and a target; an answer is an arithmetic expression that uses each number exactly
once with + - * / and parentheses and equals the target:

    prompt   "3,7,4>25:"          (numbers, then the target)
    answers  "3*7+4", "7*3+4", "4+3*7", "4+7*3", ...   (each is a correct, different response)

Most targets have many correct expressions (operand order alone gives several), so pass@k rewards a policy that
spreads its probability over them, and the answer is checked exactly and cheaply.

Checking never calls `eval`: `evaluate` is a small recursive-descent parser over the characters `0-9 + - * / ( )`
with exact rational arithmetic (`fractions.Fraction`), a length limit and a depth limit, so a policy's output
cannot run code, loop or blow up memory.

The data split is fixed and independent of `--seed`: every problem is enumerated, shuffled with a constant seed,
and the first `HELD_OUT` problems are the evaluation set, never seen in warm-up or RL.

The model is a 4-layer Llama (hidden 128, vocabulary of 22 characters, 0.86M parameters) built from a
`transformers` config, and the tokenizer is a `tokenizers` character-level WordLevel model wrapped as a
`PreTrainedTokenizerFast`. Saved with `save_pretrained`, both reload with `AutoModelForCausalLM` /
`AutoTokenizer` like any Hugging Face checkpoint (a Llama config, not Qwen2, so that `AutoTokenizer` does not swap
in a Qwen2 tokenizer that would mangle the characters).

Two warm-up variants (`WARMUP_VARIANTS`, `train.py --warmup-variant`):

- `"full"` (the default): every training problem with a uniformly random correct solution. The warm start has seen
  every kind of answer, so it already "knows" every held-out problem and RL can only sharpen what is there: good for
  showing GRPO's collapse of pass@k at large k, unable to show *exploration*.
- `"headroom"`: a warm start with room to explore. The warm-up data under-represents one skill, multiplication and
  division, the way pre-training under-represents a rare strategy. A problem that has a solution with only + and -
  is shown with those solutions only; a problem that *needs* * or / (`needs_muldiv`: none of its solutions is free of
  both) is kept in the warm-up only for a fixed `HEADROOM_MULDIV_FRACTION` (15 %) of them, chosen by a hash of the
  prompt (independent of any seed and of list order). RL still trains on every training problem. At its start the
  policy rarely writes * or /, so the held-out problems that need them (193 of the 300) are solved only rarely but
  not never (the skill is there, weakly): a policy that keeps sampling rare answers and reinforces them when they
  pay off can lift their pass@k above the warm start, while one that sharpens onto what it already does well gives
  them up. Why this design rather than others: a shorter warm-up would make *every* problem uniformly uncertain
  (no easy/hard contrast, and the format itself is not yet learned); hiding some problems entirely would leave RL
  nothing to find (pass@k = 0 for all k, no reward ever); hiding a skill that transfers keeps rare successes
  reachable by sampling, which is the regime both papers' exploration claims are about. The split into problems the
  warm start solves often and rarely is measured, not assumed: `benchmarks/compare.py` defines it from the warm
  start's own per-problem success counts.
"""
from __future__ import annotations

import functools
import itertools
import math
import random
import zlib
from fractions import Fraction

NUMBERS = range(1, 10)      # each of the three numbers is 1..9 (repeats allowed)
TARGETS = range(1, 31)      # integer targets that are kept
HELD_OUT = 300              # size of the fixed evaluation split
SPLIT_SEED = 1234           # constant: the split does not move with --seed
MAX_ANSWER_CHARS = 40       # anything longer is wrong without being parsed
WARMUP_VARIANTS = ("full", "headroom")
HEADROOM_MULDIV_FRACTION = 0.15   # share of the problems that need * or / that the "headroom" warm-up still sees

CHARS = "0123456789+-*/(),>:"
SPECIAL = ["<pad>", "<eos>", "<unk>"]
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


# ----------------------------------------------------------------------------------------------------------------
# Safe exact evaluation

class _Parser:
    """expr := term (('+'|'-') term)* ; term := atom (('*'|'/') atom)* ; atom := NUMBER | '(' expr ')'."""

    def __init__(self, text: str):
        self.text, self.pos, self.depth, self.literals = text, 0, 0, []

    def peek(self):
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.text[self.pos]
            self.pos += 1
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.atom()
        while self.peek() in ("*", "/"):
            op = self.text[self.pos]
            self.pos += 1
            rhs = self.atom()
            if op == "/" and rhs == 0:
                raise ValueError("division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def atom(self) -> Fraction:
        c = self.peek()
        if c == "(":
            self.depth += 1
            if self.depth > 8:
                raise ValueError("too deeply nested")
            self.pos += 1
            value = self.expr()
            if self.peek() != ")":
                raise ValueError(f"expected ')' at {self.pos}")
            self.pos += 1
            self.depth -= 1
            return value
        start = self.pos
        while self.peek().isdigit():
            self.pos += 1
        if start == self.pos or self.pos - start > 3:
            raise ValueError(f"expected a number at {start}")
        number = int(self.text[start:self.pos])
        self.literals.append(number)
        return Fraction(number)


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of `expression` and the number literals it uses. Raises ValueError on anything malformed."""
    if len(expression) > MAX_ANSWER_CHARS or not expression or any(c not in "0123456789+-*/()" for c in expression):
        raise ValueError("not an expression over 0-9 + - * / ( )")
    parser = _Parser(expression)
    value = parser.expr()
    if parser.pos != len(expression):
        raise ValueError(f"unexpected {expression[parser.pos]!r} at {parser.pos}")
    return value, parser.literals


def reward(response: str, numbers: tuple[int, ...], target: int) -> float:
    """1.0 when `response` uses each of `numbers` exactly once and equals `target` exactly, else 0.0."""
    try:
        value, literals = evaluate(response.strip())
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(sorted(literals) == sorted(numbers) and value == target)


# ----------------------------------------------------------------------------------------------------------------
# Problems and their solutions

def _render(a: str, op: str, b: str, a_op: str | None, b_op: str | None) -> str:
    """`a op b` with the fewest parentheses that keep the meaning (a_op/b_op: top operator of each side)."""
    if a_op is not None and _PREC[a_op] < _PREC[op]:
        a = f"({a})"
    if b_op is not None and (_PREC[b_op] < _PREC[op] or (_PREC[b_op] == _PREC[op] and op in "-/")):
        b = f"({b})"
    return f"{a}{op}{b}"


def solutions(numbers: tuple[int, ...]) -> dict[int, list[str]]:
    """All expressions over the three numbers (every order, both bracketings), grouped by integer value in TARGETS."""
    found: dict[int, set[str]] = {}
    for x, y, z in set(itertools.permutations(numbers)):
        for op1, op2 in itertools.product("+-*/", repeat=2):
            # (x op1 y) op2 z  and  x op1 (y op2 z)
            candidates = [_render(_render(str(x), op1, str(y), None, None), op2, str(z), op1, None),
                          _render(str(x), op1, _render(str(y), op2, str(z), None, None), None, op2)]
            for text in candidates:
                try:
                    value, _ = evaluate(text)
                except ValueError:
                    continue
                if value.denominator == 1 and int(value) in TARGETS:
                    found.setdefault(int(value), set()).add(text)
    return {t: sorted(s) for t, s in found.items()}


@functools.lru_cache(maxsize=1)
def make_problems() -> tuple[list[dict], list[dict]]:
    """(train, held_out): every (numbers, target) problem as {"numbers", "target", "prompt", "solutions"}.

    Cached (a few seconds of enumeration): callers get the same lists and must not modify them."""
    problems = []
    for numbers in itertools.product(NUMBERS, repeat=3):
        for target, sols in sorted(solutions(numbers).items()):
            problems.append({"numbers": numbers, "target": target, "prompt": format_prompt(numbers, target),
                             "solutions": sols})
    random.Random(SPLIT_SEED).shuffle(problems)
    return problems[HELD_OUT:], problems[:HELD_OUT]


def format_prompt(numbers: tuple[int, ...], target: int) -> str:
    return ",".join(map(str, numbers)) + f">{target}:"


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer and model

def build_tokenizer():
    """Character-level tokenizer: one token per character of CHARS, plus <pad>, <eos>, <unk>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # every character is a token
    tok.decoder = decoders.Fuse()                                               # decode without spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def build_model(tokenizer, hidden: int = 128, layers: int = 4, heads: int = 4, seed: int = 0):
    """A ~0.86M-parameter Llama from a config (no download), initialised with a fixed seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 3,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=64, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(state)
    return model


# ----------------------------------------------------------------------------------------------------------------
# Supervised warm-up

def is_plus_minus(solution: str) -> bool:
    """True when the expression uses neither * nor /."""
    return "*" not in solution and "/" not in solution


def needs_muldiv(problem: dict) -> bool:
    """True when every correct solution of the problem uses * or / (no +/- -only answer exists)."""
    return not any(is_plus_minus(s) for s in problem["solutions"])


def held_out_subsets(held_out: list[dict]) -> dict[str, list[int]]:
    """Held-out problem indices that train.py's table reports apart: the problems that need * or / (a property of
    the problem, fixed before any sampling, so the split cannot favour the after row) and the rest."""
    muldiv = [needs_muldiv(p) for p in held_out]
    return {"needs * or /": [i for i, m in enumerate(muldiv) if m],
            "has a +/- answer": [i for i, m in enumerate(muldiv) if not m]}


def _kept_in_headroom(problem: dict) -> bool:
    # a stable hash of the prompt (not Python's salted hash(), not a seed): the same problems in every process
    return zlib.crc32(problem["prompt"].encode()) % 10_000 < HEADROOM_MULDIV_FRACTION * 10_000


def warmup_problems(problems: list[dict], variant: str = "full") -> list[dict]:
    """The problems (and the solutions of each) that the supervised warm-up samples from.

    "full": `problems` itself, unchanged. "headroom": each problem with a +/- -only solution keeps only those
    solutions; of the problems that need * or /, only the `HEADROOM_MULDIV_FRACTION` chosen by `_kept_in_headroom`
    are kept (with all their solutions); the others are left out. Never modifies `problems`."""
    if variant not in WARMUP_VARIANTS:
        raise ValueError(f"unknown warm-up variant {variant!r}; choose one of {', '.join(WARMUP_VARIANTS)}")
    if variant == "full":
        return problems
    kept = []
    for p in problems:
        if needs_muldiv(p):
            if _kept_in_headroom(p):
                kept.append(p)
        else:
            kept.append({**p, "solutions": [s for s in p["solutions"] if is_plus_minus(s)]})
    return kept


def warm_up(model, tokenizer, problems: list[dict], steps: int, *, lr: float = 3e-3, batch_size: int = 64,
            seed: int = 0, progress=None, variant: str = "full") -> list[float]:
    """Teach the format and some arithmetic: cross-entropy on "prompt -> one random correct solution + EOS".

    Only the answer tokens are in the loss. A short warm-up leaves the model right some of the time (pass@1 between
    0.1 and 0.5 on held-out problems) and right *at least once* in 16 samples much more often: the regime where
    RL helps and where pass@1 and pass@k can move apart. `variant` picks the data (`warmup_problems`): "full" every
    problem and solution, "headroom" the restricted set with little * and / (see the module docstring).
    `progress(steps)`, when given, wraps the range of steps to show progress (train_io.progress). Returns the loss of
    every step.
    """
    import torch

    problems = warmup_problems(problems, variant)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    # linear warm-up over 5% of the steps, then cosine decay to 10% of lr
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 20)) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(1, steps)))))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    device = next(model.parameters()).device
    losses = []
    model.train()
    for _ in range(steps) if progress is None else progress(range(steps)):
        batch = rng.sample(problems, batch_size)
        rows, answer_from = [], []
        for p in batch:
            prompt = tokenizer(p["prompt"])["input_ids"]
            answer = tokenizer(rng.choice(p["solutions"]))["input_ids"] + [eos]
            rows.append(prompt + answer)
            answer_from.append(len(prompt))
        width = max(map(len, rows))
        ids = torch.full((batch_size, width), pad, dtype=torch.long)
        target_mask = torch.zeros((batch_size, width), dtype=torch.bool)
        for i, (row, start) in enumerate(zip(rows, answer_from)):
            ids[i, :len(row)] = torch.tensor(row)
            target_mask[i, start:len(row)] = True
        ids, target_mask = ids.to(device), target_mask.to(device)
        logits = model(input_ids=ids).logits[:, :-1]          # position t predicts token t + 1
        targets = ids[:, 1:].masked_fill(~target_mask[:, 1:], -100)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses
