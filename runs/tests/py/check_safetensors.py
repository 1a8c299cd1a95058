"""Reproduces the actor's integer forward pass in numpy from a seed directory's
weights.safetensors (raw codes and the formats in its metadata) and compares it, code
for code, with the expected outputs of an export's vectors.txt (fixar's golden integer
inference).

Usage: python check_safetensors.py SEED_DIR VECTORS_TXT
Prints `N passed, M failed`; exits 1 on any mismatch.
"""
import math
import os
import re
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


class Fmt:
    """An ap_fixed<W,I,Q,O> / ap_ufixed<...> format string of the metadata."""

    def __init__(self, text):
        m = re.fullmatch(r"(ap_u?fixed)<(\d+),(-?\d+),(\w+),(\w+)>", text)
        if not m:
            raise ValueError(f"not a format: {text}")
        self.signed = m.group(1) == "ap_fixed"
        self.w, self.i = int(m.group(2)), int(m.group(3))
        self.q, self.o = m.group(4), m.group(5)
        self.frac = self.w - self.i
        if self.signed:
            self.lo, self.hi = -(1 << (self.w - 1)), (1 << (self.w - 1)) - 1
        else:
            self.lo, self.hi = 0, (1 << self.w) - 1

    def quantize(self, num, frac):
        """The code of the exact value num * 2^-frac (an int), assigned to this format."""
        s = frac - self.frac
        if s <= 0:
            r = num << -s
        else:
            q, rem, half = num >> s, num & ((1 << s) - 1), 1 << (s - 1)
            neg = num < 0
            up = {
                "AP_TRN": False,
                "AP_TRN_ZERO": neg and rem > 0,
                "AP_RND": rem >= half,
                "AP_RND_ZERO": rem > half or (rem == half and neg),
                "AP_RND_MIN_INF": rem > half,
                "AP_RND_INF": rem > half or (rem == half and not neg),
                "AP_RND_CONV": rem > half or (rem == half and q % 2 == 1),
            }[self.q]
            r = q + int(up)
        if self.lo <= r <= self.hi:
            return r
        if self.o == "AP_SAT":
            return min(max(r, self.lo), self.hi)
        if self.o == "AP_SAT_ZERO":
            return 0
        if self.o == "AP_SAT_SYM":
            return min(max(r, -self.hi if self.signed else 0), self.hi)
        if self.o == "AP_WRAP":
            r &= (1 << self.w) - 1
            return r - (1 << self.w) if self.signed and r > self.hi else r
        raise ValueError(f"overflow mode {self.o}")

    def from_float(self, v):
        """The code of the float v (exactly as a binary fraction) in this format."""
        num, den = float(v).as_integer_ratio()
        frac = den.bit_length() - 1  # den is a power of two
        return self.quantize(num, frac)


def forward(tensors, meta, x):
    """Actor codes for input codes x (Python ints), layer by layer."""
    cur = list(x)
    for name in meta["actor.layers"].split(","):
        xf = Fmt(meta[f"{name}.input.format"])
        wf, bf = Fmt(meta[f"{name}.weight.format"]), Fmt(meta[f"{name}.bias.format"])
        pf, af = Fmt(meta[f"{name}.preact.format"]), Fmt(meta[f"{name}.activation.format"])
        w = tensors[f"{name}.weight.codes"].astype(object)  # [out, in], exact Python ints
        b = tensors[f"{name}.bias.codes"].astype(object)
        # The exact sum x W^T + b at max(fx + fw, fb) fraction bits, then one cast.
        frac = max(xf.frac + wf.frac, bf.frac)
        xs = np.array(cur, dtype=object)
        acc = (w @ xs) * (1 << (frac - xf.frac - wf.frac)) + b * (1 << (frac - bf.frac))
        z = [pf.quantize(int(a), frac) for a in acc]
        act = meta[f"{name}.activation"]
        if act == "relu":
            cur = [af.quantize(max(v, 0), pf.frac) for v in z]
        elif act == "identity":
            cur = [af.quantize(v, pf.frac) for v in z]
        elif act == "tanh":
            scale = tensors[f"{name}.tanh_scale"].astype(np.float64)
            offset = tensors[f"{name}.tanh_offset"].astype(np.float64)
            # tanh(z) * scale + offset in double precision (libm's tanh, as fixar's), then
            # the activation format's rounding and overflow.
            cur = [af.from_float(math.tanh(v / 2.0 ** pf.frac) * s + o)
                   for v, s, o in zip(z, scale, offset)]
        else:
            raise ValueError(f"{name}: activation {act}")
    return cur


def main():
    seed_dir, vectors = sys.argv[1], sys.argv[2]
    path = os.path.join(seed_dir, "weights.safetensors")
    tensors = load_file(path)
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
    # The float values are the codes scaled by their formats.
    for name in meta["actor.layers"].split(","):
        for cls in ("weight", "bias"):
            f = Fmt(meta[f"{name}.{cls}.format"])
            codes = tensors[f"{name}.{cls}.codes"].astype(np.float64)
            if not np.array_equal(codes * 2.0 ** -f.frac, tensors[f"{name}.{cls}"]):
                print(f"{name}.{cls}: values are not codes * 2^-{f.frac}")
                sys.exit(1)
    lines = open(vectors).read().split("\n")
    count, obs_dim, act_dim = map(int, lines[0].split())
    passed = failed = 0
    for line in lines[1 : count + 1]:
        v = [int(t) for t in line.split()]
        x, want = v[:obs_dim], v[obs_dim:]
        got = forward(tensors, meta, x)
        if got == want:
            passed += 1
        else:
            failed += 1
            if failed <= 5:
                print(f"input {x}: numpy {got}, fixar {want}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or passed == 0 else 0)


if __name__ == "__main__":
    main()
