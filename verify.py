"""Math answer checking for RLVR rewards: extract the final answer, decide equivalence, never execute model text.

The reward of every RL step comes from here, and the policy will find every hole in it. Three jobs:

1. **Extraction.** A response's answer is its last `\\boxed{}` (boxes that only a separator divides, `\\boxed{3} or
   \\boxed{-5}`, are one answer, a list), else its last anchor (`####`, `The final answer is`, `Answer:`, `<answer>`);
   a final anchor after the box overrides it. No box and no anchor scores 0 unless `fallback="last"`. A gold is read
   with the same rules, except that words may stand between the boxes of one gold answer.
2. **Equivalence.** Both answers are normalised, then parsed by a recursive-descent parser that builds sympy objects
   directly (nothing reaches `eval`, `exec`, `sympify` or `parse_expr`), and compared by kind: numbers exactly,
   expressions at rational points, sets, lists, tuples, intervals, relations and matrices by their own rules.
3. **Bounds.** Every call returns within TIME_LIMIT_S, from any thread: size bounds before sympy computes anything,
   and an in-process watchdog (`_bounded`); `batch_reward` adds a hard kill per check in worker processes.

**Decision order** (`_judge`; the first step that decides gives the verdict). Steps 1-5 need no sympy: they are
`_cheap_verdict`, which `batch_reward` also runs in the parent process.
   1. no answer, or an empty one: not equal;
   2. both normalised (`_normalize`), a lone number with a comma read by the decimal-comma rule; the same text: equal;
   3. longer than MAX_ANSWER_CHARS: not equal (compared as text only);
   4. a choice-letter gold (`(C)`): the letters; two word answers (`Monday`): the words, case-insensitively;
   5. two plain numbers (`12`, `-0.5`, `3/4`): exactly, with Fraction;
   6. both parsed (`_parse_cached`): one past a size bound is not equal, both unparseable compare as text, one
      unparseable is not equal; a value with an opaque stand-in is compared structurally;
   7. the parsed values by type (`_equal`);
   8. the gold decimal's rounding tolerance for an exact irrational answer.

**Public API:**
   - `reward(response, gold, *, fallback)` -> 1.0 or 0.0;
   - `batch_reward(responses, golds, timeout, workers, *, fallback)` -> rewards, with a hard kill per check;
   - `is_equivalent(pred, gold)` -> bool: an answer against a gold;
   - `extract_answer(text)` -> a response's answer, or None;
   - `gold_answer(text)` -> the answer a gold (bare, MATH, GSM8K or worked) stands for: every gold goes through it;
   - `FALLBACKS`, `TIME_LIMIT_S`; parsed values are sympy expressions or `Seq`, `SetOf`, `List`, `Matrix`, `Rel`,
     `SympySet`, `Based`.
`python verify.py RESPONSE GOLD` prints both answers, the verdict and why; exit status 0 equal, 1 not, 2 usage error.

docs/verify.md is the rule catalogue (what each step reads and accepts, what it refuses on purpose, the known
limitations), stated there once. Imports only sympy and the standard library: copy this file alone.
"""
import argparse
import atexit
import collections
import ctypes
import dataclasses
import functools
import gc
import itertools
import multiprocessing
import multiprocessing.connection
import os
import re
import sys
import threading
import time
from fractions import Fraction
from typing import NamedTuple

import sympy
from sympy.core.evalf import PrecisionExhausted


# ----------------------------------------------------------------------------------------------------------------
# Public API: reward, is_equivalent, extract_answer, gold_answer, batch_reward

FALLBACKS = ("none", "last")     # what a response with no box or anchor scores: 0, or its last value


def reward(response, gold, *, fallback="none"):
    """1.0 if the final answer of `response` is equivalent to `gold`, else 0.0. `gold` may be a bare answer,
    a MATH solution with a `\\boxed{}`, or a GSM8K solution with `####`.

    `fallback` says what to do when the response has no box and no explicit anchor: "none" (the default) scores
    it 0; "last" takes the last value in the text (see _last_value; opt-in, it rewards a correct number that a
    policy merely mentions last). Returns within TIME_LIMIT_S (0.0 when out of time), from any thread."""
    if not isinstance(response, str) or not isinstance(gold, str):
        raise TypeError("reward: response and gold must be str, got "
                        f"{type(response).__name__} and {type(gold).__name__}")
    _check_fallback(fallback, "reward")
    return _bounded(0.0, _reward, response, gold, fallback)


def is_equivalent(pred, gold):
    """True when answer string `pred` is mathematically equivalent to `gold`, an answer string (LaTeX or plain) or
    a solution that gold_answer reduces (`\\boxed{3} apples and \\boxed{8} pears`, a GSM8K `#### 72`).
    Returns within TIME_LIMIT_S (False when the check ran out of time), from any thread."""
    if not isinstance(pred, str) or not isinstance(gold, str):
        raise TypeError("is_equivalent: pred and gold must be str, got "
                        f"{type(pred).__name__} and {type(gold).__name__}")
    return _bounded(False, _safe_judge, pred, gold)


def extract_answer(text):
    """The final answer in a model response (str), or None when there is none.

    Last `\\boxed{}`/`\\fbox{}` (nested braces; `\\boxed 5`; an empty box means no answer); otherwise the last
    explicit anchor (`#### x`, `The final answer is x`, `Answer: x`, `<answer>x</answer>`). When the response
    has a `</think>`, an answer after it is preferred to anything inside the thinking."""
    if not isinstance(text, str):
        raise TypeError(f"extract_answer: expected str, got {type(text).__name__}")
    if "</think>" in text:
        after = _extract(text[text.rindex("</think>") + len("</think>"):])
        if after is not None:
            return after
    return _extract(text)


def gold_answer(text):
    """The answer a gold stands for (str): a bare answer as it is (stripped); the box of a MATH solution, the
    `####` line of a GSM8K solution, the final answer of a worked solution, read with extract_answer's rules,
    except that the boxes of one answer may have a few words between them (`\\boxed{3} apples and \\boxed{8}
    pears` is `3, 8`): a gold is trusted, a response is not. reward, batch_reward and is_equivalent read every
    gold through it, so a data pipeline may store the raw answer or this reduction, with the same rewards."""
    if not isinstance(text, str):
        raise TypeError(f"gold_answer: expected str, got {type(text).__name__}")
    if "\\boxed" in text or "\\fbox" in text or "####" in text or (
            ("\n" in text.strip() or len(text) > 80) and re.search(r"(?i)answer", text)):
        ans = _extract(text, _GOLD_BOX_SEP)
        if ans is not None:
            return ans
    return text.strip()


def batch_reward(responses, golds, timeout=5.0, workers=None, *, fallback="none"):
    """Rewards for many (response, gold) pairs: list[float] of 1.0/0.0, in input order.

    Checks that the cheap steps decide (_cheap_verdict: no answer, the same text, plain numbers; most of GSM8K) are
    decided right here; the rest run in `workers` persistent worker processes (default: min(8, CPU count), at most
    one per pending check), started with 'spawn' so it is safe after torch has started threads (a script calling
    this needs the usual `if __name__ == "__main__":` guard), and reused across calls (the first call pays about a
    second per worker to start). Each check gets `timeout` seconds of wall clock; a check that runs over scores 0.0
    and its worker is killed and replaced.
    `workers=0` runs everything in this process with no hard kill (for tests and tiny runs; the parser's bounds
    still apply, and so does the in-process TIME_LIMIT_S). `fallback` is reward's (FALLBACKS)."""
    responses, golds = list(responses), list(golds)
    if len(responses) != len(golds):
        raise ValueError(f"batch_reward: {len(responses)} responses but {len(golds)} golds; they must pair up")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"batch_reward: timeout must be a positive number of seconds, got {timeout!r}")
    if workers is not None and not (isinstance(workers, int) and workers >= 0):
        raise ValueError(f"batch_reward: workers must be None or an int >= 0, got {workers!r}")
    _check_fallback(fallback, "batch_reward")
    if workers == 0 or not responses:
        return [reward(r, g, fallback=fallback) for r, g in zip(responses, golds)]
    for r, g in zip(responses, golds):
        if not isinstance(r, str) or not isinstance(g, str):
            raise TypeError(f"batch_reward: responses and golds must be str, got {type(r).__name__} and "
                            f"{type(g).__name__}")
    results = []
    for r, g in zip(responses, golds):
        try:
            results.append(_quick_reward(r, g, fallback))
        except Exception:             # never let the cheap path crash training; the worker will judge it
            results.append(None)
    todo = [i for i in range(len(responses)) if results[i] is None]
    if todo:
        _judge_in_workers(responses, golds, fallback, todo, results, timeout, workers)
    return results


# ----------------------------------------------------------------------------------------------------------------
# Limits. Everything the parser builds is capped *before* sympy computes it.

MAX_ANSWER_CHARS = 1000     # longer answers are compared as normalised text only
MAX_DEPTH = 60              # nesting of brackets / groups / function arguments
MAX_TOKENS = 600            # tokens in one answer
MAX_LITERAL_DIGITS = 100    # an integer literal longer than this is not turned into a number
MAX_POW_BITS = 50_000       # |exponent| * log2|base| for an exact power of numbers (~15,000 digits)
MAX_SYMBOLIC_EXPONENT = 1000  # integer exponent allowed on a non-numeric base (x^1000 is fine, x^(10^9) is not)
MAX_ROOT_BITS = 1000        # a root, real power or function of a number this big is refused (sympy would factor it)
MAX_FACTORIAL = 1000        # n! and binom(n, k) arguments
MAX_SCI_EXPONENT = 1000     # 1e1000 is fine, 1e100000 is not
NUMERIC_DIGITS = 30         # significant digits evalf must establish to call two numbers different
NUMERIC_MAXPREC = 400       # working precision (digits) after which "cannot separate from zero" means equal
NUMERIC_MAXPREC_GAMMA = 120  # the same for differences with factorials / binomials (gamma at 400 digits is slow)
TAME_DIGITS = 30            # "cannot separate" only counts as equal when every integer involved is this small
MAX_ROOT_INDEX = 100        # p/q-th powers: q at most this, and every integer in the base at most this many
MAX_ROOT_FACTOR_BITS = 64   # bits; otherwise only an exact root of a number is taken (sympy factors to take it)
MAX_SYMBOLIC_COEFF_BITS = 10  # a number to a symbolic power: integers in the exponent at most 2^10 (2^{1024 a})
TIME_LIMIT_S = 0.8          # wall clock of one reward / is_equivalent call, enforced in-process (see _bounded)


class _Guard(Exception):
    """The answer is too large or too deep to compute safely; compare it structurally."""


class _ParseError(Exception):
    """Not a math expression we understand; compare it as text."""


class _Timeout(BaseException):
    """Raised inside a check that ran past TIME_LIMIT_S. A BaseException, so no `except Exception` (ours or
    sympy's) can swallow it."""


# ----------------------------------------------------------------------------------------------------------------
# Parsed values. A number or an expression is a sympy Expr; every other answer is one of these nodes.

class Seq(NamedTuple):
    """`(1, 2)`, `[0, 7)`, `\\langle 1, 2 \\rangle`: items in order between brackets (two numbers may be an
    interval, a tuple may be a column vector)."""
    open: str
    close: str
    items: tuple


class SetOf(NamedTuple):
    """`\\{1, 2\\}`, `\\pm 3`: a finite set written out; order and repeats do not count."""
    items: tuple


class List(NamedTuple):
    """`1, 2`, `x = 1, y = 2`, `x < 3 or x > 5`: a bare list; order does not count, repeats do."""
    items: tuple


class Matrix(NamedTuple):
    """`\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}`: rows of entries."""
    rows: tuple


class Rel(NamedTuple):
    """`x = 5`, `-1 < 2x + 1 < 5`, `y \\approx 7`: the sides, and the operators between them (`=`, `<`, `<=`, `>`,
    `>=`, `!=`, `~=`)."""
    exprs: tuple
    ops: tuple


class SympySet(NamedTuple):
    """An interval, a union, the empty set or the reals, as a sympy Set (from `\\cup`, `\\emptyset`, set-builder)."""
    value: object


class Based(NamedTuple):
    """`1011_2`: digits in a base."""
    digits: str
    base: int


class Digits(NamedTuple):
    """A digit string that a base subscript follows (`1011` in `1011_2`); becomes a Based."""
    text: str


# ----------------------------------------------------------------------------------------------------------------
# The reward's plumbing: a response's answer, a gold's answer, never an exception

def _safe_judge(pred, gold):
    try:
        return _judge(pred, gold_answer(gold))[0]
    except Exception:      # the reward must never crash training; a failure to judge is not a success
        return False


def _check_fallback(fallback, where):
    if fallback not in FALLBACKS:
        raise ValueError(f"{where}: fallback must be one of {FALLBACKS}, got {fallback!r}")


def _response_answer(response, fallback):
    pred = extract_answer(response)
    if pred is None and fallback == "last" and not _BOX.search(response):     # an empty box is "no answer"
        pred = _last_value(response)
    return pred


def _reward(response, gold, fallback):
    try:
        pred = _response_answer(response, fallback)
        return 1.0 if pred is not None and _judge(pred, gold_answer(gold))[0] else 0.0
    except Exception:
        return 0.0


# ----------------------------------------------------------------------------------------------------------------
# The decision: from two answer strings to a verdict, cheapest test first (the order the docstring lists)

