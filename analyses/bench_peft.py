"""copra-lab against PyTorch + PEFT on the same backbone folder, side by side in one run.

Usage:
    python analyses/bench_peft.py BACKBONE_DIR [--copra target/release/copra-lab]
        [--threads 2] [--steps 60] [--rounds 2] [--grid 8]
    python analyses/bench_peft.py BERT_DIR [--copra BINARY [--copra BINARY2]] [--task tab:FILE]
        [--threads 2] [--steps 5] [--warmup 3] [--rounds 1]
    python analyses/bench_peft.py DINOV2_DIR [--copra BINARY] [--task idx:DIR] [--image-size 28]
        [--threads 2] [--steps 20] [--rounds 2]

The backbone's config.json decides the workload: model_type "bert" (e.g. the all-MiniLM-L6-v2
folder of analyses/fetch-assets.sh) runs the BERT figures below, "dinov2" (e.g. the folder of
analyses/fetch-assets.sh --dinov2) the DINOv2 ones, anything else the ViT ones.

BACKBONE_DIR comes from `copra-lab export-backbone --out DIR`; the environment needs
`pip install torch transformers peft`. With --copra, each round runs copra-lab's own
benchmarks (`bench train`, `bench coalitions`, `bench grid`) and then PyTorch's, so both
columns see the same machine load; the table reports the median over rounds and the ratio
copra-lab / PyTorch. --copra may be given twice (e.g. a build before and after a change): each
round then runs both binaries, one after the other, before PyTorch, and the table has a column
and a ratio for each. On a shared machine absolute figures are noisy; the ratios are the
measurement.

PyTorch figures (CPU, --threads threads), the workload of copra-lab's defaults:
  - LoRA training images/s: q, k, v rank 2, alpha 1, rsLoRA, dropout 0.25, AdamW (wd 0.01),
    batch 32, fixed normalised-prototype head with logit scale 20;
  - constant participation p = 0.5 and 0.25: each step, each block's adapters are enabled
    with probability p (at least one block on), through PEFT's LoraLayer.enable_adapters;
  - grid: K runs trained one after another (each its own model, adapters and optimizer),
    total images/s;
  - coalition evaluations/s: random block coalitions, each a no-grad forward of --test-size images
    with only that coalition's adapters enabled (the plain way to evaluate a layer game).

PyTorch figures for a BERT backbone (CPU, --threads threads), on random token ids, attention
mask all 1, token_type_ids 0 (copra-lab's side: `bench train --task TASK` with the same LoRA
settings and --max-length 128 and 64, its `lora` line; --task must give texts at least 128
tokens long, e.g. tab:.../20newsgroups-train.tab, so that every batch is full length):
  - LoRA training sequences/s, batch 32, length 128 and 64: LoRA rank 8, alpha 16, dropout 0 on
    query and value of every block, AdamW (lr 1e-3, wd 0.01), loss the cross-entropy of a frozen
    random linear head (20 classes) on mean-pooled features; the model in train mode (BERT's own
    dropout 0.1 on); --warmup steps, then --steps timed steps;
  - frozen forward sequences/s: the plain BertModel, batch 64, length 128, no grad, eval mode.

PyTorch figures for a DINOv2 backbone (CPU, --threads threads), images of --image-size pixels
(Dinov2Model interpolates its position embeddings; copra-lab's side: `bench train` and `bench
forward` with --task (default Fashion-MNIST) and the same --image-size, its defaults otherwise):
  - LoRA training images/s and constant participation p = 0.5 and 0.25: the ViT workload above
    (q, k, v rank 2, alpha 1, rsLoRA, dropout 0.25, AdamW, batch 32, prototype head on the class
    token after the final layer norm, pooler_output);
  - frozen forward images/s: the plain Dinov2Model on --test-size images in batches of 500
    (copra-lab's evaluation batch), no grad, eval mode (copra-lab: the test split through the
    frozen backbone and the head).
"""
import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time
import warnings

import torch
import transformers
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import BertModel, Dinov2Model, ViTModel

