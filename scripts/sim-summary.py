#!/usr/bin/env python3
"""Merge the simulator's per-range JSON summaries (build/sim-results/*.json) into one.

Usage: sim-summary.py [DIR]   (default: build/sim-results). Prints JSON on stdout; exits 1 if
any seed had a violation, 2 if no summary was found.
"""
import glob
import json
import os
import sys


def main() -> int:
    folder = sys.argv[1] if len(sys.argv) > 1 else "build/sim-results"
    files = sorted(glob.glob(os.path.join(folder, "seeds_*.json")))
    if not files:
        print(f"sim-summary: no summaries in {folder}", file=sys.stderr)
        return 2
    total = {"seeds_run": 0, "completed": 0, "failed_explicitly": 0, "migrations_done": 0,
             "migrations_failed_explicitly": 0, "bytes_checked": 0, "simulated_ms": 0,
             "violation_count": 0}
    faults, failures, failing, ranges = {}, {}, [], []
    for path in files:
        with open(path, encoding="utf-8") as f:
            part = json.load(f)
        ranges.append([part["first_seed"], part["first_seed"] + part["seeds_run"] - 1])
        for key in total:
            total[key] += part[key]
        for key, value in part["faults"].items():
            faults[key] = faults.get(key, 0) + value
        for key, value in part["explicit_failures"].items():
            failures[key] = failures.get(key, 0) + value
        failing += part["failing_seeds"]
    total["seed_ranges"] = sorted(ranges)
    total["explicit_failures"] = failures
    total["faults"] = dict(sorted(faults.items()))
    total["failing_seeds"] = sorted(failing)
    print(json.dumps(total, indent=2))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