def _cheap_verdict(pred, gold):
    """Steps 1-5 of the decision order, which need no sympy: (verdict, why, p, g), with p and g the normalised
    answers and verdict None when these steps do not decide. Linear-time regexes and Fraction on short strings, so
    batch_reward runs it in the parent process: most GSM8K-style checks never reach a worker."""
    # 1. nothing to judge
    if pred is None:
        return False, "no answer in the response", None, None
    if gold is None:
        return False, "no gold answer", None, None
    # 2. one spelling each
    p, g = _normalize(pred), _normalize(gold)
    p, g = _decimal_comma(p, g), _decimal_comma(g, p)
    if not p:
        return False, "empty answer", p, g
    if _squash(p) == _squash(g):
        return True, "identical after normalisation", p, g
    # 3. too long to parse
    if len(p) > MAX_ANSWER_CHARS or len(g) > MAX_ANSWER_CHARS:
        return False, f"answer longer than {MAX_ANSWER_CHARS} characters: compared as text only", p, g
    # 4. choice letters and words
    letter = _choice_letter(g)
    if letter is not None:
        got = _choice_letter(p, strict=False)
        return got == letter, f"multiple choice: gold {letter}, answer {got}", p, g
    if re.fullmatch(r"[A-Za-z][A-Za-z ]+", p) and re.fullmatch(r"[A-Za-z][A-Za-z ]+", g):
        # Words are text, not products of letters: "No" = "no", "pine" != "nipe" (but "ab" = "ba" stays algebra).
        if _text_key(p) == _text_key(g):
            return True, "text answers match (case-insensitive)", p, g
        if re.fullmatch(r"[a-z]{3}", p) and sorted(p) == sorted(g):
            return True, "products of the same three letters (abc = cab)", p, g
        if max(len(p), len(g)) >= 3 and not {p.lower(), g.lower()} & {"pi", "inf", "infty", "infinity", "oo"}:
            return False, "text answers differ", p, g
    # 5. plain numbers, without sympy
    fp, fg = _fast_value(p), _fast_value(g)
    if fp is not None and fg is not None:
        return fp == fg, "equal numbers" if fp == fg else "different numbers", p, g
    return None, "", p, g


def _judge(pred, gold):
    """(equal?, why) for two answer strings, in the decision order of the module docstring."""
    verdict, why, p, g = _cheap_verdict(pred, gold)
    if verdict is not None:
        return verdict, why
    # 6. parse; bounds and unparseable text
    rp, rg = _parse_cached(p), _parse_cached(g)
    if "guard" in (rp.status, rg.status):
        which, why = ("answer", rp.value) if rp.status == "guard" else ("gold", rg.value)
        return False, f"{which} exceeds a safety bound ({why}): compared as text"
    if "error" in (rp.status, rg.status):
        if rp.status == rg.status:
            same = _text_key(p) == _text_key(g) and _text_key(g) != ""
            return same, "text answers " + ("match" if same else "differ")
        which = "answer" if rp.status == "error" else "gold"
        return False, f"{which} is not parseable math and the other is: not equal"
    vp, vg = rp.value, rg.value
    try:
        if _has_large(vp) or _has_large(vg):
            same = _equal(vp, vg)
            return same, ("a value exceeds the safety bounds and stays unevaluated; compared structurally: " +
                          ("equal" if same else "not equal"))
        # 7. by type
        if _equal(vp, vg):
            return True, "mathematically equal"
        # 8. a gold decimal's rounding, for an exact irrational answer
        tol = _decimal_tolerance(g)
        if tol is not None and tol <= Fraction(1, 200) and isinstance(vp, sympy.Expr) and vp.is_number \
                and not vp.is_Rational and not vp.has(sympy.oo, sympy.zoo) and not re.search(r"\d\.\d", p):
            diff = (vp - vg).evalf(30)
            if diff.is_real and abs(diff) < sympy.Rational(tol.numerator, tol.denominator):
                return True, "rounds to the gold decimal"
        return False, "not equal"
    except (_Guard, RecursionError):
        return False, "comparison exceeded a safety bound"
    except (_ParseError, ZeroDivisionError, ValueError, TypeError, ArithmeticError, AttributeError):
        return False, "values are not comparable"


_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_PLAIN_FRACTION = re.compile(r"(-?\d+)/(\d+)")
_DECIMAL = re.compile(r"-?\d*\.(\d+)")


def _fast_value(s):
    """Fraction for plain integers, decimals and a/b (the common case), without touching sympy."""
    if len(s) > 40:
        return None
    if _PLAIN_NUMBER.fullmatch(s):
        return Fraction(s)
    m = _PLAIN_FRACTION.fullmatch(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    return None


def _decimal_tolerance(g):
    """Gold written as a decimal literal with k digits after the point: half a unit in the last place."""
    m = _DECIMAL.fullmatch(g)
    return Fraction(1, 2 * 10 ** len(m.group(1))) if m else None


_COMMA_NUMBER = re.compile(r"(-?)(\d+),(\d+)")


def _decimal_comma(s, other):
    """`3,75` is 3.75 and `0,125` is 1/8: one number with a comma, whose shape is not a thousands group (a nonzero
    integer part of at most 3 digits and exactly 3 digits after the comma, which `_normalize` has already read as
    1,250 = 1250). When the other answer is a list (`1, 2`), the comma separates its items instead."""
    m = _COMMA_NUMBER.fullmatch(s)
    if m is None or "," in other:
        return s
    return f"{m.group(1)}{m.group(2)}.{m.group(3)}"


# ----------------------------------------------------------------------------------------------------------------
# Extraction: the final answer in a response

# Each pattern has a single unbounded run before the captured line, so a 1 MB response is scanned in linear time.
# (pattern, final): a *final* anchor written after the last box overrides the box (the model revised its answer);
# a plain "the answer is" / "... answer: " after a box does not ("To check the answer: 3 + 4 = 7").
_ANCHORS = [
    (re.compile(r"####([^\n]*)"), True),
    (re.compile(r"(?i)final\s+answer\s+is:?([^\n]*)"), True),
    (re.compile(r"(?i)final\s+answer(?:\*\*)?\s*:(?:\*\*)?([^\n]*)"), True),
    (re.compile(r"(?im)^[ \t>*#]*answer(?:\*\*)?\s*:(?:\*\*)?([^\n]*)"), True),
    (re.compile(r"(?i)\banswer(?:\*\*)?\s*:(?:\*\*)?([^\n]*)"), False),
    (re.compile(r"(?i)\banswer\s+is:?(?:\*\*)?([^\n]*)"), False),
    # "Answer $12$", "**Final Answer** \\[ 12 \\]": no colon, display or inline math right after the word
    (re.compile(r"(?im)^[ \t>*#]*(?:final\s+)?answer(?:\*\*)?[ \t]*((?:\$|\\\[|\\\()[^\n]*)"), True),
]
_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
# Display math right after an anchor, opened on the anchor's line or the next one and closed within a few lines.
_DISPLAY_AFTER_CUE = re.compile(r"[ \t]*(?:\n[ \t]*)?(?:\\\[[^\n]*?(?:\n[^\n]*?){0,8}?\\\]"
                                r"|\$\$[^\n$]*?(?:\n[^\n$]*?){0,8}?\$\$)")
# What may stand between two boxes that together are one answer: `\boxed{3} \text{ or } \boxed{-5}`,
# `$x = \boxed{3}$ or $x = \boxed{-5}$`, `\boxed{2}, \boxed{3}`. Anything else (words) separates attempts, and then
# the last box alone is the answer. Bounded length, so the check stays linear.
_BOX_SEP = re.compile(r"[\s$,;.&]*(?:(?:\\text\s*\{\s*(?:or|and|,)\s*\}|\\q?quad|\\[,;:! ]|\\\\|\bor\b|\band\b)"
                      r"[\s$,;.&]*)*(?:[A-Za-z](?:_\{?\w{1,3}\}?)?\s*=\s*)?\$?\s*")
_MAX_BOXES = 8
# In a gold (trusted text) a few words may stand between the boxes of one answer: `\boxed{3} apples and
# \boxed{8} pears`. A sentence end still separates them.
_GOLD_BOX_SEP = re.compile(rf"(?:{_BOX_SEP.pattern})|[^.\n{{}}\\]{{0,40}}")


_MAX_BOX_SCAN = 20_000


class _Span(NamedTuple):
    """An answer found in a response: where it starts and ends, its text, and whether its anchor is final."""
    start: int
    end: int
    text: object
    final: bool = True


def _box_content(text, start):
    """Content of the box whose command ends at `start`: `{...}` with nested braces, or `\\boxed 5`.
    Returns (content, end) or None when the braces never close (a truncated response)."""
    n, i = len(text), start
    while i < n and text[i] in " \t":
        i += 1
    if i < n and text[i] == "{":
        depth, j = 0, i
        end = min(n, i + _MAX_BOX_SCAN)
        while j < end:
            c = text[j]
            if c == "\\":            # \{ and \} are literal braces, they do not nest
                j += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1:j], j + 1
            j += 1
        return None if end == n else (text[i + 1:end], end)    # absurdly long box: an answer that is too long
    m = re.match(r"[^\s$]+", text[i:i + 200])   # `\boxed 5`: one token
    return (m.group(0), i + m.end()) if (m and i > start) else None


def _last_boxes(text, sep=_BOX_SEP):
    """(start, end, answer) of the last box, joined with the boxes right before it when only a separator (`or`,
    `,`, `$x = `) stands between them: several boxes are one answer, a list. None when there is no closed box."""
    boxes = list(_BOX.finditer(text))
    last = None
    for m in boxes[::-1][:3]:                     # a few unclosed boxes at most, so 1 MB of "\boxed{" stays linear
        got = _box_content(text, m.end())
        if got is not None:
            last = (m, got)
            break
    if last is None:
        return None
    m, (content, end) = last
    parts, start = [content.strip()], m.start()
    k = boxes.index(m)
    while k > 0 and len(parts) < _MAX_BOXES:
        prev = boxes[k - 1]
        got = _box_content(text, prev.end())
        if got is None or got[1] > start or start - got[1] > 60 or not sep.fullmatch(text, got[1], start):
            break
        parts.insert(0, got[0].strip())
        start, k = prev.start(), k - 1
    if not parts[-1]:
        return _Span(start, end, None)              # \boxed{} means "no answer", not "look further back"
    parts = list(dict.fromkeys(p for p in parts if p))       # the same box twice is one answer
    return _Span(start, end, ", ".join(parts))


def _math_end(text, i):
    """Index of the `$` that closes the math segment opened at text[i] == '$' (`\\$` is a dollar sign, not a
    delimiter: `$\\$42$`), or -1."""
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == "$":
            return j
        j += 1
    return -1


_SENTENCE_END = re.compile(r"(?i)\.\s+i hope|\s+i hope|\.\s+(?=[A-Z])|\.\s*$")
# "The smallest such $m$ is 12.": a noun phrase (no digits, no hedge) and a verb before the value.
_SENTENCE_VALUE = re.compile(r"(?i)(?:the|a|an|our|its|this|that|so|thus|hence|there)\b[^0-9\n]{0,120}?"
                             r"\s(?:is|are|equals|was|would be|will be)\s+(?:equal to\s+)?")


def _clean_anchor(ans):
    """The answer in the text after an anchor: the first sentence, the value of a sentence (`The smallest such $m$
    is 12.`), the first math segment when nothing but punctuation follows it."""
    ans = ans.strip().strip("*").strip()
    m = re.match(r"\\\[(.*?)\\\]|\\\((.*?)\\\)", ans)
    if m and not re.search(r"\$|\\[\[(]|\b(?:or|and|maybe|either)\b", ans[m.end():], re.I):
        ans = m.group(1) if m.group(1) is not None else m.group(2)    # "\\[ 12 \\]", "\\( 3+9 \\)"
    m = _SENTENCE_END.search(ans)
    if m:
        ans = ans[:m.start()]
    ans = ans.strip().strip("*").strip()
    m = _SENTENCE_VALUE.match(ans)
    if m and not re.search(r"\b(?:or|either|maybe|not)\b", ans[:m.end()], re.I):
        ans = ans[m.end():].strip()
    if ans.startswith("$$") and ans.count("$$") >= 2:
        ans = ans[2:ans.index("$$", 2)]
    elif ans.startswith("$"):
        close = _math_end(ans, 0)
        if close > 0:
            rest = ans[close + 1:].strip()
            if not re.search(r"\$|\b(?:or|and|maybe|either)\b", rest, re.I):
                ans = ans[1:close]             # "$5$ apples", "$\\$42$.": the math is the answer
    ans = ans.strip().rstrip(".").strip()
    if ans.startswith("$") and _math_end(ans, 0) == len(ans) - 1:
        ans = ans[1:-1]
    return ans.strip() or None


def _extract(text, box_sep=_BOX_SEP):
    box = _last_boxes(text, box_sep)
    best = None                                   # the last anchor, a _Span
    for pattern, final in _ANCHORS:
        for m in pattern.finditer(text):
            # ordered by where the answer text starts, so "final answer is" and "answer is" on one line are one
            # anchor, and the final one
            if best is None or m.start(1) > best.start or (m.start(1) == best.start and final and not best.final):
                best = _Span(m.start(1), m.end(1), m.group(1), final)
    if best is not None:
        m = _DISPLAY_AFTER_CUE.match(text, best.start)
        if m:                                     # "Answer \\[", newline, 9, newline, "\\]": the display is the answer
            best = _Span(best.start, m.end(), m.group(0).replace("\n", " ").strip(), best.final)
    close = text.rfind("</answer>")
    if close >= 0:
        open_ = text.rfind("<answer>", 0, close)
        if open_ >= 0 and (best is None or open_ > best.start):
            inner = text[open_ + len("<answer>"):close]
            boxed = _last_boxes(inner) if "\\boxed" in inner or "\\fbox" in inner else None
            if boxed is not None:
                return boxed.text
            best = _Span(open_, close, inner.replace("\n", " "))
    if box is not None and not (best is not None and best.final and best.start >= box.end):
        return box.text                           # the last box, unless a final anchor follows it
    if best is None:
        return None
    inner = best.text
    if "\\boxed" in inner or "\\fbox" in inner:
        boxed = _last_boxes(inner)
        if boxed is not None:
            return boxed.text
    return _clean_anchor(inner)


# The lenient fallback (reward(..., fallback="last")) for models that never box or anchor their answer.
_LAST_MATH = re.compile(r"\$\$([^$]{1,300})\$\$|\$((?:[^$\\]|\\.){1,300})\$|\\\((.{1,300}?)\\\)|"
                        r"\\\[(.{1,300}?)\\\]", re.S)
