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

CLIP: when model_type is "clip", backbone/ is a CLIPModel folder (config.json, model.safetensors,
tokenizer.json), adapter/ a PEFT adapter on it, and fixture.safetensors holds `images` [N, 3, H, W]
in [-1, 1], `input_ids` [K, L] (int64 or float; rows padded after the first eos with the pad id)
and our projected, unnormalised features frozen_image_embeds, adapted_image_embeds [N, P],
frozen_text_embeds, adapted_text_embeds [K, P] (and, if present, frozen_/adapted_logits_per_image
[N, K]). The images are normalised as CLIP's processor does with [0, 1] images,
pixel_values[c] = ((images[c] + 1) / 2 - mean[c]) / std[c]; attention_mask is 1 up to and including
the first eos of each row, 0 after. The backbone is read with CLIPModel (failing on missing or
unexpected weights), the adapter with PEFT (failing on missing or unexpected adapter keys), with
the same tolerance. OUT_DIR then gets clip-tiny/, the tiny CLIP tokenizer, random CLIPModel, PEFT
adapters and PyTorch outputs that analyses/clip_fixture.py writes (committed in
tests/fixtures/clip-tiny).

DINOv2: when model_type is "dinov2", backbone/ is a Dinov2Model folder (with
preprocessor_config.json), adapter/ a PEFT adapter on it, and fixture.safetensors holds `images`
[N, 3, H, W] in [-1, 1] and our pooled features (`pooler_output`: the class token after the final
layer norm) frozen and adapted [N, D]; images are normalised with the folder's image_mean and
image_std as [0, 1] images. The backbone is read with Dinov2Model (failing on missing or
unexpected weights), the adapter with PEFT (failing on missing or unexpected adapter keys).
OUT_DIR then gets dinov2-tiny/, which analyses/dinov2_fixture.py writes (committed in
tests/fixtures/dinov2-tiny).
"""

import importlib
import json
import os
import sys
import warnings

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import BertModel, CLIPModel, Dinov2Model, ViTConfig, ViTModel

TOLERANCE = 1e-4
# CLIP's image normalisation (the processor's image_mean and image_std).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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


def compare(frozen, adapted, ours):
    """Python's frozen and adapted outputs against ours ("frozen", "adapted"): the max |diff| of
    each, the adapter's effect on ours, and whether both match while the adapter matters."""
    diff_f = (frozen - ours["frozen"]).abs().max().item()
    diff_a = (adapted - ours["adapted"]).abs().max().item()
    effect = (ours["adapted"] - ours["frozen"]).abs().max().item()
    return diff_f, diff_a, effect, diff_f < TOLERANCE and diff_a < TOLERANCE and effect > 100 * TOLERANCE


