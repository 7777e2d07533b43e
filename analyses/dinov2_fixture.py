"""Writes tests/fixtures/dinov2-tiny/: a tiny random Dinov2Model, two PEFT LoRA adapters on it and
PyTorch's outputs at three input sizes, so that the Rust DINOv2 backbone's interop tests (position
embedding interpolation included) run without downloaded assets.

Usage (in a venv with torch, transformers, peft, safetensors):
    python analyses/dinov2_fixture.py [OUT_DIR]        # default tests/fixtures/dinov2-tiny

Writes, deterministically (torch.manual_seed(0); same files for the same library versions):
  model/               Dinov2Model (hidden 32, 2 layers, 4 heads, mlp_ratio 2, image 30 in 4x4
                       patches: a 7x7 position grid, and 30 is not a multiple of 4), every
                       LayerNorm, layer scale, the class and mask tokens perturbed by randn;
                       save_pretrained, plus preprocessor_config.json (ImageNet mean and std)
  adapter/             PEFT LoRA (r 2, alpha 1, rsLoRA, dropout 0) on q_proj, k_proj, v_proj, o_proj,
                       fc1, fc2 of both layers, lora_B random (not PEFT's zeros)
  adapter-qv-layer1/   the same on q_proj and v_proj of layer 1 only (layers_to_transform [1],
                       layers_pattern "layer")
  expected.safetensors images_30 [3, 3, 30, 30], images_22 [2, 3, 22, 22] (a 5x5 grid: the 7x7
                       positions resized bicubically), images_rect [2, 3, 18, 34] (4x8, not square),
                       all in [-1, 1], and for each size S its frozen_/adapted_/qv_ hidden_S
                       (last_hidden_state, after the final layer norm) and pooled_S (pooler_output)
  peft_keys.txt        the adapters' tensor names with shapes, model.safetensors' tensor names and
                       Dinov2Model's module names (layer 0 and everything outside the layers)
  README.md            how it was made, library versions
"""
import copy
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
from transformers import Dinov2Config, Dinov2Model

from fixture_adapters import randomise_lora_b, save_adapter

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]
SIZES = {"30": (3, 30, 30), "22": (2, 22, 22), "rect": (2, 18, 34)}


def pixels(images):
    """[-1, 1] images to pixel_values, as the image processor normalises [0, 1] images."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def outputs(model, images):
    result = {}
    with torch.no_grad():
        for size, x in images.items():
            out = model(pixel_values=pixels(x))
            result[f"hidden_{size}"] = out.last_hidden_state.float().contiguous()
            result[f"pooled_{size}"] = out.pooler_output.float().contiguous()
    return result


def main(out):
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    os.makedirs(out, exist_ok=True)

    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
                          image_size=30, patch_size=4, num_channels=3, layer_norm_eps=1e-6)
    model = Dinov2Model(config).eval()
    # LayerNorms start at (1, 0) and layer scale at 1: perturb them (and the tokens) so that a
    # reader skipping or mixing up any of them is caught.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "layer_scale" in name:
                p.add_(0.3 * torch.randn_like(p))
            elif "cls_token" in name or "mask_token" in name:
                p.normal_(0.0, 1.0)
    model.save_pretrained(f"{out}/model")
    with open(f"{out}/model/preprocessor_config.json", "w") as f:
        json.dump({"image_processor_type": "BitImageProcessor", "do_normalize": True, "image_mean": list(MEAN),
                   "image_std": list(STD), "do_rescale": True, "rescale_factor": 1 / 255, "do_resize": True,
                   "size": {"shortest_edge": 30}, "do_center_crop": True, "crop_size": {"height": 30, "width": 30},
                   "resample": 3}, f, indent=2)
        f.write("\n")
    base_modules = [(n, type(m).__name__) for n, m in model.named_modules()]
    images = {size: torch.rand(n, 3, h, w) * 2 - 1 for size, (n, h, w) in SIZES.items()}
    frozen = outputs(model, images)

    base_copy = copy.deepcopy(model)
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=1, use_rslora=True, target_modules=TARGETS,
                                            lora_dropout=0.0))
    randomise_lora_b(lora, std=0.3)
    lora.eval()
    adapted = outputs(lora, images)
    with lora.disable_adapter():
        again = outputs(lora, images)
    assert all(torch.equal(frozen[k], again[k]) for k in frozen), "disable_adapter() differs from the frozen model"
    keys = save_adapter(lora, f"{out}/adapter")

    qv = get_peft_model(base_copy, LoraConfig(r=2, lora_alpha=1, use_rslora=True, target_modules=["q_proj", "v_proj"],
                                              layers_to_transform=[1], layers_pattern="layer", lora_dropout=0.0))
    randomise_lora_b(qv, std=0.3)
    qv.eval()
    qv_out = outputs(qv, images)
    qv_keys = save_adapter(qv, f"{out}/adapter-qv-layer1")
    assert len(qv_keys) == 4, qv_keys

    tensors = {f"images_{s}": x.contiguous() for s, x in images.items()}
    for prefix, result in (("frozen", frozen), ("adapted", adapted), ("qv", qv_out)):
        tensors.update({f"{prefix}_{k}": v for k, v in result.items()})
    save_file(tensors, f"{out}/expected.safetensors")

    with safe_open(f"{out}/model/model.safetensors", "pt") as f:
        weights = [f"{k} {f.get_slice(k).get_dtype()} {list(f.get_slice(k).get_shape())}" for k in sorted(f.keys())]
    layer0 = lambda n: ".layer." not in n or ".layer.0." in n or n.endswith(".layer.0")  # noqa: E731
    versions = (f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
                f"safetensors {safetensors.__version__}")
    with open(f"{out}/peft_keys.txt", "w") as f:
        f.write(f"# Written by analyses/dinov2_fixture.py with {versions}\n")
        f.write(f"# adapter/adapter_model.safetensors: {len(keys)} tensors\n" + "\n".join(keys) + "\n\n")
        f.write(f"# adapter-qv-layer1/adapter_model.safetensors: {len(qv_keys)} tensors\n" + "\n".join(qv_keys) + "\n\n")
        f.write(f"# model/model.safetensors: {len(weights)} tensors; layers other than 0 left out\n")
        f.write("\n".join(w for w in weights if layer0(w.split()[0])) + "\n\n")
        f.write("# Dinov2Model.named_modules(), layers other than 0 left out\n")
        f.write("\n".join(f"{n} ({t})" for n, t in base_modules if n and layer0(n)) + "\n")
    effect = (adapted["pooled_30"] - frozen["pooled_30"]).abs().max().item()
    qv_effect = (qv_out["pooled_30"] - frozen["pooled_30"]).abs().max().item()
    key_lines = "\n".join(f"| `{k}` | {list(v.shape)} |" for k, v in tensors.items())
    with open(f"{out}/README.md", "w") as f:
        f.write(README.format(versions=versions, n_keys=len(keys), n_weights=len(weights), effect=effect,
                              qv_effect=qv_effect, key_lines=key_lines))
    print(f"{versions}\nwrote {out}: {len(weights)} weights, {len(keys)} + {len(qv_keys)} adapter tensors, "
          f"adapter effect on pooled {effect:.3f}, qv {qv_effect:.3f}")


README = """# dinov2-tiny: a tiny random Dinov2Model with two PEFT LoRA adapters

