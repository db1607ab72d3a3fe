"""Rollouts: sample G responses per prompt with a KV cache and keep what the policy loss needs.

RLVR needs, for every sampled response, the token ids, a mask of which positions are response tokens, and the
log-probability that the *sampling* policy gave each token (the `old_logp` of the PPO ratio
`pi_theta(y_t) / pi_old(y_t)`). This file is a short hand-written sampling loop over any Hugging Face causal LM:

1. Prompts are tokenised and **left-padded**, so that every row's last prompt token sits in the same column and
   all rows generate in lock-step. Position ids are computed from the attention mask (`cumsum - 1`) so that a
   padded row sees exactly the positions it would see alone; `position_ids` below is the one place that does it,
   and the teacher-forced forward in train.py uses the same function.
2. One prefill forward fills the KV cache, once per distinct prompt, and each prompt's keys and values are copied
   to its G rows (either cache below); then each step feeds only the newest token. The next-token distribution is
   `softmax(logits / temperature)`, optionally restricted to its top-p nucleus for *sampling*.
3. At every step we record the sampled token's log-probability under `softmax(logits / temperature)` (before the
   top-p cut, which is what the loss recomputes) and that distribution's entropy. Keeping two [B] numbers per step
   instead of the [B, V] logits is what lets this work with 150k-token vocabularies. `stats_top_k=K` also keeps
   the K largest log-probs of that distribution (SimKO's top-K, for metrics), K numbers per row and step.
4. A row stops at its first EOS (which is kept: the policy chose to stop, and that choice is trained too); later
   columns hold the pad token with mask 0. The loop ends when every row has stopped or at `max_new_tokens`.

The policy loss needs the same log-probs again, with gradients, under the current weights: `response_forward`
is that teacher-forced forward. It forwards the rows' prefix tree as one packed sequence, so a group's prompt is
computed once instead of G times, a prefix shared by all prompts or by several responses once, and no padding at
all (its docstring has the layout).

Randomness comes only from the `generator` argument, so a run with a seeded generator is reproducible and the
generator's state can be checkpointed. `tests/test_rollout.py` checks that the recorded log-probs equal a
teacher-forced forward pass's.

The KV cache comes in two kinds, chosen by `static_cache` (the sampling loop above is shared, so both draw the same
random numbers and record the same statistics):
- dynamic (default): the cache grows by one column per step. Simple and right for CPU, but on a GPU each step is
  hundreds of small kernel launches over changing shapes, so decoding is launch-bound. On one CPU thread the
  tokens and statistics of prefilling each prompt once are bit for bit those of prefilling all G copies (tested),
  while with several threads or on a GPU the kernels picked for the smaller prefill batch may round differently.
  With `shared_prompt=True` (train.py's `--shared-prompt`, which also makes the update forward shared prefixes
  once) the decode forwards shared prefixes once too: the cache holds one row per distinct prefix (a prompt and the
  response tokens so far) of the rows that have not stopped, and each step forwards those rows only. A group's rows
  often begin alike (`\\boxed{`), and rows that have stopped cost nothing. The sampler still draws for every row
  (a stopped row gets all-zero logits and its draw is discarded), so it consumes the same random numbers, and
  every row gets its prefix's logits, which are the full batch's up to the rounding of matrix products over fewer
  rows (tested: the same tokens, statistics within 2e-5 on one CPU thread; within 1e-10 in float64).
- static (`static_cache=True`): the cache is preallocated for `prompt + max_new_tokens` columns (rounded up to a
  multiple of 64, so that calls with similar prompt widths share one cache) and the attention mask is a fixed-width
  buffer whose next column is switched on each step. Every decode step then has the same shapes, and on CUDA the
  one-token forward is compiled with `torch.compile(mode="reduce-overhead")`, which captures it as a CUDA graph:
  the whole model is one graph launch per step (the sampling stays eager). On CPU it runs eagerly. The extra
  masked columns change the attention's float rounding only, so log-probs and entropies agree with the dynamic
  path to float tolerance and the sampled tokens are the same unless rounding tips a near-tie (tested on CPU in
  tests/test_rollout.py; in bf16 on a GPU such ties are more common). The prompts are prefilled once into a
  dynamic cache and copied, G rows each, into the static one. The cache stays allocated between calls (one per
  model, replaced when the batch size or width changes); `release_static_cache(model)` frees it.
"""
from __future__ import annotations

