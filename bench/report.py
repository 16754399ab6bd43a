#!/usr/bin/env python3
"""Write the M-TCP performance report from a benchmark results directory.

Usage: python3 bench/report.py RESULTS_DIR [--out docs/performance.md] [--plots-dir docs/perf]
                               [--no-plots]

RESULTS_DIR holds what bench/run.sh measured: machine.json (required) and, each optional,
micro.json, oneway.json, bulk.json, latency.json, migration.json, rate.json, conns.json and profile.md.
The report opens with how to reproduce the run and a table of the performance targets (met or
missed, and by how much), then has one section per measurement with its table, its plot (PNG,
drawn with matplotlib's Agg backend when matplotlib is installed) and a line on the method.
A measurement whose file is missing says "not measured in this run".

Exit status: 0 on success, 1 when RESULTS_DIR or machine.json is missing or a file is malformed
(the message names the file and key), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
NOT_MEASURED = "not measured in this run"
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


class ReportError(Exception):
    """A missing or malformed results file; the message names the file and the key."""


# ----------------------------------------------------------------------------------------------
# Reading the results: every value carries its file and key path for error messages.


class Node:
    """A value read from a results file, with where it came from."""

    def __init__(self, value: Any, file: str, path: str = ""):
        self.value, self.file, self.path = value, file, path

    def shown(self) -> str:
        """The value for an error message, shortened."""
        text = json.dumps(self.value)
        return text if len(text) <= 40 else text[:37] + "..."

    def fail(self, message: str):
        where = f"{self.file}: {self.path}" if self.path else self.file
        raise ReportError(f"{where}: {message}")

    def _child(self, key: str | int, value: Any) -> Node:
        if isinstance(key, int):
            path = f"{self.path}[{key}]"
        else:
            path = f"{self.path}.{key}" if self.path else key
        return Node(value, self.file, path)

    def _object(self) -> dict:
        if not isinstance(self.value, dict):
            self.fail(f"expected an object, found {type(self.value).__name__}")
        return self.value

    def __getitem__(self, key: str) -> Node:
        """A required key."""
        obj = self._object()
        if key not in obj:
            self.fail(f"missing key '{key}'")
        return self._child(key, obj[key])

    def get(self, key: str) -> Node | None:
        """An optional key (absent or null gives None)."""
        obj = self._object()
        return None if obj.get(key) is None else self._child(key, obj[key])

    def text_or(self, key: str, default: str) -> str:
        """An optional string key."""
        node = self.get(key)
        return default if node is None else node.text()

    def flag(self, key: str) -> bool:
        """An optional boolean key, false when absent."""
        node = self.get(key)
        return node is not None and node.value is True

    def items(self, nonempty: bool = True) -> list[Node]:
        if not isinstance(self.value, list):
            self.fail(f"expected a list, found {type(self.value).__name__}")
        if nonempty and not self.value:
            self.fail("expected a non-empty list")
        return [self._child(i, v) for i, v in enumerate(self.value)]

    def num(self, minimum: float | None = None) -> float:
        v = self.value
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(f"expected a number, found {self.shown()}")
        if minimum is not None and v < minimum:
            self.fail(f"expected a number >= {minimum:g}, found {v:g}")
        return float(v)

    def integer(self, minimum: int | None = None) -> int:
        v = self.num(minimum)
        if v != int(v):
            self.fail(f"expected a whole number, found {v:g}")
        return int(v)

    def text(self, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(self.value, str):
            self.fail(f"expected a string, found {self.shown()}")
        if choices and self.value not in choices:
            self.fail(f"expected one of {', '.join(choices)}, found {self.shown()}")
        return self.value

    def nums(self, minimum: float | None = None) -> list[float]:
        return [n.num(minimum) for n in self.items()]


def load_json(results: Path, name: str) -> Node | None:
    """The parsed file, or None when it does not exist."""
    path = results / name
    if not path.exists():
        return None
    try:
        return Node(json.loads(path.read_text(encoding="utf-8")), name)
    except json.JSONDecodeError as e:
        raise ReportError(f"{name}: not valid JSON: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{name}: cannot read: {e}") from None


def unique(items: list[Node], key: Callable[[Node], Any], describe: Callable[[Any], str]) -> None:
    """Fails on the first item whose key repeats an earlier one."""
    seen = set()
    for item in items:
        k = key(item)
        if k in seen:
            item.fail(f"duplicate entry for {describe(k)}")
        seen.add(k)


# ----------------------------------------------------------------------------------------------
# Number formatting.


def fmt_sig(v: float) -> str:
    """About three significant figures, thousands separated."""
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def fmt_scaled(v: float, units: list[tuple[float, str]]) -> str:
    """v in the largest unit it reaches (units from largest to smallest)."""
    for factor, suffix in units:
        if abs(v) >= factor:
            break
    return f"{fmt_sig(v / factor)}{suffix}"


def fmt_count(v: float) -> str:
    return f"{v:,.0f}"


def fmt_mbit(v: float) -> str:
    return f"{v:,.0f}"


def fmt_us(v: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{v:{sign},.0f}" if abs(v) >= 100 else f"{v:{sign}.1f}"


def fmt_ratio(v: float) -> str:
    return f"{v:.2f}"


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


def fmt_pct(v: float) -> str:
    return f"{v:.1f}%" if v < 1 else f"{v:.0f}%"


def fmt_size(n: float) -> str:
    """A byte count such as a state size: 0 B, 512 B, 16 KiB, 1.5 MiB."""
    for factor, unit in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if n >= factor:
            return f"{n / factor:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n:.0f} B"


def fmt_kib(n: float) -> str:
    return f"{n / KIB:.1f} KiB" if n >= KIB else f"{n:.0f} B"


def fmt_duration_ns(ns: float) -> str:
    return fmt_scaled(ns, [(1e9, " s"), (1e6, " ms"), (1e3, " µs"), (1, " ns")])


def fmt_bytes_rate(v: float) -> str:
    return fmt_scaled(v, [(GIB, " GiB/s"), (MIB, " MiB/s"), (KIB, " KiB/s"), (1, " B/s")])


def fmt_items_rate(v: float) -> str:
    return fmt_scaled(v, [(1e9, " G/s"), (1e6, " M/s"), (1e3, " k/s"), (1, "/s")])


def fmt_range(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(min(values))}–{fmt(max(values))}"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


# ----------------------------------------------------------------------------------------------
# Markdown pieces.


def md_table(headers: list[str], rows: list[list[Any]], align: str) -> list[str]:
    """A GitHub-flavoured table; align has one 'l' or 'r' per column."""
    rule = {"l": "---", "r": "---:"}

    def line(cells):
        return "| " + " | ".join(" ".join(str(c).split()).replace("|", "\\|") for c in cells) + " |"

    rules = "| " + " | ".join(rule[a] for a in align) + " |"
    return [line(headers), rules] + [line(r) for r in rows]


OP_SIGN = {">=": "≥", "<": "<", "<=": "≤"}


@dataclass
class Target:
    """One performance target and its measured value (None when not measured)."""

    name: str
    op: str  # ">=", "<" or "<="
    threshold: float
    value: float | None
    fmt: Callable[[float], str]

    @property
    def goal(self) -> str:
        return f"{OP_SIGN[self.op]} {self.fmt(self.threshold)}"

    def met(self) -> bool:
        v, t = self.value, self.threshold
        return {">=": v >= t, "<": v < t, "<=": v <= t}[self.op]

    def row(self) -> list[str]:
        if self.value is None:
            return [self.name, self.goal, "—", NOT_MEASURED]
        measured = self.fmt(self.value)
        if self.met():
            return [self.name, self.goal, measured, "met"]
        gap = abs(self.value - self.threshold) / self.threshold * 100
        word = "short" if self.op == ">=" else "over"
        return [self.name, self.goal, measured,
                f"**missed**: {measured} vs {self.goal}, {fmt_pct(gap)} {word}"]


@dataclass
class Section:
    title: str
    body: list[str]
    targets: list[Target] = field(default_factory=list)


class Plotter:
    """PNG plots in the plots directory. plot() gives the markdown that shows a plot; the plots
    are drawn by draw_all() once the whole report has been read without error."""

    def __init__(self, plots_dir: Path, out_dir: Path, enabled: bool):
        self.plots_dir, self.out_dir, self.enabled = plots_dir, out_dir, enabled
        self.pending: list[tuple[Path, Callable[[Any], Any]]] = []
        self.stale: list[Path] = []
        self.plt = None
        if enabled:
            try:
                import matplotlib
                matplotlib.use("Agg")
                import matplotlib.pyplot as plt
                self.plt = plt
            except ImportError:
                print(f"report.py: matplotlib is not importable by {sys.executable} (Debian's "
                      "python3-matplotlib is for /usr/bin/python3); writing the report without "
                      "plots", file=sys.stderr)

    def plot(self, name: str, alt: str, draw: Callable[[Any], Any]) -> list[str]:
        """Plans NAME.png, drawn by draw(pyplot) -> figure; the markdown lines showing it."""
        if not self.enabled:
            return []
        if self.plt is None:
            return ["", "_Plot not drawn: matplotlib is not installed._"]
        path = self.plots_dir / f"{name}.png"
        self.pending.append((path, draw))
        return ["", f"![{alt}]({Path(os.path.relpath(path, self.out_dir)).as_posix()})"]

    def forget(self, name: str) -> None:
        """Plans removing NAME.png, left by an earlier run that measured what this one did not."""
        if self.enabled:
            self.stale.append(self.plots_dir / f"{name}.png")

    def draw_all(self) -> None:
        for path in self.stale:
            path.unlink(missing_ok=True)
        if self.pending:
            self.plots_dir.mkdir(parents=True, exist_ok=True)
        for path, draw in self.pending:
            fig = draw(self.plt)
            fig.tight_layout()
            fig.savefig(path, dpi=110, metadata={"Software": None})
            self.plt.close(fig)


def label_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    """The finishing touches every plot shares."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize="small")


