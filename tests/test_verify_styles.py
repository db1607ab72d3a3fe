"""Answer styles that real responses and golds use: anchors without a colon, decimal commas, inequalities against
intervals, labelled ratios and solutions, several boxes in a gold, sets of tuples, commuted factors in sums.

Each row is `(pred or response, gold, expected)`; the expected verdict is a careful grader's. False rows are near
misses of the same style, and the `strict` rows pin what is deliberately rejected (a rounded decimal is not the
exact rational, a worked chain with a wrong step has no value, `\\approx` keeps its own rule).
"""
import pytest

from conftest import within_time_limit

T, F = True, False

EQUIV = {
    "decimal_comma": [
        ("3,75", "3.75", T),
        ("0,125", "0.125", T),
        ("0,125", r"\frac18", T),
        (r"12,5 \%", "12.5", T),
        ("12,5%", r"12.5\%", T),
        ("2,74 $", "2.74", T),
        ("1,000.99\u20ac", "1000.99", T),
        ("\u20ac4,50", "4.5", T),
        ("-0,5", r"-\frac12", T),
        ("3,14", "3.14", T),
        ("0,05", r"\frac{1}{20}", T),
        (r"7,5 \text{ cm}", "7.5", T),
        ("1,250", "1250", T),
        ("12,345", "12345", T),
        ("0,750", "0.75", T),
        ("1,5", r"\frac32", T),
        ("2,0", "2", T),
        ("10,25 \u20ac", "10.25", T),
        ("4.5", "4,5", T),
        ("3,75", "375", F),
        ("1,250", "1.25", F),
        ("0,125", "125", F),
        ("0,125", "0.0125", F),
        ("12,5", "125", F),
        ("2,74", "2.47", F),
        ("1,000.99", "1.00099", F),
        ("3,75", "3.7", F),
        ("1,5", "15", F),
        ("12,345", "12.345", F),
        ("0,3333", r"\frac13", F),
    ],
    "inequality_interval": [
        (r"-3 \le y \le 4", r"y \in [-3, 4]", T),
        (r"-3 \le y \le 4", "[-3,4]", T),
        (r"y \in [-3,4]", r"-3 \le y \le 4", T),
        (r"2 \le |w| \le 5", r"[-5,-2] \cup [2,5]", T),
        (r"[-5,-2]\cup[2,5]", r"2 \le |w| \le 5", T),
        (r"x < 1 \text{ or } x > 3", r"(-\infty, 1) \cup (3, \infty)", T),
        (r"(-\infty,1)\cup(3,\infty)", r"x<1 \text{ or } x>3", T),
        (r"1 < |z| < 4", r"(-4,-1) \cup (1,4)", T),
        (r"-2 < t \leq 6", "(-2, 6]", T),
        (r"0 \le x < 5", r"x \in [0, 5)", T),
        (r"x \le -1 \text{ or } x \ge 2", r"(-\infty,-1]\cup[2,\infty)", T),
        (r"4 \ge y \ge -3", "[-3,4]", T),
        (r"|x| \ge 2", r"(-\infty,-2] \cup [2, \infty)", T),
        (r"-3 < y \le 4", "[-3,4]", F),
        (r"2 \le |w| \le 5", "[2,5]", F),
        (r"2 \le |w| \le 5", "[-5,5]", F),
        (r"2 < |w| \le 5", r"[-5,-2]\cup[2,5]", F),
        (r"x < 1 \text{ or } x > 3", "(1,3)", F),
        (r"x \le 1 \text{ or } x > 3", r"(-\infty,1)\cup(3,\infty)", F),
        (r"-3 \le y \le 4", "[-4,3]", F),
        (r"1 < |z| < 4", "(1,4)", F),
    ],
    "labelled": [
        ("A_1 : A_2 = 5 : 9", "5:9", T),
        ("5:9", "A_1:A_2 = 5:9", T),
        ("S_1 : S_2 = 1 : 4", "1:4", T),
        ("AB:BC = 2:3", "2:3", T),
        (r"t_1 = 2, \quad t_2 = -7", "2, -7", T),
        (r"t_1 = 2, \quad t_2 = -7", r"t = 2 \text{ and } t = -7", T),
        ("x_1 = 3, x_2 = -1", r"x = -1 \text{ or } x = 3", T),
        (r"g(n) = 1 \text{ or } g(n) = -1", "g(x)=1 or g(x)=-1", T),
        (r"f(x) = 2 \text{ or } f(x) = 5", "5, 2", T),
        (r"r_1 = \frac12, r_2 = 3", r"\frac{1}{2}, 3", T),
        ("A_1 : A_2 = 5 : 9", "9:5", F),
        ("A_1:A_2 = 5:9", "5:8", F),
        (r"t_1 = 2, \quad t_2 = -7", "2, 7", F),
        ("t_1 = 2, t_2 = -7", "2", F),
        (r"g(n) = 1 \text{ or } g(n) = -1", "g(x) = 1", F),
        ("x_1 = 3, x_2 = -1", r"x = 3 \text{ or } x = 1", F),
        ("t_1 = 2, t_2 = -7", "t = 2, t = 7", F),
    ],
    "tuple_sets": [
        ("(2,9),(9,2)", "(9,2),(2,9)", T),
        ("(9, 2), (2, 9)", "(2,9), (9,2)", T),
        (r"\{(1,4),(4,1)\}", "(4,1),(1,4)", T),
        (r"(1,4) \text{ and } (4,1)", "(4,1),(1,4)", T),
        ("(0,0),(1,1),(-1,1)", "(-1,1),(0,0),(1,1)", T),
        ("(3,\u22121),(\u22121,3)", "(-1,3),(3,-1)", T),
        ("(2,9)", "(2,9),(9,2)", F),
        ("(2,9),(2,9)", "(2,9),(9,2)", F),
        ("(9,2),(2,9)", "(2,9),(9,3)", F),
        ("(2,9),(9,2),(1,1)", "(2,9),(9,2)", F),
        ("(9,2)", "(2,9)", F),
    ],
    "sum_product": [
        (r"\sum_{i} a_i b_{n-i}", r"\sum_{i} b_{n-i} a_i", T),
        (r"\sum_{k=1}^{n} k x_k", r"\sum_{k=1}^n x_k k", T),
        (r"\prod_{j=1}^{m} c_j d_j", r"\prod_{j=1}^m d_j c_j", T),
        (r"\sum_{i=0}^{n} \binom{n}{i} x^i", r"\sum_{i=0}^{n} x^i \binom{n}{i}", T),
        (r"2\sum_{i} a_i", r"\sum_{i} a_i \cdot 2", T),
        (r"\sum_{i=1}^{n} (a_i + b_i)", r"\sum_{i=1}^{n} (b_i + a_i)", T),
        (r"\sum_{i} a_i b_{n-i}", r"\sum_{i} a_i b_{n+i}", F),
        (r"\sum_{k=1}^{n} k x_k", r"\sum_{k=0}^{n} k x_k", F),
        (r"\sum_{i} a_i b_i", r"\prod_{i} a_i b_i", F),
        (r"\sum_{i=1}^{n} a_i", r"\sum_{i=1}^{n} a_i^2", F),
        (r"\sum_{k=1}^{n} k x_k", r"\sum_{k=1}^{m} k x_k", F),
    ],
    "strict": [
        ("0.3333", r"\frac13", F),
        ("y = 4+4 = 9", "9", F),
        ("y = 4 + 4 = 9", "8", F),
        (r"x \approx 3.14", r"\pi", F),
        (r"\pi \approx 3.14", r"\pi", T),
        (r"x \approx 0.33", r"\frac13", F),
    ],
}

