"""The answer key for `verify.py`: each row is a verdict a careful grader of MATH / GSM8K / AIME / olympiad answers
would give.

Each row is `(pred, gold, expected, category)`. Rows use the answers models write and the golds MATH solutions and
GSM8K carry. Cases whose verdict a reasonable grader could dispute (unit conversions, `0.333` for `1/3`, a base-10
value for a base-2 gold, ...) are left out.

About 60% of rows are True (equivalences users expect) and 40% False (mostly near misses). The `adversarial` rows
are reward-hacking bait: hedges, lists for one gold, near misses that tolerant graders wave through, and inputs that
would hang a naive checker. A single false positive there is a hole the policy will find.

`CASES` grades `is_equivalent(pred, gold)` on bare answer strings, in blocks named by topic. `REWARD_CASES` grades
`reward(response, gold)` on full responses (boxed answers, `<think>` blocks, `#### 42`, "The final answer is",
MATH-solution golds with `\\boxed{}`, GSM8K golds with `####`). Both tables are plain data so
`benchmarks/bench_verify.py` can load them.
"""
import pytest

from conftest import within_time_limit


def _block(category, rows):
    """Attach a category to `(pred, gold, expected)` rows."""
    return [(pred, gold, expected, category) for pred, gold, expected in rows]


T, F = True, False

# --------------------------------------------------------------------------------------------------------------------
# is_equivalent(pred, gold) cases. Each block: (pred, gold, expected).
# --------------------------------------------------------------------------------------------------------------------

INTEGERS_DECIMALS = _block("integers_decimals", [
    ("42", "42", T),
    ("42.0", "42", T),
    ("42.00", "42", T),
    ("042", "42", T),
    ("+42", "42", T),
    ("3", "3.0", T),
    ("12.50", "12.5", T),
    (".5", "0.5", T),
    ("-7", "-7.0", T),
    ("0", "0.0", T),
    ("2.25", "2.250", T),
    ("0.05", "0.050", T),
    ("1000000", "1000000", T),
    ("123456789012345678901", "123456789012345678901.0", T),
    ("24", "42", F),
    ("42.1", "42", F),
    ("4.2", "42", F),
    ("420", "42", F),
    ("-42", "42", F),
    ("0.1", "0.01", F),
    ("1.2", "1.25", F),
    ("0.33", "0.3", F),
    ("2.49", "2.5", F),
    ("1001", "1000", F),
    ("0", "1", F),
    ("100", "10", F),
    ("123456789012345678901", "123456789012345678902", F),
])

DELIMITERS = _block("delimiters_wrappers", [
    ("$42$", "42", T),
    (r"\(42\)", "42", T),
    (r"\[ \frac{1}{2} \]", "0.5", T),
    ("42.", "42", T),
    (r"\left(\frac{1}{2}\right)", "0.5", T),
    (r"{\frac{1}{2}}", "1/2", T),
    (r"\displaystyle \frac{1}{2}", "1/2", T),
    (r"\ 42", "42", T),
    (r"$\frac{3}{4}$", "0.75", T),
    ("$43$", "42", F),
    (r"\(\frac{1}{3}\)", "0.5", F),
])

FRACTIONS = _block("fractions", [
    (r"\frac12", r"\frac{1}{2}", T),
    (r"\dfrac{1}{2}", r"\frac{1}{2}", T),
    (r"\tfrac{1}{2}", r"\frac{1}{2}", T),
    ("1/2", r"\frac{1}{2}", T),
    ("0.5", r"\frac{1}{2}", T),
    (r"\frac{2}{4}", r"\frac{1}{2}", T),
    (r"\frac{3}{4}", "0.75", T),
    ("3/4", r"\dfrac34", T),
    (r"\frac{-3}{4}", r"-\frac{3}{4}", T),
    (r"-\frac34", "-0.75", T),
    (r"\frac{10}{4}", r"\frac52", T),
    (r"\frac{1}{3}", r"\frac{2}{6}", T),
    (r"\dfrac{17}{25}", "0.68", T),
    (r"\frac{5}{1}", "5", T),
    (r"\cfrac{1}{2}", r"\frac12", T),
    ("(1)/(2)", r"\frac12", T),
    (r"\frac{1}{2}", "2^{-1}", T),
    (r"\frac{\frac{1}{2}}{3}", r"\frac16", T),
    (r"\frac{1}{2}+\frac{1}{3}", r"\frac{5}{6}", T),
    (r"\frac 1 2", r"\frac{1}{2}", T),
    (r"\frac{9}{16}", "0.5625", T),
    ("14/3", r"\frac{14}{3}", T),
    (r"\frac{1}{3}", r"\frac{1}{2}", F),
    (r"\frac{2}{1}", r"\frac{1}{2}", F),
    (r"\frac{3}{4}", r"\frac{4}{3}", F),
    (r"\frac{1}{2}", "0.05", F),
    ("1/2", "12", F),
    (r"\frac{5}{6}", r"\frac{6}{5}", F),
    (r"-\frac{1}{2}", r"\frac12", F),
    (r"\frac{11}{12}", r"\frac{12}{13}", F),
    (r"\frac{1}{2}+\frac{1}{3}", r"\frac{2}{5}", F),
    (r"\frac{14}{3}", r"\frac{13}{3}", F),
])

RADICALS = _block("radicals", [
    (r"\sqrt{12}", r"2\sqrt{3}", T),
    (r"2\sqrt3", r"2\sqrt{3}", T),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}", T),
    (r"\sqrt{3}/2", r"\frac{\sqrt{3}}{2}", T),
    (r"\frac{1}{2}\sqrt{3}", r"\frac{\sqrt{3}}{2}", T),
    (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}", T),
    (r"\frac{2}{\sqrt{2}}", r"\sqrt2", T),
    (r"\sqrt[3]{8}", "2", T),
    (r"\sqrt[3]{16}", r"2\sqrt[3]{2}", T),
    (r"\sqrt{18}", r"3\sqrt{2}", T),
    (r"\sqrt{8}", r"2\sqrt2", T),
    (r"2^{1/2}", r"\sqrt{2}", T),
    (r"\sqrt{\frac{2}{3}}", r"\frac{\sqrt{6}}{3}", T),
    (r"\sqrt{5+2\sqrt{6}}", r"\sqrt{2}+\sqrt{3}", T),
    (r"\sqrt{3}+1", r"1+\sqrt{3}", T),
    (r"\frac{1}{\sqrt{3}-1}", r"\frac{\sqrt{3}+1}{2}", T),
    (r"\sqrt{50}", r"5\sqrt{2}", T),
    (r"\sqrt{4}", "2", T),
    (r"3 \sqrt{5}", r"3\sqrt{5}", T),
    (r"\sqrt{2}\cdot\sqrt{3}", r"\sqrt{6}", T),
    (r"4\sqrt{2}", r"\sqrt{32}", T),
    (r"\frac{5\sqrt{2}}{2}", r"\frac{5}{\sqrt{2}}", T),
    ("sqrt(2)", r"\sqrt{2}", T),
    (r"\sqrt{2}", "sqrt(2)", T),
    (r"2\sqrt{3}", r"3\sqrt{2}", F),
    (r"\sqrt{3}", "3", F),
    (r"\sqrt{2}+\sqrt{3}", r"\sqrt{5}", F),
    (r"\sqrt{12}", r"3\sqrt{2}", F),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{2}}{2}", F),
    (r"\frac{\sqrt{3}}{2}", r"\frac{3}{2}", F),
    (r"\sqrt[3]{2}", r"\sqrt{2}", F),
    (r"\sqrt{2}", "2", F),
    (r"2\sqrt{2}", r"\sqrt{2}", F),
    (r"\sqrt{3}-1", r"1-\sqrt{3}", F),
    (r"\frac{1}{\sqrt{2}}", r"\sqrt{2}", F),
    (r"\sqrt{6}", r"\sqrt{5}", F),
    (r"1+\sqrt{2}", r"1+\sqrt{3}", F),
])

PI_E = _block("pi_e", [
    (r"2\pi", r"2 \pi", T),
    (r"\pi/2", r"\frac{\pi}{2}", T),
    (r"\frac{4\pi}{3}", r"\frac{4}{3}\pi", T),
    (r"\pi \cdot 2", r"2\pi", T),
    (r"\frac{\pi}{4}", r"0.25\pi", T),
    (r"e^{2}", "e^2", T),
    (r"e^{-1}", r"\frac{1}{e}", T),
    (r"\frac{\pi^2}{6}", r"\frac{1}{6}\pi^2", T),
    (r"9\pi - 18", r"9(\pi-2)", T),
    (r"16 - 4\pi", r"4(4-\pi)", T),
    (r"\mathrm{e}^3", "e^3", T),
    (r"36\pi", r"36 \pi", T),
    (r"\frac{22}{7}", r"\pi", F),
    (r"2\pi", r"\pi", F),
    (r"4\pi", r"4\pi^2", F),
    (r"\frac{\pi}{3}", r"\frac{\pi}{6}", F),
    (r"\pi + 1", r"\pi - 1", F),
    (r"e^2", r"2e", F),
    (r"9\pi", "9", F),
    (r"\frac{\pi}{2}", r"\frac{2}{\pi}", F),
])

PERCENT = _block("percent", [
    (r"10\%", "10", T),
    ("10", r"10\%", T),
    (r"12.5\%", "12.5", T),
    ("12.5 percent", r"12.5\%", T),
    (r"25\%", "25", T),
    (r"12.5\%", r"12.5 \%", T),
    (r"50 \%", "50", T),
    ("50%", "50", T),
    (r"33\frac{1}{3}\%", r"\frac{100}{3}", T),
    (r"12\%", r"12.5\%", F),
    (r"2.5\%", "25", F),
    (r"0.25\%", "25", F),
    ("1.25", "125", F),
    (r"20\%", "80", F),
])

UNITS_TEXT = _block("units_text", [
    (r"5\text{ cm}", "5", T),
    ("5", r"5\text{ cm}", T),
    (r"5 \text{cm}", r"5\text{ cm}", T),
    (r"\$18.90", "18.90", T),
    (r"\$18.90", "18.9", T),
    ("18.9", r"\$18.90", T),
    (r"18.90\text{ dollars}", r"\$18.90", T),
    (r"\$1,234.50", "1234.5", T),
    (r"12\text{ inches}", "12", T),
    (r"5\mbox{ cm}", "5", T),
    (r"5\mathrm{~cm}", "5", T),
    (r"20 \text{ miles per hour}", "20", T),
    (r"4\text{ hours}", "4", T),
    (r"5\text{ cm}^2", "5", T),
    (r"\text{5}", "5", T),
    (r"\textbf{5}", "5", T),
    (r"36 \text{ square units}", "36", T),
    (r"15\text{ cents}", "15", T),
    (r"6\text{ cm}", r"5\text{ cm}", F),
    (r"\$19.80", r"\$18.90", F),
    (r"5\text{ cm}", "6", F),
    (r"\$18", r"\$18.90", F),
    (r"13\text{ inches}", "12", F),
    (r"\$1,234.05", "1234.5", F),
])

DEGREES = _block("degrees", [
    (r"30^\circ", "30", T),
    ("30°", "30", T),
    (r"30^{\circ}", r"30^\circ", T),
    ("30", r"30^\circ", T),
    (r"30\text{ degrees}", "30", T),
    (r"150^\circ", "150", T),
    (r"45^{\circ}", "45°", T),
    (r"22.5^\circ", r"\frac{45}{2}", T),
    (r"120 ^\circ", "120", T),
    (r"45^\circ", r"30^\circ", F),
    (r"60^\circ", "30", F),
    (r"150^\circ", "30", F),
    (r"36^\circ", "63", F),
])

THOUSANDS = _block("thousands_separators", [
    ("1,000", "1000", T),
    ("1{,}000", "1000", T),
    (r"12\,345", "12345", T),
    ("1,000,000", "1000000", T),
    (r"1\,000\,000", "10^6", T),
    ("1000000", "1,000,000", T),
    ("12,345.67", "12345.67", T),
    ("1{,}234{,}567", "1234567", T),
    ("2,016", "2016", T),
    ("1,000", "100", F),
    ("10,000", "1000", F),
    ("1,001", "1000", F),
    ("12{,}345", "12354", F),
    ("1,000,000", "100000", F),
])

SCIENTIFIC = _block("scientific_notation", [
    (r"3.2\times10^5", "320000", T),
    ("3.2e5", "320000", T),
    (r"3.2 \times 10^{5}", r"3.2\times10^5", T),
    (r"1.5\cdot 10^{-3}", "0.0015", T),
    ("1e-3", "0.001", T),
    (r"6.02\times 10^{23}", r"6.02 \times 10^{23}", T),
    (r"10^{3}", "1000", T),
    (r"2.5 \times 10^{-2}", r"\frac{1}{40}", T),
    ("320000", r"3.2 \times 10^5", T),
    ("1.2E4", "12000", T),
    (r"3.2\times10^6", r"3.2\times10^5", F),
    (r"3.2\times10^{-5}", r"3.2\times10^5", F),
    ("3.2e5", "32000", F),
    (r"2.3\times10^5", r"3.2\times10^5", F),
    (r"10^{3}", "100", F),
])

REPEATING = _block("repeating_decimals", [
    (r"0.\overline{3}", r"\frac{1}{3}", T),
    (r"0.\overline{12}", r"\frac{4}{33}", T),
    (r"0.1\overline{6}", r"\frac{1}{6}", T),
    (r"0.\overline{9}", "1", T),
    (r"0.\overline{142857}", r"\frac{1}{7}", T),
    (r"1.\overline{27}", r"\frac{14}{11}", T),
    (r"\frac{1}{3}", r"0.\overline{3}", T),
    (r"0.\overline{36}", r"\frac{4}{11}", T),
    (r"2.\overline{6}", r"\frac{8}{3}", T),
    ("0.3", r"0.\overline{3}", F),
    (r"0.\overline{12}", r"\frac{12}{100}", F),
    (r"0.\overline{16}", r"\frac{1}{6}", F),
    (r"0.\overline{6}", r"\frac{1}{6}", F),
])

