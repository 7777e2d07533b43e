"""Writes tests/fixtures/clip-tiny/: a tiny CLIP tokenizer, a tiny random CLIPModel, two PEFT LoRA
adapters on it and PyTorch's outputs, so that the Rust CLIP backbone's interop tests run without
downloaded assets.

Usage (in a venv with torch, transformers, peft, safetensors, tokenizers):
    python analyses/clip_fixture.py [OUT_DIR]        # default tests/fixtures/clip-tiny

Writes, deterministically (torch.manual_seed(0); same files for the same library versions):
  model/               tokenizer.json (+ tokenizer_config.json): a byte-level BPE tokenizer in CLIP's
                       layout (NFC, whitespace, lowercase; CLIP's Split regex + ByteLevel; BPE with
                       "</w>"; <|startoftext|> $A <|endoftext|>), 512 byte symbols, merges learnt here
                       on a few dozen words (capped at 100), the two special tokens last; and a random CLIPModel
                       (vision: 32 wide, 3 layers, 4 heads, 32x32 images in 8x8 patches; text: 24
                       wide, 2 layers, 4 heads, 16 positions; projection 16; quick_gelu), LayerNorm
                       weights and biases perturbed by 0.1 * randn; save_pretrained
  adapter/             PEFT LoRA (r 2, alpha 1, rsLoRA, dropout 0) on q_proj, k_proj, v_proj,
                       out_proj, fc1, fc2 of both towers, lora_B random (not PEFT's zeros)
  adapter-vision-qkv/  the same on the vision tower's q_proj, k_proj, v_proj only (a regex
                       target_modules), lora_B random
  expected.safetensors images [4, 3, 32, 32] in [-1, 1], their CLIP-normalised pixel_values,
                       input_ids and attention_mask [3, L] int64 of "a photo of a {class}.",
                       eos_index [3], and frozen_ / adapted_ / vision_qkv_ image_embeds [4, 16],
                       text_embeds [3, 16], logits_per_image [4, 3], vision_hidden [4, 17, 32],
                       text_hidden [3, L, 24]
  prompts.json         template, class names, prompts and their unpadded ids
  peft_keys.txt        both adapters' tensor names with shapes, CLIPModel's module names and
                       model.safetensors' tensor names (layer 0 of each tower and all outside)
  README.md            how it was made, library versions, every key and shape
"""
import copy
import json
import os
import sys
import warnings

import peft
import safetensors
import tokenizers
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from fixture_adapters import randomise_lora_b, save_adapter

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TEMPLATE = "a photo of a {}."
CLASS_NAMES = ["red_square", "blue_circle", "green_triangle"]
# The words the BPE merges are learnt on (with weights: the template's words count most).
CORPUS = {
    "a photo of a": 8, "a picture of the": 3, "an image of an": 3, "a drawing of a small large big dark bright": 2,
    "red green blue yellow orange purple pink brown black white grey gray cyan": 3,
    "square circle cross star diamond heart ring line": 2, "triangle hexagon pentagon rectangle oval": 1,
    "stripes dots banded striped checkered dotted spotted plain zigzag checks": 1, ". , !": 2,
}
# Capped so that "square" and "triangle" stay in pieces: the prompts then have 12, 9 and 11 tokens,
# so that padding and the first-eos pooling are exercised.
MAX_MERGES = 100
# CLIP's image normalisation (the processor's image_mean and image_std).
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
VISION_QKV = r"vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj)"
N_IMAGES = 4


def byte_level_tokenizer(merges):
    """CLIPTokenizerFast on CLIP's vocabulary layout: the 256 byte symbols (in GPT-2's byte-to-unicode
    order, as CLIP's vocab.json has them), their "</w>" forms, one token per merge, then the specials."""
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    assert len(set(vocab)) == len(vocab), "a merge repeats a token"
    return CLIPTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, merges=list(merges), model_max_length=16)