def median_of(nodes: list[Node], key: str) -> float:
    return statistics.median(n[key].num(0) for n in nodes)


# ----------------------------------------------------------------------------------------------
# Micro-benchmarks (Google Benchmark JSON).

TIME_UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def micro_results(doc: Node) -> tuple[dict[str, dict], int]:
    """Per benchmark (in order of first appearance): real/cpu ns, bytes/s, items/s or error.
    Uses Google Benchmark's median aggregate when the run had repetitions, else the median of
    the iteration entries. Also returns the most repetitions seen."""
    iterations: dict[str, list[dict]] = {}
    aggregated: dict[str, dict] = {}
    for b in doc["benchmarks"].items(nonempty=False):
        name = b["name"].text()
        run_name = b.text_or("run_name", name)
        is_aggregate = b.text_or("run_type", "iteration") == "aggregate"
        if is_aggregate and b.text_or("aggregate_name", "") != "median":
            continue
        if b.flag("error_occurred"):
            entry = {"error": b.text_or("error_message", "failed")}
        else:
            unit = b["time_unit"].text(tuple(TIME_UNIT_NS))
            entry = {"real_ns": b["real_time"].num(0) * TIME_UNIT_NS[unit],
                     "cpu_ns": b["cpu_time"].num(0) * TIME_UNIT_NS[unit]}
            for counter in ("bytes_per_second", "items_per_second"):
                if b.get(counter) is not None:
                    entry[counter] = b[counter].num(0)
        iterations.setdefault(run_name, [])
        if is_aggregate:
            aggregated[run_name] = entry
        else:
            iterations[run_name].append(entry)

    results = {}
    for run_name, entries in iterations.items():
        if run_name in aggregated:
            results[run_name] = aggregated[run_name]
            continue
        errors = [e["error"] for e in entries if "error" in e]
        if errors:
            results[run_name] = {"error": errors[0]}
            continue
        results[run_name] = {
            key: statistics.median(e[key] for e in entries)
            for key in ("real_ns", "cpu_ns", "bytes_per_second", "items_per_second")
            if all(key in e for e in entries)
        }
    repetitions = max((len(e) for e in iterations.values()), default=0)
    return results, repetitions