_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def _last_value(text):
    """The last value in the final sentence of a response: its last math segment (`$...$`, `\\(...\\)`,
    `\\[...\\]`, judged whole), else what follows its last `is` / `:` when that
    holds a number or a command, else its last number. None when that sentence hedges (`or`, `either`, `maybe`).
    Only the last 400 characters are read, so this stays linear."""
    if "</think>" in text:
        text = text[text.rindex("</think>") + len("</think>"):]
    tail = text[-400:].rstrip().rstrip(".").rstrip()
    cut = max(tail.rfind(". "), tail.rfind("\n"))
    sentence = tail[cut + 1:] if cut >= 0 and re.search(r"\d", tail[cut + 1:]) else tail
    if re.search(r"(?i)\b(?:or|either|maybe|perhaps|not sure)\b", sentence):
        return None
    maths = [next(g for g in m.groups() if g is not None) for m in _LAST_MATH.finditer(sentence)]
    if maths:
        return maths[-1].strip() or None         # judged whole: "x = 2 + 2 = 5" stays a false chain
    verbs = list(re.finditer(r"(?i)\b(?:is|are|equals|gives|get|got|was|be)\b|:", sentence))
    if verbs:                               # "the result is \frac{1}{2}": the whole value after the last verb
        rest = sentence[verbs[-1].end():].strip()
        if re.search(r"[\d\\]", rest):
            return rest
    numbers = _LAST_NUMBER.findall(sentence)
    return numbers[-1].rstrip(",") if numbers else None


# ----------------------------------------------------------------------------------------------------------------
# Normalisation: one spelling per answer, at string level

_UNICODE = {"\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": "*", "\u22c5": "*", "\u00b7": "*",
            "\u00f7": "/", "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u2264": "\\le ", "\u2265": "\\ge ",
            "\u2260": "\\ne ", "\u222a": "\\cup ", "\u2229": "\\cap ", "\u2205": "\\emptyset ", "\u221a": "\\sqrt",
            "\u00a0": " ", "\u2009": "", "\u202f": "", "\u20ac": " ", "\u00a3": " ", "\u00a5": " ",
            "\u00b1": "\\pm ", "\u2248": "\\approx ", "\u2208": "\\in ", "\u00bd": "\\frac12", "\u00bc": "\\frac14",
            "\u00be": "\\frac34",
            "\u2153": "\\frac13", "\u2154": "\\frac23", "\u215b": "\\frac18"}
_SUPERSCRIPT = str.maketrans("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207b", "0123456789-")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|textsf|texttt|textnormal|mbox|mathrm|mathbf|mathit|mathsf|"
                       r"mathtt|operatorname|boldsymbol|bm|rm|bf|hbox|emph)\s*\{([^{}]*)\}")
_UNIT_TAIL = re.compile(r"(?<![\\a-zA-Z])((?:\s*[a-zA-Z]{2,}(?![a-zA-Z])\.?(?:\s*\^\s*\{?\d\}?)?)+)\s*$")
# \text{ cm}^2, \mbox{m/s}, \mathrm{kg} right after a number: a unit, dropped.
_UNIT_TEXT = re.compile(r"(?<=[\d})\s])\s*\\(?:text|mbox|textrm|textnormal|mathrm)\s*\{\s*([a-zA-Z][a-zA-Z/. ]*)\}"
                        r"(?:\s*\^\s*\{?\d\}?)?(?=\s*(?:$|[,;)\]}&\x00]))")
# A unit tail must be spaced from the number ("5 cm", "3 hours"; "12apples" too, one word of 4+ letters); a
# two-letter one must also be one of these: "5nm^3" is the product 5 n m^3, "2 ab" is 2ab, "-3cba^2" is -3cba^2.
_UNITS2 = {"cm", "mm", "km", "kg", "mg", "ml", "mL", "ft", "in", "yd", "mi", "oz", "lb", "lbs", "hr", "am", "pm",
           "nm", "cc", "dm", "ha", "kW", "kJ", "mA", "ms", "mph", "sq", "ly", "mi"}
_KEEP_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "ln", "log", "exp", "sqrt", "pi", "arcsin", "arccos",
               "arctan", "sinh", "cosh", "tanh", "inf", "infty", "infinity", "or", "and", "oo"}


def _text_group(m):
    inner = m.group(1).strip()
    if inner.lower() in ("or", "and", ","):
        return " , "
    return " " + inner + " "


def _unit_text(m):
    """Drop a unit in \\text{} after a number (`5\\text{ cm}`, `5\\text{m}`), but keep `or`/`and` (a hedge, judged
    as a list) and an unspaced i or e (`4\\mathrm{i}` is 4i)."""
    content = m.group(1).strip()
    if content.lower() in ("or", "and"):
        return m.group(0)
    if content in ("i", "e") and not re.search(r"\{\s", m.group(0)):
        return m.group(0)
    return " "