import inspect
import warnings
import weakref
from typing import NamedTuple

import torch


class Rollout(NamedTuple):
    input_ids: torch.Tensor       # [B, P + R] left-padded prompt, then response, pad after EOS
    attention_mask: torch.Tensor  # [B, P + R] 1 on real prompt and response tokens (EOS included)
    response_mask: torch.Tensor   # [B, R] float, 1 on response tokens (EOS included)
    logp: torch.Tensor            # [B, R] log pi_old(y_t) under softmax(logits / temperature); 0 where masked
    entropy: torch.Tensor         # [B, R] entropy of softmax(logits / temperature); 0 where masked
    truncated: torch.Tensor       # [B] bool, True when no EOS came within max_new_tokens
    prompt_len: int               # P: response token t sits at column P + t
    texts: list                   # B decoded responses (without EOS and padding)
    topk_logp: torch.Tensor | None = None  # [B, R, K] float32 top-K log-probs of softmax(logits / temperature)
    #                                        (before top-p), sorted descending; 0 where masked. None unless
    #                                        rollout(..., stats_top_k=K > 0)


def encode_prompts(tokenizer, prompts: list[str], add_special_tokens: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded token ids [B, P] and attention mask [B, P] for a list of prompt strings."""
    rows = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    if any(len(r) == 0 for r in rows):
        raise ValueError("a prompt tokenised to zero tokens; every prompt needs at least one token")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def pad_id(tokenizer) -> int:
    """The id that fills padding: the tokenizer's pad token, else its EOS (many causal LMs define no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: the first real token of every row is position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set to -inf every logit outside the smallest set of tokens whose probability sums to >= top_p."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    sorted_probs = sorted_logits.softmax(-1)
    drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p      # mass before this token already reaches top_p
    drop[..., 0] = False                                         # always keep the most likely token
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def _multinomial(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of probs [B, V] -> [B]: `torch.multinomial(probs, 1, generator=generator)`, the same tokens and
    random numbers, about 2x faster on CPU.

    torch.multinomial draws one sample by the exponential race (Gumbel-max): argmax_v p_v / q_v with q_v ~ Exp(1). On
    CPU it computes q_v = -log(1 - u_v) from the generator's 53-bit uniforms u_v one element at a time; here the same
    uniforms come from one `uniform_` call on a float64 tensor (which draws them in the same order) and the logarithm
    is vectorised. 1 - u is exact in float64, so q differs from torch's by at most an ulp of float64 before both
    round it to float32 (tests/test_rollout.py checks the draws and the generator state against torch.multinomial).
    Other devices draw differently and keep torch.multinomial."""
    if probs.device.type != "cpu":
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    u = torch.empty(probs.shape, dtype=torch.float64).uniform_(generator=generator)
    return probs.div(u.neg_().add_(1).log_().neg_().to(probs.dtype)).argmax(-1)


@torch.no_grad()
def sample(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int, eos_token_id,
           pad_token_id: int, temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None,
           static_cache: bool = False, stats_top_k: int = 0, group_size: int = 1, shared_prompt: bool = False):
    """Sample `group_size` G continuations of each row of the left-padded prompts `prompt_ids` [B, P].

    Returns (response_ids [BG, R], response_mask [BG, R] float, logp [BG, R], entropy [BG, R], truncated [BG]) with
    BG = B * G rows (rows [i*G, (i+1)*G) continue prompt row i) and R <= max_new_tokens, plus
    topk_logp [BG, R, stats_top_k] as a sixth element when `stats_top_k` > 0.
    `eos_token_id` may be an int or a list of ints (chat models often stop on several). `static_cache=True` decodes
    over a preallocated cache (module docstring); its statistics equal the default path's to float tolerance.
    Each prompt is prefilled once. `shared_prompt=True` (train.py's --shared-prompt) makes the dynamic cache's decode
    forward each distinct prefix of the rows that have not stopped once (module docstring): the same random numbers,
    statistics equal to float rounding.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature}); sampling is what RL needs")
    if stats_top_k < 0:
        raise ValueError(f"stats_top_k must be >= 0 (got {stats_top_k})")
    device = prompt_ids.device
    eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=device)
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1 (got {group_size})")
    batch = prompt_ids.shape[0] * group_size
    if static_cache:
        logits, step = _static_decoder(model, prompt_ids, prompt_mask.to(device), max_new_tokens, group_size)
    else:
        logits, step = _dynamic_decoder(model, prompt_ids, prompt_mask.to(device), group_size, shared_prompt)
    # logits [BG, V]: the next-token logits of every row
    if stats_top_k > logits.shape[-1]:
        raise ValueError(f"stats_top_k={stats_top_k} exceeds the vocabulary ({logits.shape[-1]} tokens)")

    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, token_mask, logps, entropies, topks = [], [], [], [], []
    for t in range(max_new_tokens):
        logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
        sampling_logits = _top_p_filter(logp_all, top_p) if top_p < 1.0 else logp_all
        probs = sampling_logits.softmax(-1)
        token = _multinomial(probs, generator)
        live = ~done                                       # rows still generating: this token is real
        token = torch.where(live, token, torch.full_like(token, pad_token_id))
        logps.append(torch.where(live, logp_all.gather(-1, token[:, None]).squeeze(-1), 0.0))
        entropies.append(torch.where(live, -(logp_all.exp() * logp_all).nan_to_num().sum(-1), 0.0))
        if stats_top_k:
            topks.append(torch.where(live[:, None], logp_all.topk(stats_top_k, dim=-1).values, 0.0))
        tokens.append(token)
        token_mask.append(live)
        done = done | (live & torch.isin(token, eos))
        if bool(done.all()) or t == max_new_tokens - 1:                # (the last token's logits are not needed)
            break
        # feed the token just sampled to the rows that go on (a row that stopped needs no more forwards, and its
        # later logits are discarded); next logits [BG, V]
        logits = step(t, token, ~done)
    out = (torch.stack(tokens, 1), torch.stack(token_mask, 1).float(), torch.stack(logps, 1),
           torch.stack(entropies, 1), ~done)
    return out + (torch.stack(topks, 1),) if stats_top_k else out


