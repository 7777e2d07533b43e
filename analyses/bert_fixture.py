"""Writes tests/fixtures/bert-tiny/: a tiny random BERT, a PEFT LoRA adapter on it and PyTorch's
outputs, so that the Rust BERT backbone's interop tests run without downloaded assets.

Usage (in a venv with torch, transformers, peft, safetensors):
    python analyses/bert_fixture.py [OUT_DIR]        # default tests/fixtures/bert-tiny

Writes, deterministically (torch.manual_seed(0); same files for the same library versions):
  model/               BertModel (vocab 200, hidden 32, 3 layers, 4 heads, intermediate 64,
                       64 positions, 2 token types, no pooler), LayerNorm weights and biases
                       perturbed by 0.1 * randn; save_pretrained (config.json, model.safetensors)
                       and 1_Pooling/config.json (mean pooling) as in sentence-transformers folders
  adapter/             PEFT LoRA (r 2, alpha 4, dropout 0, targets query, key, value, dense),
                       lora_B random (not PEFT's zeros, so the adapter has an effect); save_pretrained
  expected.safetensors input_ids, attention_mask [5, 12] int64 (real lengths 12, 9, 6, 3, 7; id 2
                       as a stand-in [CLS] first, 3 as [SEP] last, 0 as padding after it), and
                       frozen_/adapted_ hidden [5, 12, 32], mean [5, 32] (mask-weighted), cls [5, 32]
                       (token_type_ids all 0)
  peft_keys.txt        the adapter's tensor names with shapes, and BertModel's module names
  README.md            how it was made, library versions
"""
import json
import os
import sys
import warnings

import peft
import safetensors
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

LENGTHS = [12, 9, 6, 3, 7]  # real tokens per row; the batch is padded to 12
SEQ = 12
VOCAB = 200
TARGETS = ["query", "key", "value", "dense"]


def outputs(model, ids, mask):
    """last_hidden_state, mask-weighted mean and CLS features (no grad)."""
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return hidden.contiguous(), ((hidden * m).sum(1) / m.sum(1)).contiguous(), hidden[:, 0].contiguous()