def _normalize(s):
    """Canonical spelling of an answer string (no parsing): the cheap first pass every comparison goes through."""
    s = s.strip()
    if len(s) > 4 * MAX_ANSWER_CHARS:
        return s
    s = _single_escaped(s)
    s = re.sub(r"\s+", " ", s)             # one space at most between tokens keeps every rule below linear
    for k, v in _UNICODE.items():
        if k in s:
            s = s.replace(k, v)
    s = re.sub("[\u2070\u00b9\u00b2\u00b3\u2074-\u2079\u207b]+",
               lambda m: "^{" + m.group(0).translate(_SUPERSCRIPT) + "}", s)
    s = s.replace("\\\\", "\x00")                            # protect matrix row breaks from the rules below
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\[()\[\]]", " ", s)                            # \( \) \[ \] math delimiters
    for _ in range(3):                                        # \boxed{...} around the whole answer: its content
        m = re.match(r"\s*\\(?:boxed|fbox)\s*(\{?)", s)
        got = _box_content(s, m.start(1)) if m else None
        if got is None or s[got[1]:].strip():
            break
        s = got[0]
    s = re.sub(r"\\(?:boxed|fbox)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\lbrace(?![a-zA-Z])", r"\\{", re.sub(r"\\rbrace(?![a-zA-Z])", r"\\}", s))
    s = re.sub(r"\\(?:[lr]?vert)(?![a-zA-Z])", "|", s)
    # a segment or vector name is a label: \overline{AB} = 5, |\vec{v}| = 13
    s = re.sub(r"\\(?:overline|vec|overrightarrow|widehat|hat)\s*\{\s*([A-Za-z]{1,3})\s*\}|\\vec\s+([A-Za-z])",
               lambda m: m.group(1) or m.group(2), s)
    # A label before the answer: "\text{The answer is } 5", "\text{area} = 12", "Answer: 5"
    s = re.sub(r"^\s*\\(?:text|textbf|mbox|mathrm|textit)\s*\{\s*(?:the\s+)?(?:final\s+)?answer(?:\s+is)?"
               r"\s*:?\s*\}\s*:?", "", s, flags=re.I)
    s = re.sub(r"^\s*\\(?:text|textbf|mbox|mathrm|textit)\s*\{\s*[A-Za-z][A-Za-z ]*\}\s*=", "", s)
    s = re.sub(r"^\s*(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*:?\s+", "", s, flags=re.I)
    s = re.sub(r"\\(?:left|right)\s*\.", "", s)
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\(?:displaystyle|textstyle|limits|angle|measuredangle|triangle)(?![a-zA-Z])", " ", s)
    # thin space / {,} are thousands separators in numbers, also with a comma and stray spaces: 12,\! 345,\! 678
    s = re.sub(r"(?<=\d)(?:,\s?)?(?:\\[,!]|\{,\})\s?(?=\d{3}(?!\d))", "", s)
    s = re.sub(r"\\[,!]|\{,\}", "", s)
    s = re.sub(r"\\[;: ]|\\q?quad(?![a-zA-Z])|~", " ", s)
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![a-zA-Z])", r"\\binom", s)
    # Degrees become one marker, "\u00b0": ignored on a bare number (30^\circ = 30), pi/180 inside a trig function.
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])", "\u00b0", s)
    s = re.sub(r"\{\s*\}\s*\^", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = _UNIT_TEXT.sub(_unit_text, s)
    for _ in range(5):                                        # nested \text{\textbf{..}}
        s2 = _TEXT_CMD.sub(_text_group, s)
        if s2 == s:
            break
        s = s2
    s = re.sub(r"\\(?:euro|EUR|pounds|yen)(?![a-zA-Z])", " ", s)
    # A capitalised word label before a value: "Total: 12,50", "Preis: 3,99" (not a ratio's letters, "A:B = 3:5",
    # nor a hedge or code: "Maybe: 3", "lambda: 1")
    s = re.sub(r"^\s*(?!(?i:or|either|maybe|perhaps|not|lambda)\b)[A-Z][A-Za-z]+(?:\s[A-Za-z]+){0,3}\s*:\s*"
               r"(?=[-+\d.(\\])", "", s)
    s = re.sub(r"(?i)\bpercent\b", "", s)
    s = re.sub(r"(?i)(?<=[\d}])\s*(?:degrees?|deg)\b", "\u00b0", s)
    s = re.sub(r"(?<=[\w})\]])\s+(?:or|and)\s+(?=[\w\\({\[-])", " , ", s)   # "x<3 or x>5", "4 or 5": a list
    s = re.sub(r"(?<=[)\]])\s*(?:or|and)\s*(?=[(\[])", " , ", s)            # "(2,5)or(5,2)"
    s = re.sub(r",\s*(?:or|and)\s+", ", ", s)
    s = re.sub(r",(?:\s*,)+", ",", s)                                      # "4, 9, and 25" became "4, 9, , 25"
    # A ratio's label: "A:B = 3:5" is 3:5 (ratios themselves are compared as text).
    s = re.sub(r"^(?:[A-Za-z]{1,3}(?:_\{?\w{1,3}\}?)?\s*:\s*)+[A-Za-z]{1,3}(?:_\{?\w{1,3}\}?)?\s*=\s*(?=\d)", "", s)
    s = s.strip()
    if re.search(r"\d", s):                                   # "5 cm^2", "12 square units", "3 hours"
        m = _UNIT_TAIL.search(s, max(0, len(s) - 80))      # units are a short tail; bounded search
        words = re.findall(r"[a-zA-Z]+", m.group(1)) if m else []
        spaced = bool(m) and m.group(1)[0].isspace()
        if m and m.start() > 0 and not any(w.lower() in _KEEP_WORDS for w in words) and (
                (spaced and (len(words) > 1 or len(words[0]) > 2 or words[0] in _UNITS2))
                or (not spaced and len(words) == 1 and len(words[0]) >= 4 and "^" not in m.group(1))):
            head = s[:m.start()].rstrip()
            if head and (head[-1].isdigit() or head[-1] in ")}]"):
                s = head
    s = re.sub(r"\s+", " ", s).strip()
    s = s.rstrip(".,;").strip()
    if re.fullmatch(r"(?i)(?:all|the set of all|any) real(?: number)?s?|every real number|\\mathbb\{R\}|\\mathbb R", s):
        s = "\\mathbb{R}"
    # Thousands separators, only where no list or tuple could be meant.
    if not re.search(r"[(\[{]|,\s", s):
        s = re.sub(r"(?<![\d.])([1-9]\d{0,2})((?:,\d{3})+)(?![\d])",
                   lambda m: m.group(1) + m.group(2).replace(",", ""), s)
    if re.fullmatch(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?", s):
        s = s.replace(" ", "")
    return s.replace("\x00", "\\\\")


# Commands that open double-escaped LaTeX: `\\\\frac` is how JSON carries `\\frac` when it was escaped twice.
_ESCAPED_COMMAND = re.compile(r"\\\\(?:[dt]?frac|sqrt|le|leq|ge|geq|ne|neq|lt|gt|left|right|pi|infty|boxed|fbox|text|"
                             r"textbf|mathrm|cdot|times|div|pm|mp|begin|end|circ|sin|cos|tan|log|ln|in|cup|cap|"
                             r"approx|[dt]?binom|mathbb|overline|alpha|beta|theta|emptyset)(?![a-zA-Z])")
_BACKSLASHES = re.compile(r"\\+")


def _single_escaped(s):
    """LaTeX escaped twice (`\\\\frac{1}{2}`, `x \\\\le 3`, a matrix row break as four backslashes) read once:
    when every run of backslashes has an even length and one of them opens a known command, each run is halved.
    One odd run (`\\frac`, `1 \\\\ 2 \\end`) means the text is escaped once, and it stays as it is."""
    if "\\\\" not in s or not _ESCAPED_COMMAND.search(s):
        return s
    runs = _BACKSLASHES.findall(s)
    if any(len(r) % 2 for r in runs):
        return s
    return _BACKSLASHES.sub(lambda m: m.group(0)[:len(m.group(0)) // 2], s)


def _squash(s):
    return re.sub(r"\s+", "", s)


def _text_key(s):
    """Key for comparing text answers (`\\text{Monday}`, `monday`)."""
    return re.sub(r"[\s{}\\]", "", s).lower()      # keeps , . : ; so "12:3" never matches "123"


_CHOICE = re.compile(r"\(?\s*([A-J])\s*\)?")


def _choice_letter(s, strict=True):
    s = s.strip("{} ")
    m = _CHOICE.fullmatch(s)
    if m:
        return m.group(1)
    if not strict:
        m = re.match(r"\(([A-J])\)(?:\s|$)", s)      # "(C) 12", but not "(A), (B)" or "(A) or (B)"
        if m and not re.search(r"\b[A-J]\b|,|\bor\b|\band\b", s[m.end():]):
            return m.group(1)
    return None


# ----------------------------------------------------------------------------------------------------------------
# Grammar: tokenizer and recursive-descent parser that builds sympy objects directly

_NUM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+)(?![a-zA-Z\d]))?")
_REPEAT = re.compile(r"\s*\\(?:overline|dot)\s*(?:\{(\d+)\}|(\d))")
_FUNCS = {"sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
          "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan, "sinh": sympy.sinh,
          "cosh": sympy.cosh, "tanh": sympy.tanh, "ln": sympy.log, "log": sympy.log, "exp": sympy.exp,
          "sqrt": sympy.sqrt, "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan, "abs": sympy.Abs}
_INVERSE = {"sin": "arcsin", "cos": "arccos", "tan": "arctan"}
_MULTI = {"gcd": sympy.gcd, "lcm": sympy.lcm, "max": sympy.Max, "min": sympy.Min}
_PLAIN_WORDS = sorted(list(_FUNCS) + list(_MULTI) + ["pi", "infinity", "infty", "inf", "oo"], key=len, reverse=True)
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
          "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi",
          "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"}
_RELOPS = {"=": "=", "<": "<", ">": ">", "\\le": "<=", "\\leq": "<=", "\\leqslant": "<=", "\\ge": ">=",
           "\\geq": ">=", "\\geqslant": ">=", "\\lt": "<", "\\gt": ">", "<=": "<=", ">=": ">=", "\\ne": "!=",
           "\\neq": "!=", "!=": "!=", "\\approx": "~="}
_PM = sympy.Symbol("PLUSMINUS_")


class Token(NamedTuple):
    """kind: num, id (one letter), word (a function or constant name), cmd (`\\frac`), env, op; text: its spelling
    (a NumLit for num)."""
    kind: str
    text: object


class NumLit(NamedTuple):
    """A number as written: digits with an optional point, exponent (`1e5`) and repeating block (`0.\\overline{3}`)."""
    digits: str
    exp: object
    repeat: object


_END = Token(None, None)


def _tokenize(s):
    toks, i, n = [], 0, len(s)
    while i < n:
        c = s[i]
        if c.isspace():
            i += 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and s[i + 1].isdigit()):
            m = _NUM.match(s, i)
            num, exp = m.group(1), m.group(2)
            i = m.end()
            rep = None
            if exp is None:
                r = _REPEAT.match(s, i)
                if r:
                    rep = r.group(1) or r.group(2)
                    i = r.end()
            toks.append(Token("num", NumLit(num, exp, rep)))
            continue
        if c.isalpha():
            j = i
            while j < n and s[j].isalpha():
                j += 1
            word = s[i:j]
            # a short run of letters glued to math is a product of variables: 3xyz, cba^2 (a spaced word is text)
            glued = len(word) <= 4 and ((i > 0 and (s[i - 1].isdigit() or s[i - 1] in "})^")) or
                                        (j < n and (s[j] in "^_({" or s[j].isdigit())))
            i = j
            while word:
                for w in _PLAIN_WORDS:
                    if word.startswith(w) and (w != "inf" or word == "inf"):
                        toks.append(Token("word", w))
                        word = word[len(w):]
                        break
                else:
                    if len(word) >= 3 and not glued and not (word.isupper() and len(word) <= 4):   # ABC: a point
                        raise _ParseError("word")
                    toks.extend(Token("id", ch) for ch in word)
                    word = ""
            continue
        if c == "\\":
            m = re.match(r"\\([a-zA-Z]+|.)", s[i:])
            if not m:
                raise _ParseError("backslash")
            i += m.end()
            name = m.group(1)
            if name in ("begin", "end"):
                env = re.match(r"\s*\{\s*([a-zA-Z]+\*?)\s*\}", s[i:])
                if not env:
                    raise _ParseError("environment")
                i += env.end()
                toks.append(Token("cmd", "\\" + name))
                toks.append(Token("env", env.group(1)))
                continue
            if name == "\\":
                toks.append(Token("op", "\\\\"))
            elif name in "{}":
                toks.append(Token("op", "\\" + name))
            elif name == "|":
                toks.append(Token("op", "|"))
            else:
                toks.append(Token("cmd", "\\" + name))
            continue
        two = s[i:i + 2]
        if two in ("<=", ">=", "!=", "**"):
            toks.append(Token("op", "^" if two == "**" else two))
            i += 2
            continue
        if c in "+-*/^_=<>!,;()[]{}|&:\u00b0":
            toks.append(Token("op", c))
            i += 1
            continue
        raise _ParseError("character")
    if len(toks) > MAX_TOKENS:
        raise _Guard("too many tokens")
    return toks


def _int_literal(digits):
    if len(digits) > MAX_LITERAL_DIGITS:
        raise _Guard("integer literal too long")
    return int(digits)


def _number(num, exp, rep):
    if "." in num:
        whole, frac = num.split(".")
        value = Fraction(_int_literal(whole or "0")) + (Fraction(_int_literal(frac), 10 ** len(frac)) if frac else 0)
        if rep:                            # 0.1\overline{6}: the repeating block starts after the shown digits
            value += Fraction(_int_literal(rep), (10 ** len(rep) - 1) * 10 ** len(frac))
    else:
        value = Fraction(_int_literal(num))
        if rep:
            raise _ParseError("overline on integer")
    if exp is not None:
        e = int(exp) if len(exp) < 8 else 10 ** 9
        if abs(e) > MAX_SCI_EXPONENT:
            return sympy.Rational(value.numerator, value.denominator) * _large("pow", sympy.Integer(10),
                                                                               sympy.Integer(e))
        value *= Fraction(10) ** e
    return sympy.Rational(value.numerator, value.denominator)


# A value too large to compute (10^{10^6}, 100000!, log of a 5,000-digit number) becomes an opaque, unevaluated
# stand-in Large(kind, args...). Its arguments are small by construction (they passed the guards), nothing ever
# evaluates it, and an expression containing one is compared structurally: 10^{1000000} = 10^{10^{6}}, but
# 10^{10^{10}} != 10^{10^{10}} + 1 and 100000! != 0.
_LARGE = sympy.Function("Large")
_LARGE_KINDS = {k: sympy.Integer(i) for i, k in enumerate(
    ["pow", "factorial", "binomial", "floor", "ceiling"] + sorted(["sin", "cos", "tan", "cot", "sec", "csc", "arcsin",
     "arccos", "arctan", "sinh", "cosh", "tanh", "ln", "log", "exp", "sqrt", "gcd", "lcm", "max", "min", "asin", "acos",
     "atan", "abs"]))}


# Sums and products with an index stay unevaluated and are compared structurally, as Large values are.
_SUM, _PROD = sympy.Function("SUM"), sympy.Function("PROD")
_NO_LIMIT = sympy.Symbol("NOLIMIT_")
_OPAQUE = (_LARGE, _SUM, _PROD)


def _large(kind, *args):
    return _LARGE(_LARGE_KINDS[kind], *args)


def _bits(x):
    """About log2 of the magnitude of an exact number (Integer or Rational), cheaply."""
    p, q = abs(int(x.p)), int(x.q)
    return max(p.bit_length(), q.bit_length()) - 1


def _pow(base, exp):
    """base**exp, refusing powers whose exact value would be enormous."""
    _no_pm(base), _no_pm(exp)
    if not exp.is_number and (_max_bits(exp) > MAX_SYMBOLIC_COEFF_BITS or (
            base.is_number and base not in (0, 1, -1) and _max_bits(base) > MAX_ROOT_FACTOR_BITS)):
        # b^{c a}: sympy computes b^c as soon as it can, and a comparison point for a turns it into a p/q-th power
        return _large("pow", base, exp)
    if not base.is_number and exp.is_Rational and abs(exp) > MAX_SYMBOLIC_EXPONENT:
        return _large("pow", base, exp)          # x^{10^9 / 3}: a comparison point would compute it
    if exp.is_Integer:
        e = abs(int(exp))
        if base.is_Rational:
            if base in (0, 1, -1):
                return sympy.Pow(base, exp)
            if e * max(_bits(base), 1) > MAX_POW_BITS:
                return _large("pow", base, exp)
            return sympy.Pow(base, exp)
        if not base.is_number:
            if e > MAX_SYMBOLIC_EXPONENT:
                return _large("pow", base, exp)
            return sympy.Pow(base, exp)
    if exp.is_Rational and not exp.is_Integer and exp.q % 2 == 1 and base.is_number and not base.has(_LARGE) \
            and _max_bits(base) <= MAX_ROOT_BITS and base.is_extended_negative:
        # odd roots of negative numbers are real: (-8)^{1/3} = \sqrt[3]{-8} = -2, not the principal complex root
        return _pow(-base, exp) * (-1) ** int(exp.p)
    if _max_bits(base) > MAX_ROOT_BITS or _max_bits(exp) > MAX_ROOT_BITS:
        return _large("pow", base, exp)                  # sympy would factor the number: minutes at 5,000 bits
    if exp.is_Rational and not exp.is_Integer and not base.has(_LARGE) and \
            not (exp.q <= MAX_ROOT_INDEX and _max_bits(base) <= MAX_ROOT_FACTOR_BITS):
        # sympy takes p/q-th powers of integers by factoring, and with a big q or a big integer that runs for
        # minutes inside single C calls (33 bits to the 621/1000 takes 9 s). Here only an exact root is taken.
        if base.is_Rational and base > 0:
            ru, exact_u = sympy.integer_nthroot(int(base.p), int(exp.q))
            rv, exact_v = sympy.integer_nthroot(int(base.q), int(exp.q))
            if exact_u and exact_v:
                return _pow(sympy.Rational(ru, rv), sympy.Integer(exp.p))
        return _large("pow", base, exp)
    if exp.is_number and base.is_number and base not in (0, 1, -1) and not base.has(_LARGE):
        try:
            mag = abs(complex(exp.evalf(15))) * max(1.0, abs(float(sympy.log(abs(base)).evalf(15))))
        except (TypeError, ValueError, OverflowError):
            mag = float("inf")
        if not mag < MAX_POW_BITS:
            return _large("pow", base, exp)
    return sympy.Pow(base, exp)


def _max_bits(e):
    """Bits of the largest rational inside e (opaque Large values count as huge)."""
    if e.has(_LARGE):
        return MAX_ROOT_BITS + 1
    return max((_bits(a) for a in sympy.preorder_traversal(e) if a.is_Rational), default=0)


def _function(name, arg, base=None):
    """name(arg) with the same caution as _pow: sympy's log of a 40,000-bit integer tries to factor it, and
    exp(2^{40000}) has no floating-point value worth computing."""
    _no_pm(arg)
    if base is not None:
        _no_pm(base)
    if _max_bits(arg) > MAX_ROOT_BITS or (base is not None and _max_bits(base) > MAX_ROOT_BITS):
        return _large(name, arg) if base is None else _large(name, arg, base)
    if name in ("exp", "sinh", "cosh", "tanh") and arg.is_number:
        try:
            small = abs(complex(arg.evalf(15))) < MAX_POW_BITS
        except (TypeError, ValueError, OverflowError):
            small = False
        if not small:
            return _large(name, arg)
    if name == "sqrt":
        return _pow(arg, sympy.Rational(1, 2))
    if base is not None:
        return sympy.log(arg, base)
    return _FUNCS[name](arg)


def _no_pm(v):
    """`\\pm` inside a power, a function or a factorial is compared as text: expanding it later would evaluate each
    branch past the bounds checked here (`(94777353 \\pm 66855)!`)."""
    if _scalar(v).has(_PM):
        raise _ParseError("\\pm inside a function")
    return v


def _scalar(v):
    if not isinstance(v, sympy.Expr):
        raise _ParseError("arithmetic on a non-number")
    return v


def _integer_valued_risk(n):
    """A symbolic factorial / binomial argument that a comparison point could turn into a big integer: one with
    integers over 2^10 in it, or with floor / ceiling / factorials inside ((\\lfloor \\sqrt x \\rfloor + 3731250)!
    is 3731250! at x = 3/7, minutes of C-level multiplication)."""
    return not n.is_number and (_max_bits(n) > MAX_SYMBOLIC_COEFF_BITS or
                                n.has(sympy.floor, sympy.ceiling, sympy.factorial, sympy.binomial))


def _factorial(n):
    _no_pm(n)
    if n.is_number:
        if not (n.is_Integer and 0 <= n <= MAX_FACTORIAL):
            return _large("factorial", n)
    elif _integer_valued_risk(n):
        return _large("factorial", n)
    return sympy.factorial(n)


def _binomial(n, k):
    _no_pm(n), _no_pm(k)
    if (n.is_number and not (n.is_Integer and abs(n) <= MAX_FACTORIAL)) or \
            (k.is_number and not (k.is_Integer and abs(k) <= MAX_FACTORIAL)) or \
            _integer_valued_risk(n) or _integer_valued_risk(k):
        return _large("binomial", n, k)
    return sympy.binomial(n, k)


class _Parser:
    """Recursive descent over the token list. Grammar (loosest first):
        top   := item (',' item)*                    a bare list is order-free
        item  := sets (relop sets)*  |  sym '\\in' sets
        sets  := expr (('\\cup'|'\\cap'|'\\setminus') expr)*
        expr  := term (('+'|'-'|'\\pm'|'\\mp') term)*
        term  := unary (('*'|'/'|'\\cdot'|'\\times'|'\\div'|implicit) unary)*
        unary := ('-'|'+') unary | power
        power := postfix ('^' unary)?                right-associative
        postfix := atom ('!' | '_' sub)*
    Values: a sympy Expr for numbers and expressions, else a node: Seq, SetOf, List, Matrix, Rel, SympySet, Based."""

    def __init__(self, toks):
        self.toks, self.i, self.depth, self.trig = toks, 0, 0, 0

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else _END

    def take(self):
        t = self.peek()
        self.i += 1
        return t

    def expect(self, kind, value):
        t = self.take()
        if t != (kind, value):
            raise _ParseError(f"expected {value}")

    def at(self, kind, value=None):
        t = self.peek()
        return t.kind == kind and (value is None or t.text == value)

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Guard("nesting too deep")

    def leave(self):
        self.depth -= 1

    # -- lists and relations --
    def parse_top(self):
        """A bare list; `;` separates groups at the top (`m=2, n=3; m=5, n=1` is two solutions)."""
        groups = [self.parse_items(stop=())]
        while self.at("op", ";"):
            self.take()
            groups.append(self.parse_items(stop=()))
        if self.i != len(self.toks):
            raise _ParseError("trailing tokens")
        if len(groups) > 1:
            return List(tuple(g[0] if len(g) == 1 else List(tuple(g)) for g in groups))
        items = groups[0]
        return items[0] if len(items) == 1 else List(tuple(items))

    def parse_items(self, stop):
        items = [self.parse_item()]
        while self.at("op", ",") or (stop and self.at("op", ";")):      # (1; 2) is the pair (1, 2)
            self.take()
            items.append(self.parse_item())
        if stop and self.peek() not in stop:
            raise _ParseError("unclosed bracket")
        return items

    def parse_item(self):
        self.enter()
        first = self.parse_sets()
        if self.at("cmd", "\\in"):
            self.take()
            rhs = self.parse_sets()
            self.leave()
            return rhs
        exprs, ops = [first], []
        while self.peek().text in _RELOPS and self.peek().kind in ("op", "cmd"):
            ops.append(_RELOPS[self.take().text])
            exprs.append(self.parse_sets())
        self.leave()
        if not ops:
            return first
        return Rel(tuple(exprs), tuple(ops))

    def parse_sets(self):
        left = self.parse_expr()
        while self.peek() in (("cmd", "\\cup"), ("cmd", "\\cap"), ("cmd", "\\setminus"), ("id", "U")):
            op = self.take().text
            right = self.parse_expr()
            a, b = _as_sympy_set(left), _as_sympy_set(right)
            left = SympySet(sympy.Union(a, b) if op in ("\\cup", "U") else
                    sympy.Intersection(a, b) if op == "\\cap" else sympy.Complement(a, b))
        return left

    # -- arithmetic --
    def parse_expr(self):
        self.enter()
        if self.peek() in (("cmd", "\\pm"), ("cmd", "\\mp")):
            sign = 1 if self.take().text == "\\pm" else -1
            left = sign * _PM * _scalar(self.parse_term())
        else:
            left = self.parse_term()
        while True:
            t = self.peek()
            if t == ("op", "+"):
                self.take()
                left = _scalar(left) + _scalar(self.parse_term())
            elif t == ("op", "-"):
                self.take()
                left = _scalar(left) - _scalar(self.parse_term())
            elif t in (("cmd", "\\pm"), ("cmd", "\\mp")):
                self.take()
                sign = 1 if t.text == "\\pm" else -1
                left = _scalar(left) + sign * _PM * _scalar(self.parse_term())
            else:
                break
        self.leave()
        return left

    _MUL = {("op", "*"), ("cmd", "\\cdot"), ("cmd", "\\times"), ("cmd", "\\ast")}
    _DIV = {("op", "/"), ("cmd", "\\div")}

    def starts_atom(self):
        kind, v = self.peek()
        if kind in ("num", "id", "word"):
            return True
        if kind == "op":
            return v in ("(", "{", "\\{")
        if kind == "cmd":
            return v not in _RELOPS and v not in ("\\cup", "\\cap", "\\setminus", "\\in", "\\pm", "\\mp", "\\cdot",
                                                  "\\times", "\\ast", "\\div", "\\end", "\\rfloor", "\\rceil",
                                                  "\\rangle", "\\to", "\\choose")
        return False

    def parse_term(self):
        left = self.parse_unary()
        while True:
            t = self.peek()
            if t in self._MUL:
                self.take()
                left = _scalar(left) * _scalar(self.parse_unary())
            elif t in self._DIV:
                self.take()
                right = _scalar(self.parse_unary())
                left = _scalar(left) / right
            elif self.starts_atom():
                left = _scalar(left) * _scalar(self.parse_power())
            else:
                return left

    def parse_unary(self):
        t = self.peek()
        if t == ("op", "-"):
            self.take()
            self.enter()
            v = -_scalar(self.parse_unary())
            self.leave()
            return v
        if t == ("op", "+"):
            self.take()
            return self.parse_unary()
        return self.parse_power()

    def parse_power(self):
        base = self.parse_postfix()
        if self.at("op", "^"):
            self.take()
            self.enter()
            exp = self.parse_exponent()
            self.leave()
            base = _pow(_scalar(base), _scalar(exp))
            while self.at("op", "!"):
                self.take()
                base = _factorial(base)
        return base

    def parse_exponent(self):
        if self.at("op", "{"):
            return self.parse_group()
        if self.at("op", "-"):
            self.take()
            return -_scalar(self.parse_exponent())
        return self.parse_power()

    def parse_postfix(self):
        v = self.parse_atom()
        while True:
            if self.at("op", "!"):
                self.take()
                v = _factorial(v)
            elif self.at("op", "_"):
                self.take()
                v = self.parse_subscript(v)
            elif self.at("op", "\u00b0"):
                self.take()
                if self.trig:                      # sin 30 degrees
                    v = _scalar(v) * sympy.pi / 180
            else:
                return v

    def parse_subscript(self, v):
        t = self.take()
        if t == ("op", "{"):
            parts = []
            while not self.at("op", "}"):
                if self.peek().kind is None:
                    raise _ParseError("unclosed subscript")
                parts.append(self.take())
            self.take()
        else:
            parts = [t]
        label = "".join(p.text.digits if p.kind == "num" else str(p.text) for p in parts)
        if not re.fullmatch(r"[A-Za-z0-9]+(?:[+-][A-Za-z0-9]+)*", label):      # a_1, b_{n-i}
            raise _ParseError("subscript")
        if isinstance(v, sympy.Integer) and v >= 0 and label.isdigit():
            v = Digits(str(int(v)))                                 # (1011)_2
        if isinstance(v, Digits):
            if not label.isdigit():
                raise _ParseError("base")
            return Based(v.text, int(label))
        if isinstance(v, sympy.Symbol) and (label.isalnum() or "_" not in v.name):
            return sympy.Symbol(f"{v.name}_{label}")
        raise _ParseError("subscript")

    def parse_big_operator(self, name):
        """`\\sum_{i=1}^{n} body`, `\\prod_{j} body`: an opaque SUM / PROD(body, index, lower, upper) compared
        structurally (`\\sum_i a_i b_{n-i}` = `\\sum_i b_{n-i} a_i`); the body is one term, and a numeric factor
        of a sum's body stands outside it (`\\sum_i 2 a_i` = `2 \\sum_i a_i`)."""
        index, lower, upper = _NO_LIMIT, _NO_LIMIT, _NO_LIMIT
        self.enter()
        for _ in range(2):
            if self.at("op", "_") and index is _NO_LIMIT:
                self.take()
                sub = self.parse_arg()
                if isinstance(sub, Rel) and sub.ops == ("=",):          # _{i=1}
                    index, lower = _index_symbol(sub.exprs[0]), sub.exprs[1]
                else:                                                   # _{i}
                    index = _index_symbol(sub)
                if index is None:
                    raise _ParseError("index of a sum")
            elif self.at("op", "^") and upper is _NO_LIMIT:
                self.take()
                upper = _scalar(self.parse_arg())
        body = _scalar(self.parse_term())
        self.leave()
        if name == "prod":
            return _PROD(body, index, _scalar(lower), upper)
        coeff, rest = body.as_coeff_Mul()
        return coeff * _SUM(rest, index, _scalar(lower), upper)

    def parse_group(self, allow_set=False):
        """`{ ... }` as a grouping: one expression (or relation) inside. Where a value may stand (not an argument
        of \\frac or ^), plain-text braces around a list are a set: `{1, 2}`."""
        self.expect("op", "{")
        self.enter()
        items = self.parse_items(stop=(("op", "}"), ("cmd", "\\choose")))
        if self.at("cmd", "\\choose"):                      # {n \choose k}
            self.take()
            k = self.parse_expr()
            self.expect("op", "}")
            self.leave()
            if len(items) != 1:
                raise _ParseError("list in binomial")
            return _binomial(items[0], k)
        self.take()
        self.leave()
        if len(items) != 1:
            if allow_set:
                return SetOf(tuple(items))
            raise _ParseError("list in braces")
        return items[0]

    def parse_arg(self):
        """Argument of \\frac, \\sqrt, \\binom: a group, or a single digit / letter / command (LaTeX rules)."""
        t = self.peek()
        if t == ("op", "{"):
            return self.parse_group()
        if t.kind == "num":
            num, exp, rep = t.text
            if exp is None and rep is None and num.isdigit() and len(num) > 1:
                self.toks[self.i] = Token("num", NumLit(num[1:], None, None))    # \frac12: one digit each
                return sympy.Integer(int(num[0]))
            self.take()
            return _number(num, exp, rep)
        if t.kind == "id":
            self.take()
            return _symbol(t.text)
        if t.kind == "cmd":
            return self.parse_atom()
        raise _ParseError("argument")

    def parse_atom(self):
        kind, v = self.take()
        if kind is None:
            raise _ParseError("unexpected end")
        if kind == "num":
            num, exp, rep = v
            if exp is None and rep is None and num.isdigit() and self.at("op", "_"):
                return Digits(num)                                   # 1011_2 (base n)
            value = _number(num, exp, rep)
            if exp is None and rep is None and num.isdigit() and self.at("cmd", "\\frac"):
                save = self.i, list(self.toks)                       # parse_arg may split a digit token
                self.take()
                a, b = self.parse_arg(), self.parse_arg()
                if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr) and a.is_Integer and b.is_Integer \
                        and 0 < a < b:
                    return value + sympy.Rational(a, b)               # mixed number 2\frac12 = 5/2
                self.i, self.toks = save                             # not a mixed number: 2\frac{\pi}{3} is a product
            return value
        if kind == "id":
            return _symbol(v)
        if kind == "word":
            if v == "pi":
                return sympy.pi
            if v in ("infinity", "infty", "inf", "oo"):
                return sympy.oo
            return self.parse_function(v)
        if kind == "op":
            if v in ("(", "["):
                return self.parse_bracketed(v)
            if v == "{":
                self.i -= 1
                return self.parse_group(allow_set=True)
            if v == "\\{":
                self.enter()
                if self.peek().kind == "id" and self.peek(1) in (("op", "|"), ("op", ":"), ("cmd", "\\mid")):
                    self.take(), self.take()              # set-builder {x | 2 < x < 5}: the condition's set
                    cond = self.parse_item()
                    self.expect("op", "\\}")
                    self.leave()
                    if isinstance(cond, Rel) and _rel_to_set(cond) is not None:
                        return SympySet(_rel_to_set(cond))
                    raise _ParseError("set-builder")
                if self.at("op", "\\}"):
                    self.take()
                    self.leave()
                    return SetOf(())
                items = self.parse_items(stop=(("op", "\\}"),))
                self.take()
                self.leave()
                return SetOf(tuple(items))
            if v == "|":
                self.enter()
                inner = _scalar(self.parse_expr())
                self.expect("op", "|")
                self.leave()
                return sympy.Abs(inner)
            raise _ParseError("operator")
        return self.parse_command(v)

    def parse_bracketed(self, open_):
        self.enter()
        items = self.parse_items(stop=(("op", ")"), ("op", "]")))
        close = self.take().text
        self.leave()
        if len(items) == 1:
            if open_ == "(" and close == ")":
                return items[0]
            if open_ == "[" and close == "]" and isinstance(items[0], sympy.Expr):
                return items[0]
            raise _ParseError("half-open single item")
        return Seq(open_, close, tuple(items))

    def parse_function(self, name):
        if name in _MULTI:                      # \gcd(12, 18), \operatorname{lcm}(4, 6), \max(a, b)
            self.expect("op", "(")
            self.enter()
            args = [_scalar(a) for a in self.parse_items(stop=(("op", ")"),))]
            self.take()
            self.leave()
            if any(_max_bits(a) > MAX_ROOT_BITS for a in args):
                return _large(name, *args)
            if name in ("gcd", "lcm"):
                if not all(a.is_Rational for a in args):
                    raise _ParseError("gcd of non-numbers")
                return functools.reduce(_MULTI[name], args)
            return _MULTI[name](*args)
        power = None
        if self.at("op", "^"):                 # \sin^2 x, \sin^{-1} x
            self.take()
            power = _scalar(self.parse_exponent())
        base = None
        if name == "log" and self.at("op", "_"):
            self.take()
            base = _scalar(self.parse_arg())
        self.enter()
        trig = name in ("sin", "cos", "tan", "cot", "sec", "csc")
        self.trig += trig
        if self.at("op", "("):
            self.take()
            arg = _scalar(self.parse_expr())
            self.expect("op", ")")
        elif self.at("op", "{"):
            arg = _scalar(self.parse_group())
        else:
            arg = self.parse_bare_argument()
        self.trig -= trig
        self.leave()
        if power is not None and power == -1 and name in _INVERSE:
            return _function(_INVERSE[name], arg)
        value = _function(name, arg, base)
        return _pow(value, power) if power is not None else value

    def parse_bare_argument(self):
        """`\\sin 2x`, `\\log x^2`: implicit products of numbers, letters and Greek letters, no further functions."""
        arg = _scalar(self.parse_power())
        while True:
            kind, v = self.peek()
            if kind in ("num", "id") or (kind == "cmd" and v[1:] in _GREEK) or (kind == "word" and v == "pi") \
                    or (kind == "cmd" and v == "\\pi"):
                arg = arg * _scalar(self.parse_power())
            else:
                return arg

    def parse_command(self, name):
        bare = name[1:]
        if bare == "frac":
            a = _scalar(self.parse_arg())
            b = _scalar(self.parse_arg())
            return a / b
        if bare == "sqrt":
            index = None
            if self.at("op", "["):
                self.take()
                index = _scalar(self.parse_expr())
                self.expect("op", "]")
            arg = _scalar(self.parse_arg())
            if index is None:
                return _pow(arg, sympy.Rational(1, 2))
            if not (index.is_Integer and 2 <= index <= 100):
                raise _Guard("root index")
            return _pow(arg, sympy.Rational(1, int(index)))
        if bare == "binom":
            return _binomial(self.parse_arg(), self.parse_arg())
        if bare == "pi":
            return sympy.pi
        if bare == "infty":
            return sympy.oo
        if bare in ("sum", "prod"):
            return self.parse_big_operator(bare)
        if bare in ("emptyset", "varnothing"):
            return SympySet(sympy.S.EmptySet)
        if bare == "mathbb":
            t = self.take()
            if t == ("op", "{"):
                t = self.take()
                self.expect("op", "}")
            if t == ("id", "R"):
                return SympySet(sympy.S.Reals)
            raise _ParseError("mathbb")
        if bare in _FUNCS or bare in _MULTI:
            return self.parse_function(bare)
        if bare in _GREEK:
            return sympy.Symbol(bare)
        if bare in ("lfloor", "lceil"):
            self.enter()
            inner = _no_pm(self.parse_expr())
            self.expect("cmd", "\\rfloor" if bare == "lfloor" else "\\rceil")
            self.leave()
            kind = "floor" if bare == "lfloor" else "ceiling"
            if inner.is_number or inner.has(_LARGE):   # the integer part of a huge number costs its full precision
                try:
                    small = not inner.has(_LARGE) and abs(complex(inner.evalf(15))) < 1e50
                except (TypeError, ValueError, OverflowError):
                    small = False
                if not small:
                    return _large(kind, inner)
            return sympy.floor(inner) if kind == "floor" else sympy.ceiling(inner)
        if bare == "langle":
            self.enter()
            items = self.parse_items(stop=(("cmd", "\\rangle"),))
            self.take()
            self.leave()
            return Seq("(", ")", tuple(items)) if len(items) > 1 else items[0]
        if bare == "begin":
            return self.parse_matrix()
        if bare in ("overline", "dot"):
            raise _ParseError("overline")
        raise _ParseError("unknown command")

    def parse_matrix(self):
        env = self.env_name()
        if env not in ("pmatrix", "bmatrix", "matrix", "array", "Bmatrix", "smallmatrix"):
            raise _ParseError("environment")
        if env == "array" and self.at("op", "{"):             # column spec {cc}
            while not self.at("op", "}"):
                if self.take().kind is None:
                    raise _ParseError("array spec")
            self.take()
        self.enter()
        rows, row = [], []
        while True:
            if self.at("cmd", "\\end"):
                self.take()
                if self.env_name() != env:
                    raise _ParseError("mismatched environment")
                break
            if self.peek().kind is None:
                raise _ParseError("unclosed matrix")
            row.append(_scalar(self.parse_expr()))
            if self.at("op", "&"):
                self.take()
            elif self.at("op", "\\\\"):
                self.take()
                rows.append(tuple(row))
                row = []
        if row:
            rows.append(tuple(row))
        self.leave()
        if not rows or len({len(r) for r in rows}) != 1:
            raise _ParseError("ragged matrix")
        return Matrix(tuple(rows))

    def env_name(self):
        kind, name = self.take()
        if kind != "env":
            raise _ParseError("environment name")
        return name


