"""Rollouts: sample G responses per prompt with a KV cache and keep what the policy loss needs.

RLVR needs, for every sampled response, the token ids, a mask of which positions are response tokens, and the
log-probability that the *sampling* policy gave each token (the `old_logp` of the PPO ratio
`pi_theta(y_t) / pi_old(y_t)`). This file is a short hand-written sampling loop over any Hugging Face causal LM:

1. Prompts are tokenised and **left-padded**, so that every row's last prompt token sits in the same column and
   all rows generate in lock-step. Position ids are computed from the attention mask (`cumsum - 1`) so that a
   padded row sees exactly the positions it would see alone; `position_ids` below is the one place that does it,
   and the teacher-forced forward in train.py uses the same function.
2. One prefill forward fills the KV cache; then each step feeds only the newest token. The next-token
   distribution is `softmax(logits / temperature)`, optionally restricted to its top-p nucleus for *sampling*.
3. At every step we record the sampled token's log-probability under `softmax(logits / temperature)` (before the
   top-p cut, which is what the loss recomputes) and that distribution's entropy. Keeping two [B] numbers per step
   instead of the [B, V] logits is what lets this work with 150k-token vocabularies.
4. A row stops at its first EOS (which is kept: the policy chose to stop, and that choice is trained too); later
   columns hold the pad token with mask 0. The loop ends when every row has stopped or at `max_new_tokens`.

Randomness comes only from the `generator` argument, so a run with a seeded generator is reproducible and the
generator's state can be checkpointed. `tests/test_rollout.py` checks that the recorded log-probs equal a
teacher-forced forward pass's.
"""
from __future__ import annotations

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


def encode_prompts(tokenizer, prompts: list[str], add_special_tokens: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded token ids [B, P] and attention mask [B, P] for a list of prompt strings."""
    rows = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    if any(len(r) == 0 for r in rows):
        raise ValueError("a prompt tokenised to zero tokens; every prompt needs at least one token")
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: the first real token of every row is position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set to -inf every logit outside the smallest set of tokens whose probability sums to >= top_p."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop = cumulative - sorted_logits.softmax(-1) >= top_p      # mass before this token already reaches top_p
    drop[..., 0] = False                                         # always keep the most likely token
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


@torch.no_grad()
def sample(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int, eos_token_id,
           pad_token_id: int, temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None):
    """Sample one continuation per row of the left-padded prompts `prompt_ids` [B, P].

    Returns (response_ids [B, R], response_mask [B, R] float, logp [B, R], entropy [B, R], truncated [B]) with
    R <= max_new_tokens. `eos_token_id` may be an int or a list of ints (chat models often stop on several).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature}); sampling is what RL needs")
    device = prompt_ids.device
    eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=device)
    batch = prompt_ids.shape[0]
    mask = prompt_mask.to(device)
    pos = position_ids(mask)
    out = model(input_ids=prompt_ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache, logits = out.past_key_values, out.logits[:, -1]
    next_pos = pos[:, -1] + 1

    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, token_mask, logps, entropies = [], [], [], []
    for _ in range(max_new_tokens):
        logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
        sampling_logits = _top_p_filter(logp_all, top_p) if top_p < 1.0 else logp_all
        probs = sampling_logits.softmax(-1)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        live = ~done                                       # rows still generating: this token is real
        token = torch.where(live, token, torch.full_like(token, pad_token_id))
        logps.append(torch.where(live, logp_all.gather(-1, token[:, None]).squeeze(-1), 0.0))
        entropies.append(torch.where(live, -(logp_all.exp() * logp_all).nan_to_num().sum(-1), 0.0))
        tokens.append(token)
        token_mask.append(live)
        done = done | (live & torch.isin(token, eos))
        if bool(done.all()):
            break
        mask = torch.cat([mask, live.long()[:, None]], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                    past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
        next_pos = next_pos + 1
    return (torch.stack(tokens, 1), torch.stack(token_mask, 1).float(), torch.stack(logps, 1),
            torch.stack(entropies, 1), ~done)


def rollout(model, tokenizer, prompts: list[str], group_size: int, *, max_new_tokens: int, temperature: float = 1.0,
            top_p: float = 1.0, generator: torch.Generator | None = None, add_special_tokens: bool = True,
            eos_token_id=None) -> Rollout:
    """`group_size` responses for each prompt; rows are grouped: rows [i*G, (i+1)*G) belong to prompts[i]."""
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, add_special_tokens)
    prompt_ids = prompt_ids.repeat_interleave(group_size, 0).to(device)
    prompt_mask = prompt_mask.repeat_interleave(group_size, 0).to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    resp, resp_mask, logp, entropy, truncated = sample(
        model, prompt_ids, prompt_mask, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
        temperature=temperature, top_p=top_p, generator=generator)
    texts = decode_responses(tokenizer, resp, resp_mask, eos)
    return Rollout(input_ids=torch.cat([prompt_ids, resp], 1),
                   attention_mask=torch.cat([prompt_mask, resp_mask.long()], 1),
                   response_mask=resp_mask, logp=logp, entropy=entropy, truncated=truncated,
                   prompt_len=prompt_ids.shape[1], texts=texts)


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
                    add_special_tokens: bool = True, eos_token_id=None) -> list[list[str]]:
    """n sampled responses for each prompt (for pass@k), generated in batches of at most `batch_size` rows."""
    per_batch = max(1, batch_size // n)
    texts = []
    for start in range(0, len(prompts), per_batch):
        chunk = prompts[start:start + per_batch]
        out = rollout(model, tokenizer, chunk, n, max_new_tokens=max_new_tokens, temperature=temperature,
                      top_p=top_p, generator=generator, add_special_tokens=add_special_tokens,
                      eos_token_id=eos_token_id)
        texts += [out.texts[i * n:(i + 1) * n] for i in range(len(chunk))]
    return texts