def write_reverse_fixture(name, out):
    """The reverse direction: {name}_fixture.py writes the same files as the committed
    tests/fixtures/{name}-tiny into {out}/{name}-tiny."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    importlib.import_module(f"{name}_fixture").main(f"{out}/{name}-tiny")


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
    frozen = pooled(model, ids, mask, pooling)
    tuned = PeftModel.from_pretrained(model, f"{fixture}/adapter").eval()
    frozen, adapted, effect, ok = compare(frozen, pooled(tuned, ids, mask, pooling), ours)
    print(f"ours -> python ({pooling} pooling, {ids.shape[0]} sequences of {ids.shape[1]}): max |diff| "
          f"frozen {frozen:.2e}, adapted {adapted:.2e} (adapter effect {effect:.2e})")

    write_reverse_fixture("bert", out)
    print("python -> ours: wrote bert-tiny/ (model/, adapter/, expected.safetensors)")
    return 0 if ok else 1


def clip_pixels(images):
    """[-1, 1] images to CLIP's pixel_values: as CLIP's processor normalises [0, 1] images."""
    mean = torch.tensor(CLIP_MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=images.dtype).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def clip_mask(ids, eos_id):
    """1 up to and including the first eos of each row, 0 after (every row must hold an eos)."""
    is_eos = ids == eos_id
    if not is_eos.any(dim=1).all():
        sys.exit(f"a row of input_ids has no eos id {eos_id}: {ids.tolist()}")
    first = is_eos.int().argmax(dim=1, keepdim=True)
    return (torch.arange(ids.shape[1]).unsqueeze(0) <= first).long()


def clip_outputs(model, pixel_values, ids, mask):
    """Projected, unnormalised image and text features and logits_per_image (no grad). In
    transformers 5 get_*_features return a BaseModelOutputWithPooling with them in pooler_output."""
    def features(result):
        return result if isinstance(result, torch.Tensor) else result.pooler_output

    with torch.no_grad():
        image = features(model.get_image_features(pixel_values=pixel_values))
        text = features(model.get_text_features(input_ids=ids, attention_mask=mask))
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values).logits_per_image
    return {"image_embeds": image, "text_embeds": text, "logits_per_image": logits}


def check_clip(fixture, out):
    """Our CLIP backbone and adapter, read by transformers and PEFT; then the clip-tiny files for our reader."""
    ours = load_file(f"{fixture}/fixture.safetensors")
    images = ours["images"].float()
    ids = ours["input_ids"]
    ids = ids.round().long() if ids.is_floating_point() else ids.long()
    model, info = CLIPModel.from_pretrained(f"{fixture}/backbone", output_loading_info=True)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    if bad:
        sys.exit(f"{fixture}/backbone/model.safetensors does not match CLIPModel: {bad}")
    text_config = model.config.text_config
    eos_id = text_config.eos_token_id
    if eos_id == 2:
        print("note: text_config.eos_token_id is 2, so transformers pools at input_ids.argmax(), not the first eos")
    if os.path.exists(f"{fixture}/backbone/tokenizer.json"):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(f"{fixture}/backbone/tokenizer.json")
        tok_eos = tok.token_to_id("<|endoftext|>")
        print(f"tokenizer.json: {tok.get_vocab_size()} tokens, <|endoftext|> = {tok_eos}; "
              f"config vocab_size {text_config.vocab_size}, eos_token_id {eos_id}")
        if tok_eos != eos_id or tok.get_vocab_size() > text_config.vocab_size:
            sys.exit("tokenizer.json disagrees with config.json on the eos id or the vocabulary size")
    pixel_values, mask = clip_pixels(images), clip_mask(ids, eos_id)
    print("transformers module names:", [n for n, _ in model.named_modules()][:12])
    frozen = clip_outputs(model, pixel_values, ids, mask)

    tuned, n_keys = load_adapter_strictly(model, f"{fixture}/adapter")
    adapted = clip_outputs(tuned, pixel_values, ids, mask)

    ok, effect = True, 0.0
    for name in ("image_embeds", "text_embeds", "logits_per_image"):
        if f"frozen_{name}" not in ours and name == "logits_per_image":
            continue
        diff_f = (frozen[name] - ours[f"frozen_{name}"]).abs().max().item()
        diff_a = (adapted[name] - ours[f"adapted_{name}"]).abs().max().item()
        moved = (ours[f"adapted_{name}"] - ours[f"frozen_{name}"]).abs().max().item()
        if name != "logits_per_image":
            effect = max(effect, moved)
        print(f"ours -> python {name} {list(ours[f'frozen_{name}'].shape)}: max |diff| frozen {diff_f:.2e}, "
              f"adapted {diff_a:.2e} (adapter effect {moved:.2e})")
        # Logits are exp(logit_scale) (up to 100) times a cosine: allow that factor.
        tol = TOLERANCE * (model.logit_scale.exp().item() if name == "logits_per_image" else 1.0)
        ok = ok and diff_f < tol and diff_a < tol
    print(f"({images.shape[0]} images {list(images.shape[1:])}, {ids.shape[0]} texts of {ids.shape[1]} ids, "
          f"{n_keys} adapter tensors)")
    ok = ok and effect > 100 * TOLERANCE

    write_reverse_fixture("clip", out)
    print("python -> ours: wrote clip-tiny/ (model/, adapter/, adapter-vision-qkv/, expected.safetensors)")
    return 0 if ok else 1


# DINOv2's image normalisation (ImageNet mean and std, its image processor's default).
DINOV2_MEAN = (0.485, 0.456, 0.406)
DINOV2_STD = (0.229, 0.224, 0.225)


def load_adapter_strictly(model, path):
    """PeftModel.from_pretrained, failing on missing or unexpected adapter keys (PEFT only warns
    about missing ones and drops unexpected ones silently, so the names are compared too)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = PeftModel.from_pretrained(model, path).eval()
    key_warnings = [str(w.message) for w in caught if "missing" in str(w.message).lower()
                    or "unexpected" in str(w.message).lower()]
    if key_warnings:
        sys.exit("PEFT warned while loading the adapter:\n" + "\n".join(key_warnings))
    with safe_open(f"{path}/adapter_model.safetensors", "pt") as f:
        in_file = set(f.keys())
    in_model = set(get_peft_model_state_dict(tuned).keys())
    if in_file != in_model:
        sys.exit(f"adapter keys: missing {sorted(in_model - in_file)}, unexpected {sorted(in_file - in_model)}")
    return tuned, len(in_file)