GOLD_WORKED = (r"First count the pairs: 20 + 25 = 45, so the total is \boxed{045}. Let me double-check: "
               r"20 + 25 = 45. Yes.")
REWARD = {
    "anchor_no_colon": [
        ("The sum is twelve.\nAnswer $ 12 $", "12", T),
        ("Adding gives 12.\n\nAnswer \\[ 12 \\]", "12", T),
        ("Answer \\( 3+9 \\)", "12", T),
        ("Answer $$12$$", "12", T),
        ("**Answer** $\\frac{3}{4}$", "0.75", T),
        ("So we get the value.\nAnswer \\[\\frac{7}{2}\\]", "3.5", T),
        ("Final Answer $ 45 $", "45", T),
        ("Answer $\\sqrt{2}$", "\\sqrt 2", T),
        ("Answer \\( (2, 3) \\)", "(2,3)", T),
        ("Answer $ 12 $", "13", F),
        ("Answer $12$ or $13$", "12", F),
        ("Answer \\[ 12 \\]", "21", F),
        ("Answer $$ 3 \\text{ or } 4 $$", "3", F),
        ("Answer $ x = 2 + 2 = 5 $", "5", F),
    ],
    "worked_gold": [
        ("\\boxed{45}", GOLD_WORKED, T),
        ("The answer is 45.", GOLD_WORKED, T),
        ("\\boxed{44}", GOLD_WORKED, F),
        ("\\boxed{7}", "We find $x = 7$.\n\nAnswer $ 7 $", T),
        ("\\boxed{8}", "We find $x = 7$.\n\nAnswer $ 7 $", F),
        ("\\boxed{42}", "Six times seven is 42.\nThe final answer is 42. Let me double-check: 6*7 = 42.", T),
        ("\\boxed{12}", r"So the total is \boxed{12}. Let me double-check: 5 + 7 = 12, so \boxed{12} stands.", T),
    ],
    "decimal_comma_prose": [
        ("Der Preis ist 3,75.\n#### 3,75", "3.75", T),
        ("So it costs 1,000.99\u20ac in total.\nFinal answer: 1,000.99\u20ac", "1000.99", T),
        ("The answer is 2,74 $.", "2.74", T),
        ("Answer: 12,5 %", "12.5", T),
        ("\\boxed{0,125}", "\\frac{1}{8}", T),
        ("\\boxed{1,250}", "1.25", F),
        ("The answer is 2,74 $.", "274", F),
    ],
    "gold_boxes": [
        ("\\boxed{3, 8}", "\\boxed{3}\\boxed{8}", T),
        ("\\boxed{3, 8}", "\\boxed{3} apples and \\boxed{8} pears", T),
        ("\\boxed{8, 3}", "\\boxed{3} apples and \\boxed{8} pears", T),
        ("\\boxed{3} and \\boxed{8}", "\\boxed{3}\\boxed{8}", T),
        ("\\boxed{4, 6}", "There are $\\boxed{4}$ red and $\\boxed{6}$ blue marbles.", T),
        ("\\boxed{3}", "\\boxed{3}\\boxed{8}", F),
        ("\\boxed{8}", "\\boxed{3} apples and \\boxed{8} pears", F),
        ("\\boxed{3, 9}", "\\boxed{3} apples and \\boxed{8} pears", F),
        ("\\boxed{3, 8, 11}", "\\boxed{3}\\boxed{8}", F),
        # a response's boxes with words between them are attempts, and the last one counts
        ("\\boxed{3} apples and \\boxed{8} pears", "3, 8", F),
        ("\\boxed{3} apples and \\boxed{8} pears", "8", T),
        ("\\boxed{4}\nAnswer $ 5 $", "5", T),
        ("\\boxed{4}\nAnswer $ 5 $", "4", F),
    ],
    "tuple_sets_boxed": [
        ("\\boxed{(9,2),(2,9)}", "(2,9),(9,2)", T),
        ("\\boxed{(2,9), (9,2)}", "\\boxed{(9,2),(2,9)}", T),
        ("\\boxed{(9,2)}", "(2,9),(9,2)", F),
    ],
}