def main(out):
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=FutureWarning)  # PEFT calls a deprecated transformers name
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    model = BertModel(config, add_pooling_layer=False).eval()
    # LayerNorms start at weight 1, bias 0: perturb them so that a reader mixing up weight and
    # bias, or skipping a LayerNorm, is caught.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.add_(0.1 * torch.randn_like(module.weight))
                module.bias.add_(0.1 * torch.randn_like(module.bias))

    # The batch: [CLS]-like 2, random ids in 4..199, [SEP]-like 3, then padding 0.
    ids = torch.zeros(len(LENGTHS), SEQ, dtype=torch.int64)
    mask = torch.zeros(len(LENGTHS), SEQ, dtype=torch.int64)
    for row, n in enumerate(LENGTHS):
        ids[row, :n] = torch.cat([torch.tensor([2]), torch.randint(4, VOCAB, (n - 2,)), torch.tensor([3])])
        mask[row, :n] = 1

    os.makedirs(out, exist_ok=True)
    model.save_pretrained(f"{out}/model")
    os.makedirs(f"{out}/model/1_Pooling", exist_ok=True)
    with open(f"{out}/model/1_Pooling/config.json", "w") as f:
        json.dump({"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
                   "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}, f, indent=2)
        f.write("\n")
    base_modules = [(n, type(m).__name__) for n, m in model.named_modules()]
    frozen = outputs(model, ids, mask)

    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS, lora_dropout=0.0))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    lora.eval()
    adapted = outputs(lora, ids, mask)
    with lora.disable_adapter():
        again = outputs(lora, ids, mask)
    assert all(torch.equal(a, b) for a, b in zip(frozen, again)), "disable_adapter() differs from the frozen model"
    lora.save_pretrained(f"{out}/adapter")
    os.remove(f"{out}/adapter/README.md")  # PEFT's model-card template, nothing of ours in it
    # PEFT writes target_modules from a set, in hash order: sort it so that reruns give the same file.
    with open(f"{out}/adapter/adapter_config.json") as f:
        adapter_config = json.load(f)
    adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
    with open(f"{out}/adapter/adapter_config.json", "w") as f:
        json.dump(adapter_config, f, indent=2, sort_keys=True)

    tensors = {"input_ids": ids, "attention_mask": mask}
    for prefix, (hidden, mean, cls) in (("frozen", frozen), ("adapted", adapted)):
        tensors.update({f"{prefix}_hidden": hidden, f"{prefix}_mean": mean, f"{prefix}_cls": cls})
    save_file(tensors, f"{out}/expected.safetensors")
    effect = (adapted[0] - frozen[0]).abs().max().item()

    # Names, for the Rust reader: the adapter's tensors and transformers' module tree.
    with safe_open(f"{out}/adapter/adapter_model.safetensors", "pt") as f:
        keys = [f"{k} {list(f.get_slice(k).get_shape())}" for k in sorted(f.keys())]
    block0 = [f"{n} ({t})" for n, t in base_modules if not n.startswith("encoder.layer.") or n.startswith("encoder.layer.0")]
    versions = (f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
                f"safetensors {safetensors.__version__}")
    with open(f"{out}/peft_keys.txt", "w") as f:
        f.write(f"# Written by analyses/bert_fixture.py with {versions}\n")
        f.write(f"# adapter/adapter_model.safetensors: {len(keys)} tensors, sorted, with shapes\n")
        f.write("\n".join(keys) + "\n\n")
        f.write(f"# BertModel(add_pooling_layer=False).named_modules(), blocks 1-2 left out (named alike)\n")
        f.write("\n".join(block0) + "\n")
    with open(f"{out}/README.md", "w") as f:
        f.write(README.format(versions=versions, effect=effect, n_keys=len(keys)))
    print(f"{versions}\nwrote {out}: {len(keys)} adapter tensors, adapter effect on hidden states max |diff| {effect:.3f}")


README = """# bert-tiny: a tiny random BERT with a PEFT LoRA adapter

Written by `python analyses/bert_fixture.py` with {versions}.
Deterministic (`torch.manual_seed(0)`; PEFT's `target_modules` list is sorted after saving, as
PEFT writes it in set order): rerunning it with these versions writes the same files. It lets the
BERT backbone's interop tests run without downloaded assets.

- `model/`: a random `BertModel(BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=3,
  num_attention_heads=4, intermediate_size=64, max_position_embeddings=64, type_vocab_size=2),
  add_pooling_layer=False)`, every LayerNorm weight and bias perturbed by `0.1 * randn`, saved with
  `save_pretrained` (`config.json`, `model.safetensors`), plus `1_Pooling/config.json` (mean
  pooling) as sentence-transformers folders have. No tokenizer: the ids are given.
- `adapter/`: `get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["query", "key",
  "value", "dense"], lora_dropout=0.0))` with every `lora_B` drawn from N(0, 0.2²) instead of
  PEFT's zeros, saved with `save_pretrained` ({n_keys} tensors; scaling alpha / r = 2; PEFT's
  model-card README.md removed). `dense` matches the attention output, intermediate and output
  projections of each block.
- `expected.safetensors`: `input_ids` and `attention_mask` [5, 12] int64 (real lengths 12, 9, 6, 3,
  7; 2 stands in for [CLS], 3 for [SEP], 0 pads), and, with `token_type_ids` all 0,
  `frozen_hidden` / `adapted_hidden` (last_hidden_state, f32 [5, 12, 32]), `frozen_mean` /
  `adapted_mean` (mean over the attention mask, [5, 32]) and `frozen_cls` / `adapted_cls`
  (position 0, [5, 32]). The adapter moves the hidden states by up to {effect:.3f}.
- `peft_keys.txt`: the adapter's tensor names and shapes, and the module names of transformers'
  `BertModel` (embeddings and block 0).
"""

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(f"{here}/../tests/fixtures/bert-tiny")))
