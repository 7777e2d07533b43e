"""The PEFT adapter steps the fixture writers (clip_fixture.py, dinov2_fixture.py) share: random
lora_B factors (PEFT initialises them to zeros, which would hide the adapter) and a deterministic
save_pretrained. Imported from the folder of the script that runs (python puts it on sys.path).
"""

import json
import os

import torch
from safetensors import safe_open


def randomise_lora_b(model, std):
    """Draws every lora_B factor of `model` from N(0, std^2) (torch's global generator)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, std)


def save_adapter(lora, path):
    """save_pretrained to `path` without PEFT's model card and with target_modules sorted; returns
    the saved tensors as sorted "name [shape]" lines."""
    lora.save_pretrained(path)
    os.remove(f"{path}/README.md")  # PEFT's model-card template, nothing of ours in it
    # PEFT writes a target_modules list from a set, in hash order: sort it so that reruns give the same file.
    with open(f"{path}/adapter_config.json") as f:
        config = json.load(f)
    if isinstance(config["target_modules"], list):
        config["target_modules"] = sorted(config["target_modules"])
    with open(f"{path}/adapter_config.json", "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    with safe_open(f"{path}/adapter_model.safetensors", "pt") as f:
        return [f"{k} {list(f.get_slice(k).get_shape())}" for k in sorted(f.keys())]