def rollout(model, tokenizer, prompts: list[str], group_size: int, *, max_new_tokens: int, temperature: float = 1.0,
            top_p: float = 1.0, generator: torch.Generator | None = None, add_special_tokens: bool = True,
            eos_token_id=None, static_cache: bool = False, stats_top_k: int = 0,
            shared_prompt: bool = False) -> Rollout:
    """`group_size` responses for each prompt; rows are grouped: rows [i*G, (i+1)*G) belong to prompts[i]."""
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, add_special_tokens)
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    resp, resp_mask, logp, entropy, truncated, *topk = sample(
        model, prompt_ids.to(device), prompt_mask.to(device), max_new_tokens=max_new_tokens, eos_token_id=eos,
        pad_token_id=pad_id(tokenizer), temperature=temperature, top_p=top_p, generator=generator,
        static_cache=static_cache, stats_top_k=stats_top_k, group_size=group_size, shared_prompt=shared_prompt)
    prompt_ids = prompt_ids.repeat_interleave(group_size, 0).to(device)      # [B * G, P], row i*G + j is prompt i
    prompt_mask = prompt_mask.repeat_interleave(group_size, 0).to(device)
    texts = decode_responses(tokenizer, resp, resp_mask, eos)
    return Rollout(input_ids=torch.cat([prompt_ids, resp], 1),
                   attention_mask=torch.cat([prompt_mask, resp_mask.long()], 1),
                   response_mask=resp_mask, logp=logp, entropy=entropy, truncated=truncated,
                   prompt_len=prompt_ids.shape[1], texts=texts, topk_logp=topk[0] if topk else None)