BATCH = 32
CLASSES = 8
BERT_CLASSES = 20
BERT_FORWARD_BATCH = 64
EVAL_BATCH = 500  # copra-lab's evaluation batch (lab::EVAL_BATCH)


def build(backbone):
    """A PEFT LoRA model on the backbone (ViTModel, or Dinov2Model) and its LoRA layers grouped by block."""
    if model_type(backbone) == "dinov2":
        base = Dinov2Model.from_pretrained(backbone)
    else:
        base = ViTModel.from_pretrained(backbone, add_pooling_layer=False)
    cfg = base.config
    lora = LoraConfig(r=2, lora_alpha=1, lora_dropout=0.25, use_rslora=True,
                      target_modules=["q_proj", "k_proj", "v_proj", "query", "key", "value"])
    model = get_peft_model(base, lora)
    by_block = {b: [] for b in range(cfg.num_hidden_layers)}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            block = int(next(p for p in name.split(".") if p.isdigit()))
            by_block[block].append(module)
    if not all(by_block.values()):
        sys.exit("PEFT found no LoRA layer on some block: is this a ViTModel or Dinov2Model folder?")
    return model, cfg, by_block


class Trainer:
    """One PEFT training run on a fixed random batch (throughput only)."""

    def __init__(self, backbone, seed, image_size=None):
        torch.manual_seed(seed)
        self.rng = random.Random(seed)
        self.model, self.cfg, self.by_block = build(backbone)
        self.head = torch.nn.functional.normalize(torch.randn(CLASSES, self.cfg.hidden_size), dim=-1)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
        c = self.cfg
        self.size = image_size or c.image_size
        self.x = torch.randn(BATCH, c.num_channels, self.size, self.size)
        self.y = torch.randint(0, CLASSES, (BATCH,))

    def set_mask(self, mask):
        for block, on in enumerate(mask):
            for layer in self.by_block[block]:
                layer.enable_adapters(on)

    def step(self, p):
        blocks = self.cfg.num_hidden_layers
        if p < 1:
            mask = [self.rng.random() < p for _ in range(blocks)]
            if not any(mask):
                mask[self.rng.randrange(blocks)] = True
            self.set_mask(mask)
        feats = self.model(pixel_values=self.x).last_hidden_state[:, 0]
        logits = torch.nn.functional.normalize(feats, dim=-1) @ self.head.T * 20
        loss = torch.nn.functional.cross_entropy(logits, self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def images_per_second(self, p, steps):
        self.model.train()
        self.set_mask([True] * self.cfg.num_hidden_layers)
        for _ in range(5):
            self.step(p)
        t = time.perf_counter()
        for _ in range(steps):
            self.step(p)
        return steps * BATCH / (time.perf_counter() - t)


def torch_round(a):
    """PyTorch + PEFT figures of one round."""
    out = {}
    dinov2 = model_type(a.backbone) == "dinov2"
    trainer = Trainer(a.backbone, 0, a.image_size if dinov2 else None)
    for p, key in ((1.0, "lora"), (0.5, "p=0.5"), (0.25, "p=0.25")):
        out[key] = trainer.images_per_second(p, a.steps)
    if dinov2:
        out["forward"] = dinov2_forward(a)
        return out
    # Grid: K runs one after another, each its own model and optimizer.
    t = time.perf_counter()
    for k in range(a.grid):
        run = Trainer(a.backbone, 100 + k)
        run.model.train()
        for _ in range(a.steps):
            run.step(1.0)
    out["grid"] = a.grid * a.steps * BATCH / (time.perf_counter() - t)
    if a.training_only:
        return out
    # Coalitions: plain per-coalition forward of --test-size images.
    trainer.model.eval()
    c = trainer.cfg
    xe = torch.randn(a.test_size, c.num_channels, c.image_size, c.image_size)
    with torch.no_grad():
        trainer.set_mask([True] * c.num_hidden_layers)
        trainer.model(pixel_values=xe[:100])
        k = 16
        t = time.perf_counter()
        for _ in range(k):
            trainer.set_mask([trainer.rng.random() < 0.5 for _ in range(c.num_hidden_layers)])
            trainer.model(pixel_values=xe)
        out["coalition"] = k / (time.perf_counter() - t)
    return out


def dinov2_forward(a):
    """Images/s of the plain Dinov2Model's no-grad forward of --test-size images, batches of 500."""
    torch.manual_seed(1)
    model = Dinov2Model.from_pretrained(a.backbone).eval()
    c = model.config
    x = torch.randn(a.test_size, c.num_channels, a.image_size, a.image_size)
    with torch.no_grad():
        model(pixel_values=x[:EVAL_BATCH])
        t = time.perf_counter()
        for _ in range(2):
            for start in range(0, a.test_size, EVAL_BATCH):
                model(pixel_values=x[start:start + EVAL_BATCH])
        return 2 * a.test_size / (time.perf_counter() - t)


def model_type(backbone):
    """model_type of the backbone folder's config.json ("bert", "vit", ...)."""
    with open(os.path.join(backbone, "config.json")) as f:
        return json.load(f).get("model_type")


class BertTrainer:
    """One PEFT LoRA run on BertModel, on a fixed random batch of token ids (throughput only)."""

    def __init__(self, backbone, seed, length):
        torch.manual_seed(seed)
        base = BertModel.from_pretrained(backbone, add_pooling_layer=False)
        self.cfg = base.config
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"])
        self.model = get_peft_model(base, lora)
        layers = sum(isinstance(m, LoraLayer) for m in self.model.modules())
        if layers != 2 * self.cfg.num_hidden_layers:
            sys.exit(f"PEFT put LoRA on {layers} modules, expected query and value of "
                     f"{self.cfg.num_hidden_layers} blocks")
        hidden = self.cfg.hidden_size
        self.head = torch.randn(BERT_CLASSES, hidden) / math.sqrt(hidden)  # frozen: no requires_grad
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        self.ids = torch.randint(1000, self.cfg.vocab_size, (BATCH, length))
        self.mask = torch.ones_like(self.ids)
        self.types = torch.zeros_like(self.ids)
        self.y = torch.randint(0, BERT_CLASSES, (BATCH,))

    def step(self):
        hidden = self.model(input_ids=self.ids, attention_mask=self.mask,
                            token_type_ids=self.types).last_hidden_state
        m = self.mask.unsqueeze(-1).to(hidden.dtype)
        feats = (hidden * m).sum(1) / m.sum(1)
        loss = torch.nn.functional.cross_entropy(feats @ self.head.T, self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def sequences_per_second(self, warmup, steps):
        self.model.train()
        for _ in range(warmup):
            self.step()
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * BATCH / (time.perf_counter() - t)


def bert_round(a):
    """PyTorch + PEFT figures of one round on a BERT backbone."""
    out = {}
    for length in a.lengths:
        out[f"lora{length}"] = BertTrainer(a.backbone, 0, length).sequences_per_second(a.warmup, a.steps)
    torch.manual_seed(1)
    model = BertModel.from_pretrained(a.backbone, add_pooling_layer=False).eval()
    ids = torch.randint(1000, model.config.vocab_size, (BERT_FORWARD_BATCH, 128))
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    with torch.no_grad():
        for _ in range(max(1, a.warmup // 2)):
            model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        t = time.perf_counter()
        for _ in range(a.steps):
            model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out["forward"] = a.steps * BERT_FORWARD_BATCH / (time.perf_counter() - t)
    return out


def number_after(label, text):
    """The first number after `label` at the start of a line of copra-lab's bench output."""
    m = re.search(r"^" + re.escape(label) + r"\s+([0-9.]+)", text, re.M)
    if not m:
        sys.exit(f"copra-lab bench printed no line starting with '{label}':\n{text}")
    return float(m.group(1))


def copra_bench(a, binary, *global_args):
    """A function that runs `binary GLOBAL_ARGS bench ARGS...` with --threads threads, returning stdout."""
    env = {"RAYON_NUM_THREADS": str(a.threads), "PATH": "/usr/bin:/bin"}

    def bench(*args):
        cmd = [binary, *global_args, "bench", *args, "--quiet", "--runs-dir", a.runs_dir]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return bench


def copra_bert_round(a, binary):
    """copra-lab's BERT figures of one round: `bench train` with the PyTorch side's LoRA settings."""
    bench = copra_bench(a, binary, "--backbone", a.backbone)
    out = {}
    for length in a.lengths:
        train = bench("train", "--task", a.task, "--max-length", str(length), "--batch-size", str(BATCH),
                      "--rank", "8", "--alpha", "16", "--scaling", "standard", "--targets", "query,value",
                      "--dropout", "0", "--bench-steps", str(a.steps))
        out[f"lora{length}"] = number_after("lora", train)
    if not a.training_only:
        # No-grad evaluation of the test split at 128 tokens (copra-lab batches as its measures do).
        try:
            fwd = bench("forward", "--task", a.task, "--max-length", "128", "--test-size", "256",
                        "--bench-steps", "2")
            out["forward"] = number_after("frozen forward, no grad", fwd)
        except subprocess.CalledProcessError:
            out["forward"] = float("nan")  # a copra-lab older than `bench forward`
    return out


def copra_dinov2_round(a, binary):
    """copra-lab's DINOv2 figures of one round: `bench train` and `bench forward` at --image-size."""
    bench = copra_bench(a, binary, "--backbone", a.backbone)
    task = ["--task", a.task, "--image-size", str(a.image_size)]
    train = bench("train", *task, "--bench-steps", str(a.steps))
    out = {"lora": number_after("lora", train), "p=0.5": number_after("p = 0.5", train),
           "p=0.25": number_after("p = 0.25", train)}
    if not a.training_only:
        fwd = bench("forward", *task, "--test-size", str(a.test_size), "--bench-steps", "2")
        out["forward"] = number_after("frozen forward, no grad", fwd)
    return out


def copra_round(a, binary):
    """copra-lab's figures of one round, from its `bench` command."""
    bench = copra_bench(a, binary)

    train = bench("train", "--bench-steps", str(a.steps))
    try:
        grid = bench("grid", "--bench-steps", str(a.steps), "--grid-runs", str(a.grid))
        grid = number_after(f"grid of {a.grid} runs together", grid)
    except subprocess.CalledProcessError:
        grid = float("nan")  # a copra-lab older than `bench grid`
    out = {
        "lora": number_after("lora", train),
        "p=0.5": number_after("p = 0.5", train),
        "p=0.25": number_after("p = 0.25", train),
        "grid": grid,
    }
    if not a.training_only:
        # The adapter's training length does not change evaluation speed: a short run suffices.
        coal = bench("coalitions", "--steps", "40", "--test-size", str(a.test_size))
        out["coalition"] = number_after("plain (full forward, adapters merged)", coal)
        out["walk"] = number_after("prefix walk over all 2^n coalitions", coal)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backbone")
    ap.add_argument("--copra", action="append", default=[],
                    help="copra-lab binary: run its benchmarks interleaved with PyTorch's (give twice to compare two builds)")
    ap.add_argument("--task", help="copra-lab's text task for a BERT backbone, e.g. tab:FILE (texts of 128+ tokens); "
                    "its image task for a DINOv2 one (default idx:/usr/share/datasets/fashion-mnist)")
    ap.add_argument("--image-size", type=int, default=28, help="DINOv2 backbone: image side in pixels (default 28)")
    ap.add_argument("--runs-dir", default="/tmp/copra-bench-runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, help="timed steps (default 60; 5 for a BERT backbone)")
    ap.add_argument("--warmup", type=int, help="untimed steps first, BERT backbone only (default 3; ViT: 5)")
    ap.add_argument("--rounds", type=int, help="rounds, median reported (default 2; 1 for a BERT backbone)")
    ap.add_argument("--grid", type=int, default=8)
    ap.add_argument("--lengths", default="128,64", help="BERT training sequence lengths, comma-separated")
    ap.add_argument("--test-size", type=int, default=1000, help="images per coalition evaluation")
    ap.add_argument("--training-only", action="store_true", help="skip the evaluation figures (coalitions; BERT: frozen forward)")
    a = ap.parse_args()
    a.lengths = [int(x) for x in a.lengths.split(",")]
    bert = model_type(a.backbone) == "bert"
    dinov2 = model_type(a.backbone) == "dinov2"
    if dinov2:
        a.task = a.task or "idx:/usr/share/datasets/fashion-mnist"
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    if bert and a.copra and not a.task:
        sys.exit("--copra on a BERT backbone needs --task (e.g. tab:.../20newsgroups-train.tab)")
    a.steps = a.steps or (5 if bert else 20 if dinov2 else 60)
    a.warmup = 3 if a.warmup is None else a.warmup
    a.rounds = a.rounds or (1 if bert else 2)
    if bert:  # no load report for the pooler weights that add_pooling_layer=False leaves out
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=FutureWarning)  # PEFT calls a deprecated transformers name
    torch.set_num_threads(a.threads)
    ours, theirs = [[] for _ in a.copra], []
    for r in range(a.rounds):
        for i, binary in enumerate(a.copra):
            one = copra_bert_round if bert else copra_dinov2_round if dinov2 else copra_round
            ours[i].append(one(a, binary))
            print(f"round {r + 1} copra-lab {binary}: {ours[i][-1]}", flush=True)
        theirs.append(bert_round(a) if bert else torch_round(a))
        print(f"round {r + 1} PyTorch:   {theirs[-1]}", flush=True)
    med = lambda rows, k: statistics.median(row[k] for row in rows)
    rows = [
        *((f"LoRA training, sequences/s (batch 32, length {n})", f"lora{n}", f"lora{n}") for n in a.lengths),
        (f"frozen forward, sequences/s (batch {BERT_FORWARD_BATCH}, length 128, no grad)", "forward", "forward"),
    ] if bert else [
        (f"LoRA training, images/s (batch 32, {a.image_size} px)", "lora", "lora"),
        ("constant participation p = 0.5", "p=0.5", "p=0.5"),
        ("p = 0.25", "p=0.25", "p=0.25"),
        (f"frozen forward, images/s ({a.test_size:,} images, no grad)", "forward", "forward"),
    ] if dinov2 else [
        ("LoRA training, images/s (batch 32)", "lora", "lora"),
        ("constant participation p = 0.5", "p=0.5", "p=0.5"),
        ("p = 0.25", "p=0.25", "p=0.25"),
        (f"grid of {a.grid} runs, total images/s (PyTorch: one after another)", "grid", "grid"),
        (f"one coalition, plain forward of {a.test_size:,} test images, per s", "coalition", "coalition"),
        ("exact enumeration (prefix walk), coalitions/s, vs PyTorch's plain forward", "walk", "coalition"),
    ]
    print(f"\ntorch {torch.__version__}, {a.threads} threads, median of {a.rounds} rounds")
    names = [f"copra-lab {i + 1}" for i in range(len(ours))] if len(ours) > 1 else ["copra-lab"] * len(ours)
    for i, binary in enumerate(a.copra):
        print(f"{names[i]}: {binary}")
    print("| figure | " + "".join(f"{n} | " for n in names) + "PyTorch + PEFT | "
          + "".join(f"ratio {n} | " for n in names) + "\n|---|" + "---|" * (2 * len(ours) + 1))
    for label, ok, tk in rows:
        if tk not in theirs[0]:
            continue
        t = med(theirs, tk)
        mine = [med(rows_i, ok) if ok in rows_i[0] else float("nan") for rows_i in ours]
        if ok != tk and not ours:
            continue
        # NaN: that copra-lab has no such benchmark (e.g. no `bench grid`, or no BERT evaluation)
        cells = ["–" if o != o else f"{o:,.1f}" for o in mine]
        ratios = ["–" if o != o else f"**{o / t:.2f}**" for o in mine]
        print(f"| {label} | " + "".join(f"{c} | " for c in cells) + f"{t:,.1f} | "
              + "".join(f"{r} | " for r in ratios))


if __name__ == "__main__":
    main()
