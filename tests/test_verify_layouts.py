"""Answer layouts that models and datasets write around an otherwise plain answer: display math that spans lines
after an answer cue, LaTeX double-escaped as JSON carries it, a gold with several boxes, sets of tuples in another
order or with a tuple repeated, and a decimal comma with a currency sign after a label that ends in a colon.

Each row is `(pred or response, gold, expected)`, the verdict a careful grader gives. False rows are near misses
of the same layout, and answers with no cue at all stay unrewarded (the default `fallback="none"`).
"""
import pytest

from conftest import within_time_limit

T, F = True, False

EQUIV = {
    "double_escaped": [
        (r"\\frac{1}{2}", "0.5", T),
        (r"\\dfrac{3}{4}", r"\frac34", T),
        (r"x \\le 3", r"(-\infty, 3]", T),
        (r"x \\leq 3", r"x \le 3", T),
        (r"\\left( 1, 2 \\right)", "(1, 2)", T),
        (r"\\sqrt{2}", r"\sqrt2", T),
        (r"\\pi", r"\pi", T),
        (r"\frac12", r"\\frac{1}{2}", T),
        (r"-2 \\le x < 5", r"\\left[-2, 5\\right)", T),
        (r"\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1, 2)", T),
        (r"\\boxed{\\frac{1}{2}}", "0.5", T),
        (r"\\frac{1}{3}", "0.5", F),
        (r"x \\le 3", r"(-\infty, 3)", F),
        (r"\\left( 2, 1 \\right)", "(1, 2)", F),
        (r"\\sqrt{3}", r"\sqrt2", F),
        (r"\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}", "(1, 2)", F),
    ],
    "multi_box_gold": [
        ("3, 8", r"So \boxed{3} apples and \boxed{8} pears.", T),
        ("8, 3", r"So \boxed{3} apples and \boxed{8} pears.", T),
        (r"\boxed{3, 8}", r"\boxed{3} and \boxed{8}", T),
        ("8, 3", r"\boxed{3}, \boxed{8}", T),
        ("-5, 3", r"\boxed{3} \text{ or } \boxed{-5}", T),
        (r"\{3, 8\}", r"$x = \boxed{3}$ or $x = \boxed{8}$", T),
        ("3", r"\boxed{3}, \boxed{8}", F),
        ("8", r"So \boxed{3} apples and \boxed{8} pears.", F),
        ("3, 8, 9", r"\boxed{3}, \boxed{8}", F),
        ("3, 5", r"\boxed{3} \text{ or } \boxed{-5}", F),
    ],
    "tuple_sets": [
        ("(2,3), (5,1)", "(5,1), (2,3)", T),
        (r"\{(1,2), (3,4)\}", r"\{(3,4), (1,2)\}", T),
        (r"\{(1,2), (3,4), (1,2)\}", r"\{(1,2), (3,4)\}", T),
        ("(1,2), (3,4), (1,2)", "(1,2), (3,4)", T),
        (r"\{(1,2), (3,4)\}", "(3,4), (1,2)", T),
        (r"\left\{(0,0), (1,1)\right\}", r"\{(1,1),(0,0)\}", T),
        ("(-1, 2), (2, -1)", "(2,-1), (-1,2)", T),
        ("(1,2,3), (3,2,1)", "(3,2,1), (1,2,3)", T),
        (r"\{(0,1), (0,1)\}", r"\{(0,1)\}", T),
        (r"\{(1,2), (3,4)\}", r"\{(2,1), (3,4)\}", F),
        (r"\{(1,2)\}", r"\{(1,2), (3,4)\}", F),
        (r"\{(1,2), (3,4), (5,6)\}", r"\{(1,2), (3,4)\}", F),
        ("(-1, 2), (2, -1)", "(2,-1), (1,2)", F),
        ("(1,2), (1,2)", "(1,2), (2,1)", F),
        ("(1,2,3), (3,2,1)", "(3,2,1), (1,3,2)", F),
    ],
    "labelled_currency": [
        ("Total: 12,50 \u20ac", "12.5", T),
        ("Total: 12,50\u20ac", "12.50", T),
        ("Total: \u20ac12,50", "12.5", T),
        ("Total: 12,50 $", "12.5", T),
        ("Preis: 3,99 \u20ac", "3.99", T),
        ("Summe: 7,5 \u20ac", r"\frac{15}{2}", T),
        ("Total: 1,250 \u20ac", "1250", T),
        ("Total: 12,50", "12.5", T),
        ("Total: 12,50 \u20ac", "1250", F),
        ("Total: 12,50 \u20ac", "12.05", F),
        ("Total: 1,250 \u20ac", "1.25", F),
        ("Total: 12,50 \u20ac or 13 \u20ac", "12.5", F),
    ],
}