def _index_symbol(v):
    """The index of a sum as a symbol (`i` and `e` are letters there, not the imaginary unit and Euler's number)."""
    v = {sympy.I: sympy.Symbol("i"), sympy.E: sympy.Symbol("e")}.get(v, v) if isinstance(v, sympy.Expr) else v
    return v if isinstance(v, sympy.Symbol) else None


def _symbol(letter):
    if letter == "i":
        return sympy.I       # answers use i for the imaginary unit far more often than as a variable
    if letter == "e":
        return sympy.E
    return sympy.Symbol(letter)


def _as_sympy_set(v):
    """A value that can stand for a set, as a sympy Set: `[0, 7)` an interval, `\\{1, 2\\}`, `x < 3`."""
    if isinstance(v, SympySet):
        return v.value
    if isinstance(v, Seq) and len(v.items) == 2 and all(isinstance(x, sympy.Expr) for x in v.items):
        lo, hi = v.items
        return sympy.Interval(lo, hi, v.open == "(", v.close == ")")
    if isinstance(v, SetOf) and all(isinstance(x, sympy.Expr) for x in v.items):
        return sympy.FiniteSet(*v.items)
    if isinstance(v, Rel):
        s = _rel_to_set(v)
        if s is not None:
            return s
    raise _ParseError("not a set")


