"""The statistics of the two studies (`compare.py`, the embedded task; `compare_real.py`, the real LM), in one place.

The seed is the unit. A study trains every method once per seed; seed s of two methods draws the same training
prompts and evaluation random numbers, so the methods are compared seed by seed. For a method m, its reference b
and a subset of P held-out problems, the paired difference matrix is

    D[s, i] = pass@k of problem i after m's run with seed s  -  the same after b's run with seed s     [S, P]

and the effect is its grand mean. Three intervals describe it, each computed here as a pure function:

- **Primary: a t-interval over the paired per-seed means.** d_s = mean_i D[s, i] (one number per seed), then
  mean(d) +- t(1 - alpha/2, S - 1) * sd(d) / sqrt(S), sd with S - 1 in the denominator. The S seeds are the
  independent replicates of the experiment (training and evaluation randomness); the problems of the subset are
  held fixed, so the interval is about these problems. Claims are decided by it (`verdict`).
- **Beside it: the crossed seed / problem variance-components standard error**, which also treats the problems as a
  sample of the task. Two-way random-effects model without replication: D[s, i] = mu + a_s + b_i + e_si with
  independent a ~ (0, var_seed), b ~ (0, var_problem), e ~ (0, var_residual). From the ANOVA mean squares
  MS_seed = P * sum_s (d_s - mean)^2 / (S - 1), MS_problem = S * sum_i (c_i - mean)^2 / (P - 1) (c_i: column means),
  MS_residual = sum_si (D - d_s - c_i + mean)^2 / ((S - 1)(P - 1)), the moment estimates are var_residual =
  MS_residual, var_seed = max(0, (MS_seed - MS_residual) / P), var_problem = max(0, (MS_problem - MS_residual) / S),
  and the standard error of the grand mean is sqrt(var_seed / S + var_problem / P + var_residual / (S P)).
- **Secondary: the percentile bootstrap** that resamples seeds and problems independently (both paired). It counts
  the seed x problem residual about three times (a resample's mean carries it through the seeds, the problems and
  their product), so it is wider than the crossed SE implies; it stays as a column for comparison.

Per-run scalars (entropy, rank-1 probability) have one value per seed: the t-interval of the paired per-seed
differences, beside the seeds-only percentile bootstrap (exact over all S^S resamples when few).

Verdicts (`verdict`), at the 95 % level:

- a **superiority** claim ("improves", "lowers", "higher than") is *supported* when the t-interval excludes 0 in the
  claimed direction, *not supported* when it excludes 0 in the other direction or lies within +-`NEGLIGIBLE`, and
  *inconclusive* otherwise;
- a **non-inferiority** claim ("keeps", "does not cost") names its margin delta (`MARGIN`): *supported* when the
  interval's bound on the side against the claim stays within delta (lower bound > -delta for a claimed increase),
  *not supported* when the whole interval lies beyond -delta, *inconclusive* otherwise.
"""
from __future__ import annotations

import itertools
import math

LEVEL = 0.95
BOOTSTRAP_DRAWS = 10_000
BOOTSTRAP_SEED = 12345
EXACT_LIMIT = 200_000      # enumerate every bootstrap resample exactly when there are at most this many
NEGLIGIBLE = 0.01          # a superiority claim whose interval lies inside +-0.01 is "not supported"
MARGIN = 0.01              # the non-inferiority margin of every "keeps" / "does not cost" claim (pass@k, entropy
                           # and probability units alike: a hundredth of the scale each lives on)


# ----------------------------------------------------------------------------------------------------------------
# Student's t distribution, pure Python (no scipy)

