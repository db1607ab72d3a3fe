"""benchmarks/stats.py and benchmarks/compare.py: the statistics (exact values on hand-made inputs), the aggregation
and the resume logic.

No training here: the study's runs are replaced by hand-made metrics files and records."""
import importlib.util
import json
import os
import subprocess

import pytest

def _load(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(os.path.dirname(__file__), "..", "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _load("compare")
stats = _load("stats")


def test_per_problem_pass_at_k_is_the_unbiased_estimator():
    # c correct of n = 4: pass@1 = c / 4; pass@2 = 1 - C(4-c, 2) / C(4, 2)
    assert stats.per_problem_pass_at_k([0, 1, 2, 4], 4, 1) == [0.0, 0.25, 0.5, 1.0]
    assert stats.per_problem_pass_at_k([0, 1, 2, 4], 4, 2) == [0.0, 0.5, 1 - 1 / 6, 1.0]
    assert stats.per_problem_pass_at_k([0, 1, 63], 64, 64) == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"k must be in \[1, n=4\]"):
        stats.per_problem_pass_at_k([1], 4, 5)


def test_split_is_by_the_warm_start_success_rate():
    # 6 / 64 = 0.094 < 0.1 is hard, 7 / 64 = 0.109 is easy
    assert compare.split_easy_hard([0, 6, 7, 64, 3], 64) == {"all": [0, 1, 2, 3, 4], "easy": [2, 3],
                                                              "hard": [0, 1, 4]}


@pytest.mark.parametrize("p, df, expected", [
    # Student's t quantiles as printed in the standard tables (and by scipy.stats.t.ppf), to their 6 decimals
    (0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 10, 2.228139),
    (0.975, 30, 2.042272), (0.95, 4, 2.131847), (0.995, 4, 4.604095), (0.9995, 1, 636.619249)])
def test_t_quantile_matches_the_tables(p, df, expected):
    assert stats.t_quantile(p, df) == pytest.approx(expected, abs=1e-6)
    assert stats.t_quantile(1 - p, df) == pytest.approx(-expected, abs=1e-6)


def test_t_quantile_closed_forms_and_limits():
    import math
    for p in (0.6, 0.9, 0.99):
        # df 1 is the Cauchy distribution: tan(pi (p - 1/2)); df 2: (2p - 1) / sqrt(2 p (1 - p))
        assert stats.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
        assert stats.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)
    assert stats.t_quantile(0.5, 7) == 0.0
    assert stats.t_quantile(0.975, 1e6) == pytest.approx(1.959966, abs=1e-5)      # the normal's 1.959964
    assert stats.t_cdf(stats.t_quantile(0.8, 3.5), 3.5) == pytest.approx(0.8, abs=1e-14)
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\)"):
        stats.t_quantile(1.0, 4)
    with pytest.raises(ValueError, match="df must be > 0"):
        stats.t_quantile(0.9, 0)


def test_t_interval_over_per_seed_means_by_hand():
    # 5 seeds: mean 2, sd sqrt(10 / 4) = 1.5811, se = sd / sqrt(5) = 0.70711, half = 2.776445 * se = 1.96324
    t = stats.t_interval([0.0, 1.0, 2.0, 3.0, 4.0])
    assert (t["mean"], t["df"]) == (2.0, 4)
    assert t["se"] == pytest.approx(0.5 ** 0.5)
    assert (t["lo"], t["hi"]) == (pytest.approx(2 - 1.963243, abs=1e-6), pytest.approx(2 + 1.963243, abs=1e-6))
    assert stats.t_interval([3.0, 3.0, 3.0])["lo"] == 3.0 == stats.t_interval([3.0, 3.0, 3.0])["hi"]
    one = stats.t_interval([0.5])
    assert (one["mean"], one["lo"], one["hi"]) == (0.5, None, None)
    # a seed x problem matrix: the interval is over its row means, not over its S x P cells
    e = stats.matrix_effect([[0.0, 0.2, 0.4], [0.2, 0.2, 0.2], [0.6, 0.4, 0.5]])
    assert e["per_seed"] == [pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.5)]
    # mean 0.3, sd sqrt((0.01 + 0.01 + 0.04) / 2) = 0.17321, se 0.1, t(0.975, 2) = 4.302653
    assert e["mean"] == pytest.approx(0.3) and e["df"] == 2 and e["se_seeds"] == pytest.approx(0.1)
    assert e["ci"] == [pytest.approx(0.3 - 0.4302653), pytest.approx(0.3 + 0.4302653)]


