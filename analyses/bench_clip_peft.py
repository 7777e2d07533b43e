"""PyTorch + PEFT's CLIP-LoRA training throughput on a CLIPModel folder, for comparison with
`copra-lab train --backbone DIR` on the same folder (its manifest's images_per_second).

Usage (in a venv with torch, transformers, peft):
    python analyses/bench_clip_peft.py tests/fixtures/clip-tiny/model [--batch 32] [--steps 200]

The workload is copra-lab's LoRA run: rank 2, alpha 1, rsLoRA, dropout 0.25 on q, k, v of every
block of both towers; each step re-encodes the class prompts through the text tower (with its
adapters), takes cross-entropy of exp(logit_scale) * cos(image, text) on a batch of images, and
makes one AdamW step. Images are random in the model's size (CLIP's cost does not depend on the
pixels); three prompts. Prints images per second over the timed steps (after 5 untimed ones).
"""
import argparse
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, CLIPModel


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backbone")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    model = CLIPModel.from_pretrained(a.backbone)
    tok = AutoTokenizer.from_pretrained(a.backbone)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=1, use_rslora=True, lora_dropout=0.25,
                                             target_modules=["q_proj", "k_proj", "v_proj"]))
    model.train()
    prompts = tok(["a photo of a red square.", "a photo of a blue circle.", "a photo of a green triangle."],
                  padding=True, return_tensors="pt")
    size = model.config.vision_config.image_size
    images = torch.randn(a.batch, 3, size, size)
    labels = torch.arange(a.batch) % 3
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
    scale = model.base_model.model.logit_scale.exp().detach()

    def step():
        text = model.get_text_features(**prompts)
        image = model.get_image_features(pixel_values=images)
        text = getattr(text, "pooler_output", text)
        image = getattr(image, "pooler_output", image)
        logits = scale * torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    elapsed = time.perf_counter() - t0
    print(f"torch {torch.__version__}, {a.threads} threads, batch {a.batch}: "
          f"{a.steps * a.batch / elapsed:.0f} images/s over {a.steps} steps")


if __name__ == "__main__":
    main()
