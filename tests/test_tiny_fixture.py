from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_policy_dir_loads_with_transformers(tiny_policy_dir):
    tok = AutoTokenizer.from_pretrained(tiny_policy_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir)
    assert len(tok) <= 1000
    ids = tok("Q: 3+4*2\n", return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == "Q: 3+4*2\n"
    assert model(ids).logits.shape[-1] == model.config.vocab_size