def test_crossed_components_recover_known_components():
    # D = mu + a_s + b_i + e_si with every row and column of e summing to 0, so the ANOVA is exact:
    # MS_seed = P sum(a^2) / (S - 1) = 4 * 2 / 2 = 4; MS_problem = S sum(b^2) / (P - 1) = 3 * 5 / 3 = 5;
    # MS_residual = sum(e^2) / ((S - 1)(P - 1)) = 4 * 0.75^2 / 6 = 0.375
    mu, a, b, c = 0.25, [-1.0, 0.0, 1.0], [-1.5, -0.5, 0.5, 1.5], 0.75
    e = [[c, -c, 0, 0], [-c, c, 0, 0], [0, 0, 0, 0]]
    D = [[mu + a[s] + b[i] + e[s][i] for i in range(4)] for s in range(3)]
    comp = stats.crossed_components(D)
    assert comp["residual"] == pytest.approx(0.375)
    assert comp["seed"] == pytest.approx((4 - 0.375) / 4)
    assert comp["problem"] == pytest.approx((5 - 0.375) / 3)
    # SE^2 = var_seed / S + var_problem / P + var_residual / (S P) = (MS_seed + MS_problem - MS_res) / (S P)
    assert comp["se"] == pytest.approx(((4 + 5 - 0.375) / 12) ** 0.5)
    # identical rows: no seed variance; the estimate is truncated at 0, not negative
    flat = stats.crossed_components([[0.0, 1.0, 0.5], [0.0, 1.0, 0.5]])
    # columns 0, 1, .5: MS_problem = 2 * 0.5 / 2 = 0.5, var_problem = 0.5 / 2; SE^2 = 0.25 / 3
    assert (flat["seed"], flat["residual"]) == (0.0, 0.0) and flat["problem"] == pytest.approx(0.25)
    assert flat["se"] == pytest.approx((0.25 / 3) ** 0.5)
    assert stats.crossed_components([[1.0], [2.0]])["se"] is None      # one problem: no component is identified


def test_quantile_interpolates_like_numpy():
    assert stats.quantile([0.0, 1.0, 2.0, 3.0], 0.5) == 1.5
    assert stats.quantile([0.0, 1.0, 2.0, 3.0], 0.0) == 0.0 and stats.quantile([0.0, 1.0, 2.0, 3.0], 1.0) == 3.0
    assert stats.quantile([5.0], 0.975) == 5.0


def test_bootstrap_over_seeds_enumerates_every_resample():
    # two seeds with per-seed differences 0 and 1: the 4 ordered resamples have means 0, .5, .5, 1
    ci = stats.bootstrap_ci([[0.0], [1.0]], resample_problems=False)
    assert ci["exact"] and ci["mean"] == 0.5
    assert ci["lo"] == pytest.approx(0.5 * 0.075) and ci["hi"] == pytest.approx(0.5 + 0.5 * 0.925)
    # one seed, two problems: the same distribution over problems, scaled by 2
    ci = stats.bootstrap_ci([[0.0, 2.0]], resample_problems=True)
    assert ci["exact"] and (ci["lo"], ci["hi"]) == (pytest.approx(0.075), pytest.approx(1.925))


def test_bootstrap_over_seeds_and_problems_exact_two_by_two():
    # D = [[.5, 0], [0, .5]]: of the 16 (seed resample, problem resample) pairs, 2 give 0, 12 give .25, 2 give .5
    ci = stats.bootstrap_ci([[0.5, 0.0], [0.0, 0.5]])
    assert ci["exact"] and ci["mean"] == 0.25 and (ci["lo"], ci["hi"]) == (0.0, 0.5)
    # resampling only the seeds: both seeds have mean .25, so the interval is a point
    ci = stats.bootstrap_ci([[0.25], [0.25]], resample_problems=False)
    assert (ci["lo"], ci["hi"]) == (0.25, 0.25)
    with pytest.raises(ValueError, match="matrix"):
        stats.bootstrap_ci([[1.0, 2.0], [3.0]])


