r"""Seconds per phase and tokens/s of one RL step of train.py (rollout, reward, advantage, update).

    python benchmarks/bench_step.py                       # the embedded model on CPU (warm-up cache if present)
    python benchmarks/bench_step.py --model Qwen/Qwen2.5-0.5B-Instruct --data gsm8k.jsonl --device cuda
    python benchmarks/bench_step.py --threads 2           # CPU threads (default: 1 for the embedded model)
    python benchmarks/bench_step.py --trl-python /path/to/venv-with-trl/bin/python   # + TRL GRPOTrainer
    python benchmarks/bench_step.py --trl-python .venv/bin/python --prompts-per-step 8 --advantage grpo --no-simko
                                    # like for like with TRL: 8 prompts x 8 samples, <= 12 new tokens, GRPO
    python benchmarks/bench_step.py --compare --model runs/smollm2-warm/checkpoint \
        --data 'rg:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=2' --prompts-per-step 4 \
        --group-size 16 --k 4 --lr 5e-6 --max-new-tokens 16 --threads 1 --repeats 4
                                    # the real LM: the update's plain forward against the shared-prompt one

Any extra flags are passed to train.py's parser (`--prompts-per-step`, `--group-size`, `--micro-batch-size`,
`--no-simko`, ...). The step is exactly train.rl_step; one untimed step warms up, then `--repeats` steps are
timed and the median of each phase is printed. For reference the rollout is also timed with transformers'
`generate` (same model, batch and max_new_tokens, sampling, no log-probs kept), so the hand-written loop in
rollout.py can be compared with the library's. With `--trl-python` the same model, prompts and reward are also run
through TRL's GRPOTrainer (loss_type dapo, beta 0, one iteration per generation) in that Python, and its median
step time is printed beside ours (TRL is not a dependency of this project; its SimKO-free GRPO step is the
reference point, so compare with `--advantage grpo --no-simko` for like-for-like). train.py's step runs with
`--mini-batches 1` unless the flag is given, since TRL takes one optimiser step per generation batch. Both the wall
time and the process's CPU time are reported: on a machine shared with other jobs the load changes between the two
measurements, the CPU time much less.

`--compare` times the plain step against the fast one side by side in one run. Plain: the rollout decodes every row
to the end and the update forwards every row whole (`--shared-prompt off`). Fast: the decode forwards each
distinct prefix of the rows that have not stopped once, and the update forwards the rows' prefix tree
(rollout.response_forward). Every
timed step is run both ways from the same state (weights, optimiser, random generators, prompts), in alternating
order, so both sample the same responses (checked) and update the same rows; the run continues from the state of
the path that ran second. It prints each step, then the rollout / reward / advantage / update split of both paths
(mean over the timed steps, CPU and wall seconds) and the speed-ups. The format-warmed SmolLM2 checkpoint comes from
the recipe of docs/real-models.md with `--steps 0` (its `checkpoint/` folder); like-for-like with TRL on it:
    python benchmarks/bench_step.py --model runs/smollm2-warm/checkpoint --data 'rg:basic_arithmetic?...' \
        --prompts-per-step 4 --group-size 8 --advantage grpo --no-simko --lr 5e-6 --max-new-tokens 16 --threads 1 \
        --repeats 3 --no-generate --trl-python .venv/bin/python
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

import rollout  # noqa: E402
import train  # noqa: E402


def trl_worker(model_path: str, train_argv: list, repeats: int, threads: int) -> None:
    """Run inside a Python that has TRL: time GRPOTrainer steps on the same model, prompts and reward as train.py's
    step with `train_argv` (its task, --prompts-per-step, --group-size, --max-new-tokens, --lr, --temperature)."""
    torch.set_num_threads(threads)
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    args = train.parse_args(train_argv)
    task = train.load_task(args)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    problems = task.train[:2000]
    data = Dataset.from_dict({"prompt": [task.prompt(p, tokenizer) for p in problems],
                              "idx": list(range(len(problems)))})

    def correct(prompts, completions, idx, **kwargs):
        return [float(r) for r in task.reward(completions, [problems[i] for i in idx])]

    stamps = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            stamps.append(["begin", time.perf_counter(), time.process_time()])

        def on_step_end(self, *a, **k):
            stamps.append(["end", time.perf_counter(), time.process_time()])

    G = args.group_size
    config = GRPOConfig(output_dir="/tmp/bench_step_trl", per_device_train_batch_size=args.prompts_per_step * G,
                        num_generations=G, max_completion_length=args.max_new_tokens, temperature=args.temperature,
                        top_k=0, beta=0.0, loss_type="dapo", epsilon=0.2, epsilon_high=0.28, learning_rate=args.lr,
                        max_steps=repeats + 1, use_cpu=True, bf16=False, report_to=[], save_strategy="no",
                        logging_steps=1, seed=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=model_path, reward_funcs=correct, args=config, train_dataset=data,
                          processing_class=tokenizer, callbacks=[Clock()])
    trainer.train()
    # GRPOTrainer generates inside the step, so begin -> end is the whole rollout + reward + update
    wall = [e[1] - b[1] for b, e in zip(stamps[0::2], stamps[1::2])][1:]
    cpu = [e[2] - b[2] for b, e in zip(stamps[0::2], stamps[1::2])][1:]
    print("TRL_STEP_SECONDS", statistics.median(wall), statistics.median(cpu))


PHASES = ("rollout", "reward", "advantage", "update")


def phase_clocks() -> dict:
    """Wrap train.py's four phase functions (rl_step calls them by name) so that each call records its CPU seconds
    (the process's) and wall seconds; returns the dict they write to, {phase: (cpu, wall)} of the latest call."""
    clock = {}
    for phase, name in zip(PHASES, ("rollout_batch", "rewards_of", "advantages_of", "update")):
        def timed(*a, _fn=getattr(train, name), _phase=phase, **k):
            wall, cpu = time.perf_counter(), time.process_time()
            out = _fn(*a, **k)
            clock[_phase] = (time.process_time() - cpu, time.perf_counter() - wall)
            return out
        setattr(train, name, timed)
    return clock


def compare_paths(args, repeats, task, policy, optimizer, scheduler, generator, sampler) -> dict:
    """{"plain": [per-step dicts], "shared": [...]}: each timed step run with both update forwards from one state."""
    import copy
    clock = phase_clocks()
    model = policy.model

    def snapshot():
        return (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), scheduler.state_dict(),
                generator.get_state(), torch.get_rng_state())

    def restore(s):
        model.load_state_dict(s[0])
        optimizer.load_state_dict(copy.deepcopy(s[1]))      # (the optimiser keeps the tensors it is given)
        scheduler.load_state_dict(s[2])
        generator.set_state(s[3])
        torch.set_rng_state(s[4])

    out = {"plain": [], "shared": []}
    for i in range(repeats + 1):
        batch = sampler.sample(task.train, args.prompts_per_step)
        order = ("plain", "shared") if i % 2 == 0 else ("shared", "plain")
        start = snapshot()
        seen = {}
        for n, path in enumerate(order):
            if n:
                restore(start)
            args.shared_prompt = "on" if path == "shared" else "off"      # both the rollout's and the update's
            wall, cpu = time.perf_counter(), time.process_time()
            m = train.rl_step(i, batch, policy, optimizer, scheduler, task, args, generator)
            m["cpu_step"], m["wall_step"] = time.process_time() - cpu, time.perf_counter() - wall
            for phase in PHASES:
                m[f"cpu_{phase}"], m[f"wall_{phase}"] = clock[phase]
            seen[path] = m
            print(f"step {i}{' (untimed)' if i == 0 else ''} {path}: " + ", ".join(
                f"{phase} {m[f'cpu_{phase}']:.2f}" for phase in PHASES) + f" CPU s; step {m['cpu_step']:.2f} CPU s, "
                f"{m['wall_step']:.2f} s wall; rows updated {m['updated_rows_frac']:.2f}", flush=True)
            if i > 0:
                out[path].append(m)
        a, b = seen["plain"], seen["shared"]
        same = (a["reward_mean"], a["response_len"], a["updated_rows_frac"]) == \
            (b["reward_mean"], b["response_len"], b["updated_rows_frac"])
        out.setdefault("same_rollout", []).append(same)
        if same and a["loss"] is not None:
            out.setdefault("loss_diff", []).append(abs(a["loss"] - b["loss"]))
    return out


