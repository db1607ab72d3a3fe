"""Peak memory and time of SimKO's token statistics (forward + backward), at a real vocabulary size.

What is measured: from last hidden states [N, H] and an LM head [V, H], compute for every token the log-prob of the
sampled token, the full-vocabulary entropy and the top-K log-probs, then backpropagate a loss that is linear in the
log-probs (random fixed weights, as a policy loss would be) to the hidden states and the LM head. Methods:

  naive     logits = hidden @ W^T, one full float32 log_softmax, gather / topk from it (what most trainers do)
  official  as naive, but the top-K log-probs come from a log_softmax over the logits expanded K times
            ([N, K, V]: the memory pattern of the official SimKO code, re-created here, not its code)
  logits    logits materialised, then simko.token_stats in chunks (what you get from an HF model's `.logits`)
  fused     simko.token_stats_from_hidden: logits computed chunk by chunk and recomputed in backward

Each method runs in its own subprocess. Peak memory is the growth above what the process held after setup (inputs
and parameters allocated): on CUDA torch.cuda.max_memory_allocated; on CPU the kernel's resident-set high-water mark
(VmHWM, reset after setup through /proc/self/clear_refs; getrusage's ru_maxrss where that is not available). It
includes the gradient buffers of hidden and W (the same for every method). Time is forward + backward, the median
of --repeats runs after the first (the first also gives the peak), as wall-clock and as process CPU time (user + sys,
all threads). On a shared machine the wall-clock time also counts time spent waiting for a core; the CPU time does
not, so compare methods by CPU time there. CPU time includes page faults, which is most of what large fresh
allocations cost on CPU.

    python benchmarks/bench_simko.py                       # V = 151,936, H = 896 (Qwen2.5-0.5B), 2,048 tokens
    python benchmarks/bench_simko.py --tokens 8192 --device cuda --dtype bfloat16
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import simko  # noqa: E402

METHODS = ("naive", "official", "logits", "fused")


def _stats_naive(hidden, weight, tokens, k):
    logp_all = (hidden @ weight.t()).float().log_softmax(-1)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    topk_logp = logp_all.topk(k, dim=-1).values
    return logp, entropy, topk_logp


def _stats_official(hidden, weight, tokens, k):
    logits = (hidden @ weight.t()).float()
    logp_all = logits.log_softmax(-1)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        topk_ids = logits.topk(k, dim=-1).indices
    # The logits copied K times, one log_softmax each, then the rank-k column of copy k.
    expanded = logits.unsqueeze(1).expand(-1, k, -1).log_softmax(-1)  # [N, K, V]
    topk_logp = expanded.gather(-1, topk_ids.unsqueeze(-1)).squeeze(-1)
    return logp, entropy, topk_logp


def _stats_logits(hidden, weight, tokens, k, chunk):
    logits = (hidden @ weight.t()).unsqueeze(0)
    s = simko.token_stats(logits, tokens.unsqueeze(0), top_k=k, chunk_size=chunk)
    return s.logp[0], s.entropy[0], s.topk_logp[0]


def _stats_fused(hidden, weight, tokens, k, chunk):
    s = simko.token_stats_from_hidden(hidden.unsqueeze(0), weight, tokens.unsqueeze(0), top_k=k, chunk_size=chunk)
    return s.logp[0], s.entropy[0], s.topk_logp[0]


def _rss_reset():
    """Reset the resident-set high-water mark; returns how peak memory will be read afterwards."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM"
    except OSError:
        return "ru_maxrss"