def test_bootstrap_monte_carlo_is_reproducible_and_has_the_normal_width():
    import random
    rng = random.Random(0)
    row = [rng.gauss(0.0, 1.0) for _ in range(400)]
    a = stats.bootstrap_ci([row], draws=4000, seed=3)
    b = stats.bootstrap_ci([row], draws=4000, seed=3)
    assert not a["exact"] and a == b
    mean = sum(row) / len(row)
    sd = (sum((x - mean) ** 2 for x in row) / len(row)) ** 0.5
    # a mean of 400 values: the 95 % interval is about mean +- 1.96 sd / 20
    assert a["lo"] < mean < a["hi"]
    assert (a["hi"] - a["lo"]) == pytest.approx(2 * 1.96 * sd / 20, rel=0.1)
    # constant differences: no spread at all, whatever is resampled
    c = stats.bootstrap_ci([[0.125] * 300 for _ in range(5)], draws=500)
    assert (c["lo"], c["hi"], c["mean"]) == (0.125, 0.125, 0.125)


def test_bootstrap_counts_the_residual_three_times_where_the_crossed_se_counts_it_once():
    # iid noise (no seed or problem effect): the grand mean's variance is 1 / (S P). The two-way bootstrap's is about
    # 1 / (S P) times (S-1)/S + (P-1)/P + (S-1)(P-1)/(S P): the residual enters through the resampled seeds, the
    # resampled problems and their product. The crossed SE stays near 1 / sqrt(S P) (a little above: a component
    # estimate truncated at 0 is biased up when the component is 0)
    import random
    rng = random.Random(0)
    S, P, reps = 5, 40, 20
    boot, crossed = 0.0, 0.0
    for _ in range(reps):
        D = [[rng.gauss(0.0, 1.0) for _ in range(P)] for _ in range(S)]
        b = stats.bootstrap_ci(D, draws=1000)
        boot += ((b["hi"] - b["lo"]) / (2 * 1.96)) ** 2 * S * P / reps
        crossed += stats.crossed_components(D)["se"] ** 2 * S * P / reps
    assert boot == pytest.approx((S - 1) / S + (P - 1) / P + (S - 1) * (P - 1) / (S * P), rel=0.2)
    assert 0.9 < crossed < 1.6


def test_superiority_verdict_reads_the_interval_not_the_mean():
    v = stats.verdict
    assert v([0.001, 0.05], +1) == "supported"
    assert v([-0.05, -0.001], +1) == "not supported"           # the opposite, clearly
    assert v([-0.005, 0.008], +1) == "not supported"           # within the negligible band
    assert v([-0.02, 0.05], +1) == "inconclusive"
    assert v([-0.05, -0.02], -1) == "supported"                # a claimed decrease
    assert v([0.02, 0.05], -1) == "not supported"
    assert v([None, None], +1) == "inconclusive"               # one seed: no interval


def test_non_inferiority_verdict_uses_the_margin_on_the_side_against_the_claim():
    v = stats.verdict
    assert v([-0.005, 0.008], +1, margin=0.01) == "supported"      # inside +-0.01: "does not cost" holds
    assert v([-0.009, -0.001], +1, margin=0.01) == "supported"     # a cost, but smaller than the margin
    assert v([-0.02, 0.05], +1, margin=0.01) == "inconclusive"     # could cost more than the margin
    assert v([-0.05, -0.011], +1, margin=0.01) == "not supported"  # costs more than the margin
    assert v([0.2, 0.4], +1, margin=0.01) == "supported"
    # a claimed decrease ("keeps the rank-1 probability at most GRPO's"): mirrored
    assert v([-0.008, 0.009], -1, margin=0.01) == "supported"
    assert v([0.011, 0.05], -1, margin=0.01) == "not supported"
    assert v([-0.01, 0.02], -1, margin=0.01) == "inconclusive"


def test_paired_effect_pairs_by_seed_only():
    # seeds {0, 1, 2} against {1, 2, 3}: only 1 and 2 pair; per seed, the mean over the subset's problems of the
    # per-problem difference
    runs_m = {0: {"correct": [4, 4]}, 1: {"correct": [4, 0]}, 2: {"correct": [2, 2]}}
    runs_b = {1: {"correct": [0, 0]}, 2: {"correct": [2, 0]}, 3: {"correct": [0, 0]}}
    e = stats.paired_effect(runs_m, runs_b, 4, 1, [0, 1])
    assert e["seeds"] == [1, 2] and e["n_problems"] == 2
    # seed 1: (1 - 0, 0 - 0) -> .5; seed 2: (.5 - .5, .5 - 0) -> .25
    assert e["per_seed"] == [0.5, 0.25] and e["mean"] == pytest.approx(0.375)
    # t(0.975, 1) = 12.706205 times se = sd / sqrt(2) = 0.125
    assert e["ci"] == [pytest.approx(0.375 - 12.706205 * 0.125, abs=1e-6),
                       pytest.approx(0.375 + 12.706205 * 0.125, abs=1e-6)]
    only_problem_1 = stats.paired_effect(runs_m, runs_b, 4, 1, [1])
    assert only_problem_1["per_seed"] == [0.0, 0.5] and only_problem_1["se_crossed"] is None
    assert stats.paired_effect(runs_m, {5: {"correct": [0, 0]}}, 4, 1, [0]) == {"seeds": [], "n_problems": 1}
    s = stats.scalar_effect({0: 0.5, 1: 0.7, 2: None}, {0: 0.2, 1: 0.3, 2: 0.1, 3: 0.0})
    assert s["seeds"] == [0, 1] and s["per_seed"] == [pytest.approx(0.3), pytest.approx(0.4)]


