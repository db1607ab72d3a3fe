"""Structured fuzz of verify.py's time bound: random LaTeX expression trees in the usual answer wrappers.

Every call of `reward` and `is_equivalent` must return within 1 s in-process, from any thread (docs/verify.md,
"Bounds": the parser's size bounds plus the in-process time limit). Each check runs in a child process that the test
can kill, so a check that hangs fails the test with its input instead of stalling the suite.

The 1 s bound is asserted on the CPU time of the checking thread (what a runaway computation burns; machine load
cannot inflate it) and, with 1 s of slack for load on a shared CI machine, on wall-clock time.
"""
import multiprocessing as mp
import random
import threading
import time

import pytest

BOUND_S = 1.0
WALL_SLACK_S = 1.0

# ----------------------------------------------------------------------------------------------------------------
# Random expression trees

_SYMBOLS = ["x", "y", "n", "i", "e", r"\pi", r"\theta", "a", "b"]
_FUNCS = [r"\sin", r"\cos", r"\tan", r"\ln", r"\log", r"\exp", r"\arctan", r"\sinh"]


def _number(rng):
    kind = rng.random()
    if kind < 0.45:
        return str(rng.randint(0, 12))
    if kind < 0.65:
        return str(rng.randint(13, 10 ** rng.randint(3, 9)))
    if kind < 0.78:
        return str(rng.randint(10 ** 15, 10 ** rng.randint(16, 60)))       # big literals, the classic trap
    if kind < 0.92:
        return f"{rng.randint(0, 999)}.{rng.randint(0, 9999):0{rng.randint(1, 4)}d}"
    return f"{rng.randint(1, 9)}e{rng.randint(-40, 400)}"


def expression(rng, depth=0):
    """A random LaTeX expression string; deeper trees get more leaves."""
    if depth >= 5 or rng.random() < 0.25 + 0.12 * depth:
        return _number(rng) if rng.random() < 0.65 else rng.choice(_SYMBOLS)
    sub = lambda: expression(rng, depth + 1)          # noqa: E731
    form = rng.randrange(23)
    if form == 0:
        return f"{sub()}+{sub()}"
    if form == 1:
        return f"{sub()}-{sub()}"
    if form == 2:
        return f"{sub()} \\cdot {sub()}"
    if form == 3:
        return f"\\frac{{{sub()}}}{{{sub()}}}"
    if form in (4, 5):
        return f"{{{sub()}}}^{{{sub()}}}"
    if form == 6:
        return f"\\sqrt{{{sub()}}}"
    if form == 7:
        return f"\\sqrt[{rng.randint(2, 12)}]{{{sub()}}}"
    if form == 8:
        return f"{rng.choice(_FUNCS)}{{{sub()}}}"
    if form == 9:
        return f"\\log_{{{rng.randint(2, 20)}}}{{{sub()}}}"
    if form == 10:
        return f"({sub()})!"
    if form == 11:
        return f"\\binom{{{sub()}}}{{{sub()}}}"
    if form == 12:
        return f"\\left|{sub()}\\right|"
    if form == 13:
        return f"\\lfloor {sub()} \\rfloor"
    if form == 14:
        return f"({sub()}, {sub()})"
    if form == 15:
        return f"{sub()} \\pm {sub()}"
    if form == 16:
        return f"{sub()}^{{{rng.choice(['2', '3', '-1', '0.5', '1/3', '100', '999', '2.7'])}}}"
    if form == 17:
        return f"x = {sub()}"
    if form == 18:
        return f"{sub()} < x \\le {sub()}"
    if form == 19:
        return f"\\{rng.choice(['sum', 'prod'])}_{{i={sub()}}}^{{{sub()}}} a_{{n-i}} {sub()}"
    if form == 20:
        return f"{sub()} \\le |x| < {sub()}"
    if form == 21:
        return f"{rng.randint(0, 10 ** rng.randint(1, 6))},{rng.randint(0, 10 ** rng.randint(1, 6))}"
    return f"({sub()})({sub()})"


_WRAPPERS = [
    "\\boxed{{{}}}",
    "So the answer is $\\boxed{{{}}}$.",
    "The answer is ${}$.",
    "Final Answer: The value is ${}$.",
    "Answer: {}",
    "#### {}",
    "<think>maybe \\boxed{{1}}</think>\n\\[ \\boxed{{{}}} \\]",
    "\\boxed{{{}}} \\text{{ or }} \\boxed{{2}}",
    "The final answer is $x \\approx {}$",
    "Answer \\[ {} \\]",
]