class Parsed(NamedTuple):
    """status "ok" with the value; "guard" (past a safety bound) or "error" (not math we read) with the reason."""
    status: str
    value: object


@functools.lru_cache(maxsize=4096)
def _parse_cached(s):
    """Parse a normalised answer string into a Parsed. Cached: golds repeat across a batch (every sample of one
    prompt shares its gold)."""
    if len(s) > MAX_ANSWER_CHARS:
        return Parsed("guard", "answer too long")
    try:
        return Parsed("ok", _expand_pm(_Parser(_tokenize(s)).parse_top()))
    except _Guard as e:
        return Parsed("guard", str(e))
    except _ParseError as e:
        return Parsed("error", str(e))
    except RecursionError:
        return Parsed("guard", "recursion")
    except (ZeroDivisionError, ValueError, TypeError, OverflowError, AttributeError, IndexError) as e:
        return Parsed("error", type(e).__name__)


def _expand_pm(v):
    """`a \\pm b` means the set {a + b, a - b}."""
    if isinstance(v, sympy.Expr) and v.has(_PM):
        return SetOf((v.subs(_PM, 1), v.subs(_PM, -1)))
    if isinstance(v, (List, SetOf)):
        out = []
        for x in v.items:
            y = _expand_pm(x)                        # 1 \\pm 2 inside a list adds both values; a real set stays one
            out.extend(y.items if isinstance(x, sympy.Expr) and x.has(_PM) else [y])
        return type(v)(tuple(out))
    if isinstance(v, Rel) and v.ops == ("=",) and isinstance(v.exprs[1], sympy.Expr) and v.exprs[1].has(_PM):
        return List(tuple(Rel((v.exprs[0], r), ("=",)) for r in _expand_pm(v.exprs[1]).items))    # x = 1 \\pm 2
    if isinstance(v, tuple) and _has_pm(v):
        raise _ParseError("\\pm inside a container")
    return v


def _has_large(v):
    if isinstance(v, sympy.Basic):
        return v.has(_LARGE)
    if isinstance(v, tuple):
        return any(_has_large(x) for x in v)
    return False


def _has_pm(v):
    if isinstance(v, sympy.Basic):
        return v.has(_PM)
    if isinstance(v, tuple):
        return any(_has_pm(x) for x in v)
    return False


# ----------------------------------------------------------------------------------------------------------------
# Comparison of parsed values

_RNG_POINTS = [sympy.Rational(p, q) for p, q in
               [(3, 7), (-5, 11), (13, 17), (-2, 13), (7, 5), (-11, 3), (19, 23), (-17, 29), (5, 2), (-23, 19)]]


def _points(free, shift=0):
    """Five rational points; the signs run through every pattern for the first two symbols, so identities that
    hold only for positive values (log(xy) = log x + log y, sqrt(x^2) = x) are told apart."""
    for j in range(5):
        yield {s: abs(_RNG_POINTS[(j * 3 + k + shift) % len(_RNG_POINTS)]) * (-1 if (j >> k) & 1 else 1)
               for k, s in enumerate(free)}


def _tame(e):
    """When evalf cannot separate e from zero at NUMERIC_MAXPREC digits, e is taken to be zero only if it is tame:
    every integer in it is small and every numeric subterm has magnitude within 10^(+-TAME_DIGITS). A nonzero
    difference that small needs huge numbers (sqrt(10^10000 + 1) - 10^5000) or huge and tiny parts that cancel
    ((1+sqrt2)^1000 + (1-sqrt2)^1000 is an integer up to 10^-383); both are refused here."""
    limit = 10 ** TAME_DIGITS
    for a in sympy.preorder_traversal(e):
        if a.is_Rational:
            if abs(a.p) > limit or a.q > limit:
                return False
        elif a.is_number and not a.is_Add:          # sums may cancel (d itself is one); their parts may not
            try:
                m = abs(complex(a.evalf(5)))
            except (TypeError, ValueError, OverflowError, ArithmeticError):
                return False
            if m > 10.0 ** TAME_DIGITS or 0 < m < 10.0 ** -TAME_DIGITS:
                return False
    return True


_WIDE_TRIG = (sympy.sin, sympy.cos, sympy.tan, sympy.cot, sympy.sec, sympy.csc)
_WIDE_EXP = (sympy.exp, sympy.sinh, sympy.cosh, sympy.tanh)


def _too_wide(e):
    """True when evalf of the number e would need a huge working precision. A trig function needs its argument to
    absolute accuracy, log2|argument| bits beyond the digits asked: cos(e^{10^7}) asks for e to 14 million bits,
    whose big-integer products and divisions are single C calls of seconds that the time limit cannot cut. The
    parser bounds such arguments when they are numbers; a comparison point can make a symbolic one huge
    (e^{c / binom(n, 5)} where the binomial is tiny), so the numeric stage checks again, with the parser's bounds:
    a trig argument below 2^MAX_POW_BITS, an exp / sinh / cosh / tanh argument below MAX_POW_BITS. Innermost
    first, so each argument is itself cheap to evaluate to a few digits."""
    for a in sympy.postorder_traversal(e):
        if not (isinstance(a, _WIDE_TRIG + _WIDE_EXP) and a.args[0].is_number):
            continue
        try:
            v = a.args[0].evalf(5)
            bits = max((p._mpf_[2] + p._mpf_[3] for p in v.as_real_imag() if p.is_Float and p), default=0)
        except (TypeError, ValueError, OverflowError, ArithmeticError, AttributeError, RecursionError):
            return True
        if bits > (MAX_POW_BITS if isinstance(a, _WIDE_TRIG) else MAX_POW_BITS.bit_length()):
            return True
    return False


def _zero(d):
    """True / False / None (undecided) for 'the number d is exactly zero'."""
    if d == 0:
        return True
    if d.is_Rational:
        return False
    if d.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        return None
    if _too_wide(d):
        return None
    # gamma at 400 digits costs ~0.1 s a call and a zero difference is evaluated at that precision at every point:
    # factorial / binomial identities get a lower ceiling (still far beyond what tame terms can cancel to)
    maxn = NUMERIC_MAXPREC_GAMMA if d.has(sympy.factorial, sympy.binomial, sympy.gamma) else NUMERIC_MAXPREC
    try:
        v = d.evalf(NUMERIC_DIGITS, strict=True, maxn=maxn)
    except PrecisionExhausted:
        # Either d is zero (cancellation never ends) or evalf cannot reach the precision for another reason (the
        # integer part of a huge floor/ceiling). A non-strict evaluation tells them apart: a true zero comes back
        # as a zero without significant digits.
        try:
            rough = d.evalf(15, maxn=maxn)
        except (PrecisionExhausted, TypeError, ValueError, ArithmeticError, RecursionError, AttributeError):
            return None
        parts = rough.as_real_imag() if rough.is_number else (rough,)
        if all(p == 0 or (p.is_Float and p._prec <= 1) for p in parts):
            return True if _tame(d) else None
        return None
    except (TypeError, ValueError, ArithmeticError, RecursionError, AttributeError):
        return None
    if v == 0:
        return True if _tame(d) else None
    if not v.is_number or v.has(sympy.nan, sympy.zoo):
        return None
    return False


def _expr_equal(a, b):
    if a == b:
        return True
    if a.has(*_OPAQUE) or b.has(*_OPAQUE):
        return _large_equal(a, b)
    if a.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan) or b.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        return False
    free = sorted(a.free_symbols | b.free_symbols, key=lambda s: s.name)
    d = a - b
    if not free:
        return _zero(d) is True
    if len(free) > 6:
        return False
    # Random rational points: polynomials and rational functions evaluate exactly, everything else to
    # NUMERIC_DIGITS; agreement at several points is equality for any answer a model writes.
    # A point where exactly one side leaves the reals (x^{2/3} vs (x^2)^{1/3} at x < 0) is outside the real domain
    # the answer is meant on, and is skipped; at least three points must be compared.
    valid = 0
    for point in _points(free):
        try:
            with sympy.evaluate(False):
                raw = d.xreplace(point)
            if _too_wide(raw):       # sympy evaluating d at the point would already call evalf on the huge part
                continue
            dv = d.xreplace(point)
        except (ZeroDivisionError, ValueError, TypeError, ArithmeticError):
            continue
        if dv.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            continue
        z = _zero(dv)
        if z is False:
            na, nb = _nonreal(a.xreplace(point)), _nonreal(b.xreplace(point))
            if None not in (na, nb) and na != nb:
                continue
            return False
        if z is True:
            valid += 1
    return valid >= 3


def _nonreal(v):
    if _too_wide(v):
        return None
    try:
        c = complex(v.evalf(20))
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        return None
    return abs(c.imag) > 1e-12 * max(1.0, abs(c))


def _large_equal(a, b):
    """Structural equality for expressions holding opaque Large values; the difference may still be decided when
    the Large parts cancel exactly (10^{10^{10}} + 1 vs 10^{10^{10}}: the difference is 1, not zero)."""
    d = a - b
    if d == 0:
        return True
    if d.has(*_OPAQUE):
        return False
    return _zero(d) is True


def _proportional(d1, d2):
    """Equations d1 = 0 and d2 = 0 are the same: d1 = c * d2 for a nonzero constant c."""
    if d2 == 0 or d1 == 0:
        return d1 == d2
    free = sorted(d1.free_symbols | d2.free_symbols, key=lambda s: s.name)
    if not free:
        return False
    ratio = None
    for point in _points(free, shift=1):
        v1, v2 = d1.xreplace(point), d2.xreplace(point)
        if _zero(v2) is not False:
            if _zero(v1) is not True:
                return False
            continue
        r = v1 / v2
        if ratio is None:
            if _zero(r) is not False:
                return False
            ratio = r
        elif _zero(r - ratio) is not True:
            return False
    return ratio is not None