Written by `python analyses/dinov2_fixture.py` with {versions}.
Deterministic (`torch.manual_seed(0)`; PEFT's `target_modules` list sorted after saving): rerunning
it with these versions writes the same files. It lets the DINOv2 backbone's interop tests run
without downloaded assets.

- `model/`: a random `Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2,
  num_attention_heads=4, mlp_ratio=2, image_size=30, patch_size=4, layer_norm_eps=1e-6))`: a 7x7
  position grid (`image_size // patch_size`; 30 is not a multiple of 4, so the last 2 pixels of each
  side fall outside the patches), MLP width 64. Every LayerNorm weight and bias and both layer
  scales perturbed by `0.3 * randn`, the class and mask tokens drawn from N(0, 1). {n_weights}
  tensors saved with `save_pretrained` (the checkpoint keeps the classic names
  `attention.attention.query` … `attention.output.dense`, `mlp.fc1`); `preprocessor_config.json`
  as DINOv2's `BitImageProcessor` has it (ImageNet mean and std).
- `adapter/`: `get_peft_model(model, LoraConfig(r=2, lora_alpha=1, use_rslora=True,
  target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"], lora_dropout=0.0))`
  ({n_keys} tensors, transformers 5's in-memory names `encoder.layer.N.attention.q_proj`), every
  `lora_B` from N(0, 0.3²). It moves the pooled features by up to {effect:.3f}.
- `adapter-qv-layer1/`: `target_modules=["q_proj", "v_proj"], layers_to_transform=[1],
  layers_pattern="layer"` (4 tensors); moves the pooled features by up to {qv_effect:.3f}.

## expected.safetensors

Images uniform in [-1, 1]; `pixel_values[c] = ((images[c] + 1) / 2 - mean[c]) / std[c]` with ImageNet's
mean and std, which is how the Rust side converts its [-1, 1] images. `images_30` is the native size
(no interpolation); `images_22` has a 5x5 patch grid and `images_rect` (18x34) a 4x8 one, so
`Dinov2Embeddings.interpolate_pos_encoding` resizes the 7x7 patch positions bicubically
(`align_corners=False`). `hidden_S` is `last_hidden_state` (after the final `layernorm`),
`pooled_S` the `pooler_output` (its class token). `frozen_` is the random model, `adapted_` with
`adapter/` (`disable_adapter()` was checked to give `frozen_` exactly), `qv_` with
`adapter-qv-layer1/`. All under `torch.no_grad()`, `eval()`.

| key | shape |
| --- | --- |
{key_lines}
"""

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(f"{here}/../tests/fixtures/dinov2-tiny")))