def build_micro(doc: Node, plotter: Plotter) -> Section:
    results, repetitions = micro_results(doc)
    if not results:
        return Section("Micro-benchmarks", ["The benchmark file lists no benchmarks."])
    groups: dict[str, list[tuple[str, dict]]] = {}  # by the name's prefix before '/'
    for run_name, r in results.items():
        group, _, args = run_name.partition("/")
        groups.setdefault(group, []).append((args, r))
    rows = []
    for group, members in groups.items():
        for i, (args, r) in enumerate(members):
            first = f"`{group}`" if i == 0 else ""
            if "error" in r:
                rows.append([first, args, f"error: {r['error']}", "", "", ""])
                continue
            rows.append([first, args, fmt_duration_ns(r["real_ns"]), fmt_duration_ns(r["cpu_ns"]),
                         fmt_bytes_rate(r["bytes_per_second"]) if "bytes_per_second" in r else "",
                         fmt_items_rate(r["items_per_second"]) if "items_per_second" in r else ""])
    how = ("Google Benchmark, one process, no network. Time is wall-clock time per iteration, "
           "CPU its CPU time; throughput comes from the benchmark's byte and item counters.")
    if repetitions > 1:
        how += f" Medians over {repetitions} repetitions."
    body = [how, ""]
    context = doc.get("context")
    if context is not None:
        if context.text_or("library_build_type", "") == "debug":
            body += ["> Google Benchmark reports its own library as a debug build; the measured "
                     "code is built as given under How to reproduce.", ""]
        if context.flag("cpu_scaling_enabled"):
            body += ["> CPU frequency scaling was enabled during the run; expect extra noise.", ""]
    body += md_table(["Benchmark", "Arguments", "Time", "CPU", "Bytes/s", "Items/s"], rows,
                     "llrrrr")
    return Section("Micro-benchmarks", body)


# ----------------------------------------------------------------------------------------------
# Bulk throughput.


def conns_label(conns: int | None) -> str:
    return "" if conns is None else f", {plural(conns, 'conn')}"


BULK_GOAL = 0.95  # M-TCP / plain, ratio of the medians


def bulk_target(conns: int | None, ratio: float | None) -> Target:
    return Target(f"Bulk throughput{conns_label(conns)}: M-TCP / plain", ">=", BULK_GOAL, ratio,
                  fmt_ratio)


@dataclass
class BulkRun:
    conns: int
    bytes_per_conn: float
    mbit_s: dict[str, list[float]]  # per transport ("plain", "mtcp"), one figure per repeat

    def median(self, transport: str) -> float:
        return statistics.median(self.mbit_s[transport])

    @property
    def ratio(self) -> float:
        return self.median("mtcp") / self.median("plain")


BULK_TRANSPORTS = {"plain": "plain TCP", "mtcp": "M-TCP"}


def build_bulk(doc: Node, plotter: Plotter) -> Section:
    nodes = doc["runs"].items()
    unique(nodes, lambda r: r["conns"].integer(1), lambda c: f"conns {c}")
    runs = []
    for r in nodes:
        run = BulkRun(r["conns"].integer(1), r["bytes_per_conn"].num(0),
                      {t: r[f"{t}_mbit_s"].nums(0) for t in BULK_TRANSPORTS})
        if run.median("plain") <= 0:
            r["plain_mbit_s"].fail("median is 0, so there is no ratio")
        runs.append(run)
    runs.sort(key=lambda r: r.conns)

    rows = [[r.conns, fmt_size(r.bytes_per_conn)]
            + [cell for t in BULK_TRANSPORTS
               for cell in (fmt_mbit(r.median(t)), fmt_range(r.mbit_s[t], fmt_mbit))]
            + [fmt_ratio(r.ratio)] for r in runs]
    repeats = max(len(v) for r in runs for v in r.mbit_s.values())

    def draw(plt):
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        xs = range(len(runs))
        width = 0.38
        for offset, (t, label) in zip((-width / 2, width / 2), BULK_TRANSPORTS.items()):
            meds = [r.median(t) for r in runs]
            err = [[r.median(t) - min(r.mbit_s[t]) for r in runs],
                   [max(r.mbit_s[t]) - r.median(t) for r in runs]]
            ax.bar([x + offset for x in xs], meds, width, yerr=err, capsize=4, label=label)
        ax.set_xticks(list(xs), [str(r.conns) for r in runs])
        label_axes(ax, "Bulk throughput on loopback", "connections", "Mbit/s (median, min–max)")
        return fig

    body = [f"Each repeat moves the given bytes per connection over loopback, M-TCP (no "
            f"migration) and plain TCP runs alternated; medians and min–max over "
            f"{plural(repeats, 'repeat')}, the ratio is of the two medians from the same run. "
            f"Target: M-TCP ≥ {BULK_GOAL} × plain.", ""]
    body += md_table(["Conns", "Bytes/conn", "Plain median (Mbit/s)", "Plain min–max",
                      "M-TCP median (Mbit/s)", "M-TCP min–max", "M-TCP / plain"], rows, "rrrrrrr")
    body += plotter.plot("bulk", "Bulk throughput, M-TCP against plain TCP", draw)
    return Section("Bulk throughput", body, [bulk_target(r.conns, r.ratio) for r in runs])


# ----------------------------------------------------------------------------------------------
# One-way bulk against iperf3 (kernel TCP).