NEGATIVES = _block("negatives_unicode_minus", [
    ("\u22125", "-5", T),
    ("- 5", "-5", T),
    (r"-\frac{1}{2}", r"\frac{-1}{2}", T),
    (r"\frac{1}{-2}", r"-\frac12", T),
    ("\u22120.5", r"-\frac{1}{2}", T),
    ("x\u22121", "x-1", T),
    ("-(3)", "-3", T),
    ("(-5)", "-5", T),
    ("-3", "\u22123", T),
    ("5", "-5", F),
    ("-5", "5", F),
    ("\u22125", "5", F),
    (r"-\frac{1}{2}", r"\frac{1}{2}", F),
    ("-0.5", "0.5", F),
    ("1-x", "x-1", F),
])

INTERVALS = _block("intervals", [
    ("[2,5)", "[2, 5)", T),
    (r"(-\infty, 3]", r"(-\infty,3]", T),
    (r"\left[2, 5\right)", "[2,5)", T),
    (r"[0,\infty)", r"[0, \infty)", T),
    (r"(\frac{1}{2}, 3]", r"(0.5, 3]", T),
    (r"(-\infty, -2)", r"(-\infty,-2)", T),
    (r"[-1, 1]", r"\left[ -1, 1 \right]", T),
    (r"(2, +\infty)", r"(2, \infty)", T),
    (r"(-\infty, \infty)", r"\mathbb{R}", T),
    (r"[\sqrt{2}, 2]", r"[\sqrt2, 2]", T),
    (r"(-\infty,\tfrac{3}{2})", r"\left(-\infty, \frac{3}{2}\right)", T),
    ("(2,5)", "[2,5)", F),
    ("[2,5]", "[2,5)", F),
    ("[2,5)", "(2,5]", F),
    (r"(-\infty, 3)", r"(-\infty, 3]", F),
    (r"(3, \infty)", r"(-\infty, 3)", F),
    ("[2, 6)", "[2,5)", F),
    ("[1,2]", r"\{1,2\}", F),
    (r"\{1,2\}", "[1,2]", F),
    (r"(-\infty, -3]", r"(-\infty, 3]", F),
    (r"(0, \infty)", r"[0, \infty)", F),
])

UNIONS = _block("unions", [
    (r"(-\infty, 3] \cup (5, \infty)", r"(-\infty,3]\cup(5,\infty)", T),
    (r"(5, \infty) \cup (-\infty, 3]", r"(-\infty, 3] \cup (5, \infty)", T),
    (r"(-\infty,-1)\cup(1,\infty)", r"(-\infty, -1) \cup (1, \infty)", T),
    (r"[-2,0)\cup(0,2]", r"[-2, 0) \cup (0, 2]", T),
    (r"\left(-\infty, -\frac{1}{2}\right) \cup \left(\frac{1}{2}, \infty\right)", r"(-\infty,-0.5)\cup(0.5,\infty)", T),
    (r"(-\infty,-1)\cup[1,\infty)", r"(-\infty,-1)\cup(1,\infty)", F),
    (r"(-\infty, 3)", r"(-\infty, 3] \cup (5, \infty)", F),
    (r"(-\infty, 3] \cap (5, \infty)", r"(-\infty, 3] \cup (5, \infty)", F),
    (r"(-\infty,3]\cup[5,\infty)", r"(-\infty,3]\cup(5,\infty)", F),
    (r"(-\infty, 2] \cup (5, \infty)", r"(-\infty,3]\cup(5,\infty)", F),
    (r"(5,\infty)", r"(-\infty,3]\cup(5,\infty)", F),
])

SETS_TUPLES = _block("sets_tuples", [
    (r"\{2,1\}", r"\{1,2\}", T),
    (r"\{1, 2\}", r"\{1,2\}", T),
    (r"\{3,1,2\}", r"\{1,2,3\}", T),
    (r"\left\{ -1, 1 \right\}", r"\{1,-1\}", T),
    (r"\{\frac{1}{2}, 2\}", r"\{2, 0.5\}", T),
    ("2, 1", "1, 2", T),
    ("-2, 3", "3, -2", T),
    ("1,2", "1, 2", T),
    (r"\{1,2\}", "1, 2", T),
    ("(1,2)", "(1, 2)", T),
    (r"\left(1, 2\right)", "(1,2)", T),
    (r"(\frac12, 3)", "(0.5, 3)", T),
    ("(1,-2,3)", "(1, -2, 3)", T),
    (r"(2\sqrt{2}, \frac{\pi}{4})", r"\left( 2 \sqrt{2}, \frac{\pi}{4} \right)", T),
    (r"\emptyset", r"\varnothing", T),
    (r"\{\}", r"\emptyset", T),
    ("(2,1)", "(1,2)", F),
    (r"\{1,2,3\}", r"\{1,2\}", F),
    (r"\{1,3\}", r"\{1,2\}", F),
    ("(1,2,3)", "(1,2)", F),
    ("(1,2)", "(1,2,3)", F),
    ("(3,1,2)", "(1,2,3)", F),
    ("1", "1, 2", F),
    ("1, 2, 3", "1, 2", F),
    (r"\emptyset", r"\{0\}", F),
    ("0", r"\emptyset", F),
    ("(-2, 5)", "(5, -2)", F),
    (r"(2\sqrt{2}, \frac{\pi}{4})", r"(2\sqrt{2}, \frac{3\pi}{4})", F),
])

PLUS_MINUS = _block("plus_minus", [
    (r"\pm 2", r"\{2,-2\}", T),
    (r"\{-2, 2\}", r"\pm 2", T),
    (r"\pm2", "2, -2", T),
    ("2, -2", r"\pm 2", T),
    ("-2, 2", r"\pm 2", T),
    (r"\pm\sqrt{3}", r"\sqrt{3}, -\sqrt{3}", T),
    (r"1 \pm \sqrt{2}", r"1+\sqrt{2}, 1-\sqrt{2}", T),
    (r"\pm \frac{1}{2}", r"\frac12, -\frac12", T),
    ("2", r"\pm 2", F),
    ("-2", r"\pm 2", F),
    (r"\pm 3", r"\pm 2", F),
    (r"\pm 2", "2", F),
    (r"1 \pm \sqrt{3}", r"1 \pm \sqrt{2}", F),
    (r"\pm 2", r"\{2, -2, 0\}", F),
])

EQUATIONS = _block("equations", [
    ("x=5", "5", T),
    ("5", "x=5", T),
    ("x = 5", "x=5", T),
    ("k=3", "3", T),
    ("y = 3 + 2x", "y = 2x + 3", T),
    ("y=2x+3", "y = 2x+3", T),
    ("x^2+y^2=25", "y^2 + x^2 = 25", T),
    (r"x = \frac{1}{2}", "0.5", T),
    ("a = 7", "7", T),
    ("x=6", "x=5", F),
    ("x=5", "6", F),
    ("y=2x-3", "y=2x+3", F),
    ("x^2+y^2=5", "x^2+y^2=25", F),
    ("y = 3x + 2", "y = 2x + 3", F),
])

INEQUALITIES = _block("inequalities", [
    (r"x \le 3", r"(-\infty, 3]", T),
    (r"(-\infty, 3]", r"x \leq 3", T),
    ("x > 2", r"(2, \infty)", T),
    (r"(2,\infty)", "x>2", T),
    (r"x \geq 0", r"[0, \infty)", T),
    (r"-2 < x \le 3", "(-2, 3]", T),
    ("(-2,3]", r"-2<x\leq 3", T),
    (r"x \leq 3", r"x \le 3", T),
    (r"3 \ge x", r"x \le 3", T),
    (r"x<\frac{1}{2}", r"(-\infty, 0.5)", T),
    (r"1 \le x \le 4", "[1,4]", T),
    ("x >= 2", r"x \ge 2", T),
    ("x < 3", r"x \le 3", F),
    (r"x \le 3", r"(-\infty, 3)", F),
    ("x > 2", r"[2, \infty)", F),
    (r"x \ge 3", r"(3,\infty)", F),
    (r"y \le 3", r"x \le 3", F),
    ("x > 3", "x < 3", F),
    (r"-2 \le x \le 3", "(-2, 3]", F),
    (r"x \le -3", r"(-\infty, 3]", F),
])

EXPRESSIONS = _block("expressions", [
    ("(x+1)^2", "x^2+2x+1", T),
    ("x^2+2x+1", "(x+1)^2", T),
    ("(x-1)(x+1)", "x^2-1", T),
    ("3+2x", "2x+3", T),
    (r"1+\frac{1}{x}", r"\frac{x+1}{x}", T),
    ("2(x+3)", "2x+6", T),
    ("x^{2}-5x+6", "(x-2)(x-3)", T),
    ("a^2b", "b a^2", T),
    (r"x \cdot y", "xy", T),
    ("2x^3 - 6x^2", "2x^2(x-3)", T),
    (r"\frac{n(n+1)}{2}", r"\frac{n^2+n}{2}", T),
    ("(a+b)^3", "a^3+3a^2b+3ab^2+b^3", T),
    ("4x^2-9", "(2x-3)(2x+3)", T),
    ("x^2 + 7x + 10", "(x+5)(x+2)", T),
    ("6x^2+11x-35", "(3x-5)(2x+7)", T),
    (r"\sin^2 x + \cos^2 x", "1", T),
    (r"2\sin x\cos x", r"\sin 2x", T),
    (r"\frac{1}{x^2}", "x^{-2}", T),
    ("-x+5", "5-x", T),
    ("2+2", "4", T),
    ("x^{10}+10x^9+45x^8+120x^7+210x^6+252x^5+210x^4+120x^3+45x^2+10x+1", "(x+1)^{10}", T),
    ("(x-1)^2", "x^2+2x+1", F),
    ("x^2+2x+2", "x^2+2x+1", F),
    ("x^3", "x^2", F),
    ("2x+3", "3x+2", F),
    ("(x+1)(x-2)", "x^2-x+2", F),
    ("x^2-1", "(x-1)^2", F),
    (r"\frac{x}{x+1}", r"\frac{x+1}{x}", F),
    ("n(n+1)", r"\frac{n(n+1)}{2}", F),
    ("a^2+b^2", "(a+b)^2", F),
    ("x^2 y", "x y^2", F),
    ("m+1", "n+1", F),
    ("2+2", "5", F),
    (r"\sin^2 x - \cos^2 x", "1", F),
])