def _abs_rel_to_set(v):
    """|x + k| op c (either way round) -> the interval(s) it describes; None otherwise."""
    (a, b), (op,) = v.exprs, v.ops
    if isinstance(b, sympy.Abs):
        a, b, op = b, a, {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
    if not (isinstance(a, sympy.Abs) and b.is_number and b.is_real and b > 0):
        return None
    inner = a.args[0]
    syms = inner.free_symbols
    if len(syms) != 1:
        return None
    x = next(iter(syms))
    k = inner - x
    if k.free_symbols or not k.is_number:
        return None
    lo, hi = -k - b, -k + b
    if op in ("<", "<="):
        return sympy.Interval(lo, hi, op == "<", op == "<")
    return sympy.Union(sympy.Interval(-sympy.oo, lo, True, op == ">"), sympy.Interval(hi, sympy.oo, op == ">", True))


def _half_line(d, x, op):
    """The x with `d op 0` (op in <, <=) when d = c x + k for numbers c != 0, k; None otherwise."""
    k = d.xreplace({x: sympy.S.Zero})
    c = d.xreplace({x: sympy.S.One}) - k
    if not (c.is_number and k.is_number and c.is_real and k.is_real) or c == 0 or c.has(sympy.oo, sympy.zoo):
        return None
    if sympy.expand(d - c * x - k) != 0:
        return None
    bound, strict = -k / c, op == "<"
    if c.is_positive:
        return sympy.Interval(-sympy.oo, bound, True, strict)
    if c.is_negative:
        return sympy.Interval(bound, sympy.oo, strict, True)
    return None


def _is_label(e):
    """A name for the quantity asked for, not a computation: x, x_1, PQ, |PQ|, m + n, (a, b)."""
    if isinstance(e, tuple):
        return isinstance(e, Seq) and (e.open, e.close) == ("(", ")") and all(_is_label(x) for x in e.items)
    if isinstance(e, sympy.Symbol):
        return True
    if isinstance(e, sympy.Abs):
        return _is_label(e.args[0])
    if isinstance(e, (sympy.Mul, sympy.Add)):
        return all(isinstance(a, sympy.Symbol) for a in e.args)
    return False


def _rel_to_set(v):
    """Inequality (chain) in one variable, linear in it (`3y < 12`, `-1 < 2x + 1 < 5`), or a bounded named quantity
    (`0 < g(t) < 2`) -> the interval it describes; None if it is not one."""
    exprs, ops = v.exprs, v.ops
    if not all(isinstance(e, sympy.Expr) for e in exprs) or any(o in ("=", "!=", "~=") for o in ops):
        return None
    if len(ops) == 1 and any(isinstance(e, sympy.Abs) for e in exprs):
        return _abs_rel_to_set(v)
    if len(ops) == 2 and isinstance(exprs[1], sympy.Abs) and ops[0][0] == ops[1][0]:
        # 2 <= |w| <= 5: both halves, intersected ([-5, -2] U [2, 5])
        halves = [_abs_rel_to_set(Rel(pair, (op,))) for pair, op in zip(zip(exprs, exprs[1:]), ops)]
        out = sympy.Intersection(*halves) if None not in halves else None
        if isinstance(out, (sympy.Interval, sympy.Union)):
            return out
    free = set().union(*(e.free_symbols for e in exprs))
    if len(free) == 1:
        x = next(iter(free))
        out = sympy.Interval(-sympy.oo, sympy.oo)
        for (a, b), op in zip(zip(exprs, exprs[1:]), ops):
            if op in (">", ">="):
                a, b, op = b, a, op.replace(">", "<")
            half = _half_line(a - b, x, op)          # a op b  <=>  a - b op 0
            if half is None:
                out = None
                break
            out = sympy.Intersection(out, half)
        if out is not None:
            return out if isinstance(out, sympy.Interval) else None
    if len(exprs) == 3 and exprs[0].is_number and exprs[2].is_number and ops[0][0] == ops[1][0] and (
            _is_label(exprs[1]) or exprs[1].atoms(sympy.Function)):        # 0 < g(t) < 2, -1 <= sin x <= 1
        lo, hi = (exprs[0], exprs[2]) if ops[0][0] == "<" else (exprs[2], exprs[0])
        lo_open, hi_open = (ops[0] in ("<", ">"), ops[1] in ("<", ">"))
        if ops[0][0] == ">":
            lo_open, hi_open = hi_open, lo_open
        return sympy.Interval(lo, hi, lo_open, hi_open)
    return None


def _rel_symbol(v):
    return sorted(set().union(*(e.free_symbols for e in v.exprs)), key=lambda s: s.name)


def _set_equal(s1, s2):
    if s1 == s2:
        return True
    def parts(s):
        if isinstance(s, sympy.Union):
            return list(s.args)
        return [s]
    p1, p2 = parts(s1), parts(s2)
    if len(p1) != len(p2):
        return False
    used = [False] * len(p2)
    for a in p1:
        for j, b in enumerate(p2):
            if not used[j] and _atomic_set_equal(a, b):
                used[j] = True
                break
        else:
            return False
    return True


def _atomic_set_equal(a, b):
    if isinstance(a, sympy.Interval) and isinstance(b, sympy.Interval):
        return (a.left_open == b.left_open and a.right_open == b.right_open and
                _expr_equal(a.start, b.start) and _expr_equal(a.end, b.end))
    if isinstance(a, sympy.FiniteSet) and isinstance(b, sympy.FiniteSet):
        return _unordered_equal(list(a.args), list(b.args))
    return a == b


def _unordered_equal(xs, ys):
    if len(xs) != len(ys):
        return False
    used = [False] * len(ys)
    for x in xs:
        for j, y in enumerate(ys):
            if not used[j] and _equal(x, y):
                used[j] = True
                break
        else:
            return False
    return True


def _distinct(xs):
    out = []
    for x in xs:
        if not any(_equal(x, y) for y in out):
            out.append(x)
    return out


def _tuples(items):
    """Every item is a tuple `(a, b, ...)`."""
    return all(isinstance(x, Seq) and (x.open, x.close) == ("(", ")") for x in items)


def _ordered_equal(xs, ys):
    return len(xs) == len(ys) and all(_equal(x, y) for x, y in zip(xs, ys))


def _regroup(v):
    """`x = 3, y = 4, x = 4, y = 3` (the labels repeat in the same order) is the two solutions (3, 4), (4, 3)."""
    if not isinstance(v, List) or len(v.items) < 4 or not all(
            isinstance(x, Rel) and x.ops == ("=",) and isinstance(x.exprs[0], sympy.Symbol) for x in v.items):
        return v
    names = [x.exprs[0] for x in v.items]
    k = len(set(names))
    if k < 2 or len(names) % k or names != names[:k] * (len(names) // k):
        return v
    return List(tuple(List(v.items[i:i + k]) for i in range(0, len(names), k)))


def _stems(label):
    """Names a solution's label is built from, subscripts and arguments dropped: t_1 -> {t}, g(n) (the product
    g*n) -> {g, n}."""
    if isinstance(label, sympy.Symbol):
        return {label.name.split("_")[0]}
    if isinstance(label, sympy.Mul) and all(isinstance(a, sympy.Symbol) for a in label.args):
        return {a.name.split("_")[0] for a in label.args}
    return set()


def _solutions(v):
    """`t_1 = 2, t_2 = -7` or `g(n) = 1, g(n) = -1` (one unknown, several labelled values) -> (stems, values);
    None for anything else (`x = 3, y = 4` is a pair, not two solutions)."""
    if not isinstance(v, List) or not all(isinstance(x, Rel) and x.ops == ("=",) for x in v.items):
        return None
    stems = set.intersection(*(_stems(x.exprs[0]) for x in v.items))
    values = [_rel_value(x) for x in v.items]
    if not stems or any(val is None or _has_symbols(val) for val in values):
        return None
    return stems, List(tuple(values))


def _as_union(v):
    """`x < 3 or x > 5` (a List of inequalities) -> the SympySet of their union; v itself otherwise."""
    if isinstance(v, List) and all(isinstance(x, Rel) and _rel_to_set(x) is not None for x in v.items):
        return SympySet(sympy.Union(*[_rel_to_set(x) for x in v.items]))
    return v


def _sets_equal(p, g):
    try:
        return _set_equal(_as_sympy_set(p), _as_sympy_set(g))
    except _ParseError:
        return False


def _equal(p, g):
    """Mathematical equality of two parsed values, dispatched on their types (docs/verify.md has the rules).
    p is the answer, g the gold: the order matters where only one side is trusted (decimal tolerance)."""
    p, g = _regroup(p), _regroup(g)
    sp, sg = _solutions(p), _solutions(g)
    if sp is not None and sg is not None and sp[0] & sg[0]:
        return _equal(sp[1], sg[1])                 # t_1 = 2, t_2 = -7 against t = 2 or t = -7
    if isinstance(p, sympy.Expr) and isinstance(g, sympy.Expr):
        return _expr_equal(p, g)
    if isinstance(p, Rel) and isinstance(g, Rel):
        return _rel_equal(p, g)
    p_approx, g_approx = isinstance(p, Rel) and p.ops == ("~=",), isinstance(g, Rel) and g.ops == ("~=",)
    if p_approx != g_approx:
        rel, other = (p, g) if p_approx else (g, p)
        if _rel_value(rel) is None:                  # \\pi \\approx 3.14: the exact side or the decimal
            return any(_equal(v, other) if rel is p else _equal(other, v) for v in _approx_values(rel))
    if isinstance(p, Rel) or isinstance(g, Rel):     # x = 5 vs 5, either way round
        rel, other = (g, p) if isinstance(g, Rel) else (p, g)
        value = _rel_value(rel)
        if value is not None and not isinstance(other, Rel):
            return _equal(other, value) if rel is g else _equal(value, other)
        s = _rel_to_set(rel)
        if s is not None and isinstance(other, (Seq, SympySet)):
            return _sets_equal(SympySet(s), other)
        return False
    if isinstance(g, (SympySet, Seq)):
        p = _as_union(p)
    if isinstance(p, (SympySet, Seq)):
        g = _as_union(g)
    if isinstance(p, (SetOf, List)) and isinstance(g, (SetOf, List)):
        if isinstance(p, SetOf) or isinstance(g, SetOf) or (_tuples(p.items) and _tuples(g.items)):
            # a set answer ({1, 1, 2} is {1, 2}), or a list of tuples, the solutions of a system: repeats do not count
            return _unordered_equal(_distinct(p.items), _distinct(g.items))
        return _unordered_equal(list(p.items), list(g.items))
    if isinstance(p, Seq) and isinstance(g, Seq):
        return (p.open, p.close) == (g.open, g.close) and _ordered_equal(p.items, g.items)
    if SympySet in (type(p), type(g)) and isinstance(p, (SympySet, Seq, SetOf)) and \
            isinstance(g, (SympySet, Seq, SetOf)):
        return _sets_equal(p, g)
    if isinstance(p, List) and isinstance(g, Seq) and (g.open, g.close) == ("(", ")"):
        return _ordered_equal(p.items, g.items)      # "1, 2" or "x = 1, y = 2" for the pair (1, 2)
    if isinstance(p, Seq) and isinstance(g, List) and (p.open, p.close) == ("(", ")"):
        return _ordered_equal(p.items, g.items)
    if isinstance(p, Matrix) or isinstance(g, Matrix):
        return _matrix_equal(p, g)
    if isinstance(p, Based) or isinstance(g, Based):
        return _based_equal(p, g)
    return False


def _rel_value(rel):
    """`x = value` (a label on the left: x, |PQ|, m + n, (a, b)) -> value; `x = 2 + 2 = 4` -> 4 (every
    computed side agrees; `x = 2 + 2 = 5` has no value); `y \\approx 7` -> 7."""
    exprs, ops = rel.exprs, rel.ops
    if set(ops) == {"="} and all(isinstance(e, sympy.Expr) and e.is_number for e in exprs):
        # \frac{6}{8} = \frac{3}{4}: a worked equality whose sides all agree stands for its value
        return exprs[-1] if all(_expr_equal(e, exprs[-1]) for e in exprs[:-1]) else None
    if len(ops) > 1 and set(ops) == {"="} and _is_label(exprs[0]) and \
            all(isinstance(e, sympy.Expr) and e.is_number for e in exprs[1:]):
        return exprs[-1] if all(_expr_equal(e, exprs[-1]) for e in exprs[1:-1]) else None
    if ops == ("~=",) and _is_label(exprs[0]) and not _is_label(exprs[1]):
        return exprs[1]
    if ops != ("=",):
        return None
    lhs, rhs = exprs
    if isinstance(lhs, sympy.Symbol) and not (isinstance(rhs, sympy.Basic) and rhs.has(lhs)):
        return rhs
    if isinstance(lhs, sympy.Mul) and isinstance(rhs, sympy.Expr) and all(
            isinstance(a, sympy.Symbol) or (a.is_Pow and isinstance(a.base, sympy.Symbol) and a.exp == -1)
            for a in lhs.args):
        return rhs                                  # f(x) = x^2 + 1, f^{-1}(x) = ... (parsed as f*x on the left)
    if isinstance(rhs, sympy.Symbol) and isinstance(lhs, sympy.Expr) and lhs.is_number:
        return lhs
    if _is_label(lhs) and not _has_symbols(rhs):
        return rhs                                  # |PQ| = 7, m + n = 25, (a, b) = (4, 1)
    return None


def _has_symbols(v):
    """Any free symbol in a parsed value (an Expr or a node)."""
    if isinstance(v, sympy.Basic):
        return bool(v.free_symbols)
    return isinstance(v, tuple) and any(_has_symbols(x) for x in v if isinstance(x, (tuple, sympy.Basic)))


def _approx_values(rel):
    """`a \\approx b` with both sides numbers that agree to 1% (`\\sqrt2 \\approx 1.414`): either side may be the
    answer; sides that disagree (`3 \\approx 4`, a hedge) give nothing."""
    a, b = rel.exprs
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr) and a.is_number and b.is_number):
        return []
    try:
        fa, fb = complex(a.evalf(20)), complex(b.evalf(20))
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        return []
    return [a, b] if abs(fa - fb) <= 0.01 * max(abs(fa), abs(fb)) else []


