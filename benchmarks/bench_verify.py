"""Benchmark: verify.py against the independent case table (and math-verify 0.9.0 when it is installed).

Four tables:

1. Accuracy on `tests/test_verify_cases.py`: `is_equivalent` on CASES, `reward` on REWARD_CASES, with false
   positives (a wrong answer rewarded: the dangerous error in RL) and false negatives, overall and on the
   adversarial/guarded rows. Every check runs in a child process watched by a hard per-check timeout, so a checker
   that hangs on `9^{9^{9^9}}` is recorded as "timeout" (scored as a rejection) instead of stalling the benchmark.
2. Per-category breakdown, then every row verify.py gets wrong.
3. Speed: per-check latency, and single-process checks per second over the ordinary rows (all categories except
   adversarial and guarded), each run in a fresh process after a warm-up on strings outside the table, so no answer
   is cached beforehand. The first pass is "cold"; later passes over the same strings show what caches add.
4. The gold cache (an RLVR step checks k samples against each gold) and `batch_reward` throughput with workers.
5. The time bound: the slowest in-process call over the known pathological inputs and a structured fuzz (random
   expression trees in answer wrappers, tests/test_verify_fuzz.py's generator), each timed in a killable child.
6. The opt-in lenient fallback (`reward(..., fallback="last")`): what it gains on the answer key written without a
   box or anchor, and what it lets through on the adversarial rows written the same way.

math-verify is an optional comparison, never a dependency (`pip install math-verify==0.9.0`). It is called as its
README shows, gold first: `verify(parse(gold), parse(pred))`, with bare answers wrapped in `$...$` so its LaTeX
extractor sees them; for `reward` rows the full response is parsed as is, and a GSM8K gold is cut after `####`
for it (math-verify does not read `####`).

    python benchmarks/bench_verify.py [--passes 2] [--procs 2] [--timeout 10] [--k 8] [--fuzz 3000] [--no-math-verify]
"""
import argparse
import importlib.util
import multiprocessing as mp
import os
import statistics
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

SLOW = {"adversarial", "guarded_pathological"}     # not "ordinary answers" for the speed table
WARMUP = [(r"\frac{7}{9}", "0.7"), ("x^2-4", "(x-2)(x+2)"), (r"\sqrt{27}", r"3\sqrt3"), ("[0,7)", "(0,7)"),
          (r"\{5,6\}", r"\{6,5\}"), ("13", "31"), (r"\text{(E)}", "E"), ("2.75", r"\frac{11}{4}")]


