"""Seconds per phase and tokens/s of one RL step of train.py (rollout, reward, advantage, update).

    python benchmarks/bench_step.py                       # the embedded model on CPU (warm-up cache if present)
    python benchmarks/bench_step.py --model Qwen/Qwen2.5-0.5B-Instruct --data gsm8k.jsonl --device cuda
    python benchmarks/bench_step.py --threads 2           # CPU threads (default: 1 for the embedded model)
    python benchmarks/bench_step.py --trl-python /path/to/venv-with-trl/bin/python   # + TRL GRPOTrainer
    python benchmarks/bench_step.py --trl-python .venv/bin/python --prompts-per-step 8 --advantage grpo --no-simko
                                    # the comparison of issue 11: 8 prompts x 8 samples, <= 12 new tokens, GRPO

Any extra flags are passed to train.py's parser (`--prompts-per-step`, `--group-size`, `--micro-batch-size`,
`--no-simko`, ...). The step is exactly train.rl_step; one untimed step warms up, then `--repeats` steps are
timed and the median of each phase is printed. For reference the rollout is also timed with transformers'
`generate` (same model, batch and max_new_tokens, sampling, no log-probs kept), so the hand-written loop in
rollout.py can be compared with the library's. With `--trl-python` the same model, batch and reward are also run
through TRL's GRPOTrainer (loss_type dapo, beta 0, one iteration per generation) in that Python, and its median
step time is printed beside ours (TRL is not a dependency of this project; its SimKO-free GRPO step is the
reference point, so compare with `--no-simko` for like-for-like). train.py's step runs with `--mini-batches 1` unless
the flag is given, since TRL takes one optimiser step per generation batch. Both the wall time and the process's CPU
time are reported: on a machine shared with other jobs the load changes between the two measurements, the CPU time
much less.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

import rollout as R  # noqa: E402
import train  # noqa: E402


def trl_worker(model_path: str, prompts_per_step: int, group_size: int, max_new_tokens: int, lr: float,
               repeats: int, threads: int) -> None:
    """Run inside a Python that has TRL: time GRPOTrainer steps on the same model, batch and reward."""
    torch.set_num_threads(threads)
    import countdown
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    problems, _ = countdown.make_problems()
    data = Dataset.from_dict({"prompt": [p["prompt"] for p in problems[:2000]],
                              "numbers": [list(p["numbers"]) for p in problems[:2000]],
                              "target": [p["target"] for p in problems[:2000]]})

    def correct(prompts, completions, numbers, target, **kwargs):
        return [countdown.reward(c, tuple(n), t) for c, n, t in zip(completions, numbers, target)]

    stamps = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            stamps.append(["begin", time.perf_counter(), time.process_time()])

        def on_step_end(self, *a, **k):
            stamps.append(["end", time.perf_counter(), time.process_time()])

    config = GRPOConfig(output_dir="/tmp/bench_step_trl", per_device_train_batch_size=prompts_per_step * group_size,
                        num_generations=group_size, max_completion_length=max_new_tokens, temperature=1.0,
                        top_k=0, beta=0.0, loss_type="dapo", epsilon=0.2, epsilon_high=0.28, learning_rate=lr,
                        max_steps=repeats + 1, use_cpu=True, bf16=False, report_to=[], save_strategy="no",
                        logging_steps=1, seed=0, disable_tqdm=True)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    trainer = GRPOTrainer(model=model_path, reward_funcs=correct, args=config, train_dataset=data,
                          processing_class=tokenizer, callbacks=[Clock()])
    trainer.train()
    # GRPOTrainer generates inside the step, so begin -> end is the whole rollout + reward + update
    wall = [e[1] - b[1] for b, e in zip(stamps[0::2], stamps[1::2])][1:]
    cpu = [e[2] - b[2] for b, e in zip(stamps[0::2], stamps[1::2])][1:]
    print("TRL_STEP_SECONDS", statistics.median(wall), statistics.median(cpu))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--trl-worker":
        a = sys.argv[2:]
        return trl_worker(a[0], int(a[1]), int(a[2]), int(a[3]), float(a[4]), int(a[5]), int(a[6]))
    own = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    own.add_argument("--repeats", type=int, default=10, help="timed steps (after one untimed) (default 10)")
    own.add_argument("--trl-python", default=None,
                     help="a Python with TRL installed: also time TRL's GRPOTrainer on the same model and batch")

    own.add_argument("--no-generate", action="store_true", help="skip the transformers.generate comparison")
    mine, rest = own.parse_known_args()
    # one optimiser step per rollout batch unless asked otherwise: TRL's GRPOTrainer takes one per generation batch
    args = train.parse_args(["--mini-batches", "1"] + rest + ["--no-progress"])
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
        ids, mask = R.encode_prompts(tokenizer, prompts, task.add_special_tokens)
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
        if args.model is not None or on_cuda:
            sys.exit("--trl-python: only the embedded model on CPU is wired up")
        import subprocess
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            tokenizer.save_pretrained(d)
            done = subprocess.run([mine.trl_python, os.path.abspath(__file__), "--trl-worker", d,
                                   str(args.prompts_per_step), str(args.group_size), str(args.max_new_tokens),
                                   str(args.lr), str(mine.repeats), str(torch.get_num_threads())],
                                  capture_output=True, text=True)
        found = [l for l in done.stdout.splitlines() if l.startswith("TRL_STEP_SECONDS")]
        if not found:
            sys.exit(f"the TRL run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        trl_s, trl_cpu = map(float, found[0].split()[1:3])

    name = args.model or "embedded Countdown Llama"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"\nmodel: {name} ({params:.2f}M params), device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{args.prompts_per_step} prompts x {args.group_size} samples, max_new_tokens {args.max_new_tokens}, "
          f"SimKO {'on' if args.simko else 'off'}, stats from {'hidden' if policy.from_hidden else 'logits'}; "
          f"median of {mine.repeats} steps")
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