def learn_merges():
    """Plain BPE on CORPUS, pre-tokenized as CLIP does: every word a sequence of byte symbols, the last
    one with "</w>"; merge the most frequent adjacent pair (ties: the smallest pair) until every word
    is one symbol or MAX_MERGES merges are made."""
    backend = byte_level_tokenizer([]).backend_tokenizer
    counts = {}
    for text, weight in CORPUS.items():
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            counts[word] = counts.get(word, 0) + weight
    words = {w: list(w[:-1]) + [w[-1] + "</w>"] for w in counts}
    merges = []
    while len(merges) < MAX_MERGES:
        pairs = {}
        for w, syms in words.items():
            for pair in zip(syms, syms[1:]):
                pairs[pair] = pairs.get(pair, 0) + counts[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w, syms in words.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[w] = out
    return merges


def first_eos(ids, eos_id):
    return (ids == eos_id).int().argmax(dim=-1)


def features(result):
    """get_image_features / get_text_features: a tensor in transformers 4, a BaseModelOutputWithPooling
    (projected features in pooler_output) in transformers 5."""
    if isinstance(result, torch.Tensor):
        return result, "torch.Tensor"
    return result.pooler_output, f"{type(result).__name__}.pooler_output"


def outputs(model, pixel_values, ids, mask):
    """Unnormalised image and text embeddings, logits_per_image and both towers' last_hidden_state."""
    with torch.no_grad():
        image, image_kind = features(model.get_image_features(pixel_values=pixel_values))
        text, text_kind = features(model.get_text_features(input_ids=ids, attention_mask=mask))
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values)
        scale = model.logit_scale.exp()
    # The forward pass's logits are exp(logit_scale) times the cosine of the two features above.
    cos = (image / image.norm(dim=-1, keepdim=True)) @ (text / text.norm(dim=-1, keepdim=True)).T
    assert torch.allclose(out.logits_per_image, scale * cos, atol=1e-5), "logits are not exp(logit_scale) * cos"
    result = {"image_embeds": image, "text_embeds": text, "logits_per_image": out.logits_per_image,
              "vision_hidden": out.vision_model_output.last_hidden_state,
              "text_hidden": out.text_model_output.last_hidden_state}
    return {k: v.float().contiguous() for k, v in result.items()}, (image_kind, text_kind)


def lora_modules(lora):
    prefix = "base_model.model."
    return sorted(n[len(prefix):] for n, m in lora.named_modules() if hasattr(m, "lora_A") and n.startswith(prefix))


