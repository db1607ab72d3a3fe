"""The embedded task's warm-up variants: "full" is the original warm-up, "headroom" hides most of * and /."""
import random

import pytest

import countdown


def test_needs_muldiv_on_hand_made_problems():
    assert countdown.is_plus_minus("1+2+3") and not countdown.is_plus_minus("2*3") and not countdown.is_plus_minus("6/2")
    assert not countdown.needs_muldiv({"solutions": ["1*2*3", "1+2+3"]})     # one +/- answer is enough
    assert countdown.needs_muldiv({"solutions": ["3*7+4", "4+7*3"]})
    train, held_out = countdown.make_problems()
    by_prompt = {p["prompt"]: p for p in train + held_out}
    assert countdown.needs_muldiv(by_prompt["3,7,4>25:"])                  # 3*7+4: no +/- way to 25
    assert not countdown.needs_muldiv(by_prompt["1,2,3>6:"])               # 1+2+3 (also 1*2*3)
    # 193 of the 300 held-out problems need * or / (fixed by the constant split)
    assert sum(map(countdown.needs_muldiv, held_out)) == 193


def test_full_variant_is_the_problem_list_itself():
    train, _ = countdown.make_problems()
    assert countdown.warmup_problems(train, "full") is train
    assert countdown.warmup_problems(train) is train
    with pytest.raises(ValueError, match="full, headroom"):
        countdown.warmup_problems(train, "Full")


def test_headroom_variant_keeps_plus_minus_solutions_and_15_percent_of_the_muldiv_problems():
    train, _ = countdown.make_problems()
    before = [list(p["solutions"]) for p in train]
    kept = countdown.warmup_problems(train, "headroom")
    assert [p["solutions"] for p in train] == before                       # the input is not modified
    by_prompt = {p["prompt"]: p for p in kept}
    assert len(by_prompt) == len(kept)
    n_muldiv = n_muldiv_kept = 0
    for p in train:
        if countdown.needs_muldiv(p):
            n_muldiv += 1
            if p["prompt"] in by_prompt:
                n_muldiv_kept += 1
                assert by_prompt[p["prompt"]]["solutions"] == p["solutions"]   # kept whole
        else:
            # every problem with a +/- answer is kept, with exactly its +/- answers (all correct)
            sols = by_prompt[p["prompt"]]["solutions"]
            assert sols == [s for s in p["solutions"] if countdown.is_plus_minus(s)] and sols
            assert all(countdown.reward(s, p["numbers"], p["target"]) == 1.0 for s in sols)
    assert n_muldiv == 4603 and n_muldiv_kept == 681                       # 14.8 % by the prompt hash
    assert abs(n_muldiv_kept / n_muldiv - countdown.HEADROOM_MULDIV_FRACTION) < 0.01
    # the selection depends on the prompt only: not on the order of the list or on any seed
    shuffled = list(train)
    random.Random(5).shuffle(shuffled)
    assert {p["prompt"] for p in countdown.warmup_problems(shuffled, "headroom")} == set(by_prompt)
    # * and / are rare in what the headroom warm-up sees: 2,766 of 15,883 solutions (vs 21,845 of 34,962 in full)
    sols = [s for p in kept for s in p["solutions"]]
    assert (len(sols), sum(not countdown.is_plus_minus(s) for s in sols)) == (15883, 2766)


def test_warm_up_variant_only_changes_the_data():
    """warm_up(variant="headroom") is warm_up(variant="full") on warmup_problems(..., "headroom"), loss for loss,
    and the default is "full"."""
    train, _ = countdown.make_problems()
    tok = countdown.build_tokenizer()

    def losses(problems, **kw):
        model = countdown.build_model(tok, hidden=32, layers=2, heads=2, seed=1)
        return countdown.warm_up(model, tok, problems, 3, batch_size=8, seed=4, **kw)

    headroom = losses(train, variant="headroom")
    assert headroom == losses(countdown.warmup_problems(train, "headroom"), variant="full")
    assert losses(train) == losses(train, variant="full") != headroom


def test_train_table_reports_the_problems_that_need_muldiv_apart():
    """`python train.py` prints before/after rows for the held-out problems that need * or / and for the rest,
    computed from the eval lines' per-problem correct counts (the unbiased estimator on each subset)."""
    import train
    import train_io

    held_out = [{"solutions": ["1+2"]}, {"solutions": ["2*3"]}, {"solutions": ["8/4", "2*1"]}]
    subsets = countdown.held_out_subsets(held_out)
    assert subsets == {"needs * or /": [1, 2], "has a +/- answer": [0]}
    before = {"step": 0, "pass@1": 0.5, "pass@2": 0.75, "correct": [2, 0, 1]}
    after = {"step": 5, "pass@1": 0.5, "pass@2": 0.5, "correct": [0, 2, 1]}
    lines = train_io.pass_at_k_table(before, after, 2, subsets).splitlines()
    # n = 2: pass@1 = c / 2, pass@2 = 1 when c >= 1; "needs" = problems 1 and 2
    assert lines[2:] == ["| before (step 0) | 0.500 | 0.750 |", "| after (step 5) | 0.500 | 0.500 |",
                         "| needs * or / (2): before | 0.250 | 0.500 |", "| needs * or / (2): after | 0.750 | 1.000 |",
                         "| has a +/- answer (1): before | 1.000 | 1.000 |",
                         "| has a +/- answer (1): after | 0.000 | 0.000 |"]
    assert train_io.pass_at_k_table(before, after, 2) == "\n".join(lines[:4])     # no subsets: the plain table
    assert train.parse_args([]).warmup_variant == "headroom"                  # the default run shows the split