def check_dinov2(fixture, out):
    """Our DINOv2 backbone and adapter, read by transformers and PEFT; then the dinov2-tiny files for our reader."""
    ours = load_file(f"{fixture}/fixture.safetensors")
    images = ours["images"].float()
    model, info = Dinov2Model.from_pretrained(f"{fixture}/backbone", output_loading_info=True)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    if bad:
        sys.exit(f"{fixture}/backbone/model.safetensors does not match Dinov2Model: {bad}")
    mean, std = DINOV2_MEAN, DINOV2_STD
    if os.path.exists(f"{fixture}/backbone/preprocessor_config.json"):
        with open(f"{fixture}/backbone/preprocessor_config.json") as f:
            processor = json.load(f)
        mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
    pixel_values = ((images + 1) / 2 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    def pooled(m):
        with torch.no_grad():
            return m(pixel_values=pixel_values).pooler_output

    frozen = pooled(model)
    tuned, n_keys = load_adapter_strictly(model, f"{fixture}/adapter")
    frozen, adapted, effect, ok = compare(frozen, pooled(tuned), ours)
    print(f"ours -> python (pooler_output, {images.shape[0]} images {list(images.shape[1:])}, {n_keys} adapter "
          f"tensors): max |diff| frozen {frozen:.2e}, adapted {adapted:.2e} (adapter effect {effect:.2e})")

    write_reverse_fixture("dinov2", out)
    print("python -> ours: wrote dinov2-tiny/ (model/, adapter/, adapter-qv-layer1/, expected.safetensors)")
    return 0 if ok else 1


def main(fixture, out):
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    torch.manual_seed(0)
    with open(f"{fixture}/backbone/config.json") as f:
        model_type = json.load(f).get("model_type")
    if model_type == "bert":
        return check_bert(fixture, out)
    if model_type == "clip":
        return check_clip(fixture, out)
    if model_type == "dinov2":
        return check_dinov2(fixture, out)
    ours = load_file(f"{fixture}/fixture.safetensors")
    images = ours["images"]

    # 1. Our files, read by transformers and PEFT.
    model = ViTModel.from_pretrained(f"{fixture}/backbone", add_pooling_layer=False).eval()
    print("transformers module names:", [n for n, _ in model.named_modules()][:12])
    frozen = cls(model, images)
    tuned = PeftModel.from_pretrained(model, f"{fixture}/adapter").eval()
    frozen, adapted, effect, ok = compare(frozen, cls(tuned, images), ours)
    print(f"ours -> python: max |diff| frozen {frozen:.2e}, adapted {adapted:.2e} (adapter effect {effect:.2e})")

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
