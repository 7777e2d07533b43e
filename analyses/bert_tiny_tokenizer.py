"""Writes tests/fixtures/bert-tiny/model/tokenizer.json: a 200-token WordPiece tokenizer in the
BERT layout (BertNormalizer lower-casing, BertPreTokenizer, `[CLS] $A [SEP]`, [PAD] = 0,
[UNK] = 1, [CLS] = 2, [SEP] = 3, [MASK] = 4), built with Hugging Face `tokenizers`, so that text
tasks run end to end on the tiny random BERT without downloaded assets.

Usage: python analyses/bert_tiny_tokenizer.py [MODEL_DIR]   # default tests/fixtures/bert-tiny/model
"""
import os
import string
import sys

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an and or of to in on is are was be it this that with for as at by from not no yes "
    "cat cats dog dogs mouse mice bird fish horse cow sheep chase chases eat eats run runs sleep "
    "red blue green black white big small fast slow happy sad good bad hot cold new old "
    "car cars bus train road city house tree river sea sky sun moon star rain snow wind "
    "game games team teams ball goal win wins lose score play plays player match season "
    "computer computers disk drive file files program code data memory screen window software "
    "god church faith belief religion bible christ atheism moral truth "
    "space orbit launch rocket nasa shuttle planet mission earth"
).split()


def main(model_dir):
    vocab = SPECIALS + list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase] + list(".,!?'-")
    vocab += [w for w in WORDS if w not in vocab]
    vocab = vocab[:200]
    assert len(vocab) <= 200, len(vocab)
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    # As the MiniLM file does: fixed padding to 128 and truncation, which copra-lab must override.
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=128)
    tok.enable_truncation(max_length=128)
    os.makedirs(model_dir, exist_ok=True)
    tok.save(f"{model_dir}/tokenizer.json")
    enc = tok.encode("The cat chases a mouse, zebras!")
    print(len(vocab), "tokens;", enc.tokens[:12], enc.ids[:12])


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(f"{here}/../tests/fixtures/bert-tiny/model"))
