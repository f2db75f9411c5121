"""An independent reference of all-MiniLM-L6-v2 for the project's Burn encoder: BERT written
from the paper and config.json in NumPy (float64), on the same safetensors weights, and the
tokenizer.json read by Hugging Face's `tokenizers`. Writes tests/fixtures/minilm/reference.json:
for each sentence its token ids, the mean-pooled vector (before and after L2 normalisation),
and every token's final state at 24 evenly spaced dimensions.

    python3 scripts/reference/minilm_reference.py [MODEL_DIR]   # after scripts/fetch-minilm.sh
"""

import json
import math
import pathlib
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models/all-MiniLM-L6-v2"
OUT = ROOT / "tests/fixtures/minilm/reference.json"
DIMS = list(range(0, 384, 16))  # the dimensions of per-token states kept

SENTENCES = [
    "",
    "sora is sky",
    "a red circle moving right",
    "A maroon globe gliding north!",
    "the bag is green and slides up",
    "an ankle boot in red sliding to the left",
    "a cobalt bead plunging, then soaring; heading south.",
    "Ochre, olive, indigo & cerulean: colours (mostly).",
    "a triangle that drifts towards the top",
    "naïve café résumé — accents are stripped",
    "ünïcödé wörds and CAPITALS",
    "12 squares, 3.5 circles and 100% of the 2nd frame",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "tab\tseparated\nand new lines",
    "a slab, a brick, a spike",
    "the quick brown fox jumps over the lazy dog",
    "emoji 🙂 and 中文 characters",
    "x",
    "THE YELLOW SQUARE IS MOVING DOWN",
    "a sneaker, a sandal and a shirt, all in cyan, going left",
    " ".join(["word"] * 100) + " " + " ".join(["colour", "motion"] * 25),  # 150 words: cut to 128 tokens
    "hyphen-ated and apostrophe's words",
]


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    # BERT's "gelu": the exact one, x Φ(x).
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def encode(w, cfg, ids):
    n = len(ids)
    heads = cfg["num_attention_heads"]
    hidden = cfg["hidden_size"]
    d = hidden // heads
    eps = cfg["layer_norm_eps"]
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda name, v: v @ w[p + name + ".weight"].T + w[p + name + ".bias"]
        q = lin("attention.self.query", x).reshape(n, heads, d).transpose(1, 0, 2)
        k = lin("attention.self.key", x).reshape(n, heads, d).transpose(1, 0, 2)
        v = lin("attention.self.value", x).reshape(n, heads, d).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attn = scores / scores.sum(-1, keepdims=True)
        context = (attn @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = layer_norm(
            lin("attention.output.dense", context) + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        h = gelu(lin("intermediate.dense", x))
        x = layer_norm(
            lin("output.dense", h) + x,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
            eps,
        )
    return x


def main():
    cfg = json.loads((MODEL / "config.json").read_text())
    weights = {k: v.astype(np.float64) for k, v in load_file(str(MODEL / "model.safetensors")).items()
               if v.dtype == np.float32}
    tokenizer = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(128)
    cases = []
    for text in SENTENCES:
        ids = tokenizer.encode(text).ids
        states = encode(weights, cfg, ids)
        pooled = states.mean(0)
        cases.append({
            "text": text,
            "ids": ids,
            "pooled": [round(float(v), 7) for v in pooled],
            "normalised": [round(float(v), 7) for v in pooled / np.linalg.norm(pooled)],
            "states": [[round(float(s[j]), 7) for j in DIMS] for s in states],
        })
    OUT.write_text(json.dumps({"dims": DIMS, "cases": cases}, ensure_ascii=False) + "\n")
    print(f"{len(cases)} sentences → {OUT}")


if __name__ == "__main__":
    main()