def _rel_equal(p, g):
    if p.ops == ("=",) and g.ops == ("=",):
        (pl, pr), (gl, gr) = p.exprs, g.exprs
        if isinstance(pl, sympy.Symbol) and pl == gl and _rel_value(p) is not None and _rel_value(g) is not None:
            return _equal(pr, gr)                    # x = ... against x = ...
        # otherwise the same equation up to a constant factor: y = x/2 is x = 2y, but x = 5 is not y = 5
        if all(isinstance(e, sympy.Expr) for e in (pl, pr, gl, gr)):
            return _proportional(pl - pr, gl - gr)
        return False
    sp_, sg = _rel_to_set(p), _rel_to_set(g)
    if sp_ is not None and sg is not None:      # same variable, same solution set
        return _rel_symbol(p) == _rel_symbol(g) and _set_equal(sp_, sg)
    return p.ops == g.ops and _ordered_equal(p.exprs, g.exprs)


def _matrix_equal(p, g):
    def rows(v):
        if isinstance(v, Matrix):
            return v.rows
        if isinstance(v, Seq) and v.open + v.close in ("()", "[]"):
            return tuple((x,) for x in v.items)     # a tuple is a column vector
        return None
    rp, rg = rows(p), rows(g)
    if rp is None or rg is None:
        return False
    if len(rp[0]) != 1 and len(rp) == 1 and isinstance(p, Matrix) and not isinstance(g, Matrix):
        rp = tuple((x,) for x in rp[0])             # a row vector against a tuple
    if len(rg[0]) != 1 and len(rg) == 1 and isinstance(g, Matrix) and not isinstance(p, Matrix):
        rg = tuple((x,) for x in rg[0])
    if len(rp) != len(rg) or len(rp[0]) != len(rg[0]):
        return False
    return all(_equal(a, b) for ra, rb in zip(rp, rg) for a, b in zip(ra, rb))


def _based_equal(p, g):
    def parts(v):
        if isinstance(v, Based):
            return v.digits, v.base
        if isinstance(v, sympy.Expr) and v.is_Integer and v >= 0:
            return str(int(v)), None
        return None
    a, b = parts(p), parts(g)
    if a is None or b is None:
        return False
    if a[1] is None or b[1] is None or a[1] == b[1]:
        return a[0].lstrip("0") == b[0].lstrip("0")      # 1011_2 vs 1011: same digits, base implied
    try:
        return int(a[0], a[1]) == int(b[0], b[1])
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------------------------
# The in-process hard time limit. One daemon watchdog thread keeps the deadline of every check in flight (one per
# calling thread); when one passes, it raises _Timeout *in the calling thread* with CPython's
# PyThreadState_SetAsyncExc. That works from any thread (signals only reach the main thread) and costs nothing
# while the check runs: arming and disarming is a lock and a dict entry. The exception lands at the next bytecode
# boundary, so it stops any Python computation (sympy, mpmath); one long C call (a huge integer power) would delay
# it, which is what the parser's bounds rule out. Without ctypes.pythonapi (not CPython) only the bounds apply.

_WATCH = threading.Condition()
_WATCH_ENTRIES = {}                      # token -> _Deadline
_WATCH_STATE = {"thread": None, "pid": None, "wake": float("inf")}
_TOKENS = itertools.count()


@dataclasses.dataclass
class _Deadline:
    thread: int          # id of the checking thread
    at: float            # time.monotonic() when it passes
    fired: bool = False  # _Timeout was raised in the thread


def _reset_watch_after_fork():
    """A forked child has no watchdog thread, and the parent's may have held the lock at the fork: start clean."""
    global _WATCH
    _WATCH = threading.Condition()
    _WATCH_ENTRIES.clear()
    _WATCH_STATE.update(thread=None, pid=None, wake=float("inf"))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_watch_after_fork)
try:                                    # two prototypes of one function: set an exception, or clear one (NULL)
    _SET_ASYNC_EXC = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
        ("PyThreadState_SetAsyncExc", ctypes.pythonapi))
    _CLEAR_ASYNC_EXC = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
        ("PyThreadState_SetAsyncExc", ctypes.pythonapi))
except (AttributeError, OSError, TypeError):       # not CPython
    _SET_ASYNC_EXC = _CLEAR_ASYNC_EXC = None


_FRAGILE = ("importlib", "contextlib.py", "threading.py", "weakref.py", "_weakrefset.py", "abc.py")


def _interruptible(tid):
    """False while the thread runs code an exception must not cut in half: the import system (its module locks
    would stay taken), context managers' exits, thread locks; and a garbage-collector callback, where Python prints
    the exception and drops it, so the check would run on unbounded. The watchdog holds the GIL while it looks, and
    the thread resumes exactly where it was seen, so the exception lands there."""
    frame = sys._current_frames().get(tid)
    gc_callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code is _bounded.__code__:
            return True
        name = code.co_filename
        if name.startswith("<frozen") or name.endswith(_FRAGILE) or "importlib" in name or code in gc_callbacks:
            return False
        frame = frame.f_back
    return True


def _watchdog():
    with _WATCH:
        idle_since = time.monotonic()
        while True:
            now = time.monotonic()
            for entry in _WATCH_ENTRIES.values():
                if not entry.fired and entry.at <= now:
                    if _interruptible(entry.thread):
                        entry.fired = True
                        _SET_ASYNC_EXC(entry.thread, _Timeout)
                    else:
                        entry.at = now + 0.002        # inside an import or a lock: try again in 2 ms
            pending = [e.at for e in _WATCH_ENTRIES.values() if not e.fired]
            if pending:
                idle_since = now
            elif now - idle_since > 30.0:             # nothing to watch for a while: end; the next check restarts it
                _WATCH_STATE["thread"] = None
                return
            _WATCH_STATE["wake"] = min(pending) if pending else now + 1.0
            _WATCH.wait(max(0.0, _WATCH_STATE["wake"] - now))


def _arm(token, limit):
    """Register a deadline `limit` seconds from now for the calling thread under `token` (for _disarm)."""
    if _SET_ASYNC_EXC is None:
        return
    deadline = time.monotonic() + limit
    with _WATCH:
        t = _WATCH_STATE["thread"]
        if t is None or _WATCH_STATE["pid"] != os.getpid() or not t.is_alive():    # first use, or after a fork
            t = threading.Thread(target=_watchdog, name="verify-watchdog", daemon=True)
            _WATCH_STATE.update(thread=t, pid=os.getpid(), wake=float("inf"))
            t.start()
        _WATCH_ENTRIES[token] = _Deadline(threading.get_ident(), deadline)
        if deadline < _WATCH_STATE["wake"]:
            _WATCH.notify()


def _disarm(token):
    """Forget the deadline; if it fired, drop the exception in case it has not landed yet."""
    while True:
        try:
            with _WATCH:
                entry = _WATCH_ENTRIES.pop(token, None)
                if entry is not None and entry.fired:
                    _CLEAR_ASYNC_EXC(entry.thread, None)
            return
        except _Timeout:          # it landed while we were disarming: it fires once, so the retry completes
            continue


def _restore_sympy_state():
    """An interrupted check may have left a sympy `evaluate(False)` / `distribute(False)` block half exited."""
    params = sympy.core.parameters.global_parameters
    if not (params.evaluate and params.distribute):
        params.evaluate = params.distribute = True


def _bounded(default, fn, *args):
    """fn(*args), or `default` when it runs past TIME_LIMIT_S of wall clock."""
    token = next(_TOKENS)          # made before arming, so a deadline that fires at once is still disarmed below
    try:
        _arm(token, TIME_LIMIT_S)
        result = fn(*args)
    except _Timeout:
        result = default
        _restore_sympy_state()
    while True:
        try:
            _disarm(token)
            return result
        except _Timeout:          # the deadline passed just as the check finished: a timeout after all
            result = default


# ----------------------------------------------------------------------------------------------------------------
# batch_reward: worker processes with a hard wall-clock kill per check

@dataclasses.dataclass
class _Worker:
    process: multiprocessing.Process
    conn: multiprocessing.connection.Connection
    ready: bool = False  # it has sent "ready" (its imports are done)


_POOL = []          # persistent _Workers, reused across calls
_PIPELINE = 8       # checks queued per worker


def _worker_main(conn):
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        i, response, gold, fallback = msg
        conn.send((i, reward(response, gold, fallback=fallback)))


def _quick_reward(response, gold, fallback="none"):
    """The reward when the cheap steps decide it (_cheap_verdict), else None: the worker judges it."""
    verdict = _cheap_verdict(_response_answer(response, fallback), gold_answer(gold))[0]
    return None if verdict is None else float(verdict)


def _judge_in_workers(responses, golds, fallback, todo, results, timeout, workers):
    """Fill results[i] for every i in `todo` with reward(responses[i], golds[i]) computed in persistent worker
    processes, `timeout` seconds of wall clock per check (batch_reward's docstring has the contract)."""
    todo = todo[::-1]                               # popped from the end: input order
    n = min(workers or min(8, os.cpu_count() or 1), len(todo))
    while len(_POOL) < n:
        _POOL.append(_start_worker())
    pool = _POOL[:n]
    # Up to _PIPELINE checks are queued in each worker's pipe, so it never waits for the parent; the worker answers
    # them in order, and the clock of the check at the head of its queue starts when the previous answer arrives.
    inflight = {slot: collections.deque() for slot in range(n)}
    head_since = {}
    startup_deadline = time.monotonic() + 120.0

    def replace(slot, score_head):
        queue = inflight[slot]
        if queue and score_head:
            results[queue.popleft()] = 0.0         # the check that ran over (or killed its worker) scores 0
        todo.extend(reversed(queue))               # the others queued behind it are retried
        queue.clear()
        w = pool[slot]
        _kill(w)
        pool[slot] = _POOL[_POOL.index(w)] = _start_worker()

    while todo or any(inflight.values()):
        for slot, w in enumerate(pool):
            while todo and w.ready and len(inflight[slot]) < _PIPELINE:
                i = todo.pop()
                try:
                    w.conn.send((i, responses[i], golds[i], fallback))
                except (OSError, ValueError):      # died while idle: replace it, retry the check elsewhere
                    todo.append(i)
                    replace(slot, score_head=False)
                    break
                if not inflight[slot]:
                    head_since[slot] = time.monotonic()
                inflight[slot].append(i)
        now = time.monotonic()
        waiting = [w.conn for slot, w in enumerate(pool) if inflight[slot] or not w.ready]
        deadlines = [head_since[s] + timeout for s in range(n) if inflight[s]] or [now + 1.0]
        ready = multiprocessing.connection.wait(waiting, timeout=max(0.0, min(deadlines) - now))
        for conn in ready:
            slot = next(s for s, w in enumerate(pool) if w.conn is conn)
            try:
                msg = conn.recv()
            except (EOFError, OSError):            # the worker died (e.g. out of memory)
                replace(slot, score_head=True)
                continue
            if msg == "ready":
                pool[slot].ready = True
            else:
                i, r = msg
                results[i] = r
                if inflight[slot] and inflight[slot][0] == i:
                    inflight[slot].popleft()
                head_since[slot] = time.monotonic()
        now = time.monotonic()
        for slot in range(n):
            if inflight[slot] and now >= head_since[slot] + timeout:
                replace(slot, score_head=True)
        if not any(w.ready for w in pool) and time.monotonic() > startup_deadline:
            raise RuntimeError("batch_reward: no worker process started within 120 s")


def _start_worker():
    ctx = multiprocessing.get_context("spawn")   # fork is unsafe once torch has started threads
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
    proc.start()
    child.close()
    return _Worker(proc, parent)


def _kill(w):
    try:
        w.process.kill()
        w.process.join(timeout=2)
        w.conn.close()
    except (OSError, ValueError):
        pass


@atexit.register
def _shutdown_pool():
    while _POOL:
        w = _POOL.pop()
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
        _kill(w)


# ----------------------------------------------------------------------------------------------------------------
# Command line: python verify.py RESPONSE GOLD

def _short(s, n=200):
    if s is None:
        return "None"
    return s if len(s) <= n else s[:n] + f"... ({len(s)} characters)"


def main(argv=None):
    """Exit status: 0 when the answers are equivalent, 1 when they are not (or the response has no answer), 2 on a
    usage error (argparse), so scripts can branch on it."""
    ap = argparse.ArgumentParser(description="Check a model response against a gold answer and explain why. "
                                 "Exit status 0: equivalent; 1: not equivalent; 2: usage error.")
    ap.add_argument("response", help="the model response (or just an answer)")
    ap.add_argument("gold", help="the gold answer, a MATH solution with \\boxed{}, or a GSM8K solution with ####")
    ap.add_argument("--fallback", choices=FALLBACKS, default="none",
                    help="what a response with no box or anchor scores: none = 0 (default); last = its last value")
    args = ap.parse_args(argv)
    pred = _response_answer(args.response, args.fallback)
    gold = gold_answer(args.gold)
    print(f"response answer: {_short(pred)}" + ("  (no \\boxed{} or anchor found)" if pred is None else ""))
    print(f"gold answer:     {_short(gold)}")
    if pred is not None:
        print(f"normalised:      {_short(_normalize(pred))}  vs  {_short(_normalize(gold))}")
    ok, why = _bounded((False, f"out of time ({TIME_LIMIT_S} s): not equal"), _judge, pred, gold)
    print(f"verdict:         {'EQUIVALENT (reward 1.0)' if ok else 'NOT EQUIVALENT (reward 0.0)'}")
    print(f"why:             {why}")
    if pred is None and args.response.strip():
        ok2, why2 = _bounded((False, "out of time"), _judge, args.response.strip(), gold)
        print(f"as a bare answer, is_equivalent(RESPONSE, gold) would be {ok2}: {why2}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