def _load(name):
    # the tables import tests/conftest.py's helpers, as pytest would find them
    if os.path.join(ROOT, "tests") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tests", f"test_{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_cases():
    module = _load("verify_cases")
    return module.CASES, module.REWARD_CASES


def have_math_verify():
    return importlib.util.find_spec("math_verify") is not None


# ---------------------------------------------------------------------------------------------------------------
# Checkers, built inside the child process. Each returns check(kind, pred_or_response, gold) -> bool.

def make_checker(name):
    if name == "verify.py":
        import verify

        def check(kind, pred, gold):
            if kind == "equiv":
                return bool(verify.is_equivalent(pred, gold))
            return verify.reward(pred, gold) == 1.0
        return check

    import logging
    logging.disable(logging.CRITICAL)         # math-verify logs every internal timeout, echoing the whole input
    from math_verify import parse, verify as mv_verify

    def wrap(s):
        return s if ("\\boxed" in s or "$" in s) else f"${s}$"

    def check(kind, pred, gold):
        if kind == "equiv":
            return bool(mv_verify(parse(wrap(gold)), parse(wrap(pred))))
        if "####" in gold:
            gold = gold.rsplit("####", 1)[1].strip()
        return bool(mv_verify(parse(wrap(gold)), parse(pred)))
    return check


def _judge_worker(name, items, start, conn):
    check = make_checker(name)
    for i in range(start, len(items)):
        kind, pred, gold = items[i]
        t = time.perf_counter()
        try:
            verdict = check(kind, pred, gold)
        except Exception as e:                               # an escaped exception is a rejection, but counted
            verdict = f"error: {type(e).__name__}"
        conn.send((i, verdict, time.perf_counter() - t))
    conn.send(None)


def judge_all(name, items, timeout):
    """Verdicts for items [(kind, pred, gold)] from checker `name`, one child process at a time; a check that
    runs over `timeout` seconds is recorded as "timeout" and the child is replaced from the next item on."""
    ctx = mp.get_context("spawn")
    verdicts, seconds, start = [None] * len(items), [0.0] * len(items), 0
    while start < len(items):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_judge_worker, args=(name, items, start, child), daemon=True)
        proc.start()
        child.close()
        deadline = time.monotonic() + timeout + 60.0       # the first check also pays for imports
        while True:
            if not parent.poll(max(0.0, deadline - time.monotonic())):
                verdicts[start], seconds[start] = "timeout", float(timeout)
                proc.kill()
                proc.join()
                start += 1
                break
            try:
                msg = parent.recv()
            except EOFError:                                  # the child died (out of memory, ...)
                verdicts[start], seconds[start] = "crash", 0.0
                proc.join()
                start += 1
                break
            if msg is None:
                proc.join()
                start = len(items)
                break
            i, verdict, dt = msg
            verdicts[i], seconds[i] = verdict, dt
            start = i + 1
            deadline = time.monotonic() + timeout
        parent.close()
    return verdicts, seconds


def score(rows, verdicts):
    """(n, correct, false positives, false negatives, odd) where odd counts timeouts/errors/crashes."""
    n = correct = fp = fn = odd = 0
    for (_, _, expected, _), v in zip(rows, verdicts):
        n += 1
        got = v is True
        odd += not isinstance(v, bool)
        correct += got == expected
        fp += got and not expected
        fn += expected and not got
    return n, correct, fp, fn, odd


# ---------------------------------------------------------------------------------------------------------------
# Speed: one fresh process per measurement.

def _speed_worker(name, pairs, passes, conn):
    check = make_checker(name)
    for p, g in WARMUP:                                       # imports and one-time setup, outside the table
        check("equiv", p, g)
    times = []
    for _ in range(passes):
        t = time.perf_counter()
        for p, g in pairs:
            check("equiv", p, g)
        times.append(time.perf_counter() - t)
    conn.send(times)


