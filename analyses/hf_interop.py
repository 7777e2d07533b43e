"""Checks copra-lab's checkpoint and adapter files against transformers and PEFT, both ways.

Usage (on a machine with torch, transformers and peft):
    python3 analyses/hf_interop.py FIXTURE_DIR OUT_DIR

FIXTURE_DIR is what `COPRA_INTEROP_DIR=FIXTURE_DIR cargo test --release --test hf_interop --
--ignored write_interop_fixture` wrote: our backbone (HF layout), a trained adapter (PEFT
layout) and our CLS features for 32 images. This script loads both with transformers and PEFT
and prints how far their features are from ours. It then saves a random ViTModel and a random
LoRA adapter with transformers and PEFT into OUT_DIR, with PyTorch's features, for
`COPRA_INTEROP_DIR=OUT_DIR cargo test --release --test hf_interop reads_checkpoint` (its files from
transformers 5.24 and PEFT 0.21.2 are committed in tests/fixtures/transformers5, so that test
also runs without Python).

BERT: when FIXTURE_DIR/backbone/config.json has model_type "bert", FIXTURE_DIR holds instead
fixture.safetensors with input_ids and attention_mask [N, L] (int64 or float) and our pooled
features frozen and adapted [N, D], and pooling.txt (`mean`: mean over the attention mask, or
`cls`: position 0); token_type_ids are 0. The backbone is read with BertModel, the adapter with
PEFT, with the same tolerance. OUT_DIR then gets bert-tiny/, the random BERT, PEFT adapter and
PyTorch outputs that analyses/bert_fixture.py writes (committed in tests/fixtures/bert-tiny).
"""

import json
import os
import sys

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import BertModel, ViTConfig, ViTModel

TOLERANCE = 1e-4


def cls(model, images):
    with torch.no_grad():
        return model(pixel_values=images).last_hidden_state[:, 0]


def pooled(model, ids, mask, pooling):
    """BERT features: mean of last_hidden_state over the attention mask, or position 0."""
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)


def check_bert(fixture, out):
    """Our BERT backbone and adapter, read by transformers and PEFT; then the bert-tiny files for our reader."""
    ours = load_file(f"{fixture}/fixture.safetensors")
    # Ids and mask may come as floats: round before casting, as 0.9999 must not become 0.
    ids, mask = (t.round().long() if t.is_floating_point() else t.long()
                 for t in (ours["input_ids"], ours["attention_mask"]))
    with open(f"{fixture}/pooling.txt") as f:
        pooling = f.read().strip()
    if pooling not in ("mean", "cls"):
        sys.exit(f"{fixture}/pooling.txt says {pooling!r}; expected mean or cls")
    model = BertModel.from_pretrained(f"{fixture}/backbone", add_pooling_layer=False).eval()
    print("transformers module names:", [n for n, _ in model.named_modules()][:12])
    frozen = (pooled(model, ids, mask, pooling) - ours["frozen"]).abs().max().item()
    tuned = PeftModel.from_pretrained(model, f"{fixture}/adapter").eval()
    adapted = (pooled(tuned, ids, mask, pooling) - ours["adapted"]).abs().max().item()
    effect = (ours["adapted"] - ours["frozen"]).abs().max().item()
    print(f"ours -> python ({pooling} pooling, {ids.shape[0]} sequences of {ids.shape[1]}): max |diff| "
          f"frozen {frozen:.2e}, adapted {adapted:.2e} (adapter effect {effect:.2e})")
    ok = frozen < TOLERANCE and adapted < TOLERANCE and effect > 100 * TOLERANCE

    # The reverse direction: the same files as the committed tests/fixtures/bert-tiny.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bert_fixture

    bert_fixture.main(f"{out}/bert-tiny")
    print("python -> ours: wrote bert-tiny/ (model/, adapter/, expected.safetensors)")
    return 0 if ok else 1


def main(fixture, out):
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    torch.manual_seed(0)
    with open(f"{fixture}/backbone/config.json") as f:
        if json.load(f).get("model_type") == "bert":
            return check_bert(fixture, out)
    ours = load_file(f"{fixture}/fixture.safetensors")
    images = ours["images"]

    # 1. Our files, read by transformers and PEFT.
    model = ViTModel.from_pretrained(f"{fixture}/backbone", add_pooling_layer=False).eval()
    print("transformers module names:", [n for n, _ in model.named_modules()][:12])
    frozen = (cls(model, images) - ours["frozen"]).abs().max().item()
    tuned = PeftModel.from_pretrained(model, f"{fixture}/adapter").eval()
    adapted = (cls(tuned, images) - ours["adapted"]).abs().max().item()
    effect = (ours["adapted"] - ours["frozen"]).abs().max().item()
    print(f"ours -> python: max |diff| frozen {frozen:.2e}, adapted {adapted:.2e} (adapter effect {effect:.2e})")
    ok = frozen < TOLERANCE and adapted < TOLERANCE and effect > 100 * TOLERANCE

    # 2. Files written by transformers and PEFT, for our reader.
    config = ViTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                       image_size=32, patch_size=8, qkv_bias=True)
    rnd = ViTModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, p in rnd.named_parameters():
            if "layernorm" in name or "cls_token" in name or "position" in name:
                p.add_(0.1 * torch.randn_like(p))
    rnd.save_pretrained(f"{out}/hf_random")
    names = [n for n, _ in rnd.named_modules()]
    targets = ["q_proj", "k_proj", "v_proj"] if any(n.endswith("q_proj") for n in names) else ["query", "key", "value"]
    lora = get_peft_model(rnd, LoraConfig(r=2, lora_alpha=1, target_modules=targets, use_rslora=True,
                                          lora_dropout=0.0))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    lora.eval()
    sample = images[:16].contiguous()
    adapted = cls(lora, sample)
    with lora.disable_adapter():
        frozen = cls(lora, sample)
    lora.save_pretrained(f"{out}/peft_random")
    save_file({"images": sample, "frozen": frozen.contiguous(), "adapted": adapted.contiguous()},
              f"{out}/reverse.safetensors")
    print(f"python -> ours: wrote hf_random/, peft_random/ (targets {targets}), reverse.safetensors")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