def print_comparison(out: dict) -> None:
    mean = lambda path, key: statistics.fmean(r[key] for r in out[path])
    n = len(out["plain"])
    print(f"\nplain (the rollout decodes every row to the end; the update forwards every row's whole prompt) against "
          f"fast (--shared-prompt on: the decode forwards each distinct prefix of the going rows once, the update "
          f"forwards rollout.response_forward), "
          f"mean of {n} steps, each step run both ways from the same state:")
    same = out["same_rollout"]
    print(f"rows forwarded in the update {mean('plain', 'updated_rows_frac'):.2f}, mean response length "
          f"{mean('plain', 'response_len'):.1f} tokens, reward {mean('plain', 'reward_mean'):.3f}; the two rollouts "
          f"agreed (reward, lengths, rows updated) in {sum(same)} of {len(same)} steps; max |loss plain - loss "
          f"fast| over those {max(out.get('loss_diff', [0.0])):.2e}\n")
    print("| phase | plain CPU s | fast CPU s | speed-up (CPU) | plain wall s | fast wall s | speed-up (wall) |")
    print("|---|---|---|---|---|---|---|")
    for phase in PHASES + ("step",):
        pc, sc = mean("plain", f"cpu_{phase}"), mean("shared", f"cpu_{phase}")
        pw, sw = mean("plain", f"wall_{phase}"), mean("shared", f"wall_{phase}")
        bold = "**" if phase == "step" else ""
        print(f"| {bold}{phase}{bold} | {pc:.3f} | {sc:.3f} | {pc / max(sc, 1e-9):.2f}x | {pw:.3f} | {sw:.3f} | "
              f"{pw / max(sw, 1e-9):.2f}x |")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--trl-worker":
        a = sys.argv[2:]
        return trl_worker(a[0], json.loads(a[1]), int(a[2]), int(a[3]))
    own = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    own.add_argument("--repeats", type=int, default=10, help="timed steps (after one untimed) (default 10)")
    own.add_argument("--trl-python", default=None,
                     help="a Python with TRL installed: also time TRL's GRPOTrainer on the same model and batch")
    own.add_argument("--compare", action="store_true",
                     help="time the update's plain and shared-prompt forwards side by side (module docstring)")
    own.add_argument("--no-generate", action="store_true", help="skip the transformers.generate comparison")
    mine, rest = own.parse_known_args()
    # one optimiser step per rollout batch unless asked otherwise: TRL's GRPOTrainer takes one per generation batch
    train_argv = ["--mini-batches", "1"] + rest + ["--no-progress"]
    args = train.parse_args(train_argv)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    train.set_threads(args)
    task = train.load_task(args)
    policy = train.load_policy(args, task, print)      # builds and caches the embedded warm-up if missing
    model, tokenizer, autocast = policy.model, policy.tokenizer, policy.autocast
    on_cuda = str(args.device).startswith("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    import random
    sampler = random.Random(args.seed)

    compared = None
    if mine.compare:
        compared = compare_paths(args, mine.repeats, task, policy, optimizer, scheduler, generator, sampler)
        rows = compared["shared"]
        args.shared_prompt = "on"                       # (the summary below is the shared path's)
        mine.no_generate = True
    else:
        rows = []
        for i in range(mine.repeats + 1):
            batch = sampler.sample(task.train, args.prompts_per_step)
            cpu = time.process_time()
            m = train.rl_step(i, batch, policy, optimizer, scheduler, task, args, generator)
            if on_cuda:
                torch.cuda.synchronize()
            m["cpu_step"] = time.process_time() - cpu
            if i > 0:
                rows.append(m)
    med = lambda key: statistics.median(r[key] for r in rows)

    gen_s = None
    if not mine.no_generate:
        prompts = [task.prompt(p, tokenizer) for p in sampler.sample(task.train, args.prompts_per_step)]
        ids, mask = rollout.encode_prompts(tokenizer, prompts, task.add_special_tokens)
        ids = ids.repeat_interleave(args.group_size, 0).to(args.device)
        mask = mask.repeat_interleave(args.group_size, 0).to(args.device)
        times = []
        for i in range(mine.repeats + 1):
            t = time.time()
            with torch.no_grad(), autocast():
                model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=args.temperature,
                               top_p=args.top_p, top_k=0, max_new_tokens=args.max_new_tokens,
                               eos_token_id=policy.eos_ids,
                               pad_token_id=tokenizer.pad_token_id)
            if on_cuda:
                torch.cuda.synchronize()
            if i > 0:
                times.append(time.time() - t)
        gen_s = statistics.median(times)

    trl_s = None
    if mine.trl_python:
        if on_cuda:
            sys.exit("--trl-python: only CPU is wired up")
        import subprocess
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            tokenizer.save_pretrained(d)
            done = subprocess.run([mine.trl_python, os.path.abspath(__file__), "--trl-worker", d,
                                   json.dumps(train_argv), str(mine.repeats), str(torch.get_num_threads())],
                                  capture_output=True, text=True)
        found = [l for l in done.stdout.splitlines() if l.startswith("TRL_STEP_SECONDS")]
        if not found:
            sys.exit(f"the TRL run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        trl_s, trl_cpu = map(float, found[0].split()[1:3])

    name = args.model or "embedded Countdown Llama"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"\nmodel: {name} ({params:.2f}M params), device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{args.prompts_per_step} prompts x {args.group_size} samples, max_new_tokens {args.max_new_tokens}, "
          f"SimKO {'on' if args.simko else 'off'}, stats from {'hidden' if policy.stats_from_hidden else 'logits'}, "
          f"update forward {'shared prompt' if args.shared_prompt == 'on' else 'plain'}; median of {mine.repeats} steps")
    print(f"mean response length {med('response_len'):.1f} tokens "
          f"({med('response_len') * args.prompts_per_step * args.group_size:.0f} response tokens per step); "
          f"rows forwarded in the update (non-zero advantage) {med('updated_rows_frac'):.2f}\n")
    print("| phase | seconds | share | throughput |")
    print("|---|---|---|---|")
    total = med("time_step")
    for phase, extra in (("rollout", f"{med('rollout_tokens_per_s'):.0f} response tokens/s"),
                         ("reward", ""), ("advantage", ""),
                         ("update", f"{med('update_tokens_per_s'):.0f} tokens/s (prompt + response, fwd+bwd)")):
        t = med(f"time_{phase}")
        print(f"| {phase} | {t:.4f} | {100 * t / total:.0f}% | {extra} |")
    print(f"| **step** | {total:.4f} | 100% | |")
    if compared is not None:
        print_comparison(compared)
    if gen_s is not None:
        print(f"\nrollout with transformers.generate (sampling only, no log-probs): {gen_s:.4f} s "
              f"vs rollout.py {med('time_rollout'):.4f} s (rollout.py also returns log-probs and entropies)")
    if trl_s is not None:
        # CPU time of the process as well: on a shared machine it is what the two loops cost, whatever the load
        print(f"\nTRL GRPOTrainer, same model, batch, reward, max_completion_length, loss_type dapo, beta 0, one "
              f"optimiser step per generation batch:\n\n| per step | TRL GRPOTrainer | train.rl_step | ratio |\n"
              f"|---|---|---|---|\n| wall time | {trl_s:.4f} s | {total:.4f} s | {trl_s / total:.2f}x |\n"
              f"| CPU time | {trl_cpu:.4f} s | {med('cpu_step'):.4f} s | {trl_cpu / med('cpu_step'):.2f}x |")


if __name__ == "__main__":
    main()
