"""Bar charts of the benchmark results, drawn from the harnesses' JSON (``make bench``).

    python -m benchmarks.plots [--out docs/img] docs/bench_local.json docs/bench_http.json ...

One PNG per JSON file: a panel per (workload, state[, selection]), a bar per contender with
its median throughput, lsio's bars highlighted (zarr's API on lsio's codec pipeline, issue 13's
row, darkest), each labelled with the worst event-loop stall while it ran (when the JSON has it:
asyncio contenders) and, when the JSON's config names a `reference` contender (bench_dask:
zarr's default pipeline), with its speed relative to that one in the same panel. The figures in
docs/benchmarks.md are these files; nothing is drawn by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Bar = tuple[str, float, float | None]  # contender, median MB/s, worst loop stall (s)
PIPELINE_ROW = "zarr + lsio pipeline"  # zarr's own API on lsio.zarr.LsioCodecPipeline
# rows that read nothing: bench_zarr's zarr-python time with a pipeline that does no work
NOT_READS = frozenset({"zarr's own time"})


def _color(name: str) -> str:
    if name == PIPELINE_ROW:
        return "#8c0f10"
    return "#d62728" if "lsio" in name.lower() else "#7f7f7f"


def _labels(bars: list[Bar], reference: str | None) -> list[str] | None:
    """Per bar: its worst loop stall and its speed against `reference`; None: no labels."""
    ref = next((b[1] for b in bars if b[0] == reference), None)
    if ref is None and all(b[2] is None for b in bars):
        return None
    return [", ".join(part for part in (
                "" if stall is None else f"stall {stall * 1e3:.1f} ms",
                "" if ref is None else f"{rate / ref:.2f}x") if part)
            for _, rate, stall in bars]


def _panels(series: list[dict[str, Any]]) -> dict[str, list[Bar]]:
    """Panel title -> [(contender, median MB/s, worst loop stall)], in the harness's order."""
    panels: dict[str, list[Bar]] = {}
    for s in series:
        ok = [x for x in s.get("samples", []) if x.get("seconds")]
        if s.get("error") or not ok or s["contender"] in NOT_READS:
            continue
        rate = statistics.median(x["nbytes"] / x["seconds"] / 1e6 for x in ok)
        mode = s.get("mode", "")
        title = f"({s['workload']}) {s.get('state', '')}"
        if mode in ("whole", "sub"):
            title += f", {mode}"
        panels.setdefault(title, []).append((s["contender"], rate,
                                             s.get("worst_loop_stall_s")))
    return panels


def _save(fig: Any, path: Path, out_dir: Path, *, top: float) -> Path:
    """Write ``fig`` as ``out_dir/<json name>.png`` and close it."""
    fig.tight_layout(rect=(0, 0, 1, top))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{path.stem}.png"
    fig.savefig(target, dpi=90)
    plt.close(fig)
    return target


def _plot_fixed(data: dict[str, Any], path: Path, out_dir: Path) -> Path:
    """``bench_fixed``'s rows: microseconds per call (lower is better), dropped and kept."""
    rows = data["rows"][::-1]
    names = [r["name"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(rows) + 1.5), sharey=True)
    for ax, key, what in ((axes[0], "dropped_us", "results dropped"),
                          (axes[1], "kept_us", "results kept")):
        values = [r[key] for r in rows]
        colors = ["#d62728" if any(w in nm for w in ("lsio", "Lsio", "read_many"))
                  else "#7f7f7f" for nm in names]
        bar_set = ax.barh(names, values, color=colors)
        ax.bar_label(bar_set, labels=[f"{v:,.0f}" if v >= 10 else f"{v:.1f}" for v in values],
                     fontsize=6, padding=2)
        ax.set_xscale("log")
        ax.set_title(what, fontsize=9)
        ax.set_xlabel("µs per call (median, log scale)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.margins(x=0.15)
    fig.suptitle(f"{path.stem}: one small call, lsio (red) and the others, lower is better",
                 fontsize=10)
    return _save(fig, path, out_dir, top=0.95)


def plot(path: Path, out_dir: Path) -> Path:
    data = json.loads(path.read_text())
    if "rows" in data:
        return _plot_fixed(data, path, out_dir)
    panels = _panels(data["series"])
    reference = data.get("config", {}).get("reference")
    n = len(panels)
    cols = min(3, n) or 1
    rows = -(-n // cols) or 1
    most = max((len(b) for b in panels.values()), default=1)  # bars in the fullest panel
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, (0.35 * max(4, most) + 1.4) * rows
                                                  + 1), squeeze=False)
    for ax, (title, bars) in zip(axes.ravel(), panels.items(), strict=False):
        bars = bars[::-1]
        names = [b[0] for b in bars]
        bar_set = ax.barh(names, [b[1] for b in bars], color=[_color(nm) for nm in names])
        if (labels := _labels(bars, reference)) is not None:
            ax.bar_label(bar_set, labels=labels, fontsize=6, padding=2)
            ax.margins(x=0.3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("MB/s (median)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(f"{path.stem}: lsio (red) and the others, higher is better", fontsize=10)
    return _save(fig, path, out_dir, top=0.97)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="plot benchmark JSON results")
    ap.add_argument("json", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    args = ap.parse_args(argv)
    for path in args.json:
        print(f"wrote {plot(path, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
