r"""Two checkouts of this repository side by side: CPU seconds of train.py's RL step (split into rollout, reward,
advantage and update) and of its held-out evaluation, on the same model, batches and flags.

    git worktree add ../base 230904f                  # the code to compare against
    python benchmarks/bench_sampler.py --base ../base --model runs/smollm2-warm/checkpoint \
        --data 'rg:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=2' --prompts-per-step 4 \
        --group-size 16 --k 4 --lr 5e-6 --max-new-tokens 16 --eval-problems 16 --eval-samples 32 --threads 1 \
        --steps 3 --rounds 2
    python benchmarks/bench_sampler.py --bf16-error --model runs/smollm2-warm/checkpoint --data ... (as above)

Each measurement runs in a process of its own, with that checkout first on `sys.path`; the two checkouts alternate
(base, this; then this, base; ...) for `--rounds` rounds, so that both see the same mix of machine load. A process
loads the model, runs one untimed RL step, then `--steps` timed steps (the prompts drawn from `--seed`, so both
checkouts train on the same batches, starting from the same weights) and one evaluation (`train.evaluate`:
`--eval-samples` responses to each of `--eval-problems` held-out problems). The clock is the process's CPU time
(`time.process_time`), which waiting for a core on a loaded machine does not inflate; with one torch thread it is the
compute. The table gives the mean over all timed steps of all rounds (and over the rounds' evaluations).

`--bf16-error` (this checkout only) measures bf16 autocast on CPU against float32 at the same shapes: for each of
`--steps` batches, one float32 step from the warm start, then from the same state the same rollout's update under
`torch.autocast("cpu", dtype=torch.bfloat16)`: the loss of each and the teacher-forced log-probs of the rollout's
tokens under bf16 against the float32 sampler's; then the CPU seconds of a bf16 step and a bf16 evaluation.
"""
import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("rollout", "reward", "advantage", "update")


def _load(code: str, train_argv: list):
    """train.py of the checkout at `code`, its parsed flags, task and policy (the model loaded as train.py does)."""
    sys.path.insert(0, code)
    import train
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    args = train.parse_args(train_argv)
    train.set_threads(args)
    task = train.load_task(args)
    return train, args, task, train.load_policy(args, task, lambda *a, **k: None)


def worker(code: str, train_argv: list, steps: int, bf16: bool) -> dict:
    """Load the model with the train.py of `code`, time `steps` RL steps (after one untimed) and one evaluation."""
    import torch
    train, args, task, policy = _load(code, train_argv)
    if bf16:
        policy.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    clock = {}
    for phase, name in zip(PHASES, ("rollout_batch", "rewards_of", "advantages_of", "update")):
        def timed(*a, _fn=getattr(train, name), _phase=phase, **k):
            cpu = time.process_time()
            out = _fn(*a, **k)
            clock[_phase] = time.process_time() - cpu
            return out
        setattr(train, name, timed)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    generator = torch.Generator().manual_seed(args.seed)
    sampler = random.Random(args.seed)
    rows = []
    for i in range(steps + 1):
        batch = sampler.sample(task.train, args.prompts_per_step)
        cpu = time.process_time()
        m = train.rl_step(i, batch, policy, optimizer, scheduler, task, args, generator)
        row = {"step": time.process_time() - cpu, **clock, "response_len": m["response_len"],
               "reward": m["reward_mean"], "updated_rows_frac": m["updated_rows_frac"]}
        if i > 0:
            rows.append(row)
    cpu = time.process_time()
    ev = train.evaluate(policy, task, args)
    return {"steps": rows, "eval": time.process_time() - cpu, "eval_pass@1": ev["pass@1"]}