def _rss_kib(field):
    if field == "ru_maxrss":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(args):
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    n, h, v, k = args.tokens, args.hidden, args.vocab, args.top_k
    # Logit scale ~N(0, 2^2): a peaked-but-not-degenerate distribution, like an LM's.
    hidden = torch.randn(n, h, generator=g).to(dev, dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g) * (2.0 / h ** 0.5)).to(dev, dtype).requires_grad_()
    tokens = torch.randint(0, v, (n,), generator=g).to(dev)
    g_logp = torch.randn(n, generator=g).to(dev)
    g_topk = torch.randn(n, k, generator=g).to(dev)
    fn = {"naive": _stats_naive, "official": _stats_official,
          "logits": lambda *a: _stats_logits(*a, args.chunk_size),
          "fused": lambda *a: _stats_fused(*a, args.chunk_size)}[args.worker]

    def step():
        hidden.grad = weight.grad = None
        logp, entropy, topk_logp = fn(hidden, weight, tokens, k)
        ((logp * g_logp).sum() + (topk_logp * g_topk).sum()).backward()
        return logp.detach(), entropy, topk_logp.detach()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        field = _rss_reset()
        base = _rss_kib("VmRSS") if field == "VmHWM" else _rss_kib("ru_maxrss")
    t0 = time.perf_counter()
    logp, entropy, topk_logp = step()
    sync()
    first = time.perf_counter() - t0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = (_rss_kib(field) - base) * 1024
    out = {"peak_bytes": peak, "first_s": first,
           "logp": logp[:64].double().tolist(), "entropy": entropy[:64].double().tolist(),
           "topk_logp": topk_logp[:64].double().flatten().tolist(),
           "grad_hidden": hidden.grad[:64].double().flatten().tolist(),
           "grad_weight_norm": weight.grad.double().norm().item()}
    times, cpu = [], []
    for _ in range(args.repeats):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out["times"], out["cpu"] = times, cpu
    print(json.dumps(out))


def _max_rel(a, b):
    a, b = torch.tensor(a), torch.tensor(b)
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--chunk-size", type=int, default=256, help="tokens per chunk for the logits and fused methods")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default: float32 on CPU (no fast bf16 matmul), bfloat16 on CUDA")
    p.add_argument("--repeats", type=int, default=2, help="timed runs after the first")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    for name, lo in (("--vocab", 2), ("--hidden", 1), ("--tokens", 1), ("--top-k", 1), ("--chunk-size", 1),
                     ("--repeats", 1)):
        if getattr(args, name[2:].replace("-", "_")) < lo:
            p.error(f"{name} must be >= {lo}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return worker(args)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"--methods: unknown {bad}; choose from {list(METHODS)}")
    print(f"# V={args.vocab:,} H={args.hidden} tokens={args.tokens:,} K={args.top_k} chunk={args.chunk_size} "
          f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"repeats={args.repeats} load average={os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    results = {}
    for m in methods:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", m] + [
            a for a in sys.argv[1:] if a != "--worker"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"# {m}: failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
            continue
        results[m] = json.loads(r.stdout.strip().splitlines()[-1])
    if not results:
        return 1
    ref = results.get("naive")
    nan = float("nan")
    print(f"{'method':<9} {'peak MiB':>9} {'mem/naive':>10} {'wall s':>8} {'cpu s':>8} {'wall/naive':>11} "
          f"{'cpu/naive':>10} {'max rel diff vs naive':>22}")
    for m, r in results.items():
        wall, cpu = statistics.median(r["times"]), statistics.median(r["cpu"])
        mem_ratio = r["peak_bytes"] / ref["peak_bytes"] if ref else nan
        wall_ratio = wall / statistics.median(ref["times"]) if ref else nan
        cpu_ratio = cpu / statistics.median(ref["cpu"]) if ref else nan
        diff = nan
        if ref:
            diff = max(_max_rel(r[f], ref[f]) for f in ("logp", "entropy", "topk_logp", "grad_hidden"))
            diff = max(diff, abs(r["grad_weight_norm"] - ref["grad_weight_norm"]) / ref["grad_weight_norm"])
        print(f"{m:<9} {r['peak_bytes'] / 2**20:>9.0f} {mem_ratio:>10.3f} {wall:>8.2f} {cpu:>8.2f} "
              f"{wall_ratio:>11.3f} {cpu_ratio:>10.3f} {diff:>22.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