REWARD = {
    "display_after_cue": [
        ("Answer \\[\n9\n\\]", "9", T),
        ("Answer $$\n9\n$$", "9", T),
        ("So the count is nine.\n\nAnswer \\[\n  9\n\\]", "9", T),
        ("Final Answer \\[\n\\frac{1}{2}\n\\]", "0.5", T),
        ("Answer:\n$$\n\\frac{3}{4}\n$$", "0.75", T),
        ("Answer \\[\nx = 3\n\\]", "3", T),
        ("Answer \\[\n\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}\n\\]", "(1, 2)", T),
        ("Answer $$\n12\n$$\nCheck: 3 \\cdot 4 = 12.", "12", T),
        ("The final answer is\n\\[\n42\n\\]", "42", T),
        ("Answer \\[\n9\n\\]", "8", F),
        ("Answer $$\n13\n$$", "12", F),
        ("Answer $$\n9 \\text{ or } 8\n$$", "9", F),
        ("Answer \\[\n\\]", "0", F),
        ("$$\n9\n$$", "9", F),
        ("We get\n\\[\n9\n\\]", "9", F),
    ],
    "double_escaped": [
        (r"So the answer is \\boxed{\\frac{3}{4}}.", "0.75", T),
        (r"\boxed{3}", r"\\boxed{3}", T),
        (r"The final answer is $\\sqrt{2}$.", r"\sqrt2", T),
        (r"\\boxed{x \\le 3}", r"(-\infty, 3]", T),
        (r"So the answer is \\boxed{\\frac{1}{4}}.", "0.75", F),
        (r"\\boxed{x \\ge 3}", r"(-\infty, 3]", F),
    ],
    "multi_box_gold": [
        (r"\boxed{3, 8}", r"\boxed{3} \text{ and } \boxed{8}", T),
        (r"\boxed{8}", r"\boxed{3} \text{ and } \boxed{8}", F),
    ],
    "tuple_sets": [
        (r"\boxed{(5,1), (2,3)}", "(2,3), (5,1)", T),
        (r"\boxed{\{(5,1), (2,3), (5,1)\}}", r"\{(2,3), (5,1)\}", T),
        (r"\boxed{(5,1), (3,2)}", "(2,3), (5,1)", F),
    ],
    "labelled_currency": [
        (r"\boxed{\text{Total: } 12,50 \text{ \euro}}", "12.5", T),
        ("Answer: Total: 12,50 \u20ac", "12.5", T),
        ("Final answer: Total: 3,99 \u20ac", "3.99", T),
        ("Answer: Total: 12,50 \u20ac", "1250", F),
        ("Total: 12,50 \u20ac", "12.5", F),
    ],
}


def _rows(table):
    return [pytest.param(p, g, e, id=f"{c}-{i}") for c, rows in table.items() for i, (p, g, e) in enumerate(rows)]


@pytest.mark.parametrize("pred, gold, expected", _rows(EQUIV))
def test_is_equivalent_layouts(verify, pred, gold, expected):
    assert within_time_limit(verify, verify.is_equivalent, pred, gold) is expected


@pytest.mark.parametrize("response, gold, expected", _rows(REWARD))
def test_reward_layouts(verify, response, gold, expected):
    assert within_time_limit(verify, verify.reward, response, gold) == (1.0 if expected else 0.0)


def test_every_layout_has_right_answers_and_near_misses():
    assert sum(map(len, EQUIV.values())) + sum(map(len, REWARD.values())) >= 60
    for table in (EQUIV, REWARD):
        for style, rows in table.items():
            assert {e for _, _, e in rows} == {T, F}, style


def test_batch_reward_agrees(verify):
    rows = [row for rows in REWARD.values() for row in rows]
    rows += [(rf"\boxed{{{p}}}", g, e) for p, g, e in EQUIV["labelled_currency"] + EQUIV["tuple_sets"]]
    expected = [1.0 if e else 0.0 for _, _, e in rows]
    assert verify.batch_reward([r for r, _, _ in rows], [g for _, g, _ in rows], workers=2) == expected
