"""The HF transformers backend: batched step proposal and scoring on any local causal LM (or GGUF file).

Generation is our own decode loop over the model with a KV cache, because it gives exactly what search
needs: per-sequence stop strings, per-sequence seeded sampling, and the *raw* model logprob of each
chosen token (log-softmax at temperature 1, before temperature or top-p), which MCTS uses for priors and
which equals `score()` of the same tokens.

Reproducibility: every sequence (prefix, sample index) samples with its own row seed, drawn on the device
from a counter-based hash (`agents.sampling`), so the same seeds give the same samples whatever else is
in the batch and however it is chunked.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from agents.base import (
    MAX_STEP_TOKENS,
    FinishReason,
    Policy,
    Sample,
    Stop,
    check_propose_args,
    content_start,
    prefix_seeds,
    split_continuations,
    strip_blank_lines,
)
from agents.loading import cache_kwarg, load_causal_lm, load_tokenizer, output_cache, resolve_model_path
from agents.sampling import row_seed, sample_tokens

# score(): cap on batch × length × vocab logits held at once (floats).
SCORE_LOGIT_BUDGET = 1 << 26


def _first_stop(text: str, stop: Sequence[Stop], start: int = 0) -> int:
    """Index of the earliest stop (a string, or a compiled regex) in `text` at or after `start`, or -1."""
    hits = []
    for s in stop:
        if isinstance(s, str):
            i = text.find(s, start) if s else -1
        else:
            m = s.search(text, start)
            i = m.start() if m is not None else -1
        if i >= 0:
            hits.append(i)
    return min(hits) if hits else -1


class HFPolicy(Policy):
    """A transformers causal LM as a Policy.

    model_dir: an HF model directory or a .gguf file. device: cpu | cuda | cuda:N | mps | auto;
    dtype: auto | float32 | bfloat16 | float16; attn_implementation: sdpa | eager | flash_attention_2
    (checked by agents.devices before the weights load).
    max_batch: most sequences decoded together (larger calls are chunked). seed: seeds the calls
    made without an explicit seed, so a whole run is reproducible.
    """

    def __init__(self, model_dir: str, *, device: str = "cpu", dtype: str = "float32", max_batch: int = 128,
                 seed: int = 0, attn_implementation: str = "sdpa"):
        from agents.devices import placement

        where = placement(device, dtype, attn_implementation)
        self.device, self.dtype, self.attn_implementation = where.device, where.dtype, where.attn_implementation
        self.max_batch = max(1, int(max_batch))
        self._rng = random.Random(seed)
        self._load(model_dir)

    # --- weights ------------------------------------------------------------------------------------
    def _load(self, path: str) -> None:
        src = resolve_model_path(path, what="policy")
        self.tokenizer = load_tokenizer(src)
        self.model = load_causal_lm(src, device=self.device, dtype=self.dtype,
                                    attn_implementation=self.attn_implementation)
        self.checkpoint = src.checkpoint
        self._cache_kw = cache_kwarg(self.model)
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        self._eos = set(eos)
        self._pieces: dict[int, str] = {}

    def reload(self, checkpoint: str) -> None:
        """Load new weights (and tokenizer) from a directory written by training."""
        self._load(checkpoint)

    # --- helpers --------------------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"] if texts else []
        bos = self.tokenizer.bos_token_id
        out = []
        for text, row in zip(texts, ids, strict=True):
            if not row:
                if bos is None:
                    raise ValueError(f"prefix {text!r} encodes to no tokens and the tokenizer has no BOS token")
                row = [bos]
            out.append(list(row))
        return out

    def _piece(self, tok: int) -> str:
        piece = self._pieces.get(tok)
        if piece is None:
            piece = self._pieces[tok] = self.tokenizer.decode([tok])
        return piece

    def _forward(self, input_ids, attention_mask, position_ids, cache=None, keep_last: bool = True):
        kw = {self._cache_kw: cache} if cache is not None else {}
        if keep_last:
            kw["logits_to_keep"] = 1
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=keep_last, **kw)

    # --- propose ------------------------------------------------------------------------------------
    def propose(self, prefixes: Sequence[str], n: int = 1, *, stop: Sequence[Stop] = ("\n",),
                temperature: float = 1.0, top_p: float = 1.0, max_step_tokens: int = MAX_STEP_TOKENS,
                seed: int | Sequence[int] | None = None) -> list[list[Sample]]:
        """`n` samples per prefix (see Policy.propose).

        Returned token_ids / token_logprobs cover every generated token up to and including the one that
        completed the stop string or the EOS token (as vLLM reports them); `text` excludes the stop string
        and EOS, and blank lines before the step's first non-blank character (a stop found before it is
        skipped, so a step is never empty unless EOS or the length limit came first). token_logprobs are the raw model's log-softmax (temperature 1, no top-p) of each chosen
        token, so `sample.logprob == score([prefix], [text + stop])` whenever the tokenizer encodes
        prefix + text + stop into the prefix's tokens followed by the sampled ones.
        """
        check_propose_args(n, temperature, top_p, max_step_tokens)
        if not prefixes:
            return []
        seeds = prefix_seeds(seed, len(prefixes), self._rng)
        prompt_ids = self._encode(prefixes)
        rows: list[tuple[int, int, int]] = []  # (prefix index, sample index, row seed)
        seen: Counter[str] = Counter()
        for i, p in enumerate(prefixes):
            occ = seen[p]
            seen[p] += 1
            rows += [(i, j, row_seed(seeds[i], p, occ, j)) for j in range(n)]
        order = sorted(range(len(rows)), key=lambda r: len(prompt_ids[rows[r][0]]))
        out: list[list[Sample | None]] = [[None] * n for _ in prefixes]
        for start in range(0, len(order), self.max_batch):
            chunk = [rows[r] for r in order[start:start + self.max_batch]]
            samples = self._generate([prompt_ids[i] for i, _, _ in chunk], [s for _, _, s in chunk],
                                     tuple(stop), temperature, top_p, max_step_tokens)
            for (i, j, _), sample in zip(chunk, samples, strict=True):
                out[i][j] = sample
        return out  # type: ignore[return-value]

    def _generate(self, prompts: list[list[int]], seeds: list[int], stop: tuple[Stop, ...], temperature: float,
                  top_p: float, max_new: int) -> list[Sample]:
        import torch

        dev = self.model.device
        pad = self.tokenizer.pad_token_id
        B, L = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((B, L), pad, dtype=torch.long)
        mask = torch.zeros((B, L), dtype=torch.long)
        for b, p in enumerate(prompts):  # left padding
            ids[b, L - len(p):] = torch.tensor(p)
            mask[b, L - len(p):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, pos = ids.to(dev), mask.to(dev), pos.to(dev)
        sampling = temperature > 0
        row_seeds = torch.tensor(seeds, dtype=torch.long, device=dev) if sampling else None

        tokens: list[list[int]] = [[] for _ in range(B)]
        logprobs: list[list[float]] = [[] for _ in range(B)]
        texts = [""] * B  # decoded pieces so far, for spotting stops
        starts = [-1] * B  # where each row's first non-blank character is (-1: none yet)
        finish: list[FinishReason] = ["length"] * B
        active = list(range(B))
        cache = None
        with torch.inference_mode():
            for t in range(max_new):
                res = self._forward(ids, mask, pos, cache)
                cache = output_cache(res)
                logits = res.logits[:, -1, :].float()
                logp = torch.log_softmax(logits, dim=-1)
                if row_seeds is not None:
                    nxt = sample_tokens(logits, row_seeds, t, temperature, top_p)
                else:
                    nxt = logp.argmax(dim=-1)
                chosen = logp.gather(1, nxt[:, None])[:, 0].tolist()
                keep = []
                for r, (b, tok) in enumerate(zip(active, nxt.tolist(), strict=True)):
                    tokens[b].append(tok)
                    logprobs[b].append(chosen[r])
                    if tok in self._eos:
                        finish[b] = "eos"
                        continue
                    if stop:
                        text = texts[b] = texts[b] + self._piece(tok)
                        if starts[b] < 0:
                            starts[b] = content_start(text)
                        if starts[b] >= 0 and _first_stop(text, stop, starts[b]) >= 0:
                            finish[b] = "stop"
                            continue
                    keep.append(r)
                if not keep or len(tokens[active[0]]) >= max_new:
                    break
                if len(keep) < len(active):
                    if not hasattr(cache, "batch_select_indices"):
                        raise RuntimeError("this transformers version's cache cannot drop finished rows")
                    sel = torch.tensor(keep, device=dev)
                    cache.batch_select_indices(sel)
                    nxt, mask, pos = nxt[sel], mask[sel], pos[sel]
                    if row_seeds is not None:
                        row_seeds = row_seeds[sel]
                    active = [active[r] for r in keep]
                ids = nxt[:, None]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                pos = pos[:, -1:] + 1
        return [self._finish(tokens[b], logprobs[b], finish[b], stop) for b in range(B)]

    def _finish(self, tokens: list[int], logprobs: list[float], finish: FinishReason,
                stop: tuple[Stop, ...]) -> Sample:
        body = tokens[:-1] if finish == "eos" else tokens
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        if finish == "stop":
            cut = _first_stop(text, stop, max(0, content_start(text)))
            if cut >= 0:
                text = text[:cut]
        text = strip_blank_lines(text)
        return Sample(text=text, token_ids=list(tokens), token_logprobs=list(logprobs), finish_reason=finish)

    # --- score ------------------------------------------------------------------------------------------
    def score(self, prefixes: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Summed log p(continuation | prefix).

        The BPE boundary is `split_continuations`'s rule: when the last prefix token merges with the
        continuation, the merged token is scored, so that no continuation text goes unscored.
        """
        if not prefixes and not continuations:
            return []
        j_ids, starts = split_continuations(self._encode, prefixes, continuations)
        lps = self.score_tokens([j[:k] for j, k in zip(j_ids, starts, strict=True)],
                                [j[k:] for j, k in zip(j_ids, starts, strict=True)])
        return [sum(x) for x in lps]

    def score_tokens(self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        """Per-token logprobs of token-id continuations given token-id contexts (right-padded batches)."""
        import torch

        V = self.model.config.get_text_config().vocab_size if hasattr(self.model.config, "get_text_config") \
            else self.model.config.vocab_size
        seqs = [list(c) + list(t) for c, t in zip(contexts, continuations, strict=True)]
        order = sorted(range(len(seqs)), key=lambda r: len(seqs[r]))
        out: list[list[float]] = [[] for _ in seqs]
        start = 0
        while start < len(order):
            L = len(seqs[order[min(len(order) - 1, start + self.max_batch - 1)]])
            size = max(1, min(self.max_batch, SCORE_LOGIT_BUDGET // max(1, L * V)))
            chunk = order[start:start + size]
            start += size
            L = max(len(seqs[r]) for r in chunk)
            ids = torch.full((len(chunk), L), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, r in enumerate(chunk):
                ids[b, :len(seqs[r])] = torch.tensor(seqs[r])
                mask[b, :len(seqs[r])] = 1
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            dev = self.model.device
            with torch.inference_mode():
                logits = self._forward(ids.to(dev), mask.to(dev), pos.to(dev), keep_last=False).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None].to(dev))[..., 0].cpu()
            for b, r in enumerate(chunk):
                c, t = len(contexts[r]), len(continuations[r])
                out[r] = logp[b, c - 1:c - 1 + t].tolist()
        return out