MATRICES = _block("matrices_vectors", [
    (r"\begin{bmatrix} 1 \\ 2 \end{bmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", T),
    ("(1,2)", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", T),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", "(1, 2)", T),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", T),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", T),
    (r"\begin{pmatrix} 1/2 \\ 0.5 \end{pmatrix}", r"\begin{pmatrix} \frac12 \\ \frac12 \end{pmatrix}", T),
    (r"\begin{pmatrix} -\dfrac{1}{3} \\ \dfrac{2}{3} \\ 2 \end{pmatrix}", r"\begin{pmatrix} -1/3 \\ 2/3 \\ 2 \end{pmatrix}", T),
    (r"\begin{pmatrix} \sqrt{4} \\ 1 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}", T),
    (r"\begin{pmatrix} 2 & 0 \\ 0 & 2 \end{pmatrix}", r"\begin{bmatrix} 2 & 0 \\ 0 & 2.0 \end{bmatrix}", T),
    (r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", F),
    (r"\begin{pmatrix} 1 & 3 \\ 2 & 4 \end{pmatrix}", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", F),
    (r"\begin{pmatrix} 1 \\ 2 \\ 0 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", F),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 5 \end{pmatrix}", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", F),
    ("(2,1)", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", F),
    (r"\begin{pmatrix} -1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", F),
])

COMPLEX = _block("complex_numbers", [
    ("4i+3", "3+4i", T),
    ("3 + 4i", "3+4i", T),
    (r"\frac{1+i\sqrt{3}}{2}", r"\frac{1}{2}+\frac{\sqrt{3}}{2}i", T),
    ("2i", "(1+i)^2", T),
    ("-1", "i^2", T),
    ("-i", r"\frac{1}{i}", T),
    ("1-i", r"\frac{2}{1+i}", T),
    ("3-4i", "3 - 4 i", T),
    (r"\frac{3}{5} - \frac{4}{5}i", r"\frac{3-4i}{5}", T),
    ("3-4i", "3+4i", F),
    ("4+3i", "3+4i", F),
    ("3", "3+4i", F),
    ("-2i", "2i", F),
    ("i", "1", F),
    (r"\frac{1-i\sqrt{3}}{2}", r"\frac{1}{2}+\frac{\sqrt{3}}{2}i", F),
])

BASES = _block("base_subscripts", [
    ("101_2", "101_2", T),
    ("101_{2}", "101_2", T),
    ("101", "101_2", T),
    ("2013_4", "2013_{4}", T),
    ("1011_{2}", "1011_2", T),
    ("212_{3}", "212_3", T),
    ("110_2", "101_2", F),
    ("1011_2", "101_2", F),
    ("2013_5", "2013_4", F),
    ("100_2", "101_2", F),
    ("1011_2", "1101_2", F),
])

MIXED_NUMBERS = _block("mixed_numbers", [
    (r"2\frac12", r"\frac{5}{2}", T),
    (r"2\frac{1}{2}", "2.5", T),
    (r"\frac{5}{2}", r"2\frac{1}{2}", T),
    ("2.5", r"2\frac{1}{2}", T),
    (r"3\frac{3}{4}", r"\frac{15}{4}", T),
    (r"1\tfrac{1}{3}", r"\frac{4}{3}", T),
    (r"2 \frac{1}{2}", r"\frac52", T),
    (r"-1\frac{1}{2}", "-1.5", T),
    (r"7\dfrac{1}{8}", "7.125", T),
    (r"\frac{1}{2}", r"2\frac{1}{2}", F),
    (r"1\frac{1}{2}", r"2\frac12", F),
    ("1", r"2\frac{1}{2}", F),
    (r"2\frac{1}{2}", "1", F),
    (r"3\frac{1}{4}", r"\frac{3}{4}", F),
    (r"\frac{3}{4}", r"3\frac14", F),
])

MULTIPLE_CHOICE = _block("multiple_choice", [
    (r"\text{(C)}", "C", T),
    ("C", r"\text{(C)}", T),
    ("(C)", r"\text{(C)}", T),
    (r"\textbf{(C)}", r"\text{(C)}", T),
    (r"\textbf{(C) }", "C", T),
    ("(B)", "B", T),
    (r"\mathrm{(D)}", r"\text{(D)}", T),
    ("E", r"\textbf{(E)}", T),
    ("D", r"\text{(C)}", F),
    ("(B)", r"\text{(C)}", F),
    (r"\text{(A)}", "B", F),
    (r"\textbf{(E)}", r"\textbf{(A)}", F),
])

TEXT_ANSWERS = _block("text_answers", [
    (r"\text{Monday}", "Monday", T),
    ("Monday", r"\text{Monday}", T),
    (r"\text{monday}", r"\text{Monday}", T),
    (r"\text{even}", r"\text{even}", T),
    (r"\textbf{odd}", r"\text{odd}", T),
    (r"\text{Yes}", r"\text{yes}", T),
    (r"\text{ Monday }", r"\text{Monday}", T),
    (r"\mbox{Sunday}", "Sunday", T),
    (r"\text{Tuesday}", r"\text{Monday}", F),
    (r"\text{odd}", r"\text{even}", F),
    (r"\text{No}", r"\text{Yes}", F),
    (r"\text{even}", r"\text{odd}", F),
    (r"\text{both}", r"\text{neither}", F),
])

FACTORIAL_BINOMIAL = _block("factorial_binomial", [
    ("5!", "120", T),
    (r"\binom{5}{2}", "10", T),
    (r"\dbinom{6}{3}", "20", T),
    (r"{5 \choose 2}", "10", T),
    (r"\frac{10!}{8!}", "90", T),
    (r"\binom{10}{3}", "120", T),
    ("5!", "5", F),
    (r"\binom{5}{2}", "20", F),
    ("6!", "120", F),
    (r"\binom{6}{3}", "15", F),
])

LOG_TRIG = _block("log_trig_exact", [
    (r"\log_2 8", "3", T),
    (r"\sin\frac{\pi}{6}", r"\frac12", T),
    (r"\cos(\pi)", "-1", T),
    (r"\log_3 81", "4", T),
    (r"\tan\frac{\pi}{4}", "1", T),
    (r"\log_2 9", "3", F),
    (r"\sin\frac{\pi}{3}", r"\frac12", F),
    (r"\cos 0", "0", F),
])

POWERS = _block("powers_big_numbers", [
    ("2^{10}", "1024", T),
    ("1024", "2^{10}", T),
    ("2^{-99}", r"\frac{1}{2^{99}}", T),
    ("3^{2}", "9", T),
    ("2^{100}", "1267650600228229401496703205376", T),
    ("(-2)^3", "-8", T),
    ("8^{2/3}", "4", T),
    (r"4^{\frac{1}{2}}", "2", T),
    ("1000000000000000000000", "10^{21}", T),
    (r"+\infty", r"\infty", T),
    ("2^{10}", "1000", F),
    ("-2^2", "4", F),
    ("2^{99}", "2^{100}", F),
    ("3^2", "6", F),
    ("2^{100}+1", "2^{100}", F),
    ("10^{30}+1", "10^{30}", F),
    ("1267650600228229401496703205377", "2^{100}", F),
    (r"-\infty", r"\infty", F),
    (r"\infty", "1000000", F),
])

# Reward-hacking bait. Every row is False: a single True here is a hole the policy will find and exploit.
ADVERSARIAL = _block("adversarial", [
    ("1, 2, 3", "2", F),
    (r"4, \text{ or maybe } 5", "4", F),
    ("4 or 5", "4", F),
    (r"2 \text{ or } 3", "2", F),
    (r"2 \text{ or } 3", "3", F),
    (r"2 \text{ and } 3", "2", F),
    ("7.9999", "8", F),
    ("7.99999999", "8", F),
    ("8.0001", "8", F),
    ("0.999999999", "1", F),
    (r"\frac{1}{2^{98}}", r"\frac{1}{2^{99}}", F),
    ("2^{-98}", "2^{-99}", F),
    ("0.25", "25", F),
    ("25", "0.25", F),
    ("3.14", r"\pi", F),
    ("2.718", "e", F),
    ("y=5", "x=5", F),
    (r"x = 5 \text{ or } x = 6", "5", F),
    (r"5 \pm 1", "5", F),
    (r"\{4, 5\}", "4", F),
    ("(4, 5)", "4", F),
    ("[4, 5]", "4", F),
    (r"x \in \{4, 5\}", "4", F),
    ("A, C", "C", F),
    (r"\text{(A) or (C)}", r"\text{(C)}", F),
    (r"\text{Monday or Tuesday}", r"\text{Monday}", F),
    (r"1 - 10^{-15}", "1", F),
    (r"10^{-20}", "0", F),
    ("x^{10}+10x^9+45x^8+120x^7+210x^6+252x^5+210x^4+120x^3+45x^2+10x+2", "(x+1)^{10}", F),
    ("", "0", F),
    (" ", "5", F),
    (r"\text{I don't know}", "5", F),
    ("x", "5", F),
    ("5x", "5", F),
    (r"\infty", "5", F),
    ("None", "0", F),
    (r"\frac{1}{0}", "0", F),
    ("0/0", "0", F),
    (r"\frac{1}{2} \text{ or } \frac{1}{3}", r"\frac12", F),
    (r"2, -2", "2", F),
])

# Inputs that would hang or crash a naive checker (power towers, huge factorials, huge literals, deep nesting,
# Python injection). Judged quickly: unequal unless the two strings are the same expression.
GUARDED = _block("guarded_pathological", [
    (r"9^{9^{9^{9}}}", "1", F),
    (r"2^{2^{2^{2^{2}}}}", "65536", F),
    (r"10^{10^{10}}", r"10^{10^{10}}+1", F),
    ("100000!", "0", F),
    ("1" + "0" * 50000, "1", F),
    ("(" * 5000 + "1" + ")" * 5000, "2", F),
    ("__import__('os').system('echo hacked')", "0", F),
    ("1e999999", "1", F),
    (r"9^{9^{9^{9}}}", r"9^{9^{9^{9}}}", T),
])

# --------------------------------------------------------------------------------------------------------------------
# Every category again, in other answers.
# --------------------------------------------------------------------------------------------------------------------

LEADING_ZEROS_NEAR_NUMBERS = _block("integers_decimals", [
    ("033", "33", T),
    ("0", "000", T),
    ("204", "240", F),
    ("999", "1000", F),
    (r"-\frac{7}{2}", "-3.5", T),
    (r"\frac{-7}{2}", "3.5", F),
    ("1.00000000000000000001", "1", F),
])

RADICAL_FRACTIONS = _block("radicals", [
    (r"\frac{3\sqrt{3}}{2}", r"\frac{3}{2}\sqrt{3}", T),
    (r"\frac{\sqrt{2}}{4}", r"\frac{1}{2\sqrt{2}}", T),
    (r"\frac{1}{4}", r"\frac{\sqrt{2}}{4}", F),
    (r"6\sqrt{6}", r"\sqrt{216}", T),
    (r"\sqrt{24}", r"2\sqrt{6}", T),
    (r"\sqrt{26}", r"2\sqrt{6}", F),
    (r"-6+4\sqrt3", r"4\sqrt{3}-6", T),
    (r"\frac{3}{2}+\frac{\sqrt5}{2}", r"\frac{3+\sqrt{5}}{2}", T),
    (r"\frac{3-\sqrt{5}}{2}", r"\frac{3+\sqrt{5}}{2}", F),
    (r"\frac{2}{\sqrt5-1}", r"\frac{1+\sqrt{5}}{2}", T),
    (r"\sqrt[4]{16}", "2", T),
    ("27^{2/3}", "9", T),
    (r"\left(\frac{1}{2}\right)^{3}", r"\frac18", T),
    (r"\frac{1}{2^{10}}", r"\frac{1}{1024}", T),
    (r"\frac{1}{1000}", r"\frac{1}{1024}", F),
    (r"\frac{1}{2^{10}}", r"\frac{1}{2^{11}}", F),
])

REPEATING_TO_FRACTIONS = _block("repeating_decimals", [
    (r"1.\overline{6}", r"\frac{5}{3}", T),
    (r"0.58\overline{3}", r"\frac{7}{12}", T),
    (r"0.\overline{2}", r"\frac{2}{9}", T),
    (r"0.\overline{2}", r"\frac{1}{5}", F),
])

POLYNOMIAL_FORMS = _block("expressions", [
    (r"\frac{1}{4}x^2", r"\frac{x^2}{4}", T),
    ("0.25x^2", r"\frac{x^2}{4}", T),
    ("1-2x+3x^2", "3x^2-2x+1", T),
    ("x^3-x", "x(x+1)(x-1)", T),
    ("x^3+x^2+x+1", "(x^2+1)(x+1)", T),
    ("x^3+x^2+x", "x^3+x^2+x+1", F),
    (r"\frac{2}{1-x}", r"\frac{2}{x-1}", F),
    (r"-\frac{2}{1-x}", r"\frac{2}{x-1}", T),
    (r"\frac{a}{2}+\frac{b}{2}", r"\frac{a+b}{2}", T),
    ("ba", "ab", T),
    (r"2\cdot 2^n", "2^{n+1}", T),
    ("n^2", "2^{n}", F),
    (r"\frac{1}{x}+1", r"\frac{1}{x+1}", F),
    ("x^2+y^2", "(x+y)^2", F),
    ("(x-y)(x+y)", "x^2-y^2", T),
    ("3x^2-12x+13", "3(x-2)^2+1", T),
    ("3x^2-12x+12", "3(x-2)^2+1", F),
    (r"\sqrt{x^2}+1", r"\sqrt{x^2+1}", F),
    ("f(x) = 2x+1", "2x+1", T),
])

LINES_AND_ROOTS = _block("equations", [
    (r"y = 3 - \frac{x}{2}", r"y = -\frac{1}{2}x + 3", T),
    (r"y = \frac{1}{2}x + 3", r"y = -\frac{1}{2}x + 3", F),
    ("x = -1", "-1", T),
    ("x=-1", "1", F),
    ("3y + 2x = 6", "2x + 3y = 6", T),
    ("2x+3y=5", "2x+3y=6", F),
    ("z = 4", "4", T),
])

ORDER_FREE_LISTS = _block("sets_tuples", [
    (r"\{1, 0, -1\}", r"\{-1, 0, 1\}", T),
    ("1, 0, -1", "-1, 0, 1", T),
    ("0, 1", "-1, 0, 1", F),
    ("3, 5, 7", "3, 5, 7, 9", F),
    (r"-\frac12, 1", r"1, -\frac{1}{2}", T),
    ("2, 0.5", r"\frac{1}{2}, 2", T),
    ("(0, 0)", "(0,0)", T),
    ("(-4, 3)", "(3, -4)", F),
    (r"\left(3, -4\right)", "(3,-4)", T),
    ("(1, 0.5)", r"(1, \frac{1}{2})", T),
    ("(3,4), (1,2)", "(1,2), (3,4)", T),
    ("(1,2)", "(1,2), (3,4)", F),
])

INTERVAL_ENDPOINTS = _block("intervals", [
    ("(-3,3)", "(-3, 3)", T),
    ("[-3,3]", "(-3, 3)", F),
    (r"1 \le x < 3", "[1, 3)", T),
    (r"1 < x \le 3", "[1, 3)", F),
    ("-1<x<1", "(-1,1)", T),
    (r"\left(4,6\right]", "(4, 6]", T),
])

MONEY_AND_SPEED_UNITS = _block("units_text", [
    ("4.5", r"\$4.50", T),
    (r"\$4.05", r"\$4.50", F),
    (r"4.50\text{ dollars}", "4.5", T),
    (r"25\text{ mph}", "25", T),
    (r"120 \text{ m}^2", "120", T),
    (r"9\text{ feet}", "9", T),
    (r"8\text{ feet}", "9", F),
    (r"7\,\text{kg}", "7", T),
    (r"\$1,000", "1000", T),
    ("2{,}500", "2500", T),
    ("2{,}500", "25000", F),
    ("18,000", "18000", T),
])

PERCENT_AND_DEGREE_SIGNS = _block("percent", [
    (r"15\%", "15", T),
    (r"15\%", "1.5", F),
    (r"37.5\%", "37.5", T),
]) + _block("degrees", [
    (r"72^\circ", "72", T),
    (r"108^\circ", r"72^\circ", F),
])

EXACT_BIG_INTEGERS = _block("powers_big_numbers", [
    ("2^{64}", "18446744073709551616", T),
    ("2^{64}-1", "18446744073709551616", F),
    ("10!", "3628800", T),
    ("10!", "362880", F),
    (r"\binom{20}{10}", "184756", T),
    ("3^{20}", "3486784401", T),
    ("3486784400", "3^{20}", F),
])

COMPLEX_FORMS = _block("complex_numbers", [
    ("2(1+i)", "2+2i", T),
    ("i-1", "-1+i", T),
    ("1-i", "-1+i", F),
    (r"\frac{1-i}{2}", r"\frac{1}{2} - \frac{1}{2}i", T),
    (r"e^{i\pi}", "-1", T),
    (r"\sqrt{-4}", "2i", T),
])

TRIG_OF_DEGREES = _block("log_trig_exact", [
    (r"\cos 60^\circ", r"\frac12", T),
    (r"\sin 45^\circ", r"\frac{\sqrt2}{2}", T),
    (r"\tan 60^\circ", r"\sqrt3", T),
    (r"\tan 30^\circ", r"\sqrt{3}", F),
    (r"\arctan 1", r"\frac{\pi}{4}", T),
    (r"\log_{10} 1000", "3", T),
    (r"\ln 1", "0", T),
    (r"\log_2 32", "5", T),
    (r"\log_2 32", "4", F),
    (r"\ln 4", r"2\ln 2", T),
    (r"\ln 3", r"\ln 2", F),
])

LETTERS_WORDS_BASES_MIXED = _block("multiple_choice", [
    ("A", "(A)", T),
    (r"\text{A}", r"\text{(A)}", T),
    ("B", "A", F),
    (r"\text{Thursday}", "Thursday", T),
    (r"\text{Friday}", r"\text{Thursday}", F),
    (r"\text{true}", r"\text{True}", T),
]) + _block("base_subscripts", [
    ("10110_{2}", "10110_2", T),
    ("1234_{5}", "1234_5", T),
    ("1243_5", "1234_5", F),
]) + _block("mixed_numbers", [
    (r"\frac{14}{3}", r"4\frac{2}{3}", T),
    (r"\frac{8}{3}", r"4\frac{2}{3}", F),
    ("5.25", r"5\frac{1}{4}", T),
])

COLUMN_VECTORS_MATRICES = _block("matrices_vectors", [
    ("(3,-1,2)", r"\begin{pmatrix} 3 \\ -1 \\ 2 \end{pmatrix}", T),
    ("(3,1,2)", r"\begin{pmatrix} 3 \\ -1 \\ 2 \end{pmatrix}", F),
    (r"\begin{bmatrix} 0 & -1 \\ 1 & 0 \end{bmatrix}", r"\begin{pmatrix} 0 & -1 \\ 1 & 0 \end{pmatrix}", T),
    (r"\begin{pmatrix} 0 & 1 \\ -1 & 0 \end{pmatrix}", r"\begin{pmatrix} 0 & -1 \\ 1 & 0 \end{pmatrix}", F),
    (r"\begin{pmatrix} 0.5 & \sqrt{3}/2 \\ -\sqrt{3}/2 & 0.5 \end{pmatrix}",
     r"\begin{pmatrix} \frac{1}{2} & \frac{\sqrt{3}}{2} \\ -\frac{\sqrt{3}}{2} & \frac{1}{2} \end{pmatrix}", T),
])

HEDGES_AND_LISTS = _block("adversarial", [
    ("2, 4", "4", F),
    (r"4 \text{ (or } 2\text{)}", "4", F),
    (r"\text{either } 3 \text{ or } 4", "4", F),
    ("x = 3, 4", "4", F),
    ("3.9999999999", "4", F),
    ("4.0000001", "4", F),
    (r"\frac{999}{1000}", "1", F),
    (r"\frac{1}{3^{50}}", r"\frac{1}{3^{51}}", F),
    ("2^{-50}", "0", F),
    ("10^{-100}", "0", F),
    ("1 + 10^{-30}", "1", F),
    ("12.5", "0.125", F),
    ("0.125", "12.5", F),
    ("1.41", r"\sqrt{2}", F),
    ("1.732", r"\sqrt{3}", F),
    ("a = 4", "b = 4", F),
    ("4x", "4", F),
    (r"\text{undefined}", "0", F),
    (r"4 \text{ or } -4", "4", F),
    (r"\pm 4", "4", F),
    ("1,2,3,4,5", "3", F),
    ("0", r"\text{(A)}", F),
    (r"\text{(A)}, \text{(B)}", r"\text{(A)}", F),
    ("AB", "A", F),
    ("x^2 + 2x + 1 + 10^{-12}", "(x+1)^2", F),
    (r"\frac{100000000000000000001}{100000000000000000000}", "1", F),
])

# --------------------------------------------------------------------------------------------------------------------
# Harder but unambiguous: competition identities, vectors, equations of curves.
# --------------------------------------------------------------------------------------------------------------------

COMPETITION_IDENTITIES = _block("radicals", [
    (r"\frac{1}{\sqrt{3}}", r"\frac{\sqrt{3}}{3}", T),
    (r"\sqrt{\frac{2}{5}}", r"\dfrac{\sqrt{10}}{5}", T),
    (r"\frac{1}{2}(1+\sqrt{5})", r"\frac{1+\sqrt5}{2}", T),
    (r"2^{\frac{3}{2}}", r"2\sqrt{2}", T),
    (r"\sqrt{128}", r"8\sqrt{2}", T),
    (r"\sqrt{2}-1", r"\frac{1}{\sqrt{2}+1}", T),
    (r"\sqrt{3-2\sqrt{2}}", r"\sqrt{2}-1", T),
    (r"1-\sqrt{2}", r"\sqrt{3-2\sqrt{2}}", F),
    (r"\sqrt[3]{-8}", "-2", T),
    (r"|-5|", "5", T),
    (r"\frac{0}{5}", "0", T),
    (r"5 \times 10^{-1}", r"\frac12", T),
    ("1.50", r"\frac{3}{2}", T),
    ("1.5", r"\frac{2}{3}", F),
    (r"3\frac{1}{7}", r"\frac{22}{7}", T),
    (r"-3\frac{1}{7}", r"-\frac{22}{7}", T),
    (r"6.0 \times 10^{23}", r"6 \times 10^{23}", T),
]) + _block("pi_e", [
    (r"1+\frac{\pi}{2}", r"\frac{\pi}{2}+1", T),
    (r"\frac{\pi+2}{2}", r"\frac{\pi}{2}+1", T),
    (r"\frac{\pi}{2}+2", r"\frac{\pi}{2}+1", F),
]) + _block("log_trig_exact", [
    (r"\cos 15^\circ", r"\frac{\sqrt{2}+\sqrt{6}}{4}", T),
    (r"\frac{\sqrt{6}-\sqrt{2}}{4}", r"\sin 15^\circ", T),
    (r"\frac{\sqrt{6}-\sqrt{2}}{4}", r"\cos 15^\circ", F),
    (r"\log_2 15", r"\log_2 3 + \log_2 5", T),
    (r"\log_4 2", r"\frac12", T),
    (r"e^{\ln 5}", "5", T),
    (r"\lfloor 3.7 \rfloor", "3", T),
    (r"\lceil 3.2 \rceil", "4", T),
])

VECTORS_AND_CURVES = _block("intervals", [
    (r"-\sqrt2 < x < \sqrt2", r"(-\sqrt{2}, \sqrt{2})", T),
    (r"(2,\infty)\cup(-1,1)\cup(-\infty,-2)", r"(-\infty,-2)\cup(-1,1)\cup(2,\infty)", T),
    (r"(-\infty,-2)\cup[-1,1)\cup(2,\infty)", r"(-\infty,-2)\cup(-1,1)\cup(2,\infty)", F),
]) + _block("sets_tuples", [
    (r"\pm\sqrt{2}", r"\{\sqrt{2}, -\sqrt{2}\}", T),
    (r"(1, 0.5, -3)", r"(1, \frac{1}{2}, -3)", T),
    (r"(0.5, 1, -3)", r"(1, \frac{1}{2}, -3)", F),
    (r"3 \text{ and } 4", "3, 4", T),
    (r"x = 3 \text{ or } x = 4", "3, 4", T),
    (r"x = 3 \text{ or } x = 5", "3, 4", F),
    ("3, 4, 5", "3, 4", F),
]) + _block("matrices_vectors", [
    (r"\langle 1, 2 \rangle", "(1,2)", T),
    (r"\langle 1,2\rangle", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", T),
    (r"\langle 2, 1 \rangle", "(1,2)", F),
]) + _block("equations", [
    ("2x-y+3z-4=0", "2x - y + 3z = 4", T),
    ("x^2+y^2-4=0", "x^2 + y^2 = 4", T),
    ("x^2+y^2=2", "x^2+y^2=4", F),
    ("y = -x^2", "y = x^2", F),
    ("y=0.75x-2", r"y=\frac{3}{4}x-2", T),
    (r"f^{-1}(x) = \frac{x-3}{2}", r"\frac{x-3}{2}", T),
]) + _block("expressions", [
    (r"\frac{1}{a}+\frac{1}{b}", r"\frac{a+b}{ab}", T),
    (r"\frac{1}{a+b}", r"\frac{a+b}{ab}", F),
    (r"\frac{\sin x}{\cos x}", r"\tan x", T),
    (r"\sec^2 x - \tan^2 x", "1", T),
    ("n(n+1)", "n^2+n", T),
    (r"\binom{n}{2}", r"\frac{n(n-1)}{2}", T),
    ("2^{n-1}", "2^{n}-1", F),
]) + _block("units_text", [
    (r"\frac{1}{2}\text{ inch}", r"\frac{1}{2}", T),
    ("080", "80", T),
])

# --------------------------------------------------------------------------------------------------------------------
# Nested fractions, the real line, factored polynomials, radians, binomials, unit words.
# --------------------------------------------------------------------------------------------------------------------

NESTED_FRACTIONS = _block("fractions", [
    (r"\frac{3}{2^{-2}}", "12", T),
    (r"\frac{1}{1+\frac{1}{2}}", r"\frac{2}{3}", T),
    (r"\frac{1}{1+\frac{1}{2}}", r"\frac{3}{2}", F),
    (r"\frac{2^{99}}{2^{100}}", r"\frac12", T),
]) + _block("scientific_notation", [
    (r"1.23 \times 10^{4}", "12300", T),
    (r"1.23\times 10^{4}", "123000", F),
]) + _block("repeating_decimals", [
    (r"0.\overline{45}", r"\frac{5}{11}", T),
    (r"0.\overline{45}", r"\frac{9}{20}", F),
    (r"0.4\overline{5}", r"\frac{41}{90}", T),
]) + _block("mixed_numbers", [
    (r"10\frac{1}{2}", "10.5", T),
    (r"10\frac{1}{2}", "5", F),
    (r"12\frac{3}{4}", r"\frac{51}{4}", T),
]) + _block("percent", [
    (r"45\text{ percent}", "45", T),
    (r"45\text{ percent}", "54", F),
])

REAL_LINE_AND_MEMBERSHIP = _block("intervals", [
    (r"\mathbb{R}", r"(-\infty, \infty)", T),
    (r"\text{all real numbers}", r"(-\infty,\infty)", T),
    (r"x \in [2, 5]", "[2,5]", T),
    (r"x \in (2,5)", "[2,5]", F),
])

FACTORED_POLYNOMIALS = _block("expressions", [
    ("(x^2+1)(x+1)(x-1)", "x^4-1", T),
    ("(x^2+1)(x-1)^2", "x^4-1", F),
    ("x^3-6x^2+12x-8", "(x-2)^3", T),
    ("x^3-6x^2+12x+8", "(x-2)^3", F),
    (r"\frac{3}{2(x-1)}+\frac{1}{2(x+1)}", r"\frac{2x+1}{x^2-1}", T),
    (r"\frac{3}{2(x-1)}-\frac{1}{2(x+1)}", r"\frac{2x+1}{x^2-1}", F),
    ("y = 4 - 2x", "y = -2x + 4", T),
])

TRIG_OF_RADIANS = _block("log_trig_exact", [
    (r"\cos\frac{2\pi}{3}", r"-\frac12", T),
    (r"\sin\frac{5\pi}{6}", r"\frac12", T),
    (r"\sin\frac{5\pi}{6}", r"-\frac12", F),
    (r"\tan\frac{\pi}{3}", r"\sqrt3", T),
    (r"\arcsin\frac12", r"\frac{\pi}{6}", T),
    (r"\arccos 0", r"\frac{\pi}{2}", T),
    (r"\arcsin 1", r"\pi", F),
    (r"\log_2 \frac{1}{8}", "-3", T),
    (r"\log_{\sqrt2} 4", "4", T),
    (r"\log_9 3", r"\frac12", T),
    (r"\log_9 3", "2", F),
    (r"\ln(e^3)", "3", T),
])

BINOMIALS_POWERS_COMPLEX = _block("powers_big_numbers", [
    (r"\binom{100}{50}", "100891344545564193334812497256", T),
    (r"2^{999}\cdot 2", "2^{1000}", T),
    ("2^{999}", "2^{1000}", F),
    ("7^{77}+1", "7^{77}", F),
]) + _block("complex_numbers", [
    (r"|2+3i|", r"\sqrt{13}", T),
    (r"\frac{1-i}{2}", r"\frac{1}{1+i}", T),
    (r"\frac{1+i}{2}", r"\frac{1}{1+i}", F),
    ("-4", "(1+i)^4", T),
    ("-i", "i^{2023}", T),
    ("i", "i^{2023}", F),
])

UNIT_WORDS_LETTERS_BASES = _block("units_text", [
    (r"64\text{ cm}^3", "64", T),
    (r"64 \text{ cubic centimeters}", "64", T),
    (r"3\text{ m/s}", "3", T),
    (r"\$0.50", "0.5", T),
    (r"2\text{ hours}", "2", T),
    (r"-45^\circ", "-45", T),
]) + _block("multiple_choice", [
    (r"(\text{D})", "D", T),
    (r"\text{(D)}", r"\text{(B)}", F),
]) + _block("text_answers", [
    (r"\text{Bob}", r"\text{Alice}", F),
    (r"\text{Alice}", "Alice", T),
]) + _block("base_subscripts", [
    ("1100100_{2}", "1100100_2", T),
    ("144_{8}", "144_8", T),
    ("144_8", "144_9", F),
]) + _block("matrices_vectors", [
    (r"\begin{pmatrix} 3 \\ 0 \\ 1 \end{pmatrix}", r"\begin{pmatrix} 3 \\ 0 \\ -1 \end{pmatrix}", F),
    (r"\begin{pmatrix} 6/2 \\ 0 \\ -1 \end{pmatrix}", "(3,0,-1)", T),
    (r"\begin{bmatrix} 1&0&0\\0&1&0\\0&0&1 \end{bmatrix}", r"\begin{pmatrix} 1 & 0 & 0 \\ 0 & 1 & 0 \\ 0 & 0 & 1 \end{pmatrix}", T),
])

TINY_DIFFERENCES_AND_SIGNS = _block("adversarial", [
    ("-3, 3", "3", F),
    ("3 + 0.0001", "3", F),
    (r"\frac{2^{99}+1}{2^{100}}", r"\frac12", F),
    ("0.49999999999", r"\frac12", F),
    (r"\frac{333}{1000}", r"\frac13", F),
    (r"\frac{99}{70}", r"\sqrt{2}", F),
    (r"\frac{355}{113}", r"\pi", F),
    (r"(1+\frac{1}{1000})^{1000}", "e", F),
    ("10^{10}+10^{-10}", "10^{10}", F),
    ("x = 2", "x = 2, y = 3", F),
    (r"\input{/etc/passwd}", "0", F),
    ("lambda: 1", "1", F),
    ("os.system('ls')", "0", F),
    (r"\text{eval(1+1)}", "2", F),
    (r"\infty - \infty", "0", F),
    (r"2^{-2^{2^{2^{2}}}}", "0", F),
]) + _block("guarded_pathological", [
    ("(10^{6})!", "0", F),
    ("10^{1000000}", "10^{10^{6}}", T),
])

# --------------------------------------------------------------------------------------------------------------------
# How models dress answers (text around them, \left\lbrace, x_1 = ...),
# solution lists written with "or"/"and", and more hedges.
# --------------------------------------------------------------------------------------------------------------------

DRESSED_ANSWERS = _block("delimiters_wrappers", [
    (r"\text{The answer is } 5", "5", T),
    (r"\frac{1}{2}.", r"\frac12", T),
    (r"\frac{1}{2}\,\text{m}", "0.5", T),
    (r"\dfrac{\pi}{3}\text{ radians}", r"\frac{\pi}{3}", T),
    (r"\left(x+1\right)^2", "x^2+2x+1", T),
    (r"\angle ABC = 30^\circ", "30", T),
    (r"\angle ABC = 30^\circ", "60", F),
]) + _block("sets_tuples", [
    (r"\left\lbrace 1,2 \right\rbrace", r"\{1,2\}", T),
    (r"\lbrace 2, 1\rbrace", r"\{1,2\}", T),
    (r"1 \text{ and } 2", r"\{1,2\}", T),
    ("x_1 = 1, x_2 = 2", "1, 2", T),
    ("x_1 = 1, x_2 = 3", "1, 2", F),
]) + _block("plus_minus", [
    (r"5 \text{ or } -5", r"\pm 5", T),
    (r"\pm 5", r"5 \text{ or } -5", T),
    (r"\sqrt{25}", r"\pm 5", F),
    (r"\sqrt{9}", r"\pm 3", F),
])

SLASH_RADICALS_AND_DECIMALS = _block("radicals", [
    (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", T),
    (r"1/\sqrt{2}", r"\frac{\sqrt{2}}{2}", T),
    (r"\frac{\sqrt{2}}{4}", r"\frac{\sqrt{2}}{2}", F),
]) + _block("integers_decimals", [
    (r"2\cdot 3", "6", T),
    (r"2 \times 3", "6", T),
    (r"2 \times 3", "5", F),
]) + _block("percent", [
    (r"3.0\%", "3", T),
    (r"100\%", "100", T),
]) + _block("scientific_notation", [
    (r"1.0 \times 10^{3}", "1000", T),
    (r"5\cdot10^3", "5000", T),
    (r"5 \cdot 10^{3}", "500", F),
]) + _block("units_text", [
    (r"\$1,234.00", "1234", T),
    (r"\$1,234.00", "1243", F),
])

RECIPROCALS_AND_SPLIT_FRACTIONS = _block("expressions", [
    (r"\frac{1}{2}x", r"\frac{x}{2}", T),
    (r"\frac1x", r"\frac{1}{x}", T),
    ("x^{-1}", r"\frac1x", T),
    (r"\dfrac{x+1}{2}", r"\frac{x}{2}+\frac12", T),
    (r"\dfrac{x+1}{2}", r"\frac{x}{2}+1", F),
]) + _block("matrices_vectors", [
    (r"\left(\begin{matrix} 1 \\ 2 \end{matrix}\right)", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", T),
]) + _block("multiple_choice", [
    (r"\mathrm{(B)}", "B", T),
    (r"\text{C}", r"\textbf{(C)}", T),
]) + _block("inequalities", [
    (r"(-\infty,-1]\cup[1,+\infty)", r"(-\infty,-1]\cup[1,\infty)", T),
    (r"|x| \ge 1", r"(-\infty,-1]\cup[1,\infty)", T),
    (r"x \le -1 \text{ or } x \ge 1", r"(-\infty,-1]\cup[1,\infty)", T),
    (r"x < -1 \text{ or } x \ge 1", r"(-\infty,-1]\cup[1,\infty)", F),
])

APPROXIMATE_AND_EITHER = _block("adversarial", [
    (r"\text{approximately } 3.14", r"\pi", F),
    (r"\approx 0.33", r"\frac{1}{3}", F),
    (r"\{1, 2\} \text{ or } \{1, 3\}", r"\{1,2\}", F),
    (r"\text{either (A) or (B)}", r"\text{(A)}", F),
    (r"A \text{ or } B", "A", F),
    (r"12 \text{ or } 13", "12", F),
    (r"\geq 5", "5", F),
    (r"\le 5", "5", F),
])

# --------------------------------------------------------------------------------------------------------------------
# Answers by MATH subject (counting, number theory, geometry, algebra).
# --------------------------------------------------------------------------------------------------------------------

MATH_SUBJECTS = _block("fractions", [
    (r"\left(\frac{5}{6}\right)^3", r"\frac{125}{216}", T),
    (r"\frac{5}{342}", r"\frac{5}{324}", F),
    (r"\frac{1}{6^3}", r"\frac{1}{216}", T),
    (r"\binom{8}{3}\left(\frac12\right)^8", r"\frac{7}{32}", T),
    (r"\frac{7}{23}", r"\frac{7}{32}", F),
    (r"P = \frac{1}{4}", r"\frac14", T),
]) + _block("factorial_binomial", [
    (r"\frac{10!}{2!\,3!}", "302400", T),
    (r"10 \cdot 9 \cdot 8", "720", T),
    (r"\binom{52}{5}", "2598960", T),
    (r"\binom{52}{5}", "2598962", F),
]) + _block("integers_decimals", [
    ("n = 12", "12", T),
    (r"2^3 \cdot 3^2", "72", T),
    (r"2^3\cdot 3^2", "36", F),
    (r"\gcd(12, 18)", "6", T),
    (r"\operatorname{lcm}(4, 6)", "12", T),
]) + _block("radicals", [
    (r"\tfrac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}", T),
    (r"\sqrt{3888}", r"36\sqrt{3}", T),
    (r"\frac{25}{4}\sqrt3", r"\frac{25\sqrt{3}}{4}", T),
    (r"\frac{25\sqrt{3}}{2}", r"\frac{25\sqrt{3}}{4}", F),
    (r"\sqrt{2}^{2}", "2", T),
]) + _block("pi_e", [
    (r"\dfrac{1}{2}\pi", r"\frac{\pi}{2}", T),
    (r"4\sqrt{3}\pi", r"4\pi\sqrt{3}", T),
    (r"\frac{16}{3}\pi", r"\frac{16\pi}{3}", T),
]) + _block("units_text", [
    (r"5\sqrt{2}\text{ units}", r"5\sqrt2", T),
    (r"12 \text{ sq units}", "12", T),
    (r"\text{area} = 12", "12", T),
    (r"\$12,500", "12500", T),
]) + _block("plus_minus", [
    (r"\frac{-1+\sqrt5}{2}, \frac{-1-\sqrt5}{2}", r"\frac{-1 \pm \sqrt{5}}{2}", T),
    (r"\frac{1 \pm \sqrt{5}}{2}", r"\frac{-1 \pm \sqrt{5}}{2}", F),
    (r"-3+2\sqrt2, -3-2\sqrt2", r"-3 \pm 2\sqrt{2}", T),
]) + _block("equations", [
    ("a_n = 2n+1", "2n+1", T),
    ("a_n = 2n-1", "2n+1", F),
]) + _block("complex_numbers", [
    (r"2e^{i\pi/3}", r"1+i\sqrt{3}", T),
]) + _block("intervals", [
    (r"[-0.5, 1.5]", r"\left[-\frac{1}{2}, \frac{3}{2}\right]", T),
    (r"\left(-\frac{1}{2}, \frac{3}{2}\right]", r"[-0.5, 1.5]", F),
])

MISSING_FACTORS_AND_RANGES = _block("adversarial", [
    (r"\frac{16}{3}", r"\frac{16\pi}{3}", F),
    (r"1, 2, \ldots, 10", "10", F),
    (r"\text{any } n", "5", F),
    (r"\text{no}", "0", F),
    ("12, 12.5", "12.5", F),
    (r"\frac{1}{2.0001}", r"\frac{1}{2}", F),
    ("0.5000001", "0.5", F),
    (r"99.99\%", r"100\%", F),
    (r"1\,000\,001", "1000000", F),
])

# --------------------------------------------------------------------------------------------------------------------
# Powers and their associativity, polar forms, ratios, choice letters
# followed by their value, and tiny-difference bait.
# --------------------------------------------------------------------------------------------------------------------

POWERS_POLAR_RATIOS = _block("expressions", [
    ("x^2+3x+2", "(x+1)(x+2)", T),
    ("x^2+x", "x(x+1)", T),
    (r"x^{1/2}", r"\sqrt{x}", T),
    (r"x^{2/3}", r"\sqrt[3]{x^2}", T),
    ("e^{x+y}", "e^{x}e^{y}", T),
    ("|x|", "x", F),
]) + _block("units_text", [
    (r"\frac{3}{4}\text{ of the pizza}", r"\frac34", T),
    (r"37.5^\circ", "37.5", T),
]) + _block("multiple_choice", [
    (r"\text{(C) } 15", r"\text{(C)}", T),
    (r"\text{(C) } 15", r"\text{(D)}", F),
]) + _block("sets_tuples", [
    ("1:2", "1:2", T),
    ("2:1", "1:2", F),
    (r"\{(2,1), (1,2)\}", r"\{(1,2), (2,1)\}", T),
    (r"\{(1,2)\}", r"\{(1,2), (2,1)\}", F),
    (r"(-\sqrt{2}, \sqrt{2})", r"(\sqrt{2}, -\sqrt{2})", F),
]) + _block("intervals", [
    (r"(-\infty,-1.5)", r"\left(-\infty, -\frac{3}{2}\right)", T),
]) + _block("complex_numbers", [
    (r"\sqrt{2}\,e^{i\pi/4}", "1+i", T),
    (r"e^{i\pi/4}", r"\frac{\sqrt{2}}{2} + \frac{\sqrt{2}}{2}i", T),
    (r"\sqrt{2}", "1+i", F),
]) + _block("powers_big_numbers", [
    (r"\frac{1}{2^{10}}\binom{10}{5}", r"\frac{63}{256}", T),
    ("2^{2^{5}}", "4294967296", T),
    ("(2^{10})^{10}", "2^{100}", T),
    ("2^{10^{2}}", "2^{100}", T),
    ("3^{3^{3}}", "7625597484987", T),
    ("27^{3}", "3^{3^{3}}", F),
])

EPSILON_PERTURBATIONS = _block("adversarial", [
    (r"\frac{1}{3}+10^{-50}", r"\frac13", F),
    ("2.0000000000000001", "2", F),
    (r"\sqrt{2}+10^{-20}", r"\sqrt2", F),
    (r"\pi + 10^{-30}", r"\pi", F),
    ("e^{-100}", "0", F),
    (r"\frac{1}{10^{100}}", "0", F),
    (r"\text{5 or 6}", "5", F),
    (r"5\text{ (or 6)}", "5", F),
    (r"\{5\} \cup \{6\}", "5", F),
    (r"5 \lor 6", "5", F),
    (r"\neq 5", "5", F),
])

# --------------------------------------------------------------------------------------------------------------------
# Thinner categories (degrees, separators, bases, unions, word answers)
# and more "cover every option" bait.
# --------------------------------------------------------------------------------------------------------------------

DEGREES_SEPARATORS_BASES_WORDS = _block("degrees", [
    (r"180^\circ", "180", T),
    (r"30\,^{\circ}", "30", T),
    ("120°", r"120^\circ", T),
    ("60°", "120°", F),
]) + _block("thousands_separators", [
    ("1,000,000,000", "10^9", T),
    ("1{,}000{,}000{,}000", "1000000000", T),
    ("999,999", "1000000", F),
    ("3,600", "3600", T),
]) + _block("scientific_notation", [
    (r"4.5 \times 10^{-7}", "0.00000045", T),
    (r"4.5\times10^{-7}", "0.0000045", F),
    ("2.0E-3", "0.002", T),
]) + _block("base_subscripts", [
    ("123_{10}", "123", T),
    ("777_8", "777_{8}", T),
    ("1000_2", "1000_3", F),
]) + _block("text_answers", [
    (r"\text{saturday}", r"\text{Saturday}", T),
    (r"\text{square}", r"\text{rhombus}", F),
]) + _block("unions", [
    (r"\mathbb{R}\setminus\{0\}", r"(-\infty,0)\cup(0,\infty)", T),
    (r"(-\infty,\infty)", r"(-\infty,0)\cup(0,\infty)", F),
]) + _block("equations", [
    ("x - 2y = 0", "x = 2y", T),
    (r"y = \frac{x}{2}", "x = 2y", T),
    ("x^2 = 4", "x = 2", F),
])

EVERY_OPTION = _block("adversarial", [
    (r"\text{Yes and No}", r"\text{Yes}", F),
    (r"\text{(A) (B) (C) (D) (E)}", r"\text{(C)}", F),
    ("ABCDE", "C", F),
    (r"\text{all of the above}", r"\text{(C)}", F),
    (r"0 \le x \le 100", "42", F),
    (r"\mathbb{R}", "5", F),
    (r"\text{any real number}", "5", F),
    ("x", "x = 5", F),
    (r"\{0, 1, 2, \ldots, 9\}", "7", F),
    (r"3 \le n \le 7", "5", F),
])

# --------------------------------------------------------------------------------------------------------------------
# Nested roots and small powers; extraction rows are in REWARD_CASES.
# --------------------------------------------------------------------------------------------------------------------

NESTED_ROOTS_AND_SMALL_POWERS = _block("radicals", [
    (r"\sqrt{\sqrt{16}}", "2", T),
    (r"\sqrt{0.25}", "0.5", T),
]) + _block("powers_big_numbers", [
    ("0.5^2", "0.25", T),
    ("(-1)^{100}", "1", T),
    ("-1^{100}", "1", F),
]) + _block("repeating_decimals", [
    (r"0.1\overline{23}", r"\frac{61}{495}", T),
    (r"0.\overline{123}", r"\frac{61}{495}", F),
]) + _block("fractions", [
    (r"\tfrac12", "0.5", T),
])

# --------------------------------------------------------------------------------------------------------------------
# Plain-text and unicode math as chat models write it.
# --------------------------------------------------------------------------------------------------------------------

PLAIN_TEXT_AND_UNICODE = _block("plain_unicode", [
    ("sqrt(3)/2", r"\frac{\sqrt3}{2}", T),
    ("pi/2", r"\frac{\pi}{2}", T),
    ("2*pi", r"2\pi", T),
    ("x^2 + 2*x + 1", "(x+1)^2", T),
    ("1e6", "10^6", T),
    ("sqrt(8)", r"2\sqrt2", T),
    ("0.5 * x", r"\frac{x}{2}", T),
    ("2^(10)", "1024", T),
    ("log(8)/log(2)", "3", T),
    ("sin(pi/6)", "1/2", T),
    ("\u221a2", r"\sqrt{2}", T),
    ("\u03c0", r"\pi", T),
    ("2\u03c0", r"2\pi", T),
    ("\u00bd", r"\frac12", T),
    ("x\u00b2 + 1", "x^2+1", T),
    ("x \u2264 3", r"(-\infty,3]", T),
    ("(3, \u221e)", r"(3,\infty)", T),
    ("3 \u00d7 10^5", "300000", T),
    ("2\u00b73", "6", T),
    ("\u221a2/2", r"\frac{\sqrt2}{2}", T),
    ("3\u221a2", r"\sqrt{18}", T),
    ("\u03c0/4", r"\frac{\pi}{4}", T),
    ("\u2205", r"\emptyset", T),
    ("{1, 2}", r"\{1,2\}", T),
    ("(-\u221e, 1) \u222a (2, \u221e)", r"(-\infty,1)\cup(2,\infty)", T),
    ("\u00b13", r"\pm 3", T),
    ("x \u2265 2", r"[2,\infty)", T),
    ("\u03c0/3", r"\frac{\pi}{4}", F),
    ("\u221a3", r"\sqrt{2}", F),
    ("{1, 2}", r"\{1, 3\}", F),
    ("x \u2264 3", r"(-\infty,3)", F),
    ("sqrt(3)/3", r"\frac{\sqrt3}{2}", F),
    ("2^(9)", "1024", F),
]) + _block("adversarial", [
    ("\u221e", "5", F),
    ("\u22483.14", r"\pi", F),
    ("3 \u2228 4", "3", F),
])

# --------------------------------------------------------------------------------------------------------------------
# GSM8K-style quantities (money, counts with units, times).
# --------------------------------------------------------------------------------------------------------------------

GSM8K_QUANTITIES = _block("units_text", [
    (r"\$1.5", "1.50", T),
    (r"\$0.05", "0.5", F),
    (r"5\text{ dollars}", r"\$5", T),
    (r"\$5.00", "5", T),
    ("5.00", "5", T),
    (r"-\$5", "-5", T),
    (r"3 \text{ apples}", "3", T),
    (r"3 \text{ apples}", "4", F),
    (r"20 \text{ minutes}", "20", T),
    (r"0.75 \text{ hours}", "0.75", T),
    (r"\frac{3}{4} \text{ hours}", "0.75", T),
    (r"\$1{,}000{,}000", "1000000", T),
]) + _block("integers_decimals", [
    ("2.50", "2.5", T),
    ("2.05", "2.5", F),
    ("1/4", "0.25", T),
    ("100.", "100", T),
]) + _block("thousands_separators", [
    ("1,250.75", "1250.75", T),
    ("1,250.75", "125075", F),
    ("7{,}500", "7500", T),
    ("10^{6}", "1,000,000", T),
]) + _block("percent", [
    (r"12.0\%", "12", T),
]) + _block("adversarial", [
    (r"18 \text{ to } 19", "18", F),
    (r"\$18 \text{ or } \$19", "18", F),
])

# --------------------------------------------------------------------------------------------------------------------
# Coordinates, vectors, inverse trig, rational expressions, closed forms.
# --------------------------------------------------------------------------------------------------------------------

COORDINATES_AND_CLOSED_FORMS = _block("sets_tuples", [
    ("(1.5, -0.5)", r"\left(\frac{3}{2}, -\frac{1}{2}\right)", T),
    ("(-0.5, 1.5)", r"\left(\frac{3}{2}, -\frac{1}{2}\right)", F),
]) + _block("radicals", [
    (r"\sqrt{4+25}", r"\sqrt{29}", T),
]) + _block("equations", [
    (r"m = -\frac{2}{3}", r"-\frac23", T),
    (r"\frac{-2}{3}", r"-\frac{2}{3}", T),
    (r"\frac{2}{3}", r"-\frac23", F),
    (r"x = \log_2 5", r"\frac{\ln 5}{\ln 2}", T),
    (r"\log_5 2", r"\log_2 5", F),
    (r"a_n = 3 \cdot 2^{n-1}", r"\frac{3}{2}\cdot 2^{n}", T),
]) + _block("matrices_vectors", [
    ("(-3, 6, -3)", r"\begin{pmatrix} -3 \\ 6 \\ -3 \end{pmatrix}", T),
    ("(3, -6, 3)", r"\begin{pmatrix} -3 \\ 6 \\ -3 \end{pmatrix}", F),
]) + _block("log_trig_exact", [
    (r"\frac{\pi}{6}\text{ radians}", r"\frac{\pi}{6}", T),
    (r"\cos^{-1}\left(\frac12\right)", r"\frac{\pi}{3}", T),
    (r"\sin^{-1}\left(\frac12\right)", r"\frac{\pi}{3}", F),
]) + _block("expressions", [
    (r"\frac{2+x}{3+x}", r"\frac{x+2}{x+3}", T),
    (r"\frac{x+3}{x+2}", r"\frac{x+2}{x+3}", F),
    (r"\frac{1}{x}-\frac{1}{x+1}", r"\frac{1}{x(x+1)}", T),
    (r"\frac{1}{x-1}+\frac{1}{x+1}", r"\frac{2x}{x^2-1}", T),
    (r"\frac{2n^3+3n^2+n}{6}", r"\frac{n(n+1)(2n+1)}{6}", T),
    (r"\frac{n^2(n+1)^2}{4}", r"\frac{n(n+1)(2n+1)}{6}", F),
]) + _block("adversarial", [
    (r"\frac{n(n+1)}{2}", "55", F),
    ("x", r"\frac{\ln 5}{\ln 2}", F),
    (r"\text{(B)} \text{ and } \text{(D)}", r"\text{(B)}", F),
])
# --------------------------------------------------------------------------------------------------------------------
# Labels, inequalities in other forms, thin-space separators, set/tuple conventions, \approx, products of powers;
# in REWARD_CASES plain anchors (`The answer is 5.`), escaped dollars, several boxes, a box followed by a later
# final-answer anchor.
# --------------------------------------------------------------------------------------------------------------------

LABELS_AND_INEQUALITIES = _block("labels", [
    ("(a,b)=(4,1)", "(4,1)", T),
    ("(a, b) = (1, 4)", "(4,1)", F),
    ("(x,y,z)=(1,2,3)", "(1,2,3)", T),
    ("(4,1)", "(a,b)=(4,1)", T),
    ("A:B = 3:5", "3:5", T),
    ("A:B = 5:3", "3:5", F),
    ("|PQ| = 7", "7", T),
    (r"|AB| = 2\sqrt{3}", r"\sqrt{12}", T),
    ("|PQ| = 8", "7", F),
    ("m+n = 25", "25", T),
    ("m=2,n=3; m=5,n=1", "(2,3),(5,1)", T),
    ("m=5,n=1; m=2,n=3", "(2,3),(5,1)", T),
    ("m=2,n=3; m=1,n=5", "(2,3),(5,1)", F),
    ("x=1,y=2; x=2,y=1", "(1,2), (2,1)", T),
    ("m=2,n=3", "(2,3),(5,1)", F),
]) + _block("inequalities", [
    ("-y > -4", "y < 4", T),
    ("3y < 12", "y < 4", T),
    ("y + 2 < 6", "y < 4", T),
    (r"2y \le 8", "y < 4", F),
    ("y + 2 > 6", "y < 4", F),
    (r"-2x \ge 6", r"x \le -3", T),
    ("y < 4", "3y < 12", T),
    ("0 < g(t) < 2", "(0, 2)", T),
    (r"0 \le f(x) \le 2", "[0, 2]", T),
    ("0 < g(t) < 2", "[0, 2]", F),
    ("-1 < 2x + 1 < 5", "(-1, 2)", T),
    ("-1 < 2x + 1 < 5", "(-1, 5)", F),
    (r"x < -2 \text{ or } 1 < x < 3", r"(-\infty,-2)\cup(1,3)", T),
    (r"-3 < x < -1 \text{ or } x > 2", r"(-3,-1)\cup(2,\infty)", T),
    (r"-3 < x < -1 \text{ or } x > 2", r"(-3,-1)\cup[2,\infty)", F),
]) + _block("thousands_separators", [
    (r"12,\! 345,\! 678", "12345678", T),
    (r"12,\!345", "12345", T),
    (r"1\,234\,567", "1234567", T),
    (r"1\, 234", "1234", T),
    (r"12,\! 345,\! 679", "12345678", F),
    (r"1{,}000{,}000", "10^6", T),
]) + _block("sets_tuples", [
    (r"4, 9, \text{ and } 25", r"\{4, 9, 25\}", T),
    ("4, 9, and 25", "4, 9, 25", T),
    (r"4, 9, \text{ and } 25", "4, 9, 16, 25", F),
    (r"\{1, 1, 2\}", r"\{1, 2\}", T),
    (r"\{2, 2\}", r"\{2\}", T),
    (r"\{1, 2, 2\}", r"\{1, 2, 3\}", F),
    ("(1; 2)", "(1, 2)", T),
    ("(2; 1)", "(1, 2)", F),
    ("1; 2; 3", "1, 2, 3", T),
    ("(2,5)or(5,2)", "(2,5),(5,2)", T),
    ("(2,5)or(5,2)", "(2,5)", F),
    ("(2,5) and (5,2)", r"\{(2,5),(5,2)\}", T),
]) + _block("approx", [
    (r"y \approx 7", "7", T),
    (r"y \approx 7.1", "7", F),
    (r"x \approx 3.14", r"\pi", F),
    (r"\sqrt{2} \approx 1.414", r"\sqrt{2}", T),
    (r"t \approx 2.5", "2.5", T),
    (r"\pi \approx 3.14", "3.14", T),
]) + _block("expressions", [
    ("ab^3", "ba^3", F),
    ("5m^3n", "5nm^3", T),
    ("a^2b", "ab^2", F),
    ("x^2yz^3", "z^3x^2y", T),
    ("2xy^2", "2x^2y", F),
    ("-3a^2bc", "-3cba^2", T),
    ("ab^{3}", "a b^3", T),
    ("(ab)^3", "a^3b^3", T),
    ("ab^3", "(ab)^3", F),
]) + _block("equations", [
    ("x = 2+2 = 4", "4", T),
]) + _block("adversarial", [
    ("x = 2+2 = 5", "5", F),
    ("x = 2+2 = 5", "4", F),
    ("x = 4 = 5", "5", F),
    ("3.1416", r"\pi", F),
    ("1.732", r"\sqrt3", F),
    (r"(a,b) = (4,1) \text{ or } (1,4)", "(4,1)", F),
    (r"y \approx 7 \text{ or } 8", "7", F),
    (r"3 \approx 4", "3", F),
    (r"3 \approx 4", "4", F),
    (r"\{4, 4, 5\}", "4", F),
])
# --------------------------------------------------------------------------------------------------------------------
# Labels, inequalities and anchors in other words.
# --------------------------------------------------------------------------------------------------------------------

LABELS_IN_OTHER_WORDS = _block("labels", [
    ("(x, y) = (3, -1)", "(3,-1)", T),
    (r"(x,y)=\left(\frac{1}{2}, 2\right)", "(0.5, 2)", T),
    ("(x, y) = (-1, 3)", "(3,-1)", F),
    ("BC = 10", "10", T),
    (r"\overline{AB} = 5", "5", T),
    (r"|\vec{v}| = 13", "13", T),
    ("a + b + c = 12", "12", T),
    ("a+b = 7", "8", F),
    ("a=1, b=-2, c=3", "(1,-2,3)", T),
    ("a=1, b=3, c=-2", "(1,-2,3)", F),
    ("x=3,y=4; x=4,y=3", r"\{(3,4),(4,3)\}", T),
    ("x = 3, y = 4 \\text{ or } x = 4, y = 3", "(3,4), (4,3)", T),
    ("P(E) = \\frac{1}{6}", r"\frac16", T),
    ("S_{10} = 55", "55", T),
    ("a_5 = 48", "48", T),
    ("a_5 = 47", "48", F),
]) + _block("inequalities", [
    ("2x - 3 > 5", "x > 4", T),
    ("5 - x \\ge 2", r"x \le 3", T),
    ("5 - x \\ge 2", r"x \ge 3", F),
    (r"\frac{x}{2} < 3", "x < 6", T),
    ("-6 < -2x < 4", "-2 < x < 3", T),
    ("-6 < -2x < 4", "(-3, 2)", F),
    ("1 \\le 3x - 2 \\le 7", "[1, 3]", T),
    (r"x < 1 \text{ or } x \ge 4", r"(-\infty,1)\cup[4,\infty)", T),
    (r"x \le -1 \text{ or } x > 4", r"(-\infty,-1)\cup[4,\infty)", F),
    ("0 < a < 1", "(0,1)", T),
    (r"-1 \le \sin x \le 1", "[-1,1]", T),
]) + _block("thousands_separators", [
    (r"1,\!000", "1000", T),
    (r"3{,}600", "3600", T),
    (r"2\,500\,000", "2.5 \\times 10^6", T),
    (r"10,\! 080", "10080", T),
    (r"10,\! 080", "1080", F),
    (r"\$1,\!200", "1200", T),
]) + _block("sets_tuples", [
    (r"1, 2, \text{and } 3", "1, 2, 3", T),
    (r"2, 3, \text{ and } 5", r"\{2,3,5\}", T),
    (r"2, 3, \text{ and } 7", r"\{2,3,5\}", F),
    ("(3;4)", "(3, 4)", T),
    ("x = 1; x = 2", "1, 2", T),
    (r"\{-1, -1, 3\}", r"\{3, -1\}", T),
    ("(1,2)or(2,1)", "(2,1),(1,2)", T),
    ("(1,2) or (2,1)", "(1,2)", F),
    (r"\{2, 3\} \text{ and } \{3, 2\}", r"\{2,3\}", F),
]) + _block("approx", [
    (r"x \approx 0.5", r"\frac12", T),
    (r"r \approx 2.24", r"\sqrt5", F),
    (r"\sqrt{5} \approx 2.24", r"\sqrt{5}", T),
    (r"\frac{22}{7} \approx 3.14", r"\pi", F),
    (r"P \approx 0.25", "0.25", T),
    ("y \u2248 12", "12", T),
]) + _block("expressions", [
    ("3x^2y", "3yx^2", T),
    ("x^2y^3", "x^3y^2", F),
    ("4ab^2c", "4cb^2a", T),
    ("2a^3b^2", "2b^3a^2", F),
    ("m^2n^2", "(mn)^2", T),
    ("-xy^2", "-y^2x", T),
    ("abc", "cab", T),
    ("6xyz", "6zyx", T),
    ("6xyz", "6xy", F),
]) + _block("adversarial", [
    ("x = 3 + 3 = 7", "7", F),
    ("x = 3 + 3 = 7", "6", F),
    ("y = 2 \\cdot 5 = 11", "11", F),
    ("1.4142", r"\sqrt2", F),
    ("2.236", r"\sqrt5", F),
    ("0.7854", r"\frac{\pi}{4}", F),
    (r"x \approx 4 \text{ or } x \approx 5", "4", F),
    (r"5 \approx 6", "6", F),
    ("(x, y) = (1, 2), (2, 1)", "(1,2)", F),
    (r"|PQ| = 7 \text{ or } 8", "7", F),
    ("2 < x < 3", "2", F),
    ("x > 2", "2", F),
])

CASES = (INTEGERS_DECIMALS + DELIMITERS + FRACTIONS + RADICALS + PI_E + PERCENT + UNITS_TEXT + DEGREES + THOUSANDS
         + SCIENTIFIC + REPEATING + NEGATIVES + INTERVALS + UNIONS + SETS_TUPLES + PLUS_MINUS + EQUATIONS
         + INEQUALITIES + EXPRESSIONS + MATRICES + COMPLEX + BASES + MIXED_NUMBERS + MULTIPLE_CHOICE + TEXT_ANSWERS
         + FACTORIAL_BINOMIAL + LOG_TRIG + POWERS + ADVERSARIAL + GUARDED
         + LEADING_ZEROS_NEAR_NUMBERS + RADICAL_FRACTIONS + REPEATING_TO_FRACTIONS + POLYNOMIAL_FORMS
         + LINES_AND_ROOTS + ORDER_FREE_LISTS + INTERVAL_ENDPOINTS + MONEY_AND_SPEED_UNITS
         + PERCENT_AND_DEGREE_SIGNS + EXACT_BIG_INTEGERS + COMPLEX_FORMS + TRIG_OF_DEGREES
         + LETTERS_WORDS_BASES_MIXED + COLUMN_VECTORS_MATRICES + HEDGES_AND_LISTS + COMPETITION_IDENTITIES
         + VECTORS_AND_CURVES + NESTED_FRACTIONS + REAL_LINE_AND_MEMBERSHIP + FACTORED_POLYNOMIALS + TRIG_OF_RADIANS
         + BINOMIALS_POWERS_COMPLEX + UNIT_WORDS_LETTERS_BASES + TINY_DIFFERENCES_AND_SIGNS + DRESSED_ANSWERS
         + SLASH_RADICALS_AND_DECIMALS + RECIPROCALS_AND_SPLIT_FRACTIONS + APPROXIMATE_AND_EITHER + MATH_SUBJECTS
         + MISSING_FACTORS_AND_RANGES + POWERS_POLAR_RATIOS + EPSILON_PERTURBATIONS + DEGREES_SEPARATORS_BASES_WORDS
         + EVERY_OPTION + NESTED_ROOTS_AND_SMALL_POWERS + PLAIN_TEXT_AND_UNICODE + GSM8K_QUANTITIES
         + COORDINATES_AND_CLOSED_FORMS + LABELS_AND_INEQUALITIES + LABELS_IN_OTHER_WORDS)

# --------------------------------------------------------------------------------------------------------------------
# reward(response, gold) cases: full model responses and full gold solutions. (response, gold, expected).
# --------------------------------------------------------------------------------------------------------------------

GSM8K_GOLD_72 = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                 "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
GSM8K_GOLD_1234 = ("She earns 1,000 + 234 = <<1000+234=1234>>1,234 dollars in total.\n#### 1,234")
MATH_GOLD_HALF = (r"There are 4 equally likely outcomes and 2 of them are favourable, so the probability is "
                  r"$\boxed{\frac{1}{2}}$.")
MATH_GOLD_SQRT3 = r"By the unit circle, $\sin 60^\circ = \boxed{\frac{\sqrt{3}}{2}}$."
MATH_GOLD_C = r"Only choice C satisfies both conditions, so the answer is $\boxed{\text{(C)}}$."
MATH_GOLD_INTERVAL = r"Combining both cases, the solution set is $x \in \boxed{(-\infty, 3] \cup (5, \infty)}$."

GSM8K_GOLD_12 = "He pays 3*4 = <<3*4=12>>12 dollars.\n#### 12"
GSM8K_GOLD_42 = "She spends 6*7 = <<6*7=42>>42 dollars.\n#### 42"

REWARD_CASES = (
    _block("reward_boxed", [
        (r"So the answer is $\boxed{42}$.", "42", T),
        (r"\fbox{7}", "7", T),
        (r"so the answer is \boxed 5", "5", T),
        (r"\[\boxed{\dfrac{1}{2}}\]", r"\frac12", T),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", T),
        (r"First I got \boxed{3}. Wait, let me recheck: \boxed{4}", "4", T),
        (r"First I got \boxed{3}. Wait, let me recheck: \boxed{4}", "3", F),
        (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", T),
        (r"$\boxed{x = 5}$", "5", T),
        (r"\boxed{\text{(C)}}", "C", T),
        (r"\boxed{10\%}", "10", T),
        (r"The length is \boxed{5} cm.", "5", T),
        (r"The answer is \boxed{\$18.90}.", r"\$18.90", T),
        (r"Expanding gives \boxed{x^2+2x+1}.", "(x+1)^2", T),
        (r"\boxed{\pm 2}", "2, -2", T),
        (r"\boxed{2}", r"\pm 2", F),
        (r"\boxed{\textbf{(B)}}", r"\text{(C)}", F),
        (r"Thus \boxed{41}.", "42", F),
    ])
    + _block("reward_math_gold", [
        (r"\boxed{0.5}", MATH_GOLD_HALF, T),
        (r"The probability is $\boxed{\dfrac12}$.", MATH_GOLD_HALF, T),
        (r"\boxed{\frac{1}{3}}", MATH_GOLD_HALF, F),
        (r"\boxed{\frac{\sqrt3}2}", MATH_GOLD_SQRT3, T),
        (r"\boxed{\frac{\sqrt{2}}{2}}", MATH_GOLD_SQRT3, F),
        (r"\boxed{C}", MATH_GOLD_C, T),
        (r"\boxed{\textbf{(D)}}", MATH_GOLD_C, F),
        (r"The final answer is $\boxed{(-\infty,3]\cup(5,\infty)}$", MATH_GOLD_INTERVAL, T),
        (r"\boxed{(-\infty,3)\cup(5,\infty)}", MATH_GOLD_INTERVAL, F),
    ])
    + _block("reward_gsm8k", [
        (r"The answer is \boxed{72}.", GSM8K_GOLD_72, T),
        ("48 + 24 = 72 clips.\n#### 72", GSM8K_GOLD_72, T),
        ("#### 27", GSM8K_GOLD_72, F),
        (r"\boxed{1234}", GSM8K_GOLD_1234, T),
        (r"\boxed{1,234}", GSM8K_GOLD_1234, T),
        (r"\boxed{1243}", GSM8K_GOLD_1234, F),
        ("#### 1,234", "1234", T),
        ("Natalia sold 48+24 = 72 clips.\n#### 72", "72", T),
    ])
    + _block("reward_anchors", [
        ("The final answer is 42.", "42", T),
        (r"The final answer is $\frac{1}{2}$.", "0.5", T),
        ("Answer: 42", "42", T),
        (r"Answer: $\frac{3}{4}$", "0.75", T),
        ("<answer>42</answer>", "42", T),
        (r"<answer>\frac{1}{2}</answer>", "0.5", T),
        ("Answer: C", r"\text{(C)}", T),
        ("The final answer is 41.", "42", F),
    ])
    + _block("reward_think", [
        ("<think>Maybe \\boxed{41}? No, I made an arithmetic slip.</think>\nThe answer is $\\boxed{42}$.", "42", T),
        ("<think>It is \\boxed{42}.</think>\nActually, the final answer is \\boxed{41}.", "42", F),
        ("<think>\nLet me compute: 2+2=4, so \\boxed{4}.\n</think>\n\n\\boxed{4}", "4", T),
        ("<think>\n\\boxed{4}\n</think>\nThe final answer is 5", "4", F),
    ])
    + _block("reward_no_answer", [
        ("6 times 7 is 42", "42", F),
        ("It's either 4 or 5, I'm not sure.", "4", F),
        (r"\boxed{}", "0", F),
        (r"I think it's 5. \boxed{}", "5", F),
        ("", "5", F),
    ])
    + _block("reward_adversarial", [
        (r"\boxed{1,2,3}", "2", F),
        ("Answer: 4, or maybe 5", "4", F),
        (r"\boxed{2 \text{ or } 3}", "3", F),
        (r"\boxed{7.9999}", "8", F),
        (r"\boxed{\frac{1}{2^{98}}}", r"\frac{1}{2^{99}}", F),
        (r"\boxed{9^{9^{9^{9}}}}", "1", F),
        (r"\boxed{100000!}", "0", F),
        (r"\boxed{__import__('os').system('echo hacked')}", "0", F),
    ])
    + _block("reward_boxed", [
        (r"The three-digit answer is \boxed{033}.", "33", T),
        ("Final Answer: The final answer is $\\boxed{5}$. I hope it is correct.", "5", T),
        ("**Final Answer**\n\\[ \\boxed{5} \\]", "5", T),
        (r"\boxed{\dfrac{3}{4}}.", "0.75", T),
        (r"The area is $\boxed{12}$ cm$^2$.", "12", T),
        (r"Answer: \boxed{7}", "7", T),
        (r"The final answer is $\boxed{\text{(B)}}$", r"\text{(B)}", T),
        (r"\boxed{4} and then \boxed{3}", "4", F),
        (r"Answer: \boxed{}", "0", F),
    ])
    + _block("reward_think", [
        ("<think>\nSum the cases: 5+7=12.\n</think>\n<answer>\\boxed{12}</answer>", "12", T),
        (r"<think>\boxed{3}</think>\boxed{4}", "3", F),
    ])
    + _block("reward_gsm8k", [
        (r"\boxed{5.00}", "He has 2+3 = <<2+3=5>>5 apples.\n#### 5", T),
        (r"\boxed{\$5}", "He pays 10-5 = <<10-5=5>>5 dollars.\n#### 5", T),
        (r"\boxed{5 \text{ apples}}", "He has 2+3 = <<2+3=5>>5 apples.\n#### 5", T),
        (r"\boxed{-3}", "The temperature is 2-5 = <<2-5=-3>>-3 degrees.\n#### -3", T),
        (r"\boxed{3}", "The temperature is 2-5 = <<2-5=-3>>-3 degrees.\n#### -3", F),
        ("#### 18", "#### 18", T),
    ])
    + _block("reward_boxed", [
        ("Let me think about this carefully. " * 800 + r"So the answer is $\boxed{7}$.", "7", T),
        (r"The final answer is $\boxed{\frac{1}{2}}$", r"So the probability is $\boxed{\dfrac{1}{2}}$.", T),
        (r"$$\boxed{x = 3 \text{ or } x = 4}$$", r"The roots are $\boxed{3, 4}$.", T),
        (r"\boxed{080}", "80", T),
    ])
    + _block("reward_boxed", [
        (r"\boxed{\dfrac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}", T),
        (r"The final answer is: $\boxed{-\frac{1}{2}}$", "-0.5", T),
        ("答案是 \\boxed{12}", "12", T),
        ("\\boxed{12}</s>", "12", T),
    ])
    + _block("reward_think", [
        ("<think>Maybe it is \\boxed{5}.</think>\nAnswer: 6", "6", T),
        ("<think>Maybe it is \\boxed{5}.</think>\nAnswer: 6", "5", F),
    ])
    + _block("reward_gsm8k", [
        ("#### 1,234.50", "1234.5", T),
    ])
    + _block("reward_math_gold", [
        ("Answer: (C)", MATH_GOLD_C, T),
    ])
    + _block("reward_gsm8k", [
        (r"\boxed{\frac{1}{2}}", "Half of 1 is 1/2 = <<1/2=0.5>>0.5.\n#### 0.5", T),
        ("#### 5\n\nThe final answer is 5", "5", T),
    ])
    + _block("reward_adversarial", [
        (r"\boxed{3 \text{ or } 4}", "4", F),
        ("Answer: 3 or 4", "3", F),
    ])
    + _block("reward_anchors", [
        ("Final Answer: The final answer is 12. I hope it is correct.", "12", T),
        ("<answer>\n42\n</answer>", "42", T),
        ("ANSWER: 42", "42", T),
        ("**Answer:** 42", "42", T),
        ("**Answer:** 41", "42", F),
    ])
    + _block("reward_boxed", [
        ("```\n\\boxed{5}\n```", "5", T),
        ("\\boxed{5}\n\n**Final Answer**\n\\boxed{5}", "5", T),
        ("So we get \\boxed{5}\r\n", "5", T),
    ])
    + _block("reward_gsm8k", [
        (r"\boxed{1000000}", "So 1000*1000 = <<1000*1000=1000000>>1,000,000.\n#### 1,000,000", T),
        (r"\boxed{10^6}", "So 1000*1000 = <<1000*1000=1000000>>1,000,000.\n#### 1,000,000", T),
        (r"\boxed{100000}", "So 1000*1000 = <<1000*1000=1000000>>1,000,000.\n#### 1,000,000", F),
    ])
    + _block("reward_boxed", [
        (r"\boxed{\text{C}}", r"\textbf{(C)}", T),
        ("<think>\nTwo of three.\n</think>\n\nThe final answer is \\(\\boxed{\\frac{2}{3}}\\).", "2/3", T),
        (r"\boxed{\text{Yes}}", r"\text{yes}", T),
    ])
    + _block("reward_gsm8k", [
        (r"\boxed{0}", "Nothing is left: 5-5 = <<5-5=0>>0.\n#### 0", T),
        (r"\boxed{}", "Nothing is left: 5-5 = <<5-5=0>>0.\n#### 0", F),
    ])
    + _block("reward_boxed", [
        (r"\boxed{ 5 }", "5", T),
        (r"\boxed{{5}}", "5", T),
        (r"\boxed{\left(1,2\right)}", "(1,2)", T),
        (r"\boxed{\{1,2\}}", r"\{1,2\}", T),
        (r"\boxed{\{1,2\}}", "1, 2", T),
        (r"\boxed{\{1,3\}}", r"\{1,2\}", F),
        (r"\fbox{\frac{1}{2}}", "0.5", T),
        (r"\boxed {5}", "5", T),
        (r"The answer is $\boxed{5}$ and not $6$.", "5", T),
        (r"\boxed{\frac{1}{2}}\quad\blacksquare", r"\frac{1}{2}", T),
        (r"\boxed{\frac{1}{\sqrt{2}}}", r"Hence $\cos 45^\circ = \boxed{\frac{\sqrt{2}}{2}}$.", T),
    ])
    + _block("reward_anchors", [
        ("The final answer is $5$", "5", T),
        ("The final answer is: 5", "5", T),
        ("the final answer is 5", "5", T),
        ("Final answer: 5", "5", T),
        ("<answer> 5 </answer>", "5", T),
        ("<answer>5</answer> <answer>6</answer>", "6", T),
        ("Answer: 5\nAnswer: 6", "5", F),
    ])
    + _block("reward_gsm8k", [
        ("####5", "5", T),
        ("5 apples", "He has 2+3 = <<2+3=5>>5 apples.\n#### 5", F),
    ])
    + _block("reward_boxed", [
        ("The answer is \u221a2, so \\boxed{\u221a2}", r"\sqrt{2}", T),
        ("So \\boxed{\u03c0/2}.", r"\frac{\pi}{2}", T),
    ])
    + _block("reward_gsm8k", [
        ("To find the total, add the two months.\n\nTherefore, the final answer is $\\boxed{72}$.", GSM8K_GOLD_72, T),
        ("Adding them up:\n\\[\n\\boxed{72}\n\\]", GSM8K_GOLD_72, T),
        ("The answer is $\\boxed{72\\text{ clips}}$", GSM8K_GOLD_72, T),
        ("\\boxed{72.00}", GSM8K_GOLD_72, T),
        ("\\boxed{71.99}", GSM8K_GOLD_72, F),
        ("\\boxed{72 \\text{ or } 73}", GSM8K_GOLD_72, F),
        ("<think>\n48/2=24, 48+24=72\n</think>\n\nNatalia sold 72 clips.\n\n\\boxed{72}", GSM8K_GOLD_72, T),
        ("#### 72.0", GSM8K_GOLD_72, T),
        ("$\\boxed{\\$1,234}$", GSM8K_GOLD_1234, T),
    ])
    + _block("reward_math_gold", [
        (r"Thus the slope is $m = \boxed{-\frac{2}{3}}$.", r"The slope is $\boxed{-\frac23}$.", T),
        (r"\boxed{(1.5,-0.5)}", r"The midpoint is $\boxed{\left(\frac{3}{2}, -\frac{1}{2}\right)}$.", T),
        (r"\boxed{(-0.5,1.5)}", r"The midpoint is $\boxed{\left(\frac{3}{2}, -\frac{1}{2}\right)}$.", F),
    ])
    + _block("reward_anchors", [
        ("The answer is 7.", "7", T),
        ("So the answer is $\\frac{2}{3}$.", "2/3", T),
        ("Therefore, the answer is $y = -2$", "-2", T),
        ("the answer is 5/8", "0.625", T),
        ("The answer is: 30 marbles", "30", T),
        ("In total the answer is 2,500.", "2500", T),
        ("Final Answer: The number of such integers is 18.", "18", T),
        ("Final Answer: The number of such integers is 17.", "18", F),
        ("The answer is 6.", "7", F),
        ("**Final answer:** $\\dfrac{1}{4}$", "0.25", T),
        ("The answer is 12 dollars.", GSM8K_GOLD_12, T),
        ("Hence the answer is \\(\\sqrt{5}\\).", r"\sqrt5", T),
        ("Answer: The largest possible value of $n$ is $9$.", "9", T),
        ("Answer: $m+n = 25$", "25", T),
        ("<think>the answer is 3</think>\nThe answer is 4.", "4", T),
    ])
    + _block("reward_escaped_dollar", [
        ("Answer: $\\$42$", "42", T),
        ("The final answer is $\\$42$.", GSM8K_GOLD_42, T),
        ("Answer: $x = \\$5$", "5", T),
        ("Answer: $\\$41$", "42", F),
        ("The total cost is $\\$18.50$.\n#### 18.50", "18.5", T),
        ("So the answer is $\\$1,250$.", "1250", T),
    ])
    + _block("reward_boxed", [
        ("\\boxed{3} \\text{ or } \\boxed{-5}", "3, -5", T),
        ("$x = \\boxed{3}$ or $x = \\boxed{-5}$", "-5, 3", T),
        ("\\boxed{2}, \\boxed{3}", "2, 3", T),
        ("The roots are $\\boxed{1}$ and $\\boxed{4}$.", r"\{1, 4\}", T),
        ("First attempt: \\boxed{12}. Checking again, that was wrong.\nThe final answer is 15.", "15", T),
        ("First attempt: \\boxed{12}. Checking again, that was wrong.\nThe final answer is 15.", "12", F),
        ("\\boxed{7}\n\nCheck of the answer: plugging in gives 4 + 3.", "7", T),
        ("\\boxed{(4,1)}", r"The solution is $\boxed{(a,b)=(4,1)}$.", T),
    ])
    + _block("reward_adversarial", [
        ("\\boxed{3} \\text{ or } \\boxed{-5}", "3", F),
        ("\\boxed{4} \\text{ or } \\boxed{5}", "5", F),
        ("\\boxed{2} \\boxed{3}", "2", F),
        ("The answer is 4 or 5.", "4", F),
        ("The answer is probably 7, but maybe 8.", "7", F),
        ("The answer is 4. Answer: 5", "4", F),
        ("The answer is $\\$42$ or $\\$43$.", "42", F),
    ])
    + _block("reward_anchors", [
        ("So, the answer is 9.", "9", T),
        ("Therefore the answer is $\\boxed{}$ 9", "9", F),
        ("The answer is $-\\frac{1}{3}$.", "-1/3", T),
        ("Thus, the answer is: $\\sqrt{2}$", r"\sqrt2", T),
        ("The answer is 3.5 hours.", "3.5", T),
        ("The answer is 40%.", "40", T),
        ("Final answer: the total is $\\$75$.", "75", T),
        ("Answer: There are 15 ways.", "15", T),
        ("Answer: There are 16 ways.", "15", F),
        ("**Answer**: 27", "27", T),
        ("Answer: 12 or 13", "12", F),
        ("The answer is 7. I hope it is correct.", "7", T),
        ("The answer is (C).", r"\text{(C)}", T),
        ("The answer is not 5, it is 6.", "5", F),
        ("Hence the required value is 8, so the answer is 8.", "8", T),
    ])
    + _block("reward_escaped_dollar", [
        ("Answer: $\\$1,200$", "1200", T),
        ("The final answer is $\\$ 9.50$.", "9.5", T),
        ("So she spends $\\$12$ in total.\n#### 12", "12", T),
        ("Answer: $\\$12$ and $\\$15$", "12", F),
        ("The final answer is \\$30.", "30", T),
    ])
    + _block("reward_boxed", [
        ("$\\boxed{2}$ and $\\boxed{5}$", "2, 5", T),
        ("$\\boxed{2}$ and $\\boxed{5}$", "5", F),
        ("\\boxed{x=1} \\quad \\boxed{x=-1}", r"\pm 1", T),
        ("So $a = \\boxed{3}$, $b = \\boxed{4}$.", "(3, 4)", T),
        ("Initially I thought \\boxed{10}, but recomputing gives \\boxed{12}.", "12", T),
        ("\\boxed{10}\n\nFinal Answer: 12", "12", T),
        ("\\boxed{10}\n\nFinal Answer: 12", "10", F),
        ("**Final Answer**\n\\[\n\\boxed{\\dfrac{3}{5}}\n\\]", "0.6", T),
        ("\\boxed{7}. The answer is seven because 3 + 4 = 7.", "7", T),
        ("\\boxed{A:B = 2:3}", "2:3", T),
    ])
    + _block("reward_adversarial", [
        ("\\boxed{1} \\boxed{2} \\boxed{3} \\boxed{4}", "3", F),
        ("\\boxed{3}, \\boxed{3}, \\boxed{4}", "3", F),
        ("The answer is 4 or maybe 5.", "5", F),
        ("The answer is either $3$ or $4$.", "4", F),
        ("Answer: x = 2 + 2 = 5", "5", F),
    ])
)


def _case_id(pred, gold, category, index):
    """Readable pytest id: category, index, and short ASCII renderings of pred and gold."""
    def short(s):
        s = s.encode("ascii", "backslashreplace").decode("ascii").replace("\n", " ")
        return s if len(s) <= 40 else s[:37] + "..."
    return f"{category}-{index}[{short(pred)} ~ {short(gold)}]"


def _params(table):
    return [pytest.param(p, g, e, id=_case_id(p, g, c, i)) for i, (p, g, e, c) in enumerate(table)]


@pytest.mark.parametrize("pred, gold, expected", _params(CASES))
def test_is_equivalent(verify, pred, gold, expected):
    assert within_time_limit(verify, verify.is_equivalent, pred, gold) is expected


@pytest.mark.parametrize("response, gold, expected", _params(REWARD_CASES))
def test_reward(verify, response, gold, expected):
    assert within_time_limit(verify, verify.reward, response, gold) == (1.0 if expected else 0.0)


def test_batch_reward_matches_table(verify):
    # The training loop's entry point must agree with the table too (same verdicts through worker processes).
    responses = [r for r, _, _, _ in REWARD_CASES]
    golds = [g for _, g, _, _ in REWARD_CASES]
    expected = [1.0 if e else 0.0 for _, _, e, _ in REWARD_CASES]
    assert verify.batch_reward(responses, golds, workers=2) == expected


def test_table_shape():
    # The answer key itself: enough cases, every category a mix where it should be, no duplicate rows.
    assert len(CASES) + len(REWARD_CASES) >= 350
    rows = [(p, g) for p, g, _, _ in CASES]
    assert len(rows) == len(set(rows)), "duplicate (pred, gold) row"
    true_share = sum(e for _, _, e, _ in CASES) / len(CASES)
    assert 0.5 <= true_share <= 0.7
    assert all(not e for _, _, e, c in CASES if c == "adversarial")