def test_primary_claims_are_named_once_per_paper():
    claims = [("A", "x improves", [("x", "ref", "pass@8", "all", +1)]),
              ("A", "x keeps pass@1", [("x", "ref", "pass@1", "all", +1, 0.01)]),
              ("B", "y improves", [("y", "ref", "pass@8", "all", +1)])]
    effects = {("x", "ref", "pass@8", "all"): {"mean": 0.1, "ci": [0.05, 0.15], "seeds": [0, 1]},
               ("x", "ref", "pass@1", "all"): {"mean": 0.0, "ci": [-0.004, 0.006], "seeds": [0, 1]}}
    out = stats.check_claims(claims, lambda *t: effects.get(t), {"A": ("x", "ref", "pass@n", "all"),
                                                                 "B": ("y", "ref", "pass@n", "all")}, 8)
    assert [(c["role"], c["verdict"]) for c in out] == [("primary", "supported"), ("secondary", "supported"),
                                                         ("primary", "not run")]
    assert out[1]["tests"][0]["kind"] == "non-inferiority, margin 0.01" and out[1]["tests"][0]["superior"] is False
    with pytest.raises(ValueError, match="PRIMARY names a test that no claim of \\['B'\\] has"):
        stats.check_claims(claims, lambda *t: None, {"B": ("y", "ref", "pass@1", "all")}, 8)


def test_both_studies_name_a_primary_claim_for_each_paper():
    for paper, test in compare.PRIMARY.items():
        assert [c for c in compare.claims(64) if c[0] == paper and c[2][0][:4] == (*test[:2], "pass@64", test[3])]


def _results(n=4):
    """Two configurations x three seeds on two problems (problem 0 hard, problem 1 easy), by hand."""
    def run(config, seed, correct, step0, entropy):
        return {"config": config, "variant": "headroom", "seed": seed, "wall_seconds": 60.0, "started": 100.0 * seed,
                "finished": 100.0 * seed + 60, "correct": correct, "correct_step0": step0,
                "trajectory": {"entropy": [entropy] * 3, "rank1_prob": [0.5, 0.6, 0.7], "reward_mean": [0.1] * 3,
                               "zero_variance_frac": [0.5] * 3}}
    runs = [run("grpo", 0, [2, 0], [0, 3], 0.3), run("grpo", 1, [2, 0], [0, 3], 0.4),
            run("grpo", 2, [2, 0], [0, 3], 0.35),
            run("passk_k4", 0, [4, 0], [0, 3], 0.5), run("passk_k4", 1, [4, 2], [0, 3], 0.8),
            run("passk_k4", 2, [3, 1], [0, 3], 0.6)]
    ws = {"variant": "headroom", "seed": compare.SPLIT_SEED, "correct": [0, 3], "pass@k": [0.375] * n,
          "split": compare.split_easy_hard([0, 3], n), "hard_rate": compare.HARD_RATE}
    return {"config": dict(compare.FULL, steps=3, seeds=3, eval_samples=n, eval_problems=2, jobs=2, lr=1e-4),
            "warm_starts": {"headroom": ws}, "runs": runs}


T2 = 4.302653       # t(0.975, 2): three seeds