ONEWAY_GOALS = {"mtcp": 0.8, "proxy": 0.5}  # median / iperf3's median, in the same run
ONEWAY_DIRECTIONS = {"client-sends": "client sends", "server-sends": "server sends (-R)"}
ONEWAY_TRANSPORTS = {"iperf3": "iperf3 (kernel TCP)", "mtcp": "M-TCP", "plain": "M-TCP member, plain TCP",
                     "proxy": "mtcp-proxy", "mtcp_compare": "M-TCP, --verify compare"}


def oneway_target(transport: str, direction: str, ratio: float | None) -> Target:
    who = "M-TCP" if transport == "mtcp" else "mtcp-proxy"
    return Target(f"One-way bulk, {ONEWAY_DIRECTIONS[direction]}: {who} / iperf3", ">=",
                  ONEWAY_GOALS[transport], ratio, fmt_ratio)


def oneway_missing() -> list[Target]:
    return [oneway_target(t, d, None) for d in ONEWAY_DIRECTIONS for t in ONEWAY_GOALS]


def build_oneway(doc: Node, plotter: Plotter) -> Section:
    nbytes = doc["bytes"].num(1)
    version = doc.get("iperf3")
    has_iperf = version is not None and version.value is not None
    dirs = doc["directions"].items()
    unique(dirs, lambda d: d["direction"].text(tuple(ONEWAY_DIRECTIONS)), str)
    rows, targets, repeats = [], [], 0
    medians: dict[str, dict[str, float]] = {}
    for d in dirs:
        direction = d["direction"].text(tuple(ONEWAY_DIRECTIONS))
        rates = {t: d["mbit_s"][t].nums(0) for t in ONEWAY_TRANSPORTS if d["mbit_s"].get(t) is not None}
        repeats = max([repeats] + [len(v) for v in rates.values()])
        med = {t: statistics.median(v) for t, v in rates.items()}
        medians[direction] = med
        anchor = med.get("iperf3")
        if anchor is not None and anchor <= 0:
            d["mbit_s"]["iperf3"].fail("median is 0, so there is no ratio")
        for t, v in rates.items():
            ratio = fmt_ratio(med[t] / anchor) if anchor else "—"
            rows.append([ONEWAY_DIRECTIONS[direction], ONEWAY_TRANSPORTS[t], fmt_mbit(med[t]),
                         fmt_range(v, fmt_mbit), ratio])
        for t in ONEWAY_GOALS:
            targets.append(oneway_target(t, direction, med[t] / anchor if anchor and t in med else None))

    def draw(plt):
        fig, ax = plt.subplots(figsize=(7.2, 3.8))
        names = [t for t in ONEWAY_TRANSPORTS if any(t in m for m in medians.values())]
        width = 0.8 / max(1, len(names))
        for k, t in enumerate(names):
            xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(medians))]
            ax.bar(xs, [m.get(t, 0) for m in medians.values()], width, label=ONEWAY_TRANSPORTS[t])
        ax.set_xticks(list(range(len(medians))), [ONEWAY_DIRECTIONS[d] for d in medians])
        label_axes(ax, "One-way bulk on loopback", "direction", "Mbit/s (median)")
        return fig

    anchor_note = (f"iperf3 ({version.text()}) is the anchor" if has_iperf else
                   "**iperf3 was not installed for this run**, so there is no anchor and no ratio "
                   "(scripts/setup.sh installs it)")
    body = [f"One connection moves {fmt_size(nbytes)} one way over loopback; {anchor_note}. "
            f"M-TCP is `mtcp-perf --verify none` against the `discard` service (client sends) or "
            f"the `source` service (`-R`, server sends), counting bytes as iperf3 does; "
            f"\"plain TCP\" is `mtcp-perf --plain` against the same member, and mtcp-proxy is "
            f"`mtcp-perf --plain` through `mtcp-proxy` to that member (a second loopback hop). "
            f"Each rate is the tool's `end.sum_received.bits_per_second`. The transports run "
            f"alternated in one run; medians and min–max over {plural(repeats, 'repeat')}, ratios "
            f"of the medians. Targets: M-TCP ≥ {ONEWAY_GOALS['mtcp']} × iperf3, mtcp-proxy ≥ "
            f"{ONEWAY_GOALS['proxy']} × iperf3.", ""]
    body += md_table(["Direction", "Transport", "Median (Mbit/s)", "Min–max", "/ iperf3"], rows, "llrrr")
    body += plotter.plot("oneway", "One-way bulk against iperf3", draw)
    return Section("One-way bulk against iperf3", body, targets)


# ----------------------------------------------------------------------------------------------
# Request/response latency.


LATENCY_GOAL_US = 10.0  # p50 of M-TCP − p50 of plain


def latency_target(conns: int | None, overhead: float | None) -> Target:
    return Target(f"Latency overhead{conns_label(conns)}: M-TCP − plain, p50", "<",
                  LATENCY_GOAL_US, overhead, lambda v: f"{fmt_us(v)} µs")


def build_latency(doc: Node, plotter: Plotter) -> Section:
    size = doc["size"].integer(0)
    runs = doc["runs"].items()
    unique(runs, lambda r: r["conns"].integer(1), lambda c: f"conns {c}")
    runs.sort(key=lambda r: r["conns"].integer(1))
    rows, targets, repeats = [], [], 0
    for r in runs:
        conns = r["conns"].integer(1)
        stats = {}
        for transport in ("plain", "mtcp"):
            per_repeat = r[transport].items()
            repeats = max(repeats, len(per_repeat))
            stats[transport] = {q: median_of(per_repeat, f"{q}_us") for q in ("p50", "p99")}
        over = {q: stats["mtcp"][q] - stats["plain"][q] for q in ("p50", "p99")}
        rows.append([conns] + [cell for q in ("p50", "p99") for cell in
                               (fmt_us(stats["plain"][q]), fmt_us(stats["mtcp"][q]),
                                fmt_us(over[q], signed=True))])
        targets.append(latency_target(conns, over["p50"]))
    body = [f"Request/response round trips of {size}-byte messages over loopback, M-TCP and "
            f"plain TCP runs alternated; p50 and p99 are medians over {plural(repeats, 'repeat')} "
            f"of each repeat's percentiles, overhead = M-TCP − plain. "
            f"Target: p50 overhead < {LATENCY_GOAL_US:g} µs.", ""]
    body += md_table(["Conns", "Plain p50 (µs)", "M-TCP p50 (µs)", "p50 overhead (µs)",
                      "Plain p99 (µs)", "M-TCP p99 (µs)", "p99 overhead (µs)"], rows, "rrrrrrr")
    return Section("Latency", body, targets)