def cases(seed, n):
    """n (kind, response or answer, gold) triples, reproducible from the seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        expr = expression(rng)
        r = rng.random()
        if r < 0.35:
            gold = expression(rng, depth=3)
        elif r < 0.6:
            gold = _number(rng)
        elif r < 0.8:                   # the same value written another way: the comparison runs in full
            gold = f"0+{{{expr}}}"
        else:
            gold = f"2 \\cdot ({expr})"
        if rng.random() < 0.5:
            out.append(("reward", rng.choice(_WRAPPERS).format(expr), gold))
        else:
            out.append(("equiv", expr, gold))
    return out


# ----------------------------------------------------------------------------------------------------------------
# A killable child that times each check

def _child(items, start, conn, in_thread):
    import verify

    def run():
        for i in range(start, len(items)):
            kind, a, g = items[i]
            t, c = time.perf_counter(), time.thread_time()
            out = verify.reward(a, g) if kind == "reward" else verify.is_equivalent(a, g)
            conn.send((i, time.perf_counter() - t, time.thread_time() - c, out))
    if in_thread:                       # signals do not reach a non-main thread; the bound must hold there too
        th = threading.Thread(target=run)
        th.start()
        th.join()
    else:
        run()
    conn.send(None)


def timed_checks(items, in_thread=False, kill_after_s=10.0):
    """[(wall s, cpu s, verdict)] per item; a check still running after `kill_after_s` is killed and recorded as
    (inf, inf, None), and the child is restarted after it."""
    ctx = mp.get_context("spawn")
    results, start = [None] * len(items), 0
    while start < len(items):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(items, start, child, in_thread), daemon=True)
        proc.start()
        child.close()
        limit = kill_after_s + 60.0                       # the first check also pays for importing sympy
        while True:
            if not parent.poll(limit):
                proc.kill()
                proc.join()
                results[start] = (float("inf"), float("inf"), None)
                start += 1
                break
            try:
                msg = parent.recv()
            except EOFError:                                # the child died (out of memory): a failure too
                proc.join()
                results[start] = (float("inf"), float("inf"), "crash")
                start += 1
                break
            if msg is None:
                proc.join()
                start = len(items)
                break
            i, wall, cpu, out = msg
            results[i] = (wall, cpu, out)
            start, limit = i + 1, kill_after_s
        parent.close()
    return results


def _over_bound(items, results):
    return [(items[i], r[:2]) for i, r in enumerate(results)
            if not (r[1] <= BOUND_S and r[0] <= BOUND_S + WALL_SLACK_S)]


def _assert_bound(items, results):
    over = _over_bound(items, results)
    assert not over, f"{len(over)} checks over {BOUND_S} s: {over[:5]}"
    assert all(r[2] in (0.0, 1.0, True, False) for r in results)


# Inputs whose unbounded check runs past 1 s, most for minutes: each one reaches a sympy computation that a size
# bound in verify.py (or the watchdog) has to stop.
KNOWN_SLOW = [
    ("reward", r"\boxed{{46727649097083114671514147211017110550278820052232}^{3.953}}", "5"),
    ("reward", r"\boxed{(6365913849550174195909544^{0.451})!}", "5"),
    ("reward", r"\boxed{\sqrt[3]{9-\sqrt{\log_{11}{\sqrt[8]{i}}}}}", "5"),
    ("equiv", r"{8 \cdot 3456789}^{0.621}", "1"),
    ("equiv", r"\sqrt[9]{" + "7" * 90 + r"}^{35}", "2"),
    ("reward", r"\boxed{(\lfloor \sqrt{x} \rfloor+3731250)!}", "2147144981818983785918"),
    ("reward", r"\boxed{{({11}^{7})(\theta)}^{(y)(8e19)}}", "125.6011"),
    ("equiv", r"\sqrt{11}+\left|2260\right| \cdot {\binom{10}{{b}^{e}}}^{144412862 \cdot 229.6987}", "3"),
    ("equiv", r"4+(94777353 \pm 66855)!", "10"),
    # cos(e^{c / binom(n, 5)}) at a point where the binomial is tiny: evalf asked for e to ~20 million bits, and
    # the watchdog could not cut the single big-integer products in between (1.2 s); siblings by mutation
    ("equiv", r"\cos{\exp{8+\frac{2986792874526191^{1/3}}{\binom{n}{5}}}}", "(5)!"),
    ("equiv", r"\tan{\exp{8+\frac{2986792874526191^{1/3}}{\binom{n}{5}}}}", "7"),
    ("equiv", r"\cos{\exp{\exp{\frac{12}{\binom{n}{5}}}}}", "2"),
    ("equiv", r"\exp{i \exp{8+\frac{2986792874526191^{1/3}}{\binom{n}{5}}}}", "1"),
    ("equiv", r"\sec{\sin{\exp{8+\frac{2986792874526191^{1/3}}{\binom{n}{5}}}}"
              r"+\cos{\exp{8+\frac{2986792874526191^{1/3}}{\binom{n}{5}}}}}", "1"),
]


def test_known_slow_inputs_are_bounded_in_the_main_thread_and_in_another_thread():
    for in_thread in (False, True):
        results = timed_checks(KNOWN_SLOW, in_thread=in_thread)
        _assert_bound(KNOWN_SLOW, results)
        assert all(r[2] in (0.0, False) for r in results)


def test_fuzzed_expression_trees_are_bounded():
    items = cases(seed=20261130, n=400)
    _assert_bound(items, timed_checks(items))


@pytest.mark.slow
def test_fuzzed_expression_trees_are_bounded_large():
    items = cases(seed=7, n=4000)
    _assert_bound(items, timed_checks(items, in_thread=True))


def test_the_harness_catches_a_check_that_runs_over():
    # The fuzz can fail: a check still running when the parent's patience ends is killed, recorded and reported,
    # and the child is restarted for the items after it. (The 3.3 s nested log ran until verify's time limit.)
    items = [("equiv", "1", "1"), KNOWN_SLOW[2], ("equiv", "2", "2")]
    results = timed_checks(items, kill_after_s=0.05)
    assert results[1][0] == float("inf") and results[2][2] is True
    assert [it for it, _ in _over_bound(items, results)] == [items[1]]


def test_the_generator_makes_varied_answers():
    # A fuzz that only ever made one shape of answer would test nothing: check the mix it produces.
    items = cases(seed=1, n=300)
    text = " ".join(a for _, a, _ in items)
    for needle in (r"\frac", r"\sqrt[", "^{", "!", r"\binom", r"\log_", r"\boxed", "Answer:", "####", r"\pm",
                   r"\sum_", r"\le |x|", r"Answer \["):
        assert needle in text, needle
    assert len({a for _, a, _ in items}) > 280
    assert {k for k, _, _ in items} == {"reward", "equiv"}