def bf16_error(train_argv: list, steps: int) -> dict:
    """bf16 autocast against float32 on the same rollouts and weights (module docstring)."""
    import torch
    train, args, task, policy = _load(HERE, train_argv)
    import rollout
    model = policy.model
    fp32, bf16 = policy.autocast, (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    generator = torch.Generator().manual_seed(args.seed)
    sampler = random.Random(args.seed)
    start = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
    real_rollout, seen = train.rollout_batch, {}

    def keep(*a, **k):
        seen["ro"] = real_rollout(*a, **k)
        return seen["ro"]
    out = {"loss_fp32": [], "loss_bf16": [], "logp_abs_err_mean": [], "logp_abs_err_max": [], "ratio_dev_mean": []}
    for i in range(steps):
        batch = sampler.sample(task.train, args.prompts_per_step)
        model.load_state_dict(start[0])
        optimizer.load_state_dict(copy.deepcopy(start[1]))
        train.rollout_batch, policy.autocast = keep, fp32
        gen_state = generator.get_state()
        m32 = train.rl_step(i, batch, policy, optimizer, scheduler, task, args, generator)
        ro = seen["ro"]
        model.load_state_dict(start[0])
        optimizer.load_state_dict(copy.deepcopy(start[1]))
        train.rollout_batch, policy.autocast = (lambda *a, **k: ro), bf16
        generator.set_state(gen_state)
        m16 = train.rl_step(i, batch, policy, optimizer, scheduler, task, args, generator)
        model.load_state_dict(start[0])
        with torch.no_grad(), bf16():
            logits = rollout.response_forward(model.eval(), ro.input_ids, ro.attention_mask, ro.prompt_len)
        logp16 = torch.log_softmax(logits.float() / args.temperature, -1).gather(
            -1, ro.input_ids[:, ro.prompt_len:, None]).squeeze(-1)
        mask = ro.response_mask.bool()
        err = (logp16 - ro.logp)[mask].abs()
        if m32["loss"] is not None:
            out["loss_fp32"].append(m32["loss"])
            out["loss_bf16"].append(m16["loss"])
        out["logp_abs_err_mean"].append(err.mean().item())
        out["logp_abs_err_max"].append(err.max().item())
        out["ratio_dev_mean"].append((logp16 - ro.logp)[mask].exp().sub(1).abs().mean().item())
    train.rollout_batch = real_rollout
    return out


def run(code: str, rest: list, steps: int, bf16: bool = False) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", code, "--steps", str(steps)] + \
        (["--bf16"] if bf16 else []) + rest
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not found:
        sys.exit(f"bench_sampler: the run of {code} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(found[-1][len("RESULT "):])


def table(results: dict, names: list) -> None:
    mean = lambda name, key: statistics.fmean(r[key] for run in results[name] for r in run["steps"])
    print(f"| phase (CPU s) | {' | '.join(names)} | speed-up |")
    print("|---|" + "---|" * (len(names) + 1))
    for key in PHASES + ("step",):
        vals = [mean(n, key) for n in names]
        print(f"| {key} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {vals[0] / max(vals[-1], 1e-9):.2f}x |")
    ev = [statistics.fmean(run["eval"] for run in results[n]) for n in names]
    print("| **evaluation** | " + " | ".join(f"{v:.2f}" for v in ev) + f" | {ev[0] / max(ev[-1], 1e-9):.2f}x |")
    for n in names:
        steps = [r for run in results[n] for r in run["steps"]]
        print(f"{n}: {len(steps)} timed steps, mean response length "
              f"{statistics.fmean(r['response_len'] for r in steps):.1f}, reward "
              f"{statistics.fmean(r['reward'] for r in steps):.3f}, rows updated "
              f"{statistics.fmean(r['updated_rows_frac'] for r in steps):.2f}; evaluation pass@1 "
              f"{[round(run['eval_pass@1'], 4) for run in results[n]]}")


def main():
    own = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    own.add_argument("--base", help="the checkout to compare against (a git worktree)")
    own.add_argument("--steps", type=int, default=3, help="timed RL steps per process, after one untimed (default 3)")
    own.add_argument("--rounds", type=int, default=2, help="processes per checkout, alternating (default 2)")
    own.add_argument("--bf16-error", action="store_true", help="bf16 autocast against float32 (module docstring)")
    own.add_argument("--worker", help=argparse.SUPPRESS)
    own.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    mine, rest = own.parse_known_args()
    rest = rest + ["--no-progress"]
    if mine.worker:
        print("RESULT " + json.dumps(worker(mine.worker, rest, mine.steps, mine.bf16)), flush=True)
        return
    if mine.bf16_error:
        err = bf16_error(rest, mine.steps)
        print(json.dumps(err))
        for key, vals in err.items():
            print(f"{key}: {[f'{v:.3g}' for v in vals]}")
        rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(err["loss_fp32"], err["loss_bf16"])]
        print(f"loss |bf16 - fp32| / |fp32|: max {max(rel, default=float('nan')):.3g}")
        results = {name: [run(HERE, rest, mine.steps, bf16)] for name, bf16 in (("fp32", False), ("bf16", True))}
        table(results, ["fp32", "bf16"])
        return
    if not mine.base:
        sys.exit("bench_sampler: give --base (a checkout to compare against) or --bf16-error")
    codes = {"base": os.path.abspath(mine.base), "this": HERE}
    results = {"base": [], "this": []}
    for r in range(mine.rounds):
        for name in (("base", "this") if r % 2 == 0 else ("this", "base")):
            results[name].append(run(codes[name], rest, mine.steps))
            print(f"round {r} {name}: " + json.dumps(results[name][-1]), flush=True)
    print(f"\nCPU seconds (time.process_time), mean of {mine.rounds} processes per checkout, alternating; base = "
          f"{codes['base']}, this = {codes['this']}\n")
    table(results, ["base", "this"])


if __name__ == "__main__":
    main()