def test_aggregate_means_and_paired_effects_by_hand():
    results = _results()
    agg = compare.aggregate(results)
    assert agg["ks"] == [1, 4]
    s = agg["summary"]
    # pass@1 = c / 4: grpo [.5, 0] every seed; passk [1, 0], [1, .5], [.75, .25]
    assert s["grpo"]["all:pass@1"] == 0.25 and s["grpo"]["hard:pass@1"] == 0.5 and s["grpo"]["easy:pass@1"] == 0
    assert s["passk_k4"]["all:pass@1"] == pytest.approx(0.7 / 1.2) and s["passk_k4"]["hard:pass@1"] == \
        pytest.approx(2.75 / 3)
    assert s["passk_k4"]["easy:pass@4"] == pytest.approx(2 / 3) and s["passk_k4"]["entropy"] == pytest.approx(1.9 / 3)
    assert s["grpo"]["rank1_prob"] == pytest.approx(0.6)
    w = agg["warm_start"]["headroom"]
    assert (w["n_easy"], w["n_hard"], w["all:pass@1"], w["entropy"]) == (1, 1, 0.375, pytest.approx(0.35))
    e = compare.find_effect(agg, "passk_k4", "grpo", "pass@1", "all")
    # D = [[.5, 0], [.5, .5], [.25, .25]] (seed x problem): per-seed means .25, .5, .25: mean 1/3, sd 0.144338,
    # se 0.083333, half-width t(0.975, 2) se
    assert e["seeds"] == [0, 1, 2] and e["per_seed"] == [0.25, 0.5, 0.25] and e["mean"] == pytest.approx(1 / 3)
    assert e["se_seeds"] == pytest.approx(1 / 12) and e["df"] == 2
    assert e["ci"] == [pytest.approx(1 / 3 - T2 / 12, abs=1e-6), pytest.approx(1 / 3 + T2 / 12, abs=1e-6)]
    # the crossed components: rows .25 .5 .25, columns 5/12 and 1/4, residuals +-1/6 and +-1/12: MS_seed =
    # MS_problem = MS_res = 1/24, so the seed and problem components are 0 and SE^2 = MS_res / (S P) = 1/144
    assert e["components"] == {"seed": pytest.approx(0, abs=1e-15), "problem": pytest.approx(0, abs=1e-15),
                               "residual": pytest.approx(1 / 24)}
    assert e["se_crossed"] == pytest.approx(1 / 12)
    assert e["ci_seeds_only"][0] < e["mean"] < e["ci_seeds_only"][1] and e["ci_exact"]
    # hard: one problem, per-seed differences .5, .5, .25
    hard = compare.find_effect(agg, "passk_k4", "grpo", "pass@1", "hard")
    assert hard["mean"] == pytest.approx(5 / 12) and hard["se_crossed"] is None
    assert hard["ci"] == [pytest.approx(5 / 12 - T2 / 12, abs=1e-6), pytest.approx(5 / 12 + T2 / 12, abs=1e-6)]
    # entropy over the last steps: differences .2, .4, .25 per seed
    ent = compare.find_effect(agg, "passk_k4", "grpo", "entropy")
    se = (((0.2 - 0.85 / 3) ** 2 + (0.4 - 0.85 / 3) ** 2 + (0.25 - 0.85 / 3) ** 2) / 2 / 3) ** 0.5
    assert ent["mean"] == pytest.approx(0.85 / 3) and ent["ci"] == [pytest.approx(0.85 / 3 - T2 * se, abs=1e-6),
                                                                     pytest.approx(0.85 / 3 + T2 * se, abs=1e-6)]
    # the seeds-only bootstrap (secondary) cannot leave the range of the per-seed differences
    assert 0.2 <= ent["ci_boot"][0] < ent["mean"] < ent["ci_boot"][1] <= 0.4


def test_claims_and_report_from_hand_made_results():
    results = _results()
    results["aggregate"] = compare.aggregate(results)
    results["claims"] = compare.evaluate_claims(results, results["aggregate"])
    results["wall_seconds"] = 160.0
    by_text = {c["claim"]: c for c in results["claims"]}
    # hard pass@1: 5/12 +- T2/12 = [0.058, 0.775] excludes 0
    assert by_text["Pass@k (k=4) improves pass@1 on the hard problems (exploration)"]["verdict"] == "supported"
    assert by_text["Pass@k (k=4) ends with higher token entropy than GRPO (diversity)"]["verdict"] == "supported"
    # a non-inferiority claim: the lower bound 1/3 - T2/12 = -0.025 is below -0.01
    cost = by_text["Pass@k (k=4) does not cost pass@1 overall"]
    assert cost["verdict"] == "inconclusive" and cost["role"] == "secondary"
    assert cost["tests"][0]["kind"] == "non-inferiority, margin 0.01"
    assert by_text["SimKO (alpha 0.2) improves pass@4 vs GRPO"]["verdict"] == "not run"
    primary = {c["paper"]: c for c in results["claims"] if c["role"] == "primary"}
    assert primary["Pass@k Training"]["claim"] == "Pass@k (k=4) improves pass@4 vs GRPO, all problems"
    assert primary["SimKO"]["verdict"] == "not run"
    md = compare.report(results)
    assert "| passk_k4 | grpo | +0.333 [-0.025, +0.692] |" in md
    assert "### Primary" in md and "### Secondary" in md and "Multiplicity" in md
    assert "| Pass@k Training | Pass@k (k=4) does not cost pass@1 overall | passk_k4 vs grpo, pass@1, all | " \
           "non-inferiority, margin 0.01 | +0.333 [-0.025, +0.692] |" in md
    assert "**supported**" in md and "not run" in md
    assert "the runs ran at commit not recorded" in md


