"""Tests for verify.py: extraction, equivalence (our own table; tests/test_verify_cases.py has the independent one),
safety bounds on pathological input, a fuzz test, batch_reward's worker pool and hard kill, and the CLI."""
import ast
import contextlib
import fractions
import os
import pathlib
import random
import subprocess
import sys
import time

import pytest

from conftest import within_time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verify

ROOT = pathlib.Path(__file__).resolve().parent.parent
HANG_GUARD_S = 5.0     # not a speed goal (that lives in benchmarks/bench_verify.py): only "it did not hang"
DEADLOCK_GUARD_S = 60.0


@contextlib.contextmanager
def does_not_hang():
    """The block used under HANG_GUARD_S of CPU time (a loaded machine stretches its wall time, not its CPU time) and
    returned within DEADLOCK_GUARD_S of wall time (a wait that never ends uses no CPU)."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    assert time.process_time() - cpu < HANG_GUARD_S
    assert time.perf_counter() - wall < DEADLOCK_GUARD_S

# ----------------------------------------------------------------------------------------------------------------
# extract_answer

EXTRACT = [
    (r"so the answer is $\boxed{42}$.", "42"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\frac{\sqrt{3}}{2}} and more text", r"\frac{\sqrt{3}}{2}"),
    (r"nested \boxed{a^{b^{c}}}", r"a^{b^{c}}"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"first \boxed{3} then \boxed{4}", "4"),
    (r"\fbox{7}", "7"),
    (r"\boxed 5", "5"),
    (r"\boxed 5$ and", "5"),
    (r"\boxed{}", None),
    (r"\boxed{ }", None),
    (r"\boxed{3} and finally \boxed{}", None),          # an empty last box is no answer, not "look further back"
    (r"\boxed{3} and then \boxed{4", "3"),               # a truncated box is skipped
    ("#### 42", "42"),
    ("work\n#### 1,234\n", "1,234"),
    ("The final answer is 42.", "42"),
    ("The final answer is $\\frac{1}{2}$. I hope it is correct.", r"\frac{1}{2}"),
    ("Final Answer: The final answer is 7. I hope it is correct.", "7"),
    ("Answer: 3.5", "3.5"),
    ("**Answer:** 12", "12"),
    ("<answer>12</answer>", "12"),
    ("<answer>\\boxed{5}</answer>", "5"),
    ("Answer: 3\nThe final answer is 4", "4"),           # last anchor wins
    ("The final answer is 4\nAnswer: 3", "3"),
    ("<think>\\boxed{41}</think> The answer is \\boxed{42}", "42"),
    ("<think>\\boxed{41}</think> no answer after the thinking", "41"),
    ("<think>Answer: 1</think>\nAnswer: 2", "2"),
    ("6 times 7 is 42", None),                           # never "the last number in the text"
    ("I think it is 4 or 5.", None),
    ("", None),
    ("the answer is probably 7", "probably 7"),           # extracted, and judged as text: never equal to 7
    ("The answer is 5.", "5"),
    ("The answer is $x = 5$", "x = 5"),
    ("The answer is: 12 apples", "12 apples"),
    ("Final Answer: The smallest such $m$ is 12.", "12"),
    ("Answer: $\\$42$", "\\$42"),                         # \$ is a dollar sign, not a math delimiter
    ("Answer: $x = \\$5$", "x = \\$5"),
    ("The answer is $\\$42$ or $\\$43$.", "$\\$42$ or $\\$43$"),   # a hedge stays whole (and is judged a list)
    (r"\boxed{3} \text{ or } \boxed{-5}", "3, -5"),           # boxes joined by a separator are one answer
    (r"$x = \boxed{3}$ or $x = \boxed{-5}$", "3, -5"),
    (r"\boxed{4}, \boxed{4}", "4"),
    (r"I tried \boxed{3}. No: \boxed{4}", "4"),                # words between boxes: the last one counts
    ("\\boxed{12}\nThe final answer is 15.", "15"),          # a later final-answer anchor overrides a box
    ("\\boxed{12}\nTo check the answer: 3 * 4 = 12", "12"),    # a plain "answer:" after a box does not
]


@pytest.mark.parametrize("text, expected", EXTRACT)
def test_extract_answer(text, expected):
    assert verify.extract_answer(text) == expected


def test_extract_answer_rejects_non_string():
    with pytest.raises(TypeError, match="expected str"):
        verify.extract_answer(None)


# ----------------------------------------------------------------------------------------------------------------
# is_equivalent: our own table (pred, gold, expected)

T, F = True, False
EQUIV = [
    # integers, decimals, signs
    ("7", "7", T), ("7.000", "7", T), ("0007", "7", T), ("-0", "0", T), ("+3", "3", T), ("\u22123", "-3", T),
    ("-3", "3", F), ("70", "7", F), ("0.7", "7", F), ("6.999", "7", F), ("7.001", "7", F), ("1e2", "100", T),
    ("1.5E-2", "0.015", T), (r"2.5\times 10^{3}", "2500", T), (r"2.5\cdot10^3", "2500", T), ("2.5e3", "250", F),
    # fractions in every spelling
    (r"\frac{3}{4}", "3/4", T), (r"\frac34", "0.75", T), (r"\dfrac{6}{8}", r"\frac{3}{4}", T), ("6/8", "0.75", T),
    (r"\tfrac{-3}{4}", "-0.75", T), (r"-\frac{3}{4}", r"\frac{-3}{4}", T), (r"\frac{3}{-4}", "-3/4", T),
    (r"\frac{4}{3}", "3/4", F), (r"\frac{3}{4}", "0.7", F), (r"\frac{1}{7}", "0.142857", F),
    (r"\frac{\frac{1}{2}}{\frac{1}{4}}", "2", T), (r"\frac{1}{2}+\frac{1}{3}", r"\frac56", T),
    # radicals
    (r"3\sqrt{2}", r"\sqrt{18}", T), (r"\sqrt{50}", r"5\sqrt2", T), (r"\frac{2}{\sqrt{2}}", r"\sqrt{2}", T),
    (r"\sqrt[3]{27}", "3", T), (r"\sqrt[3]{16}", r"2\sqrt[3]{2}", T), (r"2^{1/2}", r"\sqrt2", T),
    (r"\sqrt{8}", r"2\sqrt{3}", F), (r"\sqrt{2}", "1.414", T), (r"\sqrt{2}", "1.415", F), (r"\sqrt{2}", "1.4", F),
    (r"\sqrt{3}+\sqrt{2}", r"\sqrt{5}", F),
    (r"\frac{1}{\sqrt3+\sqrt2}", r"\sqrt3-\sqrt2", T), (r"\sqrt{5+2\sqrt6}", r"\sqrt2+\sqrt3", T),
    (r"\sqrt{-4}", "2i", T), (r"\sqrt[3]{-27}", "-3", T), ("(-8)^{2/3}", "4", T), (r"\sqrt[4]{-16}", "-2", F),
    # pi and e exact
    (r"\pi r^2", r"r^2\pi", T), (r"\frac{3\pi}{2}", r"1.5\pi", T), (r"2\pi", "6.28", T), (r"2\pi", "6.29", F),
    ("6.28", r"2\pi", F), (r"\pi", r"\frac{355}{113}", F),
    ("e", r"\exp(1)", T), (r"\ln(e^3)", "3", T), (r"e^{\ln 5}", "5", T), (r"e", "2.71828", T), (r"e", "2.71827", F),
    ("2.72", "e", F),
    # percent, units, degrees, money
    ("25\\%", "25", T), ("25 percent", "25", T), ("25", "25\\%", T), ("0.25", "25\\%", F),
    (r"12 \text{ cm}", "12", T), (r"12\,\text{cm}^2", "12", T), (r"12 \mbox{ inches}", "12", T),
    ("12 meters", "12", T),
    (r"45^{\circ}", "45", T), (r"45^\circ", r"45^{\circ}", T), ("45\u00b0", "45", T), ("45 degrees", "45", T),
    (r"\$4.50", "4.5", T), (r"\$4.50", "4.05", F), (r"13 \text{ cm}", "12", F),
    # thousands separators
    ("12,345", "12345", T), ("1,000,000", "1000000", T), (r"1{,}500", "1500", T), (r"1\,500", "1500", T),
    ("1 500", "1500", T), ("1,500", "15,00", F), ("1,500", "150", F),
    # repeating decimals
    (r"0.\overline{6}", r"\frac23", T), (r"0.8\overline{3}", r"\frac56", T), (r"0.\overline{09}", r"\frac{1}{11}", T),
    (r"0.\overline{6}", "0.6", F), (r"0.\overline{6}", "0.67", F),
    # intervals and unions
    ("(1,4]", r"(1, 4]", T), (r"\left[ 1, 4 \right)", "[1,4)", T), ("(1,4]", "[1,4]", F), ("(1,4]", "(1,4)", F),
    (r"(-\infty, 0)", "x<0", T), (r"[0,\infty)", r"x \ge 0", T), (r"x \geq 0", r"(0, \infty)", F),
    (r"-3 < x < 3", "(-3,3)", T), (r"-3 \le x \le 3", "[-3,3]", T), (r"3 > x > -3", "(-3,3)", T),
    (r"(-\infty,1)\cup(2,\infty)", r"(2,\infty)\cup(-\infty,1)", T),
    (r"(-\infty,1]\cup(2,\infty)", r"(-\infty,1)\cup(2,\infty)", F),
    (r"x<1 \text{ or } x>2", r"(-\infty,1)\cup(2,\infty)", T), (r"x \in (1,2)", "(1,2)", T), (r"t<5", r"x<5", F),
    # sets (order-free) vs tuples (ordered)
    (r"\{3, 1, 2\}", r"\{1,2,3\}", T), ("3, 1, 2", "1, 2, 3", T), (r"\{1,2\}", r"\{1,2,3\}", F),
    ("(1,2,3)", "(1,2,3)", T),
    ("(1,2,3)", "(3,2,1)", F), ("(1, -1)", r"\left(1,-1\right)", T), (r"(\frac12, 3)", "(0.5, 3)", T),
    (r"\emptyset", r"\{\}", T), (r"\emptyset", r"\{0\}", F), (r"\langle 1, 2\rangle", "(1,2)", T),
    # plus-minus as a set
    (r"\pm 3", "3, -3", T), (r"\pm 3", r"\{-3, 3\}", T), (r"2 \pm \sqrt{3}", r"2+\sqrt3, 2-\sqrt3", T),
    (r"x = 1 \pm i", "1+i, 1-i", T), (r"\pm 3", "3", F), (r"2\pm\sqrt3", r"2+\sqrt3", F),
    # equations
    ("x=7", "7", T), ("7", "x = 7", T), ("k = 7", "7", T), ("x = 7", "x = 7.0", T), ("x = 7", "y = 7", F),
    ("x=7", "8", F),
    ("y = 3x - 2", "3x - y = 2", T), ("y = 3x - 2", "y = 3x + 2", F), ("2y = 6x - 4", "y = 3x - 2", T),
    ("x^2 + y^2 = 4", "y^2 + x^2 - 4 = 0", T), ("a = 2, b = 5", "(2, 5)", T), ("f(x) = x^2", "x^2", T),
    # polynomials and expressions
    ("(x-1)(x+1)", "x^2-1", T), ("x^2-2x+1", "(x-1)^2", T), ("(x-1)^2", "x^2-1", F), (r"\frac{x^2-4}{x-2}", "x+2", T),
    ("2(a+b)", "2a+2b", T), ("2(a+b)", "2a+b", F), ("a^2 b", "b a^2", T),
    (r"\frac{1}{x}+\frac{1}{y}", r"\frac{x+y}{xy}", T),
    (r"x^3-1", "(x-1)(x^2+x+1)", T), (r"x^3+1", "(x-1)(x^2+x+1)", F), (r"\sin^2\theta+\cos^2\theta", "1", T),
    (r"\cos(2x)", r"1-2\sin^2 x", T), (r"\cos(2x)", r"2\sin^2 x - 1", F), (r"\log(xy)", r"\log x + \log y", T), (r"\log(x+y)", r"\log x + \log y", F),
    ("6x^2", "6x^3", F), ("x", "-x", F), (r"\sqrt{x^2}", "|x|", T), ("x y", "xy", T),
    # matrices and vectors
    (r"\begin{pmatrix} 3 \\ -1 \end{pmatrix}", "(3, -1)", T), (r"\begin{bmatrix} 3 & -1 \end{bmatrix}", "(3,-1)", T),
    (r"\begin{pmatrix} 3 \\ -1 \end{pmatrix}", "(-1, 3)", F),
    (r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}", r"\begin{bmatrix} 1 & 0 \\ 0 & 1 \end{bmatrix}", T),
    (r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}", r"\begin{pmatrix} 1 & 0 \\ 1 & 0 \end{pmatrix}", F),
    (r"\begin{pmatrix} 1 & 2 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", F),
    # complex numbers
    ("2+3i", "3i+2", T), ("2-3i", "2+3i", F), (r"\frac{1}{i}", "-i", T), ("i^2", "-1", T), ("(1+i)^2", "2i", T),
    (r"\sqrt{2}i", r"i\sqrt2", T), ("5i", "5", F),
    # base subscripts
    ("1101_2", "1101_{2}", T), ("1101_{2}", "1101", T), ("1101_2", "1100_2", F), ("A3_{16}", "A3_{16}", T),
    # mixed numbers
    (r"3\frac{1}{4}", r"\frac{13}{4}", T), (r"3\frac14", "3.25", T), (r"3\frac{1}{4}", r"\frac34", F),
    (r"2\frac{\pi}{3}", r"\frac{2\pi}{3}", T), (r"2\frac21", "4", T), (r"2\frac{3}{2}", "3", T),
    (r"2\frac{3}{2}", "3.5", F),
    # multiple choice
    ("(B)", "B", T), (r"\textbf{(B)}", r"\text{(B)}", T), ("B", r"\text{(B)}", T), ("(B) 17", "B", T),
    ("(D)", "B", F),
    ("A, B", "B", F), ("b", "B", F),
    # text answers
    (r"\text{Tuesday}", "Tuesday", T), (r"\text{tuesday}", r"\text{Tuesday}", T), (r"\textbf{Tuesday}", "Tuesday", T),
    (r"\text{Wednesday}", "Tuesday", F), (r"\text{odd}", r"\text{even}", F), ("yes", r"\text{Yes}", T),
    # GSM8K style
    ("1,234", "1234", T), ("$1,234", "1234", T), ("1234.00", "1234", T), ("1,243", "1234", F),
    # factorials, binomials, logs, trig
    ("4!", "24", T), (r"\binom{6}{3}", "20", T), (r"\dbinom{6}{3}", r"\binom{6}{3}", T), (r"{6 \choose 3}", "20", T),
    (r"\log_3 81", "4", T), (r"\log_2 \frac{1}{8}", "-3", T), (r"\sin\frac{\pi}{6}", r"\frac12", T),
    (r"\cos \pi", "-1", T), (r"\tan\frac{\pi}{4}", "1", T), (r"\arctan 1", r"\frac{\pi}{4}", T),
    (r"\sin 1", r"\cos 1", F),
    # big but bounded numbers, exactly
    ("2^{64}", "18446744073709551616", T), ("2^{64}", "18446744073709551615", F), ("10^{-12}", "0", F),
    ("3^{100}", "3^{100}+1", F), (r"\frac{1}{3^{50}}", r"3^{-50}", T), ("1 - 10^{-30}", "1", F),
    ("20!", "2432902008176640000", T),
    # hedges and lists when one value is asked
    ("3, 4", "3", F), (r"3 \text{ or } 4", "4", F), ("3 or 4", "3", F), (r"\{3\}", "3, 4", F),
    ("x = 3, x = 4", "3", F),
    (r"3 \text{ and } 4", "3, 4", T), ("3 or 4", "3, 4", T),
    # degrees inside trig functions, unicode, set-builder, worked equalities, words around numbers
    (r"\sin 30^\circ", r"\frac12", T), (r"\cos(60\degree)", "0.5", T), (r"\tan 45^{\circ}", "1", T),
    (r"30^\circ", r"\frac{\pi}{6}", F),
    ("\u00bd", "0.5", T), ("2\u00bd", "2.5", T), ("x\u00b2+1", "x^2+1", T), ("10\u2075", "100000", T),
    ("\u221a2", r"\sqrt2", T),
    (r"\{x \mid 1 < x \le 4\}", "(1,4]", T), (r"\{x : x \ge 0\}", r"[0,\infty)", T),
    (r"\{x \mid x > 0\}", r"[0,\infty)", F),
    (r"\frac{6}{8} = \frac{3}{4}", "0.75", T), ("2 = 3", "3", F),
    (r"\text{all real numbers}", r"(-\infty,\infty)", T),
    (r"5 \text{ or maybe } 6", "30", F), (r"5 \text{ but maybe } 6", "5", F), (r"m\angle A = 40^\circ", "40", T),
    ("(C), (D)", "C", F), (r"\text{(C) or (D)}", "C", F), ("(C) 40", "C", T),
    ("No", r"\text{no}", T), ("NO", "No", T), ("No", "Yes", F), ("x", "X", F), ("pine", "nipe", F), ("ab", "ba", T),
    ("(2, 3)", "x=2, y=3", T), ("(3, 2)", "x=2, y=3", F), (r"\sin x^2", r"(\sin x)^2", F),
    (r"\sin^2 x", r"(\sin x)^2", T),
    (r"0.4\overline{5}", r"\frac{41}{90}", T), (r"x \in (-\infty,2]", r"x \le 2", T), (r"(-\infty,2]", "x<2", F),
    (r"|x - 1| < 2", "(-1, 3)", T), (r"|x| > 2", r"(-\infty,-2)\cup(2,\infty)", T), (r"|x| \le 2", "(-2, 2)", F),
    (r"\gcd(24, 36)", "12", T), (r"\operatorname{lcm}(6, 8)", "24", T), (r"\max(2, 7)", "7", T), (r"\gcd(24, 36)", "6", F),
    (r"\text{perimeter} = 20", "20", T), (r"\text{The final answer is } 20", "20", T), (r"\lbrace 3, 1 \rbrace", r"\{1, 3\}", T),
    ("x^{4/3}", r"\sqrt[3]{x^4}", T), ("x^{1/3}", r"\sqrt[3]{x}", T), (r"\sqrt{x}", r"\sqrt{-x}", F),
    ("y = 3x", r"x = \frac{y}{3}", T), ("y = 3x", "x = 3y", F),
    ("{3, 4}", r"\{4, 3\}", T), ("{3, 4}", "(3, 4)", F), (r"\frac{1, 2}{3}", "1", F),
    ("12:3", "123", F), ("1;23", "123", F), ("12.3.", "123", F), (r"\text{1,23}", "123", F), ("Mon-day", "Monday", F),
    # symbolic factorials: gamma at high precision must stay inside the time limit (uncapped, evaluating gamma takes 1.8 s)
    (r"\frac{(2n)!}{n!(n+1)!}", r"\frac{1}{n+1}\binom{2n}{n}", T), ("(n+1)!", "(n+1) n!", T), ("(n+1)!", "(n+2) n!", F),
    (r"\frac{n!}{(n-2)!}", "n^2-n", T),
    # labels, ratios, inequalities, thin-space separators, solution sets
    ("(a,b)=(4,1)", "(4,1)", T), ("A:B = 3:5", "3:5", T), ("|PQ| = 7", "7", T), ("m=2,n=3; m=5,n=1", "(2,3),(5,1)", T),
    ("-y > -4", "y < 4", T), ("3y < 12", "y < 4", T), ("y + 2 < 6", "y < 4", T), ("0 < g(t) < 2", "(0, 2)", T),
    (r"12,\! 345,\! 678", "12345678", T), (r"4, 9, \text{ and } 25", "4, 9, 25", T), ("(2,5)or(5,2)", "(2,5),(5,2)", T),
    (r"y \approx 7", "7", T), ("ab^3", "ba^3", F), ("5m^3n", "5nm^3", T), ("x = 2+2 = 5", "5", F),
    # a word label is a capitalised word, not a hedge or code; double escapes are read only when every run is even
    ("Total: 12", "12", T), ("Maybe: 3", "3", F), ("Lambda: 1", "1", F), ("Either: 3", "3", F),
    (r"\\frac{1}{2}", r"\frac12", T), (r"\frac{1}{2} \\ \\frac{1}{3}", "0.5", F),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", "(1, 2)", T),
    # edge cases that must not crash
    ("", "", F), ("()", "0", F), (r"\frac{}{}", "1", F), ("x^", "x", F), ("1/0", "1/0", T), ("1/0", r"\infty", F),
    (r"\infty", r"+\infty", T), (r"-\infty", r"\infty", F), ("None", "None", T), ("nan", "0", F),
]


@pytest.mark.parametrize("pred, gold, expected", EQUIV, ids=[f"{i}[{p[:30]} ~ {g[:30]}]" for i, (p, g, _) in enumerate(EQUIV)])
def test_is_equivalent(pred, gold, expected):
    assert within_time_limit(verify, verify.is_equivalent, pred, gold) is expected


def test_decimal_gold_tolerance_is_one_sided():
    # Tolerance exists only for a gold decimal with >= 2 digits after the point and an irrational prediction,
    # and it is half a unit in the gold's last digit: the gold was rounded, the prediction is exact.
    assert verify.is_equivalent(r"\frac{\sqrt{3}}{2}", "0.87")           # 0.8660...
    assert not verify.is_equivalent(r"\frac{\sqrt{3}}{2}", "0.86")
    assert not verify.is_equivalent(r"\frac{2}{3}", "0.67")               # rational: exact only
    assert not verify.is_equivalent("0.87", r"\frac{\sqrt{3}}{2}")       # a decimal prediction never gets tolerance


def test_table_is_broad_and_mixed():
    assert len(EQUIV) >= 200
    assert len({(p, g) for p, g, _ in EQUIV}) == len(EQUIV), "duplicate row"
    share = sum(e for _, _, e in EQUIV) / len(EQUIV)
    assert 0.45 <= share <= 0.75


def test_is_equivalent_rejects_non_string():
    with pytest.raises(TypeError, match="must be str"):
        verify.is_equivalent(5, "5")


# ----------------------------------------------------------------------------------------------------------------
# reward: full responses and gold solutions

GSM8K_GOLD = "Tom has 3 + 4 = <<3+4=7>>7 apples, then buys 1,000 more.\n#### 1,007"
MATH_GOLD = r"Rationalising, we get $\frac{1}{\sqrt{2}} = \boxed{\frac{\sqrt{2}}{2}}$."


@pytest.mark.parametrize("response, gold, expected", [
    (r"Thus $\boxed{1007}$.", GSM8K_GOLD, 1.0),
    ("so 1007 apples.\n#### 1,007", GSM8K_GOLD, 1.0),
    (r"\boxed{1,070}", GSM8K_GOLD, 0.0),
    (r"\boxed{\frac{1}{\sqrt2}}", MATH_GOLD, 1.0),
    (r"The final answer is $\frac{\sqrt 2}{2}$", MATH_GOLD, 1.0),
    (r"\boxed{0.7071}", MATH_GOLD, 0.0),
    ("1007", GSM8K_GOLD, 0.0),                   # a bare number with no box or anchor is not an answer
    (r"\boxed{\sqrt{2}/2}", r"\frac{\sqrt2}{2}", 1.0),
    (r"<think>maybe \boxed{3}</think>\boxed{5}", "5", 1.0),
    (r"\boxed{5} \boxed{3}", "5", 0.0),
])
def test_reward(response, gold, expected):
    assert verify.reward(response, gold) == expected


def test_reward_rejects_non_string():
    with pytest.raises(TypeError, match="must be str"):
        verify.reward("\\boxed{1}", 1)


# ----------------------------------------------------------------------------------------------------------------
# gold_answer: the one reduction of a gold, the same through every entry point

MULTI_BOX_GOLD = r"So \boxed{3} apples and \boxed{8} pears."
GSM8K_SOLUTION = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                  "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
GOLD_ROWS = [
    (r"\boxed{3, 8}", MULTI_BOX_GOLD, 1.0),
    (r"\boxed{8, 3}", MULTI_BOX_GOLD, 1.0),
    (r"\boxed{8}", MULTI_BOX_GOLD, 0.0),
    (r"\boxed{3}", MULTI_BOX_GOLD, 0.0),
    (r"\boxed{72}", GSM8K_SOLUTION, 1.0),
    (r"\boxed{24}", GSM8K_SOLUTION, 0.0),
    (r"\boxed{3, -5}", r"\boxed{3} \text{ or } \boxed{-5}", 1.0),
    (r"\boxed{-5}", r"\boxed{3} \text{ or } \boxed{-5}", 0.0),
]


@pytest.mark.parametrize("text, expected", [
    (MULTI_BOX_GOLD, "3, 8"),
    (GSM8K_SOLUTION, "72"),
    (r"\boxed{3} \text{ or } \boxed{-5}", "3, -5"),
    (MATH_GOLD, r"\frac{\sqrt{2}}{2}"),
    ("  7 ", "7"),
    ("#### 1,072", "1,072"),
    (r"x \in [0, 1)", r"x \in [0, 1)"),
])
def test_gold_answer_reduces_a_gold(text, expected):
    assert verify.gold_answer(text) == expected


def test_gold_answer_rejects_non_string():
    with pytest.raises(TypeError, match="gold_answer: expected str"):
        verify.gold_answer(72)


def test_gold_is_read_alike_by_every_entry_point():
    responses, golds, expected = zip(*GOLD_ROWS)
    assert [verify.reward(r, g) for r, g, _ in GOLD_ROWS] == list(expected)
    assert verify.batch_reward(responses, golds, workers=0) == list(expected)
    assert verify.batch_reward(responses, golds, workers=1) == list(expected)
    for r, g, e in GOLD_ROWS:
        answer = verify.extract_answer(r)
        assert verify.is_equivalent(answer, g) == bool(e), (answer, g)
        assert verify.reward(r, verify.gold_answer(g)) == e        # the raw gold and its reduction score alike


# ----------------------------------------------------------------------------------------------------------------
# Safety and bounds

PATHOLOGICAL = [
    r"\boxed{9^{9^{9^{9}}}}",
    r"\boxed{100000!}",
    r"\boxed{" + "7" * 50_000 + "}",
    r"\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
    r"\boxed{" + r"\frac{" * 2000 + "}",
    r"\boxed{" + r"\sqrt{" * 2000 + "2" + "}" * 2000 + "}",
    r"\boxed{" + "-" * 5000 + "1}",
    "x" * 1_000_000 + r"\boxed{3}",
    r"\boxed{" * 150_000,
    "Answer:" + " " * 1_000_000,
    "The final answer is" + " " * 1_000_000 + "x",
    "<answer>" * 100_000,
    r"\boxed{1e999999}",
    r"\boxed{10^{10^{10}}}",
    r"\boxed{2^{2^{2^{2^{2}}}}}",
    r"\boxed{(10^{9})!}",
    r"\boxed{\binom{10^{6}}{500000}}",
    r"\boxed{x^{10^{9}}}",
    r"\boxed{e^{e^{e^{e^{10}}}}}",
    r"\boxed{\sqrt{" + "9" * 99 + "}}",
    r"\boxed{" + "1+" * 300 + "1}",
    r"\boxed{" + "x^" * 300 + "2}",
    r"\boxed{" + "word " * 200 + "5}",
    r"\boxed{\ln(2^{40000}+1)}",                       # sympy's log of a big integer factors it (minutes)
    r"\boxed{\sqrt{3^{3000}+1}}",                      # so does a square root
    r"\boxed{\exp(2^{1000})}",
    r"\boxed{\lceil e^{1000} \rceil}",                  # the integer part of a huge number
    r"\boxed{\sin(10^{9000}\pi)}",
    r"\boxed{(1000!)^{50}}",
]


@pytest.mark.parametrize("response", PATHOLOGICAL, ids=[f"{i}:{r[:20]}" for i, r in enumerate(PATHOLOGICAL)])
def test_pathological_inputs_are_bounded_and_score_zero(response):
    with does_not_hang():
        assert verify.reward(response, "5") == 0.0


def test_guarded_answer_equal_only_to_same_text():
    assert verify.is_equivalent(r"9^{9^{9^{9}}}", r"9^{9^{9^{9}}}")
    assert not verify.is_equivalent(r"9^{9^{9^{9}}}", r"9^{9^{9^{8}}}")
    assert not verify.is_equivalent("1" + "0" * 50_000, "1" + "0" * 49_999)


@pytest.mark.parametrize("pred, gold, expected", [
    ("10^{1000000}", "10^{10^{6}}", True),                  # same value written two ways, never computed
    (r"10^{10^{10}}", r"10^{10^{10}} + 1", False),          # the opaque parts cancel: the difference is 1
    (r"2 \cdot 9^{9^{9^{9}}}", r"9^{9^{9^{9}}} \cdot 2", True),
    ("100000!", "100000!", True), ("100000!", "99999!", False), ("100000!", "0", False),
    ("1e999999", "10^{999999}", True), ("1e999999", "1e999998", False),
    (r"\ln(2^{40000} + 1)", r"\ln(2^{40000} + 1)", True), (r"\ln(2^{40000} + 1)", "27726", False),
    (r"\lceil e^{1000} \rceil", "5", False), (r"\lfloor (1+\sqrt{2})^{1000} \rfloor", "0", False),
])
def test_values_beyond_the_bounds_compare_structurally(pred, gold, expected):
    with does_not_hang():
        assert within_time_limit(verify, verify.is_equivalent, pred, gold) is expected


def test_numeric_zero_needs_a_tame_expression():
    # evalf cannot tell these differences from zero at 400 digits; only the first is really zero.
    assert verify.is_equivalent(r"\sqrt{3+2\sqrt{2}}", r"1+\sqrt{2}")
    assert verify.is_equivalent(r"\sqrt[3]{2+\sqrt5}+\sqrt[3]{2-\sqrt5}", "1")
    assert not verify.is_equivalent(r"\sqrt{10^{1000}+1}", "10^{500}")                     # huge integers
    assert not verify.is_equivalent(r"(\sqrt2+1)^{1000}+(\sqrt2-1)^{1000}+(\sqrt2-1)^{2000}",  # huge + tiny parts
                                    r"(\sqrt2+1)^{1000}+(1-\sqrt2)^{1000}")


def test_python_injection_is_never_executed(tmp_path):
    target = tmp_path / "pwned"
    for payload in [f"__import__('os').system('touch {target}')",
                    f"__import__(\"os\").system(\"touch {target}\")",
                    f"(lambda: __import__('os').system('touch {target}'))()",
                    f"exec(\"open('{target}','w')\")",
                    f"eval(\"__import__('os').system('touch {target}')\")"]:
        assert verify.reward(rf"\boxed{{{payload}}}", "0") == 0.0
        assert verify.is_equivalent(payload, "0") is False
        assert verify.is_equivalent(payload, payload) is True       # the same text, compared as text
    assert not target.exists()


def test_source_never_evaluates_text():
    # Static check on verify.py itself: no eval/exec/compile/sympify/parse_expr/latex2sympy calls anywhere.
    # (Our own recursive-descent parser has a method called parse_expr; `self.` calls are ours.)
    tree = ast.parse((ROOT / "verify.py").read_text())
    banned = {"eval", "exec", "compile", "sympify", "parse_expr", "parse_latex", "latex2sympy", "__import__", "S"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in banned:
                found.append(f.id)
            if isinstance(f, ast.Attribute) and f.attr in banned and not (
                    isinstance(f.value, ast.Name) and (f.value.id == "self" or (f.value.id, f.attr) == ("re", "compile"))):
                found.append(f.attr)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [n for n in names if "parsing" in n or n in banned]
    assert not found, found


def test_imports_only_stdlib_and_sympy():
    tree = ast.parse((ROOT / "verify.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    assert roots - {"sympy"} <= set(sys.stdlib_module_names), roots


# ----------------------------------------------------------------------------------------------------------------
# Properties and fuzzing

@settings(max_examples=200, deadline=None)
@given(st.integers(-10**30, 10**30), st.integers(-10**30, 10**30))
def test_integers_equal_iff_equal(a, b):
    assert verify.is_equivalent(str(a), str(b)) is (a == b)
    assert verify.is_equivalent(f"{a:,}", str(b)) is (a == b)


@settings(max_examples=150, deadline=None)
@given(st.integers(-999, 999), st.integers(1, 999), st.integers(-999, 999), st.integers(1, 999))
def test_fractions_equal_iff_equal(p, q, r, s):
    same = fractions.Fraction(p, q) == fractions.Fraction(r, s)
    assert verify.is_equivalent(rf"\frac{{{p}}}{{{q}}}", f"{r}/{s}") is same
    assert verify.is_equivalent(rf"\dfrac{{{p}}}{{{q}}}", rf"\frac{{{r}}}{{{s}}}") is same


@settings(max_examples=60, deadline=None)
@given(st.integers(-9, 9), st.integers(-9, 9), st.integers(-9, 9))
def test_factored_equals_expanded(a, b, c):
    # (x + a)(x + b) expands to x^2 + (a+b) x + ab; a different constant term c must be told apart.
    factored = f"(x + ({a}))(x + ({b}))"
    expanded = f"x^2 + ({a + b})x + ({a * b})"
    assert verify.is_equivalent(factored, expanded)
    assert verify.is_equivalent(expanded, factored)
    wrong = f"x^2 + ({a + b})x + ({a * b + (c or 1)})"
    assert not verify.is_equivalent(factored, wrong)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10**6), st.integers(1, 6))
def test_decimal_near_misses_are_rejected(n, k):
    # n / 10^k written as a decimal equals itself, and a change in its last shown digit is always caught.
    exact = fractions.Fraction(n, 10 ** k)
    text = f"{n // 10 ** k}.{n % 10 ** k:0{k}d}"
    assert verify.is_equivalent(text, rf"\frac{{{exact.numerator}}}{{{exact.denominator}}}")
    bumped = f"{(n + 1) // 10 ** k}.{(n + 1) % 10 ** k:0{k}d}"
    assert not verify.is_equivalent(bumped, text)


LATEXISH = [r"\frac", r"\sqrt", r"\boxed", "{", "}", "(", ")", "[", "]", r"\{", r"\}", "^", "_", "!", "=", "<", r"\le",
            "+", "-", "*", "/", ",", "x", "y", "i", "e", "1", "2", "9", "0", ".", r"\pi", r"\infty", r"\cup", r"\pm",
            r"\text{", "cm", " ", r"\\", "&", r"\begin{pmatrix}", r"\end{pmatrix}", r"\overline", r"\left", r"\right",
            "|", r"\log", r"\sin", r"\binom", r"\choose", "%", "$", "####", "Answer:", "<think>", "</think>", r"\in",
            "__import__", "'", '"', "999999", r"\mathbb{R}", r"\emptyset", "A", "(C)", r"\lfloor", r"\rfloor", "\u2212"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(LATEXISH), max_size=40).map("".join),
       st.lists(st.sampled_from(LATEXISH), max_size=12).map("".join))
def test_fuzz_latexish_never_raises(response, gold):
    with does_not_hang():
        r1 = verify.reward(rf"\boxed{{{response}}}", gold)
        r2 = verify.reward(response, gold)
        eq = verify.is_equivalent(response, gold)
    assert r1 in (0.0, 1.0) and r2 in (0.0, 1.0) and eq in (True, False)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80), st.text(max_size=20))
def test_fuzz_arbitrary_text_never_raises(response, gold):
    assert verify.reward(response, gold) in (0.0, 1.0)
    assert verify.is_equivalent(response, gold) in (True, False)


def test_gold_parse_is_cached():
    verify._parse_cached.cache_clear()
    for _ in range(5):
        verify.reward(r"\boxed{\frac{3}{7}+x}", "x + 3/7")
    info = verify._parse_cached.cache_info()
    assert info.misses == 2 and info.hits == 8


# ----------------------------------------------------------------------------------------------------------------
# batch_reward

def test_batch_reward_in_process_matches_reward():
    rng = random.Random(0)
    pairs = [(rf"\boxed{{{rng.randint(0, 5)}}}", str(rng.randint(0, 5))) for _ in range(40)]
    pairs += [(r"\boxed{\frac{1}{2}}", "0.5"), ("no answer", "1"), (r"\boxed{100000!}", "1")]
    responses, golds = zip(*pairs)
    assert verify.batch_reward(responses, golds, workers=0) == [verify.reward(r, g) for r, g in pairs]


def test_batch_reward_workers_preserve_order():
    # \frac{2i}{4} against a decimal needs sympy, so every check goes to a worker (none takes the quick path).
    responses = [rf"\boxed{{\frac{{{2 * i}}}{{4}}}}" for i in range(30)]
    golds = [str(i / 2 if i % 3 else i / 2 + 1) for i in range(30)]
    assert all(verify._quick_reward(r, g) is None for r, g in zip(responses, golds))
    expected = [0.0 if i % 3 == 0 else 1.0 for i in range(30)]
    assert verify.batch_reward(responses, golds, workers=2) == expected


def test_quick_path_agrees_with_reward():
    # batch_reward decides plain-number checks in the parent; those verdicts must be reward's verdicts.
    from test_verify_cases import CASES, REWARD_CASES
    pairs = [(rf"\boxed{{{p}}}", g) for p, g, _, _ in CASES] + [(r, g) for r, g, _, _ in REWARD_CASES]
    pairs += [(rf"\boxed{{{p}}}", g) for p, g, _ in EQUIV]
    decided = 0
    for r, g in pairs:
        quick = verify._quick_reward(r, g)
        if quick is not None:
            decided += 1
            assert quick == verify.reward(r, g), (r, g)
    assert decided > 100


def test_batch_reward_timeout_scores_zero_and_replaces_worker():
    # A deadline of a microsecond is always missed: every check is killed and scores 0 (the true verdict is 1).
    responses = [r"\boxed{\sqrt{3+2\sqrt2}}"] * 3
    golds = [r"1+\sqrt2"] * 3
    assert verify.batch_reward(responses, golds, timeout=1e-6, workers=2) == [0.0, 0.0, 0.0]
    # The killed workers were replaced: the pool still answers correctly afterwards.
    assert verify.batch_reward(responses, golds, timeout=30.0, workers=2) == [1.0, 1.0, 1.0]
    assert all(w.process.is_alive() for w in verify._POOL)


def test_batch_reward_argument_errors():
    with pytest.raises(ValueError, match="2 responses but 1 golds"):
        verify.batch_reward(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="timeout must be a positive"):
        verify.batch_reward(["a"], ["a"], timeout=0)
    with pytest.raises(ValueError, match="workers must be None or an int >= 0"):
        verify.batch_reward(["a"], ["a"], workers=-1)
    assert verify.batch_reward([], [], workers=2) == []


# ----------------------------------------------------------------------------------------------------------------
# Command line

def _cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "verify.py"), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_cli_explains_a_match():
    out = _cli(r"so \boxed{\frac{1}{2}}", "#### 0.5")
    assert out.returncode == 0, out.stderr
    assert r"response answer: \frac{1}{2}" in out.stdout
    assert "gold answer:     0.5" in out.stdout
    assert "EQUIVALENT (reward 1.0)" in out.stdout and "why:" in out.stdout


def test_cli_explains_a_guarded_answer_and_a_missing_one():
    out = _cli(r"\boxed{9^{9^{9^{9}}}}", "1")
    assert "NOT EQUIVALENT (reward 0.0)" in out.stdout and "safety bound" in out.stdout
    assert out.returncode == 1
    out = _cli("42", "42")
    assert "no answer in the response" in out.stdout
    assert "would be True" in out.stdout
    assert out.returncode == 1                      # no answer: not equivalent
    out = _cli("42", "42", "--fallback", "last")    # the lenient mode reads the bare number
    assert "EQUIVALENT (reward 1.0)" in out.stdout and out.returncode == 0


def test_cli_exit_status_is_usable_in_scripts():
    # 0 when equivalent, 1 when not (a shell `if python verify.py ...; then` must not take a wrong answer).
    assert _cli(r"\boxed{41}", "42").returncode == 1
    assert _cli(r"Answer: $\$42$", "#### 42").returncode == 0
    assert _cli("x = 2+2 = 5", "5").returncode == 1
    assert _cli("a", "b", "--fallback", "nope").returncode == 2          # usage error, from argparse


# ----------------------------------------------------------------------------------------------------------------
# The in-process time limit (tests/test_verify_fuzz.py checks the bound on fuzzed answers in killable children)

def test_time_limit_stops_a_slow_check_and_leaves_no_stray_exception(monkeypatch):
    slow = r"\sqrt[3]{9-\sqrt{\log_{11}{\sqrt[8]{i}}}}"     # 3.3 s of sympy without the time limit
    monkeypatch.setattr(verify, "TIME_LIMIT_S", 0.05)
    for call in (lambda: verify.is_equivalent(slow, "5"), lambda: verify.reward(rf"\boxed{{{slow}}}", "5")):
        start = time.perf_counter()
        assert call() in (False, 0.0)                          # out of time: not a success
        assert time.perf_counter() - start < 0.5
    monkeypatch.setattr(verify, "TIME_LIMIT_S", 30.0)
    verify._parse_cached.cache_clear()
    assert verify.is_equivalent(r"\sqrt{3+2\sqrt2}", r"1+\sqrt2") is True   # the next checks are unaffected
    deadline = time.perf_counter() + 0.3                     # a fired deadline never lands later in caller code
    while time.perf_counter() < deadline:
        sum(range(1000))
    assert not verify._WATCH_ENTRIES


def test_time_limit_works_in_a_non_main_thread(monkeypatch):
    # Signals only reach the main thread; the watchdog raises in whichever thread runs the check.
    import threading
    monkeypatch.setattr(verify, "TIME_LIMIT_S", 0.2)
    out = {}

    def busy():
        def spin():
            end = time.perf_counter() + 30
            while time.perf_counter() < end:
                pass
            return "finished"
        t = time.perf_counter()
        out["result"] = verify._bounded("stopped", spin)
        out["seconds"] = time.perf_counter() - t

    threads = [threading.Thread(target=busy) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(HANG_GUARD_S)
    assert not any(th.is_alive() for th in threads)
    assert out["result"] == "stopped" and out["seconds"] < 1.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_time_limit_works_in_a_forked_child():
    # The child gets a fresh watchdog (the parent's thread does not survive a fork). Run in a fresh interpreter, so
    # the fork happens in a process without the test session's threads.
    script = (
        "import os, sys, time\n"
        "import verify\n"
        "assert verify.is_equivalent('x^2', 'x*x')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    t = time.perf_counter()\n"
        "    ok = verify.is_equivalent(r'\\sqrt[3]{9-\\sqrt{\\log_{11}{\\sqrt[8]{i}}}}', '5') is False\n"
        "    os._exit(0 if ok and time.perf_counter() - t < 1.5 else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_time_limit_never_interrupts_the_import_system():
    # An exception landing inside importlib would leave a module lock taken (a later import deadlocks), so the
    # watchdog waits while the thread runs import-system code.
    import threading
    namespace = {}
    exec(compile("def spin(flag):\n    while not flag:\n        pass\n", "<frozen importlib._bootstrap>", "exec"),
         namespace)
    for spin, expected in [(namespace["spin"], False), (lambda flag: [0 for _ in iter(lambda: bool(flag), True)],
                                                         True)]:
        flag = []
        th = threading.Thread(target=verify._bounded, args=(None, spin, flag))
        th.start()
        time.sleep(0.05)
        try:
            assert verify._interruptible(th.ident) is expected
        finally:
            flag.append(1)
            th.join(HANG_GUARD_S)


def test_time_limit_never_lands_in_a_gc_callback():
    # Python prints and drops an exception raised inside a garbage-collector callback (hypothesis installs one), so
    # a deadline that fired there would be lost and the check would run on: the watchdog waits until it returns.
    import gc
    import threading
    seen = []

    def callback(phase, info):
        if phase == "start":
            seen.append(verify._interruptible(threading.get_ident()))
    gc.callbacks.append(callback)
    try:
        verify._bounded(None, gc.collect)
    finally:
        gc.callbacks.remove(callback)
    assert seen and not any(seen)
    assert verify._bounded(None, lambda: verify._interruptible(threading.get_ident())) is True    # outside one


# ----------------------------------------------------------------------------------------------------------------
# The opt-in lenient fallback

def test_fallback_is_opt_in_and_validated():
    assert verify.FALLBACKS[0] == "none"
    text = "Adding the two parts gives 3 + 4 = 7."
    assert verify.reward(text, "7") == 0.0                                 # default: no box, no anchor, no reward
    assert verify.reward(text, "7", fallback="last") == 1.0
    assert verify.reward("So the sum is $\\frac{1}{2}$.", "0.5", fallback="last") == 1.0
    assert verify.reward("It is either 4 or 5.", "5", fallback="last") == 0.0       # a hedging sentence: nothing
    assert verify.reward("\\boxed{6}. Then 3 + 4 = 7.", "7", fallback="last") == 0.0  # a box still wins
    with pytest.raises(ValueError, match="fallback must be one of"):
        verify.reward("1", "1", fallback="lenient")
    with pytest.raises(ValueError, match="fallback must be one of"):
        verify.batch_reward(["1"], ["1"], fallback="lenient")


def test_fallback_through_batch_reward_workers():
    responses = ["Adding: 3 + 4 = 7.", r"We get $\frac{2}{4}$", "no number here", r"\boxed{8}"]
    golds = ["7", "0.5", "7", "8"]
    assert verify.batch_reward(responses, golds, workers=2) == [0.0, 0.0, 0.0, 1.0]
    assert verify.batch_reward(responses, golds, workers=2, fallback="last") == [1.0, 1.0, 0.0, 1.0]
    assert verify.batch_reward(responses, golds, workers=0, fallback="last") == [1.0, 1.0, 0.0, 1.0]