# ----------------------------------------------------------------------------------------------
# Migration time against state size.

MODES = ("lazy", "eager")
MIGRATION_TIME_GOAL_US = {"lazy": 1000.0, "eager": 500.0}  # p50 at 16 KiB of state
FLOOR_SIZE = 16 * MIB  # the snapshot cap; the largest size measured counts if within 1 MiB of it
FLOOR_FACTOR = 2.0


def migration_time_target(mode: str, p50: float | None) -> Target:
    return Target(f"Migration time, {mode}, 16 KiB state: p50", "<",
                  MIGRATION_TIME_GOAL_US[mode], p50, fmt_ms)


SMALL_FLOOR_FACTOR = 4.0  # an empty state: p50 within this many times the floor


def migration_small_floor_target(mode: str, ratio: float | None) -> Target:
    return Target(f"Migration time, {mode}, empty state: p50 / floor", "<=",
                  SMALL_FLOOR_FACTOR, ratio, lambda v: f"{v:.2f}× floor")


def migration_floor_target(mode: str, ratio: float | None) -> Target:
    return Target(f"Migration time, {mode}, 16 MiB state: p50 / floor", "<=",
                  FLOOR_FACTOR, ratio, lambda v: f"{v:.2f}× floor")


def build_migration(doc: Node, plotter: Plotter) -> Section:
    points = doc["points"].items()
    unique(points, lambda p: (p["mode"].text(MODES), p["state_bytes"].integer(0)),
           lambda k: f"mode {k[0]} with state_bytes {k[1]}")
    by = {(p["mode"].text(MODES), p["state_bytes"].integer(0)): p for p in points}
    sizes = sorted({size for _, size in by})
    floor = {s: statistics.median(p["floor_us"].num(0) for (m, size), p in by.items() if size == s)
             for s in sizes}

    def stat(mode, size, key):
        p = by.get((mode, size))
        return None if p is None else p[key].num(0)

    def ratio(mode, size):
        p50 = stat(mode, size, "p50_us")
        return None if p50 is None or floor[size] <= 0 else p50 / floor[size]

    def cell(v, fmt):
        return "—" if v is None else fmt(v)

    rows = []
    for s in sizes:
        failed = sum(p["failed"].integer(0) for (m, size), p in by.items() if size == s)
        rows.append([fmt_size(s)]
                    + [cell(stat(m, s, k), fmt_us) for m in MODES for k in ("p50_us", "p99_us")]
                    + [fmt_us(floor[s])] + [cell(ratio(m, s), fmt_ratio) for m in MODES]
                    + [fmt_count(failed)])
    counts = sorted({p["count"].integer(0) for p in points})

    def draw(plt):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        nonzero = [s for s in sizes if s > 0]
        zero_x = min(nonzero) / 16 if nonzero else 1.0
        x_of = {s: (s if s > 0 else zero_x) for s in sizes}
        for mode, colour in zip(MODES, ("tab:blue", "tab:orange")):
            for key, style in (("p50_us", "-"), ("p99_us", "--")):
                pts = [(x_of[s], stat(mode, s, key)) for s in sizes if (mode, s) in by]
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=colour,
                            label=f"{mode} {key.removesuffix('_us')}")
        ax.plot([x_of[s] for s in sizes], [floor[s] for s in sizes], "-", marker="s",
                color="black", label="floor (plain TCP)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([x_of[s] for s in sizes], ["0" if s == 0 else fmt_size(s) for s in sizes])
        ax.minorticks_off()
        label_axes(ax, "Migration time against state size", "state size", "migration time (µs)")
        return fig

    count_text = (plural(counts[0], "migration") if len(counts) == 1
                  else f"{fmt_count(counts[0])}–{fmt_count(counts[-1])} migrations")
    body = [f"{count_text} per point on loopback; p50 and p99 of the migration time. The floor is "
            f"the median time to connect and move the same number of bytes over a fresh plain TCP "
            f"connection on the same loopback, the least any migration carrying that state could "
            f"take. Targets: lazy p50 < {fmt_ms(MIGRATION_TIME_GOAL_US['lazy'])} and eager p50 "
            f"< {fmt_ms(MIGRATION_TIME_GOAL_US['eager'])} at 16 KiB; an empty state within "
            f"{SMALL_FLOOR_FACTOR:g}× the floor; {fmt_size(FLOOR_SIZE)} within {FLOOR_FACTOR:g}× "
            f"the floor.", ""]
    body += md_table(["State", "Lazy p50 (µs)", "Lazy p99 (µs)", "Eager p50 (µs)",
                      "Eager p99 (µs)", "Floor (µs)", "Lazy p50 / floor", "Eager p50 / floor",
                      "Failed"], rows, "lrrrrrrrr")
    body += plotter.plot("migration", "Migration time against state size", draw)
    targets = [migration_time_target(m, stat(m, 16 * KIB, "p50_us")) for m in MODES]
    targets += [migration_small_floor_target(m, ratio(m, 0) if 0 in floor else None) for m in MODES]
    # A service's snapshot carries a few bytes of its own besides the state, so the largest
    # state a run can measure is a little under the cap.
    largest = sizes[-1] if sizes and sizes[-1] >= FLOOR_SIZE - MIB else None
    targets += [migration_floor_target(m, ratio(m, largest) if largest is not None else None)
                for m in MODES]
    return Section("Migration time", body, targets)


# ----------------------------------------------------------------------------------------------
# Eager transfer under bulk traffic.

EAGER_BULK_MODES = {"lazy": "lazy", "eager": "eager", "eager_ack": "eager, ack_after_replication"}
EAGER_BULK_RATIO_GOAL = 0.8  # eager's median throughput / lazy's, in the same run
EAGER_BULK_P50_GOAL_US = 5000.0


def eager_bulk_targets(ratio: float | None, p50: float | None) -> list[Target]:
    return [Target("Bulk echo throughput: eager / lazy", ">=", EAGER_BULK_RATIO_GOAL, ratio, fmt_ratio),
            Target("Eager migration under bulk traffic: p50", "<", EAGER_BULK_P50_GOAL_US, p50, fmt_ms)]


def percentile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def build_eager_bulk(doc: Node, plotter: Plotter) -> Section:
    modes = doc["modes"].items()
    unique(modes, lambda m: m["mode"].text(tuple(EAGER_BULK_MODES)), lambda k: f"mode {k}")
    by = {m["mode"].text(): m for m in modes}
    nbytes = doc["bytes"].integer(1)
    secs = doc["migrating_seconds"].num(0)
    every = doc["migrate_every_ms"].integer(1)
    lazy_med = statistics.median(by["lazy"]["mbit_s"].nums(0)) if "lazy" in by else None
    rows = []
    for name in EAGER_BULK_MODES:
        m = by.get(name)
        if m is None:
            continue
        rates = m["mbit_s"].nums(0)
        downs = [d.num(0) for d in m["downtimes_us"].items(nonempty=False)]
        med = statistics.median(rates)
        rows.append([EAGER_BULK_MODES[name], fmt_mbit(med), fmt_range(rates, fmt_mbit),
                     "—" if not lazy_med else fmt_ratio(med / lazy_med),
                     f"{statistics.median(m['repl_per_byte'].nums(0)):.2f}",
                     fmt_mbit(statistics.median(m["migrating_mbit_s"].nums(0))), fmt_count(len(downs)),
                     "—" if not downs else fmt_us(percentile(downs, 0.5)),
                     "—" if not downs else fmt_us(percentile(downs, 0.99)),
                     fmt_count(m["failed"].integer(0))])
    ratio = None
    if lazy_med and "eager" in by:
        ratio = statistics.median(by["eager"]["mbit_s"].nums(0)) / lazy_med
    p50 = None
    eager_downs = [d.num(0) for d in by["eager"]["downtimes_us"].items(nonempty=False)] if "eager" in by else []
    if eager_downs:
        p50 = percentile(eager_downs, 0.5)
    body = [f"Bulk echo through `mtcp-perf` (unpaced, every reply byte compared), one connection, "
            f"three members on loopback, the modes alternated in each repeat. Throughput: "
            f"{fmt_size(nbytes)} each way without migrations, medians and min–max over the repeats; "
            f"replication bytes are the members' `replication_bytes_sent` per byte of input. Then "
            f"{secs:g} s with a migration every {every} ms: throughput, and p50 and p99 of every "
            f"migration's time over all repeats. Targets: eager ≥ {EAGER_BULK_RATIO_GOAL:g} × "
            f"lazy, eager migration p50 < {fmt_ms(EAGER_BULK_P50_GOAL_US)}.", ""]
    body += md_table(["Mode", "Mbit/s", "Min–max", "/ lazy", "Replicated B per input B",
                      "Mbit/s migrating", "Migrations", "p50 (µs)", "p99 (µs)", "Failed"], rows,
                     "lrrrrrrrrr")
    return Section("Eager transfer under bulk traffic", body, eager_bulk_targets(ratio, p50))


# ----------------------------------------------------------------------------------------------
# Lazy transfer off a member starved of CPU.

STARVED_GOAL = 100.0  # % of the runs: the connection survives and a throughput migration moves it


def starved_target(pct: float | None, share: float | None) -> Target:
    at = "" if pct is None else f" to {pct:g}% of a core"
    return Target(f"Lazy, owner CPU-limited{at}: runs where the connection survives and the "
                  "throughput policy moves it", ">=", STARVED_GOAL, share, fmt_pct)


def build_starved(doc: Node, plotter: Plotter) -> Section:
    pct = doc["pct"].num(0)
    rate = doc["rate_mbit_s"].num(0)
    secs = doc["seconds"].num(0)
    at = doc["starved_at_s"].num(0)
    body = [f"Lazy transfer, bulk echo through `mtcp-perf` at {fmt_mbit(rate)} Mbit/s each way for "
            f"{secs:g} s, every byte compared, the client moved by its throughput policy only "
            f"(below 0.5 of its best rate for 3 windows of 250 ms). {at:g} s in, the member "
            f"serving the connection gets a cgroup v1 CPU quota of {pct:g}% of a core. A run "
            "counts when every byte came back and a throughput migration took the connection "
            f"off the starved member. Target: {STARVED_GOAL:g}% of the runs.", ""]
    skipped = doc.get("skipped")
    if skipped is not None:
        body.append(f"Skipped in this run: {skipped.text()}.")
        return Section("Lazy transfer off a starved member", body, [starved_target(pct, None)])
    runs = doc["runs"].items()
    rows = []
    good = 0
    for i, r in enumerate(runs):
        survived, moved = r.flag("survived"), r.flag("moved")
        good += survived and moved
        after = r.get("moved_after_s")
        failures = [f.text() for f in r["failures"].items(nonempty=False)]
        rows.append([i + 1, r["starved_member"].integer(1), "yes" if survived else f"**no**: {r.text_or('error', '')}",
                     "—" if after is None else f"{after.num(0):.2f} s", "yes" if moved else "**no**",
                     fmt_count(r["migrations_failed"].integer(0)), ", ".join(failures) or "—",
                     fmt_mbit(r["received_mbit_s"].num(0))])
    body += md_table(["Run", "Starved member", "Survived", "Moved after", "Moved", "Failed attempts",
                      "Why they failed", "Mbit/s received"], rows, "rrlrlrlr")
    return Section("Lazy transfer off a starved member", body, [starved_target(pct, 100.0 * good / len(runs))])


# ----------------------------------------------------------------------------------------------
# Migrations per second.

RATE_GOAL = 2000.0


def rate_target(best: tuple[str, int] | None, per_s: float | None) -> Target:
    where = "" if best is None else f" (best: {best[0]}, {plural(best[1], 'conn')})"
    return Target(f"Migration rate{where}", ">=", RATE_GOAL, per_s, lambda v: f"{fmt_count(v)}/s")


def build_rate(doc: Node, plotter: Plotter) -> Section:
    points = doc["points"].items()
    unique(points, lambda p: (p["mode"].text(MODES), p["conns"].integer(1)),
           lambda k: f"mode {k[0]} with conns {k[1]}")
    points.sort(key=lambda p: (MODES.index(p["mode"].text(MODES)), p["conns"].integer(1)))
    rows = [[p["mode"].text(), p["conns"].integer(1), fmt_count(p["per_s"].num(0)),
             fmt_us(p["p50_us"].num(0)), fmt_us(p["p99_us"].num(0)),
             fmt_count(p["failed"].integer(0)), f"{p['seconds'].num(0):.1f}"] for p in points]
    best = max(points, key=lambda p: p["per_s"].num(0))

    def draw(plt):
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        conns = sorted({p["conns"].integer(1) for p in points})
        for mode in MODES:
            pts = [(p["conns"].integer(1), p["per_s"].num(0))
                   for p in points if p["mode"].value == mode]
            if pts:
                ax.plot(*zip(*pts), "-", marker="o", label=mode)
        ax.axhline(RATE_GOAL, linestyle="--", color="tab:red",
                   label=f"target {fmt_count(RATE_GOAL)}/s")
        if conns[-1] / conns[0] >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(conns, [str(c) for c in conns])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        label_axes(ax, "Migrations per second", "connections migrating", "migrations/s")
        return fig

    body = ["Connections migrate back and forth between members for the given time; migrations "
            "per second over the whole run, p50 and p99 of each migration's time. "
            f"Target: ≥ {fmt_count(RATE_GOAL)} migrations/s at the best point.", ""]
    body += md_table(["Mode", "Conns", "Migrations/s", "p50 (µs)", "p99 (µs)", "Failed",
                      "Seconds"], rows, "lrrrrrr")
    body += plotter.plot("rate", "Migrations per second against connections", draw)
    best_at = (best["mode"].text(), best["conns"].integer(1))
    return Section("Migration rate", body, [rate_target(best_at, best["per_s"].num(0))])


# ----------------------------------------------------------------------------------------------
# Many idle connections.

CONNS_GOAL = 10000
PER_CONN_GOAL = 16 * KIB
TRANSPORTS = {"mtcp": "M-TCP", "tcp": "plain TCP"}


def conns_targets(alive: int | None, per_conn: float | None) -> list[Target]:
    return [Target("Idle M-TCP connections held by one member", ">=", CONNS_GOAL, alive, fmt_count),
            Target("Memory per idle M-TCP connection", "<", PER_CONN_GOAL, per_conn, fmt_kib)]


def build_conns(doc: Node, plotter: Plotter) -> Section:
    runs = doc["runs"].items()
    runs.sort(key=lambda r: (list(TRANSPORTS).index(r["transport"].text(tuple(TRANSPORTS))),
                             r["conns"].integer(1)))
    rows = [[TRANSPORTS[r["transport"].text()], fmt_count(r["conns"].integer(1)),
             fmt_count(r["opened"].integer(0)), fmt_count(r["alive_at_end"].integer(0)),
             f"{r['open_seconds'].num(0):.1f}",
             f"{r['member_rss_before_kib'].num(0) / KIB:,.1f}",
             f"{r['member_rss_hold_kib'].num(0) / KIB:,.1f}", fmt_kib(r["per_conn_bytes"].num())]
            for r in runs]
    mtcp = [r for r in runs if r["transport"].value == "mtcp"]
    largest = max(mtcp, key=lambda r: r["conns"].integer(1)) if mtcp else None
    if largest is None:
        targets = conns_targets(None, None)
    else:
        targets = conns_targets(largest["alive_at_end"].integer(0), largest["per_conn_bytes"].num())
    body = ["One member holds the connections idle; per connection is the growth of the member's "
            "resident memory while holding them divided by their number, for M-TCP and for plain "
            "TCP connections through the same member (its userspace bytes per connection). "
            f"Target: {fmt_count(CONNS_GOAL)} M-TCP connections at < {fmt_kib(PER_CONN_GOAL)} "
            f"each.", ""]
    body += md_table(["Transport", "Conns", "Opened", "Alive at end", "Open time (s)",
                      "RSS before (MiB)", "RSS holding (MiB)", "Per connection"], rows, "lrrrrrrr")
    return Section("Idle connections", body, targets)


# ----------------------------------------------------------------------------------------------
# The report.


@dataclass
class Measurement:
    file: str
    title: str
    build: Callable[[Node, Plotter], Section]
    targets_when_missing: Callable[[], list[Target]]
    plot: str | None = None


MEASUREMENTS = [
    Measurement("micro.json", "Micro-benchmarks", build_micro, list),
    Measurement("oneway.json", "One-way bulk against iperf3", build_oneway, oneway_missing, "oneway"),
    Measurement("bulk.json", "Bulk throughput", build_bulk, lambda: [bulk_target(None, None)],
                "bulk"),
    Measurement("latency.json", "Latency", build_latency, lambda: [latency_target(None, None)]),
    Measurement("migration.json", "Migration time", build_migration,
                lambda: [migration_time_target(m, None) for m in MODES]
                + [migration_small_floor_target(m, None) for m in MODES]
                + [migration_floor_target(m, None) for m in MODES], "migration"),
    Measurement("eager_bulk.json", "Eager transfer under bulk traffic", build_eager_bulk,
                lambda: eager_bulk_targets(None, None)),
    Measurement("starved.json", "Lazy transfer off a starved member", build_starved,
                lambda: [starved_target(None, None)]),
    Measurement("rate.json", "Migration rate", build_rate, lambda: [rate_target(None, None)],
                "rate"),
    Measurement("conns.json", "Idle connections", build_conns, lambda: conns_targets(None, None)),
]

MACHINE_KEYS = ("date", "git_commit", "command", "mode", "kernel", "cpu", "cores", "mem_gib",
                "repeat", "build", "seconds")


def read_machine(results: Path) -> dict[str, Any]:
    doc = load_json(results, "machine.json")
    if doc is None:
        raise ReportError(f"machine.json: missing from {results} (it is required)")
    m = {key: doc[key] for key in MACHINE_KEYS}
    return {**{k: m[k].text() for k in ("date", "git_commit", "command", "kernel", "cpu", "build")},
            "mode": m["mode"].text(("full", "short")), "cores": m["cores"].integer(1),
            "mem_gib": m["mem_gib"].num(0), "repeat": m["repeat"].integer(1),
            "seconds": m["seconds"].num(0)}


def fmt_run_time(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{seconds:,.0f} s" if minutes == 0 else f"{seconds:,.0f} s ({minutes} min {secs} s)"


def results_label(results: Path) -> str:
    """The results directory as the report names it: relative to the repository if inside it."""
    resolved = results.resolve()
    try:
        return resolved.relative_to(REPO).as_posix()
    except ValueError:
        return str(results)


def header(results: Path, m: dict[str, Any]) -> list[str]:
    lines = ["# M-TCP performance", "",
             f"_Generated by `bench/report.py` from `{results_label(results)}`; "
             f"do not edit by hand._", ""]
    if m["mode"] == "short":
        lines += ["> **Short run.** These figures come from the short form of the benchmarks (few "
                  "repeats, small sizes) and are not representative.", ""]
    lines += ["## How to reproduce", "", "```sh", m["command"], "```", "",
              f"- CPU: {m['cpu']} ({plural(m['cores'], 'core')})",
              f"- Memory: {m['mem_gib']:.1f} GiB",
              f"- Kernel: {m['kernel']}",
              f"- Date: {m['date']}",
              f"- Commit: `{m['git_commit']}`",
              f"- Build: {m['build']}",
              f"- Mode: {m['mode']}, {plural(m['repeat'], 'repeat')}",
              f"- Total run time: {fmt_run_time(m['seconds'])}", "",
              f"Every measurement runs over loopback on this {m['cores']}-core machine, client and "
              f"members sharing the cores. Transports are measured in alternated runs and reported "
              f"as medians over the repeats; absolute figures swing by about 20% between runs, so "
              f"compare the ratios taken within one run rather than figures across runs.", ""]
    return lines


def profiling(results: Path, out_dir: Path) -> list[str]:
    path = results / "profile.md"
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8").rstrip("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ReportError(f"profile.md: cannot read: {e}") from None
        return ["## Profiling", "", text, ""]
    link = Path(os.path.relpath(REPO / "docs" / "profiling.md", out_dir)).as_posix()
    return ["## Profiling", "", f"Where the time goes on the bulk path and in a migration, how it "
            f"was profiled, and what was changed because of it: [profiling.md]({link}).", ""]


ANALYSIS = REPO / "bench" / "analysis.md"  # hand-written: why targets are missed


def analysis() -> list[str]:
    """The hand-written explanation of missed targets, kept beside the code (bench/analysis.md)."""
    if not ANALYSIS.exists():
        return []
    try:
        text = ANALYSIS.read_text(encoding="utf-8").rstrip("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{ANALYSIS.name}: cannot read: {e}") from None
    return ["## Why targets are missed", "", text, ""]


def render(results: Path, out: Path, plotter: Plotter) -> str:
    machine = read_machine(results)
    sections = []
    for m in MEASUREMENTS:
        doc = load_json(results, m.file)
        if doc is None:
            if m.plot:
                plotter.forget(m.plot)
            sections.append(Section(m.title, [f"{NOT_MEASURED.capitalize()}."],
                                    m.targets_when_missing()))
        else:
            sections.append(m.build(doc, plotter))

    targets = [t for s in sections for t in s.targets]
    met = sum(1 for t in targets if t.value is not None and t.met())
    measured = sum(1 for t in targets if t.value is not None)
    lines = header(results, machine)
    lines += ["## Targets", "", f"{met} of {measured} measured targets met.", ""]
    lines += md_table(["Target", "Goal", "Measured", "Result"], [t.row() for t in targets], "llrl")
    lines.append("")
    lines += analysis()
    for s in sections:
        lines += [f"## {s.title}", ""] + s.body + [""]
    lines += profiling(results, out.parent)
    return "\n".join(lines).rstrip("\n") + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="report.py", description="Write the performance report from a results directory.")
    p.add_argument("results", metavar="RESULTS_DIR", type=Path,
                   help="directory written by bench/run.sh")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md",
                   help="markdown file to write (default: docs/performance.md)")
    p.add_argument("--plots-dir", type=Path, default=REPO / "docs" / "perf",
                   help="directory for the PNG plots (default: docs/perf)")
    p.add_argument("--no-plots", action="store_true", help="write the report without plots")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)  # exits 2 on a usage error
    try:
        if not args.results.is_dir():
            raise ReportError(f"results directory not found: {args.results}")
        out = args.out.resolve()
        plotter = Plotter(args.plots_dir.resolve(), out.parent, enabled=not args.no_plots)
        text = render(args.results, out, plotter)
        plotter.draw_all()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except (ReportError, OSError) as e:
        print(f"report.py: {e}", file=sys.stderr)
        return 1
    print(f"report.py: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