def test_finished_runs_are_reused_without_training(tmp_path, monkeypatch):
    cfg = dict(compare.QUICK, steps=3, eval_samples=2, eval_problems=2, jobs=1, lr=1e-4)

    class Args:
        runs, warmup_cache, lr = str(tmp_path), str(tmp_path / "wc"), 1e-4
    out = tmp_path / "headroom" / "grpo-s0"
    out.mkdir(parents=True)
    lines = [{"type": "eval", "step": 0, "pass@1": 0.25, "pass@2": 0.5, "correct": [1, 0]},
             {"type": "train", "step": 1, "entropy": 0.5, "rank1_prob": 0.7, "reward_mean": 0.2},
             {"type": "eval", "step": 3, "pass@1": 0.5, "pass@2": 0.5, "correct": [2, 0]}]
    (out / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (out / "study_timing.json").write_text(json.dumps({"wall_seconds": 12.0, "started": 1.0, "finished": 13.0,
                                                       "load_at_start": 1.0, "load_at_end": 1.0}))

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(subprocess, "Popen", no_training)
    run = compare.run_one("grpo", 0, cfg, Args)
    assert run["correct"] == [2, 0] and run["correct_step0"] == [1, 0] and run["final"] == [0.5, 0.5]
    assert run["wall_seconds"] == 12.0 and run["trajectory"]["rank1_prob"] == [0.7]
    # finished, but the study process died before writing its timing: the time comes from the files, no training
    (out / "study_timing.json").unlink()
    (out / "config.json").write_text("{}")
    os.utime(out / "config.json", (1000.0, 1000.0))
    os.utime(out / "metrics.jsonl", (1234.0, 1234.0))
    monkeypatch.setattr(compare, "code_fingerprint", lambda: {})
    run = compare.run_one("grpo", 0, cfg, Args)
    assert (run["wall_seconds"], run["started"], run["correct"]) == (234.0, 1000.0, [2, 0])
    # an unfinished run (no final evaluation) is started again: here the stub refuses, so it raises
    (out / "metrics.jsonl").write_text(json.dumps(lines[0]) + "\n")
    with pytest.raises(AssertionError, match="trained again"):
        compare.run_one("grpo", 0, cfg, Args)


def test_saved_study_is_reused_only_with_the_same_design(tmp_path):
    cfg = dict(steps=200, eval_samples=64, eval_problems=200, prompts_per_step=8, group_size=16, lr=1e-4)
    run = {"config": "grpo", "seed": 0, "variant": "headroom"}
    gone = {"config": "no_such_configuration", "seed": 0, "variant": "headroom"}
    path = tmp_path / "compare.json"
    path.write_text(json.dumps({"config": cfg, "runs": [run, gone], "warm_starts": {"headroom": {"correct": [1]}}}))
    saved = compare.saved_study(str(path), cfg)
    assert saved["runs"] == {("grpo", 0): run} and saved["warm_starts"] == {"headroom": {"correct": [1]}}
    assert compare.saved_study(str(path), {**cfg, "steps": 100}) == {"runs": {}, "warm_starts": {}}
    assert compare.saved_study(str(tmp_path / "missing.json"), cfg) == {"runs": {}, "warm_starts": {}}


def test_a_saved_run_stands_in_for_a_missing_run_directory(tmp_path):
    class Args:
        runs = str(tmp_path / "runs")
    record = {"config": "grpo", "seed": 3, "final": [0.5]}
    cfg = dict(steps=2, eval_samples=4)
    called = []
    out = compare.run_one("grpo", 3, cfg, Args, warm=called.append, saved={("grpo", 3): record})
    assert out is record and called == ["headroom"]
