"""Builds the hls4ml model of a fixar actor exported with `fixar export --target hls4ml`.

Reads hls4ml_config.json (hls4ml's conversion config: per-layer Precision) and
weights.safetensors beside this script, rebuilds the actor as a PyTorch module whose
layer names are the config's (obs -> fc1 -> fc1_relu -> ... -> fcN -> fcN_tanh), and
converts it with hls4ml.converters.convert_from_pytorch_model.

  python build_hls4ml.py            writes the HLS project to the config's OutputDir
  python build_hls4ml.py --check    also compiles hls4ml's C++ simulation and compares
                                    every layer's output on the test vectors with fixar's
                                    codes in layers.txt; prints `N passed, M failed`

The action is cast(tanh(z) * scale + offset) per output (scale, offset in the weights
file as <layer>.tanh_scale / .tanh_offset): hls4ml's fcN_tanh is its table tanh alone,
so --check reports how far it is from fixar's tanh before the scale, and does not count it.
"""
import collections
import json
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file

import hls4ml

HERE = os.path.dirname(os.path.abspath(__file__))


def frac_bits(fmt):
    """W - I of an ap_fixed<W,I,...> string."""
    w, i = fmt[fmt.index("<") + 1 :].split(",")[:2]
    return int(w) - int(i.rstrip(">"))


def load():
    with open(os.path.join(HERE, "hls4ml_config.json")) as f:
        config = json.load(f)
    path = os.path.join(HERE, "weights.safetensors")
    tensors = load_file(path)
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
    return config, tensors, meta


def actor_module(tensors, meta):
    """The actor as a PyTorch module named like the config's layers."""
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "identity": torch.nn.Identity}
    mods = collections.OrderedDict()
    for name in meta["actor.layers"].split(","):
        short = name.rsplit(".", 1)[-1]
        w = torch.from_numpy(tensors[f"{name}.weight"])  # [out, in]
        lin = torch.nn.Linear(w.shape[1], w.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(torch.from_numpy(tensors[f"{name}.bias"]))
        act = meta[f"{name}.activation"]
        mods[short] = lin
        mods[f"{short}_{act}"] = acts[act]()

    class Actor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for k, m in mods.items():
                self.add_module(k, m)

        def forward(self, obs):
            x = obs
            for k in mods:
                x = getattr(self, k)(x)
            return x

    return Actor()


def convert(config, tensors, meta, trace=False):
    hls_config = dict(config["HLSConfig"], InputShape=config["InputShape"])
    if trace:
        hls_config["LayerName"] = {
            k: dict(v, Trace=True) for k, v in hls_config["LayerName"].items()
        }
    return hls4ml.converters.convert_from_pytorch_model(
        actor_module(tensors, meta),
        output_dir=os.path.join(HERE, config["OutputDir"]),
        project_name=config["ProjectName"],
        backend=config["Backend"],
        io_type=config["IOType"],
        hls_config=hls_config,
    )


def check(config, tensors, meta):
    layer_cfg = config["HLSConfig"]["LayerName"]
    with open(os.path.join(HERE, "vectors.txt")) as f:
        lines = f.read().split("\n")
    count, obs_dim, _ = map(int, lines[0].split())
    fx = frac_bits(layer_cfg["obs"]["Precision"]["result"])
    x = np.array([[int(t) * 2.0**-fx for t in line.split()[:obs_dim]] for line in lines[1 : count + 1]])
    want = collections.defaultdict(dict)  # layer -> vector -> codes
    with open(os.path.join(HERE, "layers.txt")) as f:
        for line in f:
            v, layer, kind, *codes = line.split()
            name = layer if kind == "preact" else None
            if name is None:
                name = next(k for k in layer_cfg if k.startswith(layer + "_"))
            want[name][int(v)] = [int(c) for c in codes]
    model = convert(config, tensors, meta, trace=True)
    _, trace = model.trace(np.ascontiguousarray(x))
    passed = failed = 0
    for name, by_vector in want.items():
        frac = frac_bits(layer_cfg[name]["Precision"]["result"])
        got = np.asarray(trace[name]).reshape(count, -1)
        if name.endswith("_tanh"):
            # hls4ml's table tanh, before the action's scale and offset.
            lo = f"{name}: hls4ml's table tanh differs from fixar's tanh (before scale/offset)"
            out = meta["actor.layers"].split(",")[-1]
            scale = tensors[f"{out}.tanh_scale"].astype(np.float64)
            offset = tensors[f"{out}.tanh_offset"].astype(np.float64)
            ours = np.array([by_vector[v] for v in range(count)]) * 2.0**-frac
            dev = np.max(np.abs(got * scale + offset - ours)) / 2.0**-frac
            print(f"{lo} by at most {dev:.0f} LSB of the output format once scaled")
            continue
        for v in range(count):
            codes = [int(round(g * 2.0**frac)) for g in got[v]]
            if codes == by_vector[v]:
                passed += 1
            else:
                failed += 1
                if failed <= 5:
                    print(f"vector {v}, {name}: hls4ml {codes}, fixar {by_vector[v]}")
    print(f"{passed} passed, {failed} failed")
    return failed == 0 and passed > 0


def main():
    config, tensors, meta = load()
    if "--check" in sys.argv[1:]:
        sys.exit(0 if check(config, tensors, meta) else 1)
    model = convert(config, tensors, meta)
    model.write()
    print(f"wrote the hls4ml project to {os.path.join(HERE, config['OutputDir'])}")


if __name__ == "__main__":
    main()