def _rows(table):
    return [pytest.param(p, g, e, id=f"{c}-{i}") for c, rows in table.items() for i, (p, g, e) in enumerate(rows)]


@pytest.mark.parametrize("pred, gold, expected", _rows(EQUIV))
def test_is_equivalent_styles(verify, pred, gold, expected):
    assert within_time_limit(verify, verify.is_equivalent, pred, gold) is expected


@pytest.mark.parametrize("response, gold, expected", _rows(REWARD))
def test_reward_styles(verify, response, gold, expected):
    assert within_time_limit(verify, verify.reward, response, gold) == (1.0 if expected else 0.0)


def test_row_count():
    assert sum(map(len, EQUIV.values())) + sum(map(len, REWARD.values())) >= 100


def test_batch_reward_agrees(verify):
    # batch_reward decides the cheap steps (decimal commas included) in the parent and the rest in workers: both
    # paths must give the table's verdicts.
    rows = [row for rows in REWARD.values() for row in rows]
    rows += [(rf"\boxed{{{p}}}", g, e) for p, g, e in EQUIV["decimal_comma"]]
    expected = [1.0 if e else 0.0 for _, _, e in rows]
    assert verify.batch_reward([r for r, _, _ in rows], [g for _, g, _ in rows], workers=2) == expected