def speed_once(name, pairs, passes, timeout):
    """(cold checks/s, warm checks/s or None) from one fresh process, or (None, None) if it ran out of time."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_speed_worker, args=(name, pairs, passes, child), daemon=True)
    proc.start()
    child.close()
    if not parent.poll(timeout * len(pairs) * passes + 120):
        proc.kill()
        proc.join()
        return None, None
    times = parent.recv()
    proc.join()
    return len(pairs) / times[0], (len(pairs) / min(times[1:]) if len(times) > 1 else None)


def speeds(names, pairs, passes, procs, timeout):
    """Best cold and warm checks/s per checker over `procs` fresh processes. The checkers take turns, so load
    from other programs on a shared machine hits them alike; best-of filters that load out (as timeit does)."""
    runs = {name: [] for name in names}
    for _ in range(procs):
        for name in names:
            runs[name].append(speed_once(name, pairs, passes, timeout))
    out = {}
    for name, rs in runs.items():
        cold = [c for c, _ in rs if c is not None]
        warm = [w for _, w in rs if w is not None]
        out[name] = (max(cold) if cold else None, max(warm) if warm else None)
    return out


def _gold_cache_worker(groups, reps, conn):
    import verify
    caches = [f for f in vars(verify).values() if callable(getattr(f, "cache_clear", None))]
    for p, g in WARMUP:
        verify.is_equivalent(p, g)

    def run(clear_every_check):
        for f in caches:                                    # every repetition starts cold, like new prompts
            f.cache_clear()
        t = time.perf_counter()
        for gold, preds in groups:
            for pred in preds:
                if clear_every_check:
                    for f in caches:
                        f.cache_clear()
                verify.is_equivalent(pred, gold)
        return time.perf_counter() - t

    kept, cleared = [], []
    for _ in range(reps):                                   # interleaved, so machine noise hits both alike
        kept.append(run(False))
        cleared.append(run(True))
    conn.send((sum(len(p) for _, p in groups), min(kept), min(cleared), len(caches)))


def gold_cache(groups, reps):
    """(checks, best seconds with caches kept, best seconds with caches cleared before every check, #caches)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_gold_cache_worker, args=(groups, reps, child), daemon=True)
    proc.start()
    child.close()
    out = parent.recv()
    proc.join()
    return out


def make_groups(cases, k):
    """RLVR-shaped workload: each distinct gold with k distinct predictions (its own table rows first, then
    predictions from other rows, every prediction string used once), as k samples of one prompt would be."""
    ordinary = [(p, g) for p, g, _, c in cases if c not in SLOW]
    golds = list(dict.fromkeys(g for _, g in ordinary))
    spare = list(dict.fromkeys(p for p, _ in ordinary))
    used, groups = set(), []
    for g in golds:
        preds = [p for p, gg in ordinary if gg == g and p not in used][:k]
        used.update(preds)
        for p in spare:
            if len(preds) >= k:
                break
            if p not in used:
                preds.append(p)
                used.add(p)
        if len(preds) < k:
            break
        groups.append((g, preds))
    return groups


def _batch_worker(responses, golds, workers, conn):
    import verify
    verify.batch_reward(responses[:8], golds[:8], workers=workers)      # start the worker pool
    t = time.perf_counter()
    out = verify.batch_reward(responses, golds, workers=workers)
    dt = time.perf_counter() - t
    conn.send((dt, out))


def batch_throughput(responses, golds, workers):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_batch_worker, args=(responses, golds, workers, child))   # not daemon: it forks
    proc.start()
    child.close()
    out = parent.recv()
    proc.join()
    return out


# ---------------------------------------------------------------------------------------------------------------