def main(out):
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=FutureWarning)  # PEFT calls a deprecated transformers name
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(out, exist_ok=True)

    # 1. The tokenizer, checked against the tokenizers library reading the saved tokenizer.json.
    merges = learn_merges()
    tok = byte_level_tokenizer(merges)
    tok.save_pretrained(f"{out}/model")
    bos_id, eos_id = tok.convert_tokens_to_ids([BOS, EOS])
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (bos_id, eos_id, eos_id)
    prompts = [TEMPLATE.format(c.replace("_", " ")) for c in CLASS_NAMES]
    unpadded = [tok(p)["input_ids"] for p in prompts]
    from_file = tokenizers.Tokenizer.from_file(f"{out}/model/tokenizer.json")
    reloaded = CLIPTokenizerFast.from_pretrained(f"{out}/model")
    for p, ids in zip(prompts, unpadded):
        assert from_file.encode(p).ids == ids, (p, from_file.encode(p).ids, ids)
        assert reloaded(p)["input_ids"] == ids
        assert ids[0] == bos_id and ids[-1] == eos_id and eos_id not in ids[:-1]
    batch = tok(prompts, padding="longest", return_tensors="pt")
    ids, mask = batch["input_ids"].long(), batch["attention_mask"].long()
    eos_index = first_eos(ids, eos_id).long()
    assert eos_index.tolist() == [len(u) - 1 for u in unpadded]
    assert ids.shape[1] <= 16

    # 2. The model.
    common = dict(hidden_act="quick_gelu", layer_norm_eps=1e-5, num_attention_heads=4, projection_dim=16)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                         max_position_embeddings=16, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id,
                         **common),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, image_size=32, patch_size=8,
                           num_channels=3, **common),
        projection_dim=16)
    model = CLIPModel(config).eval()
    # LayerNorms start at weight 1, bias 0: perturb them so that a reader mixing up weight and
    # bias, or skipping a LayerNorm, is caught. logit_scale keeps its initial value (2.6592).
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.add_(0.1 * torch.randn_like(module.weight))
                module.bias.add_(0.1 * torch.randn_like(module.bias))
    model.save_pretrained(f"{out}/model")
    base_modules = [(n, type(m).__name__) for n, m in model.named_modules()]
    attn_impl = model.config._attn_implementation

    # 3. The data: images in [-1, 1], normalised as CLIP's processor does with [0, 1] images.
    images = torch.rand(N_IMAGES, 3, 32, 32) * 2 - 1
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    pixel_values = (((images + 1) / 2 - mean) / std).contiguous()

    # 4.-6. Outputs: frozen, with the two-tower adapter, with the vision-qkv adapter.
    frozen, kinds = outputs(model, pixel_values, ids, mask)
    base_copy = copy.deepcopy(model)
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=1, use_rslora=True, target_modules=TARGETS,
                                            lora_dropout=0.0))
    randomise_lora_b(lora, std=0.2)
    lora.eval()
    adapted, _ = outputs(lora, pixel_values, ids, mask)
    with lora.disable_adapter():
        again, _ = outputs(lora, pixel_values, ids, mask)
    assert all(torch.equal(frozen[k], again[k]) for k in frozen), "disable_adapter() differs from the frozen model"
    matched = lora_modules(lora)
    expect = sorted(f"{tower}.encoder.layers.{i}.{m}" for tower, n in (("vision_model", 3), ("text_model", 2))
                    for i in range(n) for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                "self_attn.out_proj", "mlp.fc1", "mlp.fc2"))
    assert matched == expect, matched
    keys = save_adapter(lora, f"{out}/adapter")

    qkv = get_peft_model(base_copy, LoraConfig(r=2, lora_alpha=1, use_rslora=True, target_modules=VISION_QKV,
                                               lora_dropout=0.0))
    randomise_lora_b(qkv, std=0.2)
    qkv.eval()
    vision_qkv, _ = outputs(qkv, pixel_values, ids, mask)
    assert lora_modules(qkv) == sorted(f"vision_model.encoder.layers.{i}.self_attn.{m}" for i in range(3)
                                       for m in ("q_proj", "k_proj", "v_proj"))
    assert torch.equal(vision_qkv["text_embeds"], frozen["text_embeds"]), "the vision adapter moved the text tower"
    assert torch.equal(vision_qkv["text_hidden"], frozen["text_hidden"])
    qkv_keys = save_adapter(qkv, f"{out}/adapter-vision-qkv")

    # 7.-8. Tensors and prompts.
    tensors = {"images": images.contiguous(), "pixel_values": pixel_values, "input_ids": ids.contiguous(),
               "attention_mask": mask.contiguous(), "eos_index": eos_index.contiguous()}
    for prefix, result in (("frozen", frozen), ("adapted", adapted), ("vision_qkv", vision_qkv)):
        tensors.update({f"{prefix}_{k}": v for k, v in result.items()})
    save_file(tensors, f"{out}/expected.safetensors")
    with open(f"{out}/prompts.json", "w") as f:
        json.dump({"template": TEMPLATE, "class_names": CLASS_NAMES, "prompts": prompts, "input_ids": unpadded},
                  f, indent=2)
        f.write("\n")

    # 9. Names, for the Rust reader, and the README.
    with safe_open(f"{out}/model/model.safetensors", "pt") as f:
        weights = [f"{k} {f.get_slice(k).get_dtype()} {list(f.get_slice(k).get_shape())}" for k in sorted(f.keys())]
    in_layer = lambda n: ".encoder.layers." in n  # noqa: E731
    layer0 = lambda n: not in_layer(n) or ".encoder.layers.0." in n or n.endswith(".encoder.layers.0")  # noqa: E731
    versions = (f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
                f"safetensors {safetensors.__version__}, tokenizers {tokenizers.__version__}")
    effect = {k: (adapted[k] - frozen[k]).abs().max().item() for k in ("image_embeds", "text_embeds")}
    qkv_effect = (vision_qkv["image_embeds"] - frozen["image_embeds"]).abs().max().item()
    with open(f"{out}/peft_keys.txt", "w") as f:
        f.write(f"# Written by analyses/clip_fixture.py with {versions}\n")
        f.write(f"# adapter/adapter_model.safetensors: {len(keys)} tensors, sorted, with shapes\n")
        f.write("\n".join(keys) + "\n\n")
        f.write(f"# adapter-vision-qkv/adapter_model.safetensors: {len(qkv_keys)} tensors, sorted, with shapes\n")
        f.write("\n".join(qkv_keys) + "\n\n")
        f.write(f"# model/model.safetensors: {len(weights)} tensors; those of encoder layers other than 0 left out\n")
        f.write("\n".join(w for w in weights if layer0(w.split()[0])) + "\n\n")
        f.write("# CLIPModel.named_modules(), encoder layers other than 0 left out (named alike)\n")
        f.write("\n".join(f"{n} ({t})" for n, t in base_modules if n and layer0(n)) + "\n")
    fmt = lambda t: str(list(t.shape))  # noqa: E731
    key_lines = "\n".join(f"| `{k}` | {str(v.dtype).replace('torch.', '')} | {fmt(v)} |" for k, v in tensors.items())
    with open(f"{out}/README.md", "w") as f:
        f.write(README.format(
            versions=versions, vocab=len(tok), n_merges=len(merges), bos=bos_id, eos=eos_id,
            prompt_ids="\n".join(f"  - `{p}` → `{u}`" for p, u in zip(prompts, unpadded)),
            L=ids.shape[1], eos_index=eos_index.tolist(), n_keys=len(keys), n_qkv=len(qkv_keys),
            logit_scale=model.logit_scale.item() if hasattr(model, "logit_scale") else float("nan"),
            exp_scale=base_copy.logit_scale.exp().item(), image_kind=kinds[0], text_kind=kinds[1],
            attn_impl=attn_impl, key_lines=key_lines, effect_image=effect["image_embeds"],
            effect_text=effect["text_embeds"], qkv_effect=qkv_effect, n_weights=len(weights)))
    print(f"{versions}\nwrote {out}: vocab {len(tok)} ({len(merges)} merges), bos {bos_id}, eos/pad {eos_id}; "
          f"prompt ids {unpadded}; get_image_features -> {kinds[0]}; {len(keys)} + {len(qkv_keys)} adapter tensors; "
          f"adapter effect on image/text embeds {effect['image_embeds']:.3f}/{effect['text_embeds']:.3f}, "
          f"vision-qkv on image embeds {qkv_effect:.3f}")


