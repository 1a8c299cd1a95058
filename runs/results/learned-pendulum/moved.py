"""Integer bits moved by `learned` against `range` at each rung: for every seed and every
forward cast (input of fc1; weight, bias, pre-activation, activation of every layer) of
the online networks (actor, critic1, critic2), |I_learned - I_range| from two
formats.json files (`fixar qat` writes them). Usage:

    python moved.py LEARNED_FORMATS.json RANGE_FORMATS.json

prints per width: casts compared, casts that differ, summed |dI|, and the actor's share.
"""

import json
import re
import sys

CLASSES = ["input", "weight", "bias", "preact", "activation"]


def int_bits(fmt):
    m = re.match(r"ap_u?fixed<(\d+),(-?\d+)", fmt)
    return int(m.group(2)) if m else None


def main(learned_path, range_path):
    learned = json.load(open(learned_path))["learned"]
    rng = json.load(open(range_path))["range"]
    print("| width | casts compared | learned != range | sum abs dI | of which actor |")
    print("|---:|---:|---:|---:|---:|")
    for w in sorted(learned, key=lambda k: -int(k[1:])):
        n = diff = moved = actor = 0
        for seed, layers in learned[w].items():
            for layer, classes in layers.items():
                if "_target" in layer:
                    continue
                for c in CLASSES:
                    if c == "input" and not layer.endswith(".fc1"):
                        continue
                    a = int_bits(classes.get(c, "float32"))
                    b = int_bits(rng.get(w, {}).get(seed, {}).get(layer, {}).get(c, "float32"))
                    if a is None or b is None:
                        continue
                    n += 1
                    d = abs(a - b)
                    diff += d > 0
                    moved += d
                    if layer.startswith("actor"):
                        actor += d
        print(f"| {w[1:]} | {n} | {diff} | {moved} | {actor} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