def short(s, n=60):
    s = s.encode("ascii", "backslashreplace").decode("ascii").replace("\n", " ").replace("|", "\\|")
    return s if len(s) <= n else s[: n - 3] + "..."


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", type=int, default=2, help="passes over the ordinary rows per speed process")
    ap.add_argument("--procs", type=int, default=2, help="fresh processes per checker for the speed table (best of)")
    ap.add_argument("--timeout", type=float, default=10.0, help="hard per-check limit in the accuracy run (s)")
    ap.add_argument("--k", type=int, default=8, help="samples per gold in the gold-cache workload")
    ap.add_argument("--cache-reps", type=int, default=7, help="repetitions of the gold-cache workload (best of)")
    ap.add_argument("--batch", type=int, default=1024, help="responses in the batch_reward throughput run")
    ap.add_argument("--fuzz", type=int, default=3000, help="fuzzed answers in the time-bound table (0: skip)")
    ap.add_argument("--no-math-verify", action="store_true", help="skip the optional math-verify comparison")
    args = ap.parse_args()
    for name, v, lo in [("--passes", args.passes, 1), ("--procs", args.procs, 1), ("--k", args.k, 1),
                        ("--batch", args.batch, 8), ("--cache-reps", args.cache_reps, 1)]:
        if v < lo:
            ap.error(f"{name} must be >= {lo}, got {v}")
    if args.timeout <= 0:
        ap.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.fuzz < 0:
        ap.error(f"--fuzz must be >= 0, got {args.fuzz}")

    cases, reward_cases = load_cases()
    checkers = ["verify.py"]
    if args.no_math_verify:
        pass
    elif have_math_verify():
        from importlib.metadata import version
        checkers.append("math-verify")
        print(f"math-verify {version('math-verify')} found: included as a comparison")
    else:
        print("math-verify not installed: comparison skipped (pip install math-verify==0.9.0 to include it)")
    print(f"cases: {len(cases)} is_equivalent rows ({sum(e for _, _, e, _ in cases)} True), "
          f"{len(reward_cases)} reward rows; {os.cpu_count()} CPUs\n")

    items = [("equiv", p, g) for p, g, _, _ in cases] + [("reward", r, g) for r, g, _, _ in reward_cases]
    rows = cases + reward_cases
    results = {}
    for name in checkers:
        t = time.perf_counter()
        verdicts, seconds = judge_all(name, items, args.timeout)
        results[name] = (verdicts, seconds, time.perf_counter() - t)

    # 1. accuracy
    print("## Accuracy (FP = wrong answer accepted, FN = right answer rejected; odd = timeout/error/crash)\n")
    print("| checker | rows | accuracy | FP | FN | is_equivalent acc | reward acc | adversarial+guarded FP "
          "| odd | slowest check (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ne = len(cases)
    for name in checkers:
        verdicts, seconds, _ = results[name]
        n, c, fp, fn, odd = score(rows, verdicts)
        _, ce, *_ = score(cases, verdicts[:ne])
        _, cr, *_ = score(reward_cases, verdicts[ne:])
        adv = [(r, v) for r, v in zip(rows, verdicts) if r[3] in SLOW or r[3] == "reward_adversarial"]
        adv_fp = sum(v is True and not r[2] for r, v in adv)
        print(f"| {name} | {n} | {c / n:.3f} | {fp} | {fn} | {ce / ne:.3f} | {cr / len(reward_cases):.3f} "
              f"| {adv_fp} of {len(adv)} | {odd} | {max(seconds):.2f} |")

    # 2. per category
    cats = list(dict.fromkeys(c for *_, c in rows))
    print("\n## Per category (correct/n, and FP/FN for verify.py)\n")
    header = "| category | n | " + " | ".join(f"{name}" for name in checkers) + " | verify.py FP | verify.py FN |"
    print(header)
    print("| --- | ---: | " + " | ".join("---:" for _ in checkers) + " | ---: | ---: |")
    for cat in cats:
        idx = [i for i, r in enumerate(rows) if r[3] == cat]
        sub = [rows[i] for i in idx]
        cells = []
        for name in checkers:
            _, c, *_ = score(sub, [results[name][0][i] for i in idx])
            cells.append(f"{c}/{len(idx)}")
        _, _, fp, fn, _ = score(sub, [results["verify.py"][0][i] for i in idx])
        print(f"| {cat} | {len(idx)} | " + " | ".join(cells) + f" | {fp} | {fn} |")

    print("\n## Rows verify.py gets wrong\n")
    wrong = [(r, v) for r, v in zip(rows, results["verify.py"][0]) if (v is True) != r[2]]
    if not wrong:
        print("(none)")
    else:
        print("| category | pred / response | gold | expected | got |")
        print("| --- | --- | --- | --- | --- |")
        for (p, g, e, c), v in wrong:
            print(f"| {c} | `{short(p)}` | `{short(g)}` | {e} | {v} |")

    if "math-verify" in results:
        print("\n## Wrong answers math-verify accepts (its false positives)\n")
        fps = [r for r, v in zip(rows, results["math-verify"][0]) if v is True and not r[2]]
        print("(none)" if not fps else "| category | pred / response | gold |\n| --- | --- | --- |")
        for p, g, _, c in fps:
            print(f"| {c} | `{short(p)}` | `{short(g)}` |")

    # 3. speed
    # Per-check latency from the accuracy run (each check timed alone, in a process that had seen other rows).
    ordinary_idx = [i for i, (_, _, _, c) in enumerate(cases) if c not in SLOW]
    print(f"\n## Latency per ordinary is_equivalent check ({len(ordinary_idx)} rows, from the accuracy run)\n")
    print("| checker | median (ms) | 90th pct (ms) | max (s) | checks over 1 s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in checkers:
        secs = sorted(results[name][1][i] for i in ordinary_idx)
        print(f"| {name} | {1e3 * secs[len(secs) // 2]:.2f} | {1e3 * secs[int(0.9 * len(secs))]:.2f} "
              f"| {secs[-1]:.2f} | {sum(t > 1.0 for t in secs)} |")

    # Throughput on all ordinary rows, and on the rows every checker answers in under a second (so a few internal
    # timeouts of one checker do not decide the ratio on their own).
    quick = [i for i in ordinary_idx if all(results[name][1][i] < 1.0 for name in checkers)]
    workloads = [("all ordinary rows", [(cases[i][0], cases[i][1]) for i in ordinary_idx])]
    if len(quick) < len(ordinary_idx):
        workloads.append(("rows every checker answers in < 1 s", [(cases[i][0], cases[i][1]) for i in quick]))
    print(f"\n## Speed: single process, is_equivalent, best of {args.procs} fresh processes per checker "
          f"(cold = first pass, warm = later passes over the same strings)\n")
    print("| workload | rows | checker | cold pass (checks/s) | warm passes (checks/s) | cold vs math-verify |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for label, pairs in workloads:
        measured = speeds(checkers, pairs, args.passes, args.procs, args.timeout)
        base = measured.get("math-verify", (None, None))[0]
        for name in checkers:
            cold, warm = measured[name]
            if cold is None:
                print(f"| {label} | {len(pairs)} | {name} | timed out | | |")
                continue
            ratio = f"{cold / base:.1f}x" if base else "-"
            warm_s = f"{warm:,.0f}" if warm else "-"
            print(f"| {label} | {len(pairs)} | {name} | {cold:,.0f} | {warm_s} | {ratio} |")

    # 4. gold cache and batch_reward
    groups = make_groups(cases, args.k)
    n_checks, t_cached, t_nocache, n_caches = gold_cache(groups, args.cache_reps)
    print(f"\n## Gold cache: {len(groups)} golds x k = {args.k} distinct predictions each, fresh process, "
          f"best of {args.cache_reps} interleaved cold-start repetitions\n")
    print(f"({n_caches} functools caches found in verify.py; 'cleared' empties them before every check)\n")
    print("| caches | checks | checks/s |")
    print("| --- | ---: | ---: |")
    print(f"| kept (normal use) | {n_checks} | {n_checks / t_cached:,.0f} |")
    print(f"| cleared before every check | {n_checks} | {n_checks / t_nocache:,.0f} |")
    if n_caches:
        print(f"\ncache speed-up on this workload: {t_nocache / t_cached:.2f}x")

    ordinary = [(p, g) for p, g, _, c in cases if c not in SLOW]
    responses = [f"Let me work through it step by step.\nSo the answer is $\\boxed{{{p}}}$." for p, _ in ordinary]
    golds = [g for _, g in ordinary]
    reps = -(-args.batch // len(responses))
    responses, golds = (responses * reps)[: args.batch], (golds * reps)[: args.batch]
    print(f"\n## batch_reward: {len(responses)} responses (ordinary rows, boxed, repeated), pool already "
          f"started\n")
    print("| workers | seconds | responses/s |")
    print("| ---: | ---: | ---: |")
    for workers in (0, 1, 2):
        dt, _ = batch_throughput(responses, golds, workers)
        label = "0 (in process)" if workers == 0 else str(workers)
        print(f"| {label} | {dt:.2f} | {len(responses) / dt:,.0f} |")
    bad = [(f"\\boxed{{{p}}}", g) for p, g, _, c in cases if c == "guarded_pathological"]
    dt, out = batch_throughput([r for r, _ in bad] * 4, [g for _, g in bad] * 4, 2)
    print(f"\npathological batch ({len(bad) * 4} guarded rows, 2 workers): {dt:.2f} s, "
          f"rewards {sorted(set(out))}")

    # 5. the time bound
    import verify
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import test_verify_fuzz as fuzz                         # by name, so its child processes can import it
    print(f"\n## Time bound: in-process calls, each timed in a killable child (verify.TIME_LIMIT_S = "
          f"{verify.TIME_LIMIT_S} s; the goal is 1 s)\n")
    print("| inputs | checks | slowest wall (s) | slowest CPU (s) | over 1 s (wall) | killed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    sets = [("known pathological (guarded rows, tests)", fuzz.KNOWN_SLOW
             + [("equiv", p, g) for p, g, _, c in cases if c == "guarded_pathological"])]
    if args.fuzz:
        sets.append((f"fuzzed expression trees (seed 0, {args.fuzz})", fuzz.cases(seed=0, n=args.fuzz)))
    for label, items in sets:
        for in_thread in (False, True):
            res = fuzz.timed_checks(items, in_thread=in_thread, kill_after_s=args.timeout)
            where = "another thread" if in_thread else "main thread"
            print(f"| {label}, {where} | {len(items)} | {max(r[0] for r in res):.3f} | {max(r[1] for r in res):.3f} "
                  f"| {sum(r[0] > 1.0 for r in res)} | {sum(r[2] is None for r in res)} |")

    # 6. the lenient fallback
    print("\n## Lenient fallback: reward(..., fallback=\"last\") vs the default \"none\" (in process)\n")
    fallback_table(cases, reward_cases)


def fallback_table(cases, reward_cases):
    """Rows rewarded with and without the fallback on (a) the answer key with the answer written at the end of a
    sentence, no box and no anchor (in math and as plain text), (b) the reward table as it is, (c) the adversarial
    rows written the same way, plus a policy that lists candidates."""
    import verify
    ordinary = [(p, g, e) for p, g, e, c in cases if c not in SLOW and c != "adversarial"]
    adversarial = [(p, g) for p, g, e, c in cases if c == "adversarial"]
    styles = [("in math", "Working through it step by step, the result is ${}$."),
              ("plain text", "Working through it step by step, the result is {}.")]
    print("| rows | n | rewarded, none | rewarded, last | wrong answers rewarded, last |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for style, fmt in styles:
        for label, rows in [("answer key, right answers", [(p, g) for p, g, e in ordinary if e]),
                            ("answer key, wrong answers", [(p, g) for p, g, e in ordinary if not e]),
                            ("adversarial rows", adversarial)]:
            resp = [fmt.format(p) for p, _ in rows]
            none = sum(verify.reward(r, g) for r, (_, g) in zip(resp, rows))
            last = sum(verify.reward(r, g, fallback="last") for r, (_, g) in zip(resp, rows))
            wrong = last if "right" not in label else 0
            print(f"| {label}, {style} | {len(rows)} | {none:.0f} | {last:.0f} | {wrong:.0f} |")
    right = sum((verify.reward(r, g, fallback="last") == 1.0) == e for r, g, e, _ in reward_cases)
    base = sum((verify.reward(r, g) == 1.0) == e for r, g, e, _ in reward_cases)
    print(f"| reward table as written (correct verdicts) | {len(reward_cases)} | {base} | {right} | "
          f"{sum(verify.reward(r, g, fallback='last') == 1.0 and not e for r, g, e, _ in reward_cases)} |")
    probes = [("Candidates: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10", "10"), ("It is 4, or maybe 5", "5"),
              ("I am not sure. 12", "12"), ("6 times 7 is 42", "42")]
    got = [verify.reward(r, g, fallback="last") for r, g in probes]
    print("\nprobes with fallback=\"last\" (a list of candidates, a hedge, a bare guess, a sum):",
          ", ".join(f"`{r}` vs {g}: {v:.0f}" for (r, g), v in zip(probes, got)))


if __name__ == "__main__":
    main()