def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz, Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    # the continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry I_x(a, b) = 1 -
    # I_{1-x}(b, a) on the other side
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with df degrees of freedom."""
    if df <= 0:
        raise ValueError(f"t_cdf: df must be > 0, got {df}")
    # P(|T| > |x|) = I_{df / (df + x^2)}(df / 2, 1 / 2)
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom (bisection on `t_cdf`, to float precision)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"t_quantile: df must be > 0, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------------------------------------------
# Intervals

def t_interval(values: list[float], level: float = LEVEL) -> dict:
    """Mean and t-interval of independent values (the per-seed means): mean +- t(1 - alpha/2, S - 1) sd / sqrt(S).

    Returns {"mean", "lo", "hi", "se", "df"}; with a single value there is no interval (lo, hi, se None)."""
    S = len(values)
    if S == 0:
        raise ValueError("t_interval: no values")
    mean = sum(values) / S
    if S < 2:
        return {"mean": mean, "lo": None, "hi": None, "se": None, "df": 0}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (S - 1))
    se = sd / math.sqrt(S)
    half = t_quantile(1.0 - (1.0 - level) / 2.0, S - 1) * se
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "se": se, "df": S - 1}


def crossed_components(diffs: list[list[float]]) -> dict:
    """Seed, problem and residual variance components of diffs [S seeds][P problems] and the standard error of its
    grand mean under the crossed random-effects model (formulas in the module docstring).

    Returns {"seed", "problem", "residual", "se"}; all None when S < 2 or P < 2 (no component is identified)."""
    S, P = _shape(diffs)
    if S < 2 or P < 2:
        return {"seed": None, "problem": None, "residual": None, "se": None}
    grand = sum(map(sum, diffs)) / (S * P)
    rows = [sum(r) / P for r in diffs]
    cols = [sum(diffs[s][i] for s in range(S)) / S for i in range(P)]
    ms_seed = P * sum((r - grand) ** 2 for r in rows) / (S - 1)
    ms_problem = S * sum((c - grand) ** 2 for c in cols) / (P - 1)
    ms_res = sum((diffs[s][i] - rows[s] - cols[i] + grand) ** 2
                 for s in range(S) for i in range(P)) / ((S - 1) * (P - 1))
    var_seed = max(0.0, (ms_seed - ms_res) / P)
    var_problem = max(0.0, (ms_problem - ms_res) / S)
    # Var(grand mean) = var_seed / S + var_problem / P + var_residual / (S P)
    se = math.sqrt(var_seed / S + var_problem / P + ms_res / (S * P))
    return {"seed": var_seed, "problem": var_problem, "residual": ms_res, "se": se}


def quantile(sorted_values: list[float], q: float) -> float:
    """The q-quantile of sorted values, interpolating linearly between order statistics (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _shape(diffs: list[list[float]]) -> tuple[int, int]:
    S, P = len(diffs), len(diffs[0]) if diffs else 0
    if S == 0 or P == 0 or any(len(row) != P for row in diffs):
        raise ValueError(f"diffs must be a non-empty [seeds][problems] matrix, got {S} rows of lengths "
                         f"{sorted({len(row) for row in diffs})}")
    return S, P


def bootstrap_ci(diffs: list[list[float]], *, resample_problems: bool = True, level: float = LEVEL,
                 draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED) -> dict:
    """Percentile bootstrap of the mean of a paired difference matrix diffs [S seeds][P problems].

    Each draw resamples the S seeds with replacement and (with resample_problems) the P problems with replacement,
    independently, and takes the mean of the selected rows and columns. When the number of distinct ordered
    resamples (S^S, times P^P) is at most EXACT_LIMIT every one is enumerated, so the interval is exact; otherwise
    `draws` draws come from a generator seeded with `seed`. Returns {"mean", "lo", "hi", "exact"}."""
    S, P = _shape(diffs)
    mean = sum(map(sum, diffs)) / (S * P)
    alpha = (1 - level) / 2
    n_exact = S ** S * (P ** P if resample_problems else 1)
    if n_exact <= EXACT_LIMIT:
        problem_draws = list(itertools.product(range(P), repeat=P)) if resample_problems else [tuple(range(P))]
        stats = sorted(sum(diffs[s][i] for s in ss for i in pp) / (S * len(pp))
                       for ss in itertools.product(range(S), repeat=S) for pp in problem_draws)
        return {"mean": mean, "lo": quantile(stats, alpha), "hi": quantile(stats, 1 - alpha), "exact": True}
    import torch
    g = torch.Generator().manual_seed(seed)
    D = torch.tensor(diffs, dtype=torch.float64)                                   # [S, P]
    # multiplicity of each seed / problem in each draw: the mean over a resample is a weighted mean
    ws = torch.nn.functional.one_hot(torch.randint(S, (draws, S), generator=g), S).sum(1).double()    # [B, S]
    if resample_problems:
        wp = torch.zeros(draws, P, dtype=torch.float64)
        wp.scatter_add_(1, torch.randint(P, (draws, P), generator=g), torch.ones(draws, P, dtype=torch.float64))
    else:
        wp = torch.ones(draws, P, dtype=torch.float64)
    stats = (torch.einsum("bs,sp,bp->b", ws, D, wp) / (S * P)).sort().values.tolist()
    return {"mean": mean, "lo": quantile(stats, alpha), "hi": quantile(stats, 1 - alpha), "exact": False}


# ----------------------------------------------------------------------------------------------------------------
# Effects: what the studies record for each comparison

def per_problem_pass_at_k(correct: list[int] | list[list[int]], n: int, k: int) -> list[float]:
    """Unbiased pass@k of each problem from its number of correct samples c out of n: 1 - C(n-c, k) / C(n, k).

    correct: one evaluation's counts [P], or several evaluations' [E][P] (of the same model), averaged per problem."""
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if correct and isinstance(correct[0], list):
        per_eval = [per_problem_pass_at_k(c, n, k) for c in correct]
        return [sum(values) / len(values) for values in zip(*per_eval)]
    return [1.0 - math.comb(n - c, k) / math.comb(n, k) for c in correct]


def matrix_effect(diffs: list[list[float]]) -> dict:
    """Every interval of a paired difference matrix diffs [S seeds][P problems].

    ci: the t-interval over the per-seed means (primary); per_seed: those means; se_seeds, df: its standard error
    and degrees of freedom; se_crossed and components: the crossed variance-components SE; ci_boot: the percentile
    bootstrap over seeds and problems; ci_seeds_only: the percentile bootstrap over the per-seed means."""
    per_seed = [sum(row) / len(row) for row in diffs]
    t = t_interval(per_seed)
    comp = crossed_components(diffs)
    both = bootstrap_ci(diffs, resample_problems=True)
    seeds_only = bootstrap_ci([[d] for d in per_seed], resample_problems=False)
    return {"mean": both["mean"], "ci": _pair(t), "se_seeds": t["se"], "df": t["df"], "per_seed": per_seed,
            "se_crossed": comp["se"], "components": {k: comp[k] for k in ("seed", "problem", "residual")},
            "ci_boot": [both["lo"], both["hi"]], "ci_seeds_only": [seeds_only["lo"], seeds_only["hi"]],
            "ci_exact": both["exact"]}


def paired_effect(runs_m: dict[int, dict], runs_b: dict[int, dict], n: int, k: int, subset: list[int]) -> dict:
    """Effect of m over b in pass@k on the problems `subset`, paired by seed over the seeds both have.

    runs_*: seed -> run record with "correct" (the final per-problem correct counts)."""
    seeds = sorted(set(runs_m) & set(runs_b))
    if not seeds or not subset:
        return {"seeds": seeds, "n_problems": len(subset)}
    diffs = []
    for s in seeds:
        pm = per_problem_pass_at_k(runs_m[s]["correct"], n, k)
        pb = per_problem_pass_at_k(runs_b[s]["correct"], n, k)
        diffs.append([pm[i] - pb[i] for i in subset])
    return {"seeds": seeds, "n_problems": len(subset), **matrix_effect(diffs)}


def scalar_effect(values_m: dict[int, float], values_b: dict[int, float]) -> dict:
    """Paired effect of a per-run scalar (entropy, rank-1 probability): the t-interval of the per-seed differences,
    beside the seeds-only percentile bootstrap (ci_boot)."""
    seeds = sorted(s for s in set(values_m) & set(values_b) if values_m[s] is not None and values_b[s] is not None)
    if not seeds:
        return {"seeds": seeds}
    per_seed = [values_m[s] - values_b[s] for s in seeds]
    t = t_interval(per_seed)
    boot = bootstrap_ci([[d] for d in per_seed], resample_problems=False)
    return {"seeds": seeds, "mean": t["mean"], "ci": _pair(t), "se_seeds": t["se"], "df": t["df"],
            "per_seed": per_seed, "ci_boot": [boot["lo"], boot["hi"]], "ci_exact": boot["exact"]}


def _pair(t: dict) -> list:
    return [t["lo"], t["hi"]]


# ----------------------------------------------------------------------------------------------------------------
# Verdicts

def verdict(ci: list, direction: int, margin: float | None = None, negligible: float = NEGLIGIBLE) -> str:
    """supported / not supported / inconclusive for a claimed effect of sign `direction` (+1: m above its reference)
    with the interval ci = [lo, hi]. margin None: a superiority claim; margin delta: a non-inferiority claim
    (the effect is no worse than -delta in the claimed direction). No interval (one seed): inconclusive."""
    if ci is None or None in ci:
        return "inconclusive"
    # the interval in the claimed direction: lo > 0 means "as claimed"
    lo, hi = (ci[0], ci[1]) if direction > 0 else (-ci[1], -ci[0])
    if margin is not None:
        if lo > -margin:
            return "supported"
        return "not supported" if hi < -margin else "inconclusive"
    if lo > 0:
        return "supported"
    if hi < 0 or (-negligible <= lo and hi <= negligible):
        return "not supported"
    return "inconclusive"


def decide(tests: list[dict]) -> str:
    """A claim's verdict from its tests': supported when all are, not supported when any is, else inconclusive."""
    verdicts = [t["verdict"] for t in tests]
    if not verdicts or "missing" in verdicts:
        return "not run"
    if all(v == "supported" for v in verdicts):
        return "supported"
    if any(v == "not supported" for v in verdicts):
        return "not supported"
    return "inconclusive"


def fmt_ci(e, key: str = "ci") -> str:
    """'mean [lo, hi]' of an effect record with the interval `key`; '-' when there is none."""
    if not e or key not in e or e[key] is None:
        return "-"
    if None in e[key]:
        return f"{e['mean']:+.3f} [no interval]"
    return f"{e['mean']:+.3f} [{e[key][0]:+.3f}, {e[key][1]:+.3f}]"


def fmt_se(e) -> str:
    """The crossed variance-components SE of an effect record, '-' when it has none (a per-run scalar)."""
    return "-" if not e or e.get("se_crossed") is None else f"{e['se_crossed']:.3f}"


def fmt_secondary(e) -> str:
    """'SE; [bootstrap lo, hi]' of an effect record: the crossed SE ('-' for a per-run scalar) and the bootstrap."""
    if not e or e.get("ci_boot") is None:
        return "-"
    return f"{fmt_se(e)}; [{e['ci_boot'][0]:+.3f}, {e['ci_boot'][1]:+.3f}]"


EFFECTS_NOTE = ("Effects (method minus reference, paired by seed), descriptive: mean [95 % t-interval over the paired "
                "per-seed means, seeds - 1 degrees of freedom]. The second table has the same effects' crossed seed / "
                "problem variance-components standard error and percentile bootstrap interval (pass@k: seeds and "
                f"problems resampled, {BOOTSTRAP_DRAWS} draws; per-run scalars: seeds only, exact), as 'SE; [lo, hi]'.")


# ----------------------------------------------------------------------------------------------------------------
# Claims: each a test of one effect, primary or secondary

def kind(margin: float | None) -> str:
    return "superiority" if margin is None else f"non-inferiority, margin {margin}"


def check_claims(claims: list[tuple], lookup, primary: dict[str, tuple], n: int) -> list[dict]:
    """Every claim with its verdict and role.

    claims: [(paper, claim, [(configuration, reference, metric, subset, direction[, margin])])]; a test with a margin
    is a non-inferiority test, one without a superiority test. lookup(configuration, reference, metric, subset): the
    effect record, or None when a configuration did not run. primary: {paper: (configuration, reference, metric,
    subset)}, metric "pass@n" standing for the largest k (n); the one claim of each paper whose test it names is
    primary, every other claim secondary."""
    wanted = {paper: tuple(f"pass@{n}" if x == "pass@n" else x for x in test) for paper, test in primary.items()}
    out = []
    for paper, text, tests in claims:
        checked = []
        for config, baseline, metric, subset, direction, *rest in tests:
            margin = rest[0] if rest else None
            test = {"test": (config, baseline, metric, subset), "direction": direction, "margin": margin,
                    "kind": kind(margin)}
            e = lookup(config, baseline, metric, subset)
            if not e or e.get("ci") is None:
                checked.append({**test, "verdict": "missing"})
                continue
            test.update({k: e.get(k) for k in ("mean", "ci", "se_seeds", "df", "se_crossed", "ci_boot", "seeds")})
            test["verdict"] = verdict(e["ci"], direction, margin)
            if margin is not None:       # a non-inferiority test also says whether the effect is above 0
                test["superior"] = verdict(e["ci"], direction) == "supported"
            checked.append(test)
        role = "primary" if len(tests) == 1 and wanted.get(paper) == tuple(tests[0][:4]) else "secondary"
        out.append({"paper": paper, "claim": text, "role": role, "tests": checked, "verdict": decide(checked)})
    missing = [p for p in wanted if not any(c["paper"] == p and c["role"] == "primary" for c in out)]
    if missing:
        raise ValueError(f"PRIMARY names a test that no claim of {missing} has: {[wanted[p] for p in missing]}")
    return out


def claims_markdown(claims: list[dict], reference_name) -> list[str]:
    """The claims section of a study's compare.md: the rules, the primary claims, the secondary claims, the
    multiplicity note. reference_name(reference) -> how a reference is written ("@warm" is a warm start)."""
    rules = [f"Decided by the 95 % t-interval over the paired per-seed means (seeds - 1 degrees of freedom). A "
             f"superiority claim is supported when the interval excludes 0 in the claimed direction, not supported "
             f"when it excludes 0 in the other direction or lies within +-{NEGLIGIBLE}, inconclusive otherwise. A "
             f"non-inferiority claim (\"keeps\", \"does not cost\") is supported when the interval's bound against "
             f"the claim stays within its margin, not supported when the whole interval lies beyond it, inconclusive "
             f"otherwise; \"(also > 0)\" marks one whose interval excludes 0 in the claimed direction too. Beside "
             f"the t-interval: the crossed seed / problem variance-components standard error (problems also treated "
             f"as a sample; `benchmarks/stats.py`) and the percentile bootstrap over seeds and problems (secondary; "
             f"over seeds only for per-run scalars).", ""]
    head = ["| paper | claim | test | kind | effect [95 % t-interval] | crossed SE | bootstrap [95 %] | verdict |",
            "|---|---|---|---|---|---|---|---|"]

    def rows(cs):
        out = []
        for c in cs:
            for t in c["tests"]:
                config, baseline, metric, subset = t["test"]
                ran = t["verdict"] != "missing"
                verdict_text = f"**{c['verdict']}**" + (" (also > 0)" if t.get("superior") else "")
                out.append(f"| {c['paper']} | {c['claim']} | {config} vs {reference_name(baseline)}, {metric}, "
                           f"{subset} | {t['kind']} | {fmt_ci(t) if ran else 'not run'} | "
                           f"{fmt_se(t) if ran else '-'} | {fmt_ci(t, 'ci_boot') if ran else '-'} | {verdict_text} |")
        return out
    primary = [c for c in claims if c["role"] == "primary"]
    secondary = [c for c in claims if c["role"] == "secondary" and c["verdict"] != "not run"]
    unrun = [c for c in claims if c["role"] == "secondary" and c["verdict"] == "not run"]
    lines = ["## Claims", "", *rules,
             "### Primary (one per paper, named in the script's `PRIMARY`)", "", *head, *rows(primary), "",
             "### Secondary", "", *head, *rows(secondary), "", MULTIPLICITY]
    if unrun:
        lines += ["", f"{len(unrun)} more secondary claims need configurations that this set did not run: "
                      + "; ".join(c["claim"] for c in unrun) + "."]
    return lines


MULTIPLICITY = ("Multiplicity: each claim is tested at the 95 % level on its own, without a correction. With this many "
                "tests, a few verdicts other than inconclusive are expected by chance even where there is no effect. "
                "Only the primary claim of each paper (the script's `PRIMARY`, fixed before a study runs) is a "
                "confirmatory test; every other claim is secondary (exploratory), and the effect tables above are "
                "descriptive.")
