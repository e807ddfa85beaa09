"""Build the pieces of a tiny policy from scratch, offline: a byte-level BPE tokenizer and a small Llama.

No downloads: the tokenizer is trained in-process on the task's own text; the model is built from a
config. Both save as a standard HF directory that transformers, TRL and vLLM load.
"""

from __future__ import annotations

from collections.abc import Iterable

PAD, BOS, EOS = "<pad>", "<s>", "</s>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, *, individual_digits: bool = False):
    """A byte-level BPE tokenizer (vocab ≤ `vocab_size`) wrapped in PreTrainedTokenizerFast.

    individual_digits: split every digit into its own token before BPE, so numbers are spelled digit by
    digit (the tiny policy learns arithmetic far better that way). The byte-level regex keeps whitespace
    (the step delimiter "\\n") in pieces of its own, so no merge crosses a step boundary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if individual_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False,
    )


def build_llama(tokenizer, *, hidden: int = 128, layers: int = 2, heads: int = 4, intermediate: int = 512,
                max_positions: int = 512, seed: int = 0):
    """A randomly initialised Llama causal LM sized for a CPU (≈0.5 M parameters at the defaults)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
