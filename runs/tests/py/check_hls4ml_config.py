"""Checks an export's hls4ml_config.json (`fixar export --target hls4ml`) against the
configuration schema hls4ml documents, and its formats against weights.safetensors.

hls4ml's configuration (fastmachinelearning.org/hls4ml, "Configuration"): top level
`Backend`, `IOType`, `ProjectName`, `OutputDir`, `HLSConfig`; in `HLSConfig`, `Model`
(`Precision`, `ReuseFactor`, `Strategy`) and `LayerName` -> layer name -> `Precision`
-> `weight` / `bias` / `result` (and `accum`) as `ap_fixed<W,I[,Q,O]>` strings. Every
precision string is also parsed by hls4ml's own backend (convert_precision_string), and
the dense layers' weight/bias (width, integer bits, sign) and result precisions must be the formats a weights.safetensors
(the export's, or the one given: the training run's) records for the actor's layers (`<L>.weight.format`, `.bias.format`, `.preact.format`),
each activation's result the layer's `.activation.format`, and `obs` the first input's.

Usage: python check_hls4ml_config.py EXPORT_DIR [WEIGHTS_SAFETENSORS]
Prints `ok: N layers` or the problems, one a line; exits 1 on any.
"""
import json
import os
import re
import sys

from safetensors import safe_open

import hls4ml

AP = re.compile(r"ap_u?fixed<\d+,-?\d+(,AP_[A-Z_]+){0,2}>")
PRECISION_KEYS = {"weight", "bias", "result", "accum"}


def main(export, weights=None):
    with open(os.path.join(export, "hls4ml_config.json")) as f:
        config = json.load(f)
    with safe_open(weights or os.path.join(export, "weights.safetensors"), framework="np") as f:
        meta = f.metadata()
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(what)
        return cond

    for key in ["Backend", "IOType", "ProjectName", "OutputDir", "HLSConfig"]:
        need(key in config, f"no top-level {key}")
    hls = config.get("HLSConfig", {})
    model = hls.get("Model", {})
    for key in ["Precision", "ReuseFactor", "Strategy"]:
        need(key in model, f"HLSConfig.Model has no {key}")
    backend = hls4ml.backends.get_backend(config.get("Backend", "Vitis"))

    def parse(where, text):
        if not need(isinstance(text, str) and AP.fullmatch(text), f"{where}: {text!r} is no ap_fixed string"):
            return None
        t = backend.convert_precision_string(text)
        need(isinstance(t, hls4ml.model.types.FixedPrecisionType), f"{where}: hls4ml reads {text} as {t}")
        return t

    for k, v in model.get("Precision", {}).items():
        parse(f"Model.Precision.{k}", v)
    layers = hls.get("LayerName", {})
    for name, layer in layers.items():
        if not need(isinstance(layer, dict) and isinstance(layer.get("Precision"), dict), f"{name}: no Precision"):
            continue
        prec = layer["Precision"]
        need(set(prec) <= PRECISION_KEYS, f"{name}: Precision keys {sorted(prec)}")
        need("result" in prec, f"{name}: no result precision")
        for k, v in prec.items():
            parse(f"{name}.Precision.{k}", v)

    def width(text):
        """(signed, W, I) of a format string (training's may name AP_STOCHASTIC, which
        is not an ap_fixed mode)."""
        m = re.match(r"ap_(u?)fixed<(\d+),(-?\d+)", text or "")
        return m and (m.group(1) == "", int(m.group(2)), int(m.group(3)))

    # The formats of weights.safetensors, layer by layer.
    same = lambda where, got, want: need(got == want, f"{where}: {got} but the weights say {want}")
    names = meta["actor.layers"].split(",")
    if need("obs" in layers, "no input layer obs"):
        same("obs.result", layers["obs"]["Precision"].get("result"), meta[f"{names[0]}.input.format"])
    expected = {"obs"}
    for full in names:
        short = full.rsplit(".", 1)[-1]
        act = f"{short}_{meta[f'{full}.activation']}"
        expected |= {short, act}
        if not need(short in layers and act in layers, f"{full}: no {short} or {act} in LayerName"):
            continue
        p = layers[short]["Precision"]
        for cls in ["weight", "bias"]:
            # Stored constants: the training's rounding mode (stochastic) plays no part.
            same(f"{short}.{cls}", width(p.get(cls)), width(meta[f"{full}.{cls}.format"]))
        same(f"{short}.result", p.get("result"), meta[f"{full}.preact.format"])
        same(f"{act}.result", layers[act]["Precision"].get("result"), meta[f"{full}.activation.format"])
    need(set(layers) == expected, f"LayerName holds {sorted(layers)}, want {sorted(expected)}")

    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"ok: {len(layers)} layers")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