def concat_rollouts(parts: list[Rollout], tokenizer) -> Rollout:
    """Join rollouts generated in several calls (their prompt and response widths may differ) by re-padding: prompts
    on the left to the widest prompt P, responses on the right to the longest R."""
    if len(parts) == 1:
        return parts[0]
    P = max(p.prompt_len for p in parts)
    R = max(p.response_mask.shape[1] for p in parts)
    pad = torch.nn.functional.pad

    def fit(x, p, value, prompt_part: bool):       # [b, ...] -> [b, P + R] (prompt_part) or [b, R]
        return pad(x, (P - p.prompt_len if prompt_part else 0, R - p.response_mask.shape[1]), value=value)
    return Rollout(
        input_ids=torch.cat([fit(p.input_ids, p, pad_id(tokenizer), True) for p in parts]),
        attention_mask=torch.cat([fit(p.attention_mask, p, 0, True) for p in parts]),
        response_mask=torch.cat([fit(p.response_mask, p, 0.0, False) for p in parts]),
        logp=torch.cat([fit(p.logp, p, 0.0, False) for p in parts]),
        entropy=torch.cat([fit(p.entropy, p, 0.0, False) for p in parts]),
        truncated=torch.cat([p.truncated for p in parts]), prompt_len=P,
        texts=[t for p in parts for t in p.texts],
        topk_logp=None if parts[0].topk_logp is None else
        torch.cat([pad(p.topk_logp, (0, 0, 0, R - p.response_mask.shape[1])) for p in parts]))


def decode_responses(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor, eos_token_id) -> list[str]:
    """Decode each row's real response tokens, dropping a final EOS."""
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
    texts = []
    for row, m in zip(response_ids.tolist(), response_mask.tolist()):
        row = [t for t, keep in zip(row, m) if keep]
        if row and row[-1] in eos:
            row = row[:-1]
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts


def sample_for_eval(model, tokenizer, prompts: list[str], n: int, *, max_new_tokens: int, temperature: float = 1.0,
                    top_p: float = 1.0, batch_size: int = 512, generator: torch.Generator | None = None,
                    add_special_tokens: bool = True, eos_token_id=None, static_cache: bool = False,
                    shared_prompt: bool = False) -> list[list[str]]:
    """n sampled responses for each prompt (for pass@k), generated in batches of at most `batch_size` rows."""
    per_batch = max(1, batch_size // n)
    texts = []
    for start in range(0, len(prompts), per_batch):
        chunk = prompts[start:start + per_batch]
        out = rollout(model, tokenizer, chunk, n, max_new_tokens=max_new_tokens, temperature=temperature,
                      top_p=top_p, generator=generator, add_special_tokens=add_special_tokens,
                      eos_token_id=eos_token_id, static_cache=static_cache, shared_prompt=shared_prompt)
        texts += [out.texts[i * n:(i + 1) * n] for i in range(len(chunk))]
    return texts


def response_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int, *,
                     hidden: bool = False, max_tokens: int = 2048) -> torch.Tensor:
    """The teacher-forced forward of the response tokens, every shared prefix computed once and no padding at all.

    input_ids, attention_mask [b, P + R]: left-padded prompts in columns [0, P) (prompt_len = P), then responses whose
    real tokens come first (mask 1 on response tokens 0 .. n_i - 1, 0 after), as in a Rollout.
    Returns [b, R, V] logits, or with `hidden=True` the base model's [b, R, H] last hidden states (after its final
    norm): position t is the one that predicts response token t, i.e. the plain forward's output at column
    P + t - 1. Positions t >= n_i (row i's padding, which a loss masks out) hold zeros. Differentiable with respect to
    the model's parameters.

    Under causal attention the output at a token depends only on the real tokens up to it (padding is masked out
    and positions count real tokens), so two rows that begin with the same tokens have the same outputs there. A
    group's G responses share their prompt, all prompts share the chat template's opening, and responses often
    share their first tokens (`\\boxed{`), yet the plain forward computes each row whole, padding included. Here
    the rows' real tokens (the prompt's, then response tokens 0 .. n_i - 2; the last one predicts nothing) form a
    prefix tree, each node one token at its depth as position, and the tree is forwarded as one packed sequence
    with a 4D attention mask under which a node sees exactly its ancestors and itself. Every row then sees the keys,
    values and positions that its plain forward gives it; each shared node is computed once, and autograd adds up
    the gradients that the rows' copies would receive. Tokens forwarded: the tree's nodes, instead of b * (P + R).
    Rows are packed in order into sequences of at most `max_tokens` nodes (a row longer than that gets its own), so
    the [L, L] masks and the attention stay small; the sequences are one right-padded batch.
    The numbers are the plain forward's up to float rounding: the same sums are split over other matrix shapes
    (tests/test_shared_prompt.py bounds the difference, for log-probs and for parameter gradients).

    Models whose attention takes no custom 4D mask (implementations other than sdpa and eager) get the plain
    forward, with the same output layout.
    """
    P = prompt_len
    b, width = input_ids.shape if input_ids.dim() == 2 else (0, 0)
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2 or not 0 < P < width:
        raise ValueError(f"response_forward: input_ids {tuple(input_ids.shape)} and attention_mask "
                         f"{tuple(attention_mask.shape)} must be one [b, P + R] shape with "
                         f"0 < prompt_len ({P}) < P + R")
    R = width - P
    n = attention_mask[:, P:].sum(1)                                               # [b] response tokens per row
    valid = torch.arange(R, device=input_ids.device) < n[:, None]                 # [b, R]
    if not bool((attention_mask[:, P:].bool() == valid).all()) or bool((n == 0).any()):
        raise ValueError("response_forward: every row's response mask must be 1 on its first n >= 1 response tokens "
                         "and 0 after (a Rollout's layout)")
    net = getattr(model, model.base_model_prefix) if hidden else model
    pick = (lambda out: out.last_hidden_state) if hidden else (lambda out: out.logits)
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in ("sdpa", "eager"):
        out = pick(net(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                       use_cache=False))[:, P - 1:-1]
        return torch.where(valid[..., None], out, 0.0)

    # The prefix trees: node -> (token, depth); row i's path is the node of each of its fed tokens.
    ids, real = input_ids.tolist(), attention_mask.bool().tolist()
    seqs, trees, where = [], [], []                      # where[i] = (sequence, path of row i)
    for i in range(b):
        fed = [tok for tok, keep in zip(ids[i][:P], real[i][:P]) if keep] + ids[i][P:P + int(n[i]) - 1]
        if not seqs or (len(seqs[-1]) + len(fed) > max_tokens and len(seqs[-1]) > 0):
            seqs.append([])                                  # [(token, depth)] of one packed sequence
            trees.append({})                                 # (parent node, token) -> node
        nodes, tree, node, path = seqs[-1], trees[-1], -1, []
        for depth, tok in enumerate(fed):
            node = tree.setdefault((node, tok), len(nodes))
            if node == len(nodes):
                nodes.append((tok, depth))
            path.append(node)
        where.append((len(seqs) - 1, path))
    device = input_ids.device
    L = max(len(nodes) for nodes in seqs)
    tokens = torch.zeros(len(seqs), L, dtype=torch.long)
    pos = torch.zeros(len(seqs), L, dtype=torch.long)
    # node q sees node k when k is q or one of its ancestors; a padding node sees only itself (no empty row)
    see = torch.eye(L, dtype=torch.bool).repeat(len(seqs), 1, 1)                   # [c, L, L]
    for c, nodes in enumerate(seqs):
        tokens[c, :len(nodes)] = torch.tensor([tok for tok, _ in nodes])
        pos[c, :len(nodes)] = torch.tensor([depth for _, depth in nodes])
    for c, path in where:
        path = torch.tensor(path)
        q, k = torch.tril_indices(len(path), len(path))
        see[c, path[q], path[k]] = True
    mask = see[:, None].to(device)
    if implementation == "eager":                    # eager attention adds its mask to the scores
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
    out = pick(net(input_ids=tokens.to(device), attention_mask=mask, position_ids=pos.to(device), use_cache=False))
    # response token t of row i is predicted at its fed token P_i - 1 + t (P_i = the row's real prompt tokens)
    flat = torch.zeros(b, R, dtype=torch.long)
    for i, (c, path) in enumerate(where):
        start = len(path) - int(n[i])                                              # P_i - 1
        flat[i, :int(n[i])] = torch.tensor(path[start:]) + c * L
    picked = out.reshape(len(seqs) * L, -1)[flat.to(device)]                       # [b, R, V or H]
    return torch.where(valid[..., None], picked, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# The two KV caches. Each decoder runs the prefill of the B prompts and returns (last prompt position's logits
# [BG, V], step), each prompt's row repeated G = group_size times, where step(t, token [BG], going [BG]) feeds the
# token sampled at response step t (its attention-mask column is `going`: the rows that have not stopped) and
# returns the next logits [BG, V] (only the going rows' are used).
#
# A model's forward takes its KV cache as `cache` or as `past_key_values` (a deprecated name in the transformers
# versions that have `cache`), and some forwards take a `cache_position` from which the static cache learns where
# to write. We create the cache object ourselves and pass it under the name the model's forward declares (and
# `cache_position` where it is declared), so no deprecated name is used with any supported version
# (transformers >= 4.51; checked with 4.51.3, 5.17.0 and 5.24.0).

STATIC_CACHE_ROUND = 64       # static cache width is prompt + max_new_tokens rounded up to this
COMPILE_DEVICES = ("cuda",)   # device types on which the static one-token step is compiled (CUDA graphs)


def _forward_params(model) -> set:
    return set(inspect.signature(model.forward).parameters)


def _cache_arg(model) -> str:
    """The name under which this model's forward takes a KV cache."""
    return "cache" if "cache" in _forward_params(model) else "past_key_values"


def _new_dynamic_cache(model):
    from transformers import DynamicCache
    try:
        return DynamicCache(config=model.config)         # what the model itself would create
    except TypeError:
        return DynamicCache()                             # (transformers < 4.56 takes no config)


def _prefill(model, prompt_ids, mask, group_size, cache):
    """One forward of the B prompts [B, P] into `cache` (B rows); returns the next-token logits [BG, V], each prompt's
    row repeated G = group_size times.

    A row's keys and values do not depend on the other rows, so each prompt is prefilled once and the decoders copy its
    cache to its rows. Only the LM head is given the G copies, as it is when every copy is prefilled, because a matrix
    product of fewer than 4 rows rounds differently on CPU (MKL): on one CPU thread the prefill's logits are then bit
    for bit those of prefilling every copy (tests/test_rollout.py); with several threads or on a GPU they agree to
    float precision."""
    repeat = lambda x: x.repeat_interleave(group_size, 0)
    head = model.get_output_embeddings().register_forward_pre_hook(lambda module, args: (repeat(args[0]),))
    try:
        return model(input_ids=prompt_ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=1,
                     **{_cache_arg(model): cache, "use_cache": True}).logits[:, -1]          # [BG, V]
    finally:
        head.remove()


def _cached_keys_values(cache) -> list:
    """[(keys, values)] per layer of a dynamic cache, each [batch, heads, columns, head dim]."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))             # (transformers < 4.56)


def _dynamic_decoder(model, prompt_ids, mask, group_size, shared_prompt):
    cache = _new_dynamic_cache(model)
    kw = {_cache_arg(model): cache, "use_cache": True}
    logits = _prefill(model, prompt_ids, mask, group_size, cache)
    next_pos = position_ids(mask)[:, -1:] + 1                         # [B, 1] position of response token 0
    if not shared_prompt:
        # every row decodes over its own copy of its prompt's cache, to the end
        if group_size > 1:
            cache.batch_repeat_interleave(group_size)    # every layer's keys and values [B, ...] -> [BG, ...]
            mask, next_pos = mask.repeat_interleave(group_size, 0), next_pos.repeat_interleave(group_size, 0)

        def step(t, token, going):
            nonlocal mask
            mask = torch.cat([mask, going.long()[:, None]], dim=1)           # [BG, P + t + 1]
            return model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos + t, **kw).logits[:, -1]
        return logits, step

    # shared_prompt: the cache holds one row per distinct prefix (a prompt and the response tokens so far), a node of
    # the rows' prefix tree. Rows that share a prefix have the same next-token logits, so each step forwards each
    # node's newest token once: at first the B prompts, then one node per distinct (parent node, token) of the going
    # rows. Rows that have stopped belong to no node and get all-zero logits, which the sampler draws for and then
    # discards, so it draws the same random numbers as over the full batch (module docstring).
    batch = logits.shape[0]
    vocab = logits.shape[-1]
    node = torch.arange(batch, device=mask.device) // group_size      # [BG] each row's node (its cache row)

    def step(t, token, going):
        nonlocal mask, next_pos, node
        rows = going.nonzero().squeeze(1)
        # torch.unique sorts by (parent, token): a step with no split and no stopped row keeps the cache rows in order
        children, which = torch.unique(node[rows] * vocab + token[rows], return_inverse=True)
        parent = children // vocab
        if len(parent) != mask.shape[0] or not bool((parent == torch.arange(len(parent), device=parent.device)).all()):
            cache.batch_select_indices(parent)                             # a parent row per child (copied if split)
            mask, next_pos = mask[parent], next_pos[parent]
        mask = torch.cat([mask, mask.new_ones(len(parent), 1)], dim=1)      # [nodes, P + t + 1]
        out = model(input_ids=(children % vocab)[:, None], attention_mask=mask, position_ids=next_pos + t,
                    **kw).logits[:, -1]                                      # [nodes, V]
        node = torch.full_like(node, -1).index_copy_(0, rows, which)
        return out.new_zeros(batch, vocab).index_copy_(0, rows, out[which])
    return logits, step


_STATIC = weakref.WeakKeyDictionary()     # model -> {"key": (B, L, dtype, device), "cache": StaticCache, "fn": ...}


def release_static_cache(model) -> None:
    """Free the preallocated static KV cache kept for `model` between calls (if any)."""
    _STATIC.pop(model, None)


def _static_decoder(model, prompt_ids, mask, max_new_tokens, group_size):
    # the B prompts are prefilled once (into a dynamic cache), and their keys and values are written, each prompt's G
    # times, into the first columns of the preallocated [BG, L] cache
    prefill = _new_dynamic_cache(model)
    logits = _prefill(model, prompt_ids, mask, group_size, prefill)
    repeat = lambda x: x.repeat_interleave(group_size, 0)
    mask = repeat(mask)
    batch, width = mask.shape
    device = prompt_ids.device
    L = -(-(width + max_new_tokens) // STATIC_CACHE_ROUND) * STATIC_CACHE_ROUND     # cache columns
    state = _static_state(model, batch, L, device)
    cache, params = state["cache"], _forward_params(model)
    for layer, (keys, values) in enumerate(_cached_keys_values(prefill)):
        cache.update(repeat(keys), repeat(values), layer, {"cache_position": torch.arange(width, device=device)})
    del prefill
    kw = {_cache_arg(model): cache, "use_cache": True}
    with_cache_position = "cache_position" in params      # such a forward reads the write column from it
    # [B, L]: prompt columns, then one column per response token, switched on as the token is fed
    full_mask = torch.zeros(batch, L, dtype=torch.long, device=device)
    full_mask[:, :width] = mask
    next_pos = position_ids(mask)[:, -1:] + 1             # [BG, 1]

    def step(t, token, going):
        full_mask[:, width + t] = going.long()
        extra = {"cache_position": torch.full((1,), width + t, device=device)} if with_cache_position else {}
        return state["fn"](model, kw, token[:, None], full_mask, next_pos + t, extra)
    return logits, step


def _one_token_forward(model, kw, token, mask, pos, extra):
    """The fixed-shape decode step: token [B, 1], mask [B, L], pos [B, 1] -> logits [B, V]."""
    return model(input_ids=token, attention_mask=mask, position_ids=pos, **kw, **extra).logits[:, -1]


def _static_state(model, batch, L, device):
    """The model's static cache for (batch, L), reset for a new rollout; allocated (and compiled) on first use."""
    from transformers import StaticCache
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else model.dtype
    key = (batch, L, dtype, device)
    state = _STATIC.get(model)
    if state is not None and state["key"] == key:
        state["cache"].reset()
        return state
    _STATIC.pop(model, None)                              # free the old cache before allocating the new one
    # a StaticCache that takes batch, device and dtype is given them; one that allocates lazily takes none
    accepted = set(inspect.signature(StaticCache.__init__).parameters)
    legacy = {k: v for k, v in (("max_batch_size", batch), ("device", device), ("dtype", dtype)) if k in accepted}
    cache = StaticCache(config=model.config, max_cache_len=L, **legacy)
    _one_dtype_per_layer(cache)
    compile_it = device.type in COMPILE_DEVICES
    state = _STATIC[model] = {"key": key, "cache": cache, "fn": _compiled_step if compile_it else _one_token_forward}
    return state


def _one_dtype_per_layer(cache) -> None:
    """Make each static layer store its values in its keys' dtype.

    Under autocast the keys leave the rotary embedding in fp32 while the values leave their projection in bf16. Some
    transformers versions (5.17 among them) allocate both of a layer's tensors in the keys' dtype and then fail to copy
    bf16 values into them; others allocate one dtype each. Casting the values to the keys' dtype before the write works
    with both, and changes no number: bf16 -> fp32 is exact, and attention under autocast casts them back to bf16."""
    for layer in getattr(cache, "layers", ()):
        def update(key_states, value_states, *args, _update=layer.update, **kwargs):
            return _update(key_states, value_states.to(key_states.dtype), *args, **kwargs)
        layer.update = update


_COMPILED = []     # the one compiled step (shared, so that every shape it has seen stays compiled)


def _compiled_step(model, kw, token, mask, pos, extra):
    """The step compiled with CUDA graphs. If the first compiled step of a cache fails (compiling or capturing; no
    cache entry has been written then), say so and decode eagerly for this model from then on."""
    if not _COMPILED:
        _COMPILED.append(torch.compile(_one_token_forward, mode="reduce-overhead", dynamic=False))
    state = _STATIC[model]
    try:
        torch.compiler.cudagraph_mark_step_begin()        # the previous step's outputs are consumed: reuse buffers
        logits = _COMPILED[0](model, kw, token, mask, pos, extra).clone()
    except Exception as e:                                 # noqa: BLE001  (any compile or capture failure)
        if state.get("compiled_ok"):                       # a later failure may have left a half-written cache
            raise
        warnings.warn(f"rollout.py: torch.compile of the static decode step failed ({type(e).__name__}: {e}); "
                      "decoding eagerly over the static cache instead", RuntimeWarning, stacklevel=2)
        state["fn"] = _one_token_forward
        return _one_token_forward(model, kw, token, mask, pos, extra)
    state["compiled_ok"] = True
    return logits
