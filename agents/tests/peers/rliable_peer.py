"""rliable's numbers for the score sets on stdin (agents/tests/rliable.rs).

Input JSON: {"seed": S, "reps": R, "iqm": {name: [[run scores of task t] for t]},
             "poi": [[name_x, name_y], ...]}
Output JSON per IQM set and per PoI pair: rliable's point estimate and 95% percentile CI
(`get_interval_estimates`, numpy's global RNG seeded with S), and the index draws rliable
consumed (replayed from the same seed: its bootstraps call np.random.choice(n, (n, T))
once per array per replicate), so the caller can recompute the interval from them.
"""
import json
import sys

import numpy as np
from rliable import library, metrics


def matrix(tasks):
    # rliable's layout: (num_runs, num_tasks)
    return np.array(tasks, dtype=np.float64).T


def main():
    spec = json.load(sys.stdin)
    seed, reps = spec["seed"], spec["reps"]
    out = {"iqm": {}, "poi": []}
    for name, tasks in spec["iqm"].items():
        scores = matrix(tasks)
        np.random.seed(seed)
        draws = [np.random.choice(scores.shape[0], scores.shape).ravel() for _ in range(reps)]
        np.random.seed(seed)
        point, ci = library.get_interval_estimates(
            {name: scores}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
        )
        out["iqm"][name] = {
            "estimate": float(np.asarray(point[name]).ravel()[0]),
            "ci": [float(v) for v in np.asarray(ci[name]).ravel()],
            "draws": np.concatenate(draws).tolist(),
        }
    for x_name, y_name in spec["poi"]:
        x, y = matrix(spec["iqm"][x_name]), matrix(spec["iqm"][y_name])
        np.random.seed(seed)
        draws = []
        for _ in range(reps):
            draws.append(np.random.choice(x.shape[0], x.shape).ravel())
            draws.append(np.random.choice(y.shape[0], y.shape).ravel())
        np.random.seed(seed)
        point, ci = library.get_interval_estimates(
            {"pair": [x, y]},
            lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
            reps=reps,
        )
        out["poi"].append(
            {
                "x": x_name,
                "y": y_name,
                "estimate": float(np.asarray(point["pair"]).ravel()[0]),
                "ci": [float(v) for v in np.asarray(ci["pair"]).ravel()],
                "draws": np.concatenate(draws).tolist(),
            }
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
