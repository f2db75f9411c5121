"""What all-MiniLM-L6-v2 knows of the unseen words of `dit-infer eval --unseen-words`: for each
unseen colour, noun and motion, which training word its reading is nearest to (cosine), by the
sentence's mean-pooled vector and by the word's own token states, in the sentence
"a {colour} {shape} moving {direction}". A word whose nearest training word is the right one can
be carried over by a DiT conditioned on the encoder; one whose nearest word is another cannot,
whatever the DiT learns. Uses the NumPy BERT of minilm_reference.py.

    python3 scripts/reference/minilm_neighbours.py [MODEL_DIR]   # after scripts/fetch-minilm.sh
"""

import json

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

import minilm_reference as reference

# Each unseen word (crates/dit-data/src/unseen.rs) and the training word it means.
COLOURS = {
    "crimson": "red", "scarlet": "red", "emerald": "green", "jade": "green",
    "cobalt": "blue", "sapphire": "blue", "lemon": "yellow", "golden": "yellow",
    "fuchsia": "magenta", "pink": "magenta", "turquoise": "cyan", "aqua": "cyan",
}
NOUNS = {
    "globe": "circle", "orb": "circle", "tile": "square", "slab": "square",
    "wedge": "triangle", "pyramid": "triangle",
}
MOTIONS = {
    "rising": "moving up", "climbing north": "moving up", "falling": "moving down",
    "sinking south": "moving down", "gliding west": "moving left",
    "travelling westward": "moving left", "gliding east": "moving right",
    "travelling eastward": "moving right",
}


def main():
    cfg = json.loads((reference.MODEL / "config.json").read_text())
    weights = {
        k: v.astype(np.float64)
        for k, v in load_file(str(reference.MODEL / "model.safetensors")).items()
    }
    tokenizer = Tokenizer.from_file(str(reference.MODEL / "tokenizer.json"))
    tokenizer.no_padding()

    def read(sentence, word):
        """The unit pooled vector of `sentence` and the unit mean state of `word`'s pieces."""
        encoding = tokenizer.encode(sentence)
        states = reference.encode(weights, cfg, encoding.ids)
        start = sentence.index(word)
        pieces = [
            i for i, (a, b) in enumerate(encoding.offsets)
            if b > a and a >= start and b <= start + len(word)
        ]
        unit = lambda v: v / np.linalg.norm(v)
        return unit(states.mean(0)), unit(states[pieces].mean(0))

    def table(title, unseen, sentence):
        known = sorted(set(unseen.values()))
        readings = {w: read(sentence(w), w) for w in known}
        print(f"| {title} | means | nearest by pooled vector | nearest by its token states |")
        print("|---|---|---|---|")
        hits = [0, 0]
        for word, meaning in unseen.items():
            pooled, token = read(sentence(word), word)
            nearest = []
            for which, v in enumerate((pooled, token)):
                best = max(known, key=lambda k: float(v @ readings[k][which]))
                hits[which] += best == meaning
                nearest.append(best if best == meaning else f"**{best}**")
            print(f"| {word} | {meaning} | {nearest[0]} | {nearest[1]} |")
        n = len(unseen)
        print(f"\nright: {hits[0]}/{n} by pooled vector, {hits[1]}/{n} by token states\n")

    table("colour", COLOURS, lambda c: f"a {c} circle moving up")
    table("noun", NOUNS, lambda s: f"a red {s} moving up")
    table("motion", MOTIONS, lambda m: f"a red circle {m}")


if __name__ == "__main__":
    main()
