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
"""

import sys

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import ViTConfig, ViTModel

TOLERANCE = 1e-4


def cls(model, images):
    with torch.no_grad():
        return model(pixel_values=images).last_hidden_state[:, 0]


def main(fixture, out):
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    torch.manual_seed(0)
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