README = """# clip-tiny: a tiny CLIP tokenizer and random CLIPModel with two PEFT LoRA adapters

Written by `python analyses/clip_fixture.py` with {versions}.
Deterministic (`torch.manual_seed(0)`; PEFT's `target_modules` list is sorted after saving, as
PEFT writes it in set order): rerunning it with these versions writes the same files. It lets the
CLIP backbone's interop tests run without downloaded assets.

## model/

- `tokenizer.json` (+ `tokenizer_config.json`), written by `CLIPTokenizerFast(vocab=..., merges=...)
  .save_pretrained`, in the layout of CLIP's own file: normalizer NFC, `\\s+` → " ", lowercase;
  pre-tokenizer CLIP's `Split` regex (removed, inverted) then `ByteLevel` (no prefix space); BPE
  with `end_of_word_suffix` "</w>" and unk `<|endoftext|>`; post-processor `RobertaProcessing`
  (`<|startoftext|> $A <|endoftext|>`); `ByteLevel` decoder. Vocabulary {vocab}: ids 0-255 the byte
  symbols in GPT-2's byte-to-unicode order, 256-511 the same with "</w>", then one token per merge
  ({n_merges} merges, learnt by plain BPE on the colour, shape and template words in
  `CORPUS`, stopped at {n_merges} so that "square" and "triangle" stay in pieces and the prompts
  differ in length), then `<|startoftext|>` = {bos} and `<|endoftext|>` = {eos} (also pad and unk). The ids
  below were checked equal between `CLIPTokenizerFast` and the `tokenizers` library's
  `Tokenizer.from_file("tokenizer.json").encode(prompt).ids`:
{prompt_ids}
- `config.json`, `model.safetensors` ({n_weights} tensors, f32): a random `CLIPModel(CLIPConfig(...,
  projection_dim=16))`, vision tower hidden 32, intermediate 64, 3 layers, 4 heads, image 32, patch 8,
  3 channels (17 tokens: CLS + 16 patches); text tower vocab {vocab}, hidden 24, intermediate 48,
  2 layers, 4 heads, 16 positions, bos {bos}, eos {eos}, pad {eos}; both `quick_gelu` (x * sigmoid(1.702 x)),
  LayerNorm eps 1e-5. Every LayerNorm weight and bias perturbed by `0.1 * randn`. `logit_scale` keeps
  its initial value {logit_scale:.4f} (exp = {exp_scale:.4f}, not 100). The depths (3 / 2) and widths
  (32 / 24) differ between the towers on purpose. Attention implementation: `{attn_impl}`.

## Adapters

- `adapter/`: `get_peft_model(model, LoraConfig(r=2, lora_alpha=1, use_rslora=True,
  target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"], lora_dropout=0.0))`,
  which matches exactly those six linears in every layer of both towers (not the projections);
  every `lora_B` drawn from N(0, 0.2²) instead of PEFT's zeros. {n_keys} tensors; scaling
  alpha / sqrt(r) = 0.7071 (rsLoRA). It moves image / text embeddings by up to
  {effect_image:.3f} / {effect_text:.3f}.
- `adapter-vision-qkv/`: the same but `target_modules` the regex string
  `vision_model\\.encoder\\.layers\\.\\d+\\.self_attn\\.(q_proj|k_proj|v_proj)` (kept a string in
  adapter_config.json), {n_qkv} tensors; text outputs equal the frozen ones exactly, image embeddings
  move by up to {qkv_effect:.3f}.
- PEFT's model-card README.md removed from both.

## expected.safetensors

`images` are uniform in [-1, 1]; CLIP's processor normalisation applied to them as [0, 1] images is

    pixel_values[c] = ((images[c] + 1) / 2 - mean[c]) / std[c]
    mean = (0.48145466, 0.4578275, 0.40821073), std = (0.26862954, 0.26130258, 0.27577711)

which is how the Rust side converts its [-1, 1] images. The prompts are `"a photo of a {{}}."` with
the class names' underscores as spaces, tokenized with padding to the longest ({L}) with the pad id
{eos}; `attention_mask` is 1 on the real tokens (`<|startoftext|>` ... `<|endoftext|>`). The text
tower pools at the first `<|endoftext|>` of each row (`eos_index` = {eos_index}; config eos_token_id
is not 2, so transformers takes `(input_ids == eos).argmax`, not `input_ids.argmax`), after
`final_layer_norm`; the vision tower pools the CLS token after `post_layernorm`. `image_embeds` and
`text_embeds` are the projected, unnormalised features (`get_image_features` /
`get_text_features`, which return `{image_kind}` / `{text_kind}` in this version);
`logits_per_image[i, j] = exp(logit_scale) * cos(image_embeds[i], text_embeds[j])` from
`model(input_ids, attention_mask, pixel_values)`. `vision_hidden` is the vision encoder's
`last_hidden_state` (before `post_layernorm`); `text_hidden` the text tower's (after
`final_layer_norm`, causal attention, padded keys masked out too: positions after the eos depend on
that mask). All outputs under `torch.no_grad()`, `eval()`.

| key | dtype | shape |
| --- | --- | --- |
{key_lines}

`frozen_*`: the random model; `adapted_*`: with `adapter/` (`disable_adapter()` was checked to give
`frozen_*` exactly); `vision_qkv_*`: with `adapter-vision-qkv/`.

## Other files

- `prompts.json`: template, class names, prompts, and each prompt's unpadded ids.
- `peft_keys.txt`: both adapters' tensor names and shapes, `model.safetensors`' tensor names, dtypes
  and shapes (encoder layer 0 of each tower and everything outside the layers), and transformers'
  `CLIPModel` module names (same selection).
"""

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(f"{here}/../tests/fixtures/clip-tiny")))
