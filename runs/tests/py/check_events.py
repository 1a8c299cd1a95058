"""Reads each seed directory's TensorBoard event file with TensorBoard's own reader and
checks every scalar in it against the seed's CSVs: the same (tag, step) pairs, each once,
and the CSV's value as float32, bit for bit.

Usage: python check_events.py SEED_DIR... ; prints `N scalars checked in DIR` per
directory and exits 1 listing the first mismatches.
"""
import csv
import glob
import math
import os
import sys

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def f32(text):
    return np.float32(float(text))


def expected(seed_dir):
    """(tag, step) -> float32 value (None: present, value not in a CSV), and the tags
    whose value only needs a relation checked afterwards."""
    want = {}

    def put(tag, step, value):
        key = (tag, int(step))
        assert key not in want, f"two CSV rows give {key}"
        want[key] = value

    for r in rows(os.path.join(seed_dir, "episodes.csv")):
        put("charts/episodic_return", r["step"], f32(r["return"]))
        put("charts/episodic_length", r["step"], f32(r["length"]))
    for r in rows(os.path.join(seed_dir, "eval.csv")):
        for col, tag in [("mean", "eval/return"), ("std", "eval/return_std"),
                         ("min", "eval/return_min"), ("max", "eval/return_max")]:
            put(tag, r["step"], f32(r[col]))
    metrics = rows(os.path.join(seed_dir, "metrics.csv"))
    td3 = any(r["q2"] != "" for r in metrics)
    for r in metrics:
        s = r["step"]
        put("charts/SPS", s, None)
        put("quant/saturated", s, f32(r["saturated"]))
        put("quant/wrapped", s, f32(r["wrapped"]))
        if r["train_return"] != "":
            put("charts/train_return", s, f32(r["train_return"]))
        if r["actor_loss"] != "":
            put("losses/actor_loss", s, f32(r["actor_loss"]))
        if r["critic_loss"] != "":
            put("losses/qf1_values", s, f32(r["q1"]))
            if td3:
                put("losses/qf2_values", s, f32(r["q2"]))
                # CleanRL's qf_loss: the mean of the two critics' losses.
                put("losses/qf_loss", s, np.float32(float(r["critic_loss"]) / 2))
                put("losses/qf1_loss", s, None)
                put("losses/qf2_loss", s, None)
            else:
                put("losses/qf1_loss", s, f32(r["critic_loss"]))
    for r in rows(os.path.join(seed_dir, "quant.csv")):
        base = f"quant/{r['layer']}/{r['class']}/"
        for col, what in [("saturated", "saturations"), ("wrapped", "wraps"),
                          ("max_abs", "max_abs"), ("ema", "ema"), ("p999", "p999")]:
            put(base + what, r["step"], f32(r[col]))
    return want, metrics, td3


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def check(seed_dir):
    files = glob.glob(os.path.join(seed_dir, "events.out.tfevents.*"))
    if len(files) != 1:
        return [f"{seed_dir}: {len(files)} event files, expected 1"], 0
    got = {}
    problems = []
    versions = 0
    # The raw events as written (EventFileLoader would migrate simple_value to tensors).
    for ev in LegacyEventFileLoader(files[0]).Load():
        if ev.HasField("file_version"):
            versions += 1
            continue
        for v in ev.summary.value:
            key = (v.tag, ev.step)
            if key in got:
                problems.append(f"{key} appears twice")
            if not v.HasField("simple_value"):
                problems.append(f"{key} is not a simple_value scalar")
            got[key] = np.float32(v.simple_value)
    if versions != 1:
        problems.append(f"{versions} file_version events, expected 1")
    want, metrics, td3 = expected(seed_dir)
    for key in sorted(set(want) - set(got)):
        problems.append(f"{key} is in the CSVs but not in the event file")
    for key in sorted(set(got) - set(want)):
        problems.append(f"{key} is in the event file but in no CSV")
    for key in sorted(set(want) & set(got)):
        w = want[key]
        if w is not None and not same(float(w), float(got[key])):
            problems.append(f"{key}: event {got[key]!r}, CSV {w!r}")
    for r in metrics:
        s = int(r["step"])
        sps = got.get(("charts/SPS", s))
        if sps is not None and not (sps > 0 and math.isfinite(sps)):
            problems.append(f"charts/SPS at {s} is {sps}")
        if td3 and r["critic_loss"] != "":
            pair = [got.get((f"losses/qf{i}_loss", s)) for i in (1, 2)]
            if None not in pair:
                total, csv_total = float(pair[0]) + float(pair[1]), float(r["critic_loss"])
                if abs(total - csv_total) > 1e-6 * max(1.0, abs(csv_total)):
                    problems.append(f"step {s}: qf1_loss + qf2_loss = {total}, critic_loss {csv_total}")
    # TensorBoard's own accumulator (what the dashboard shows) sees every tag.
    acc = event_accumulator.EventAccumulator(seed_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    missing = {t for t, _ in want} - tags
    if missing:
        problems.append(f"TensorBoard's EventAccumulator lacks tags {sorted(missing)[:5]}")
    for t in ["charts/episodic_return", "eval/return"]:
        n = len(acc.Scalars(t)) if t in tags else 0
        if n != sum(1 for k in want if k[0] == t):
            problems.append(f"EventAccumulator shows {n} points of {t}")
    return problems, len(got)


def main():
    bad = 0
    for d in sys.argv[1:]:
        problems, n = check(d)
        for p in problems[:20]:
            print(f"{d}: {p}")
        bad += len(problems)
        print(f"{n} scalars checked in {d}" + (f", {len(problems)} problems" if problems else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
