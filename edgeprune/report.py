"""Build reports: ``report.json``, ``report.md`` and ``plots/*.png`` from one report dict.

Consumes: the report dict assembled by ``edgeprune.pipeline.build`` (plain JSON values; its
keys are documented in :func:`write_report`). Produces: the three kinds of files, written
atomically, and a ``rich`` summary table for the terminal.

Plots use matplotlib's Agg backend (no display needed) and are byte-deterministic for the
same data (no timestamp or version metadata), so two identical builds hash the same; host
timings never go into plots (they differ run to run), estimates and accuracies do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeprune import fsutil

_PNG_METADATA = {"Software": None}  # matplotlib writes its version by default; keep bytes stable


def write_report(report: dict[str, Any], out_dir) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the plots into ``out_dir``.

    Keys read (all optional except ``stages``): ``model``, ``target`` (dict with ``name``),
    ``stages`` (list of dicts: ``name``, ``params``, ``macs``, ``size_bytes``, ``accuracy``
    {metric, value, delta_pts}, ``host_latency`` (a bench dict), ``device_latency`` (a bench dict from ``build --device``), ``estimate`` (an estimate
    summary with ``total_ms``), ``peak_rss_mb``), ``steps`` (search steps: ``step``, ``macs``,
    ``metric``, ``estimate_ms``), ``host_runtimes`` (``rows`` of ``runtime``, ``artifact``,
    ``median_ms``, ``init_ms``, ``peak_rss_mb``; ``fastest``; ``not_run`` {runtime: why}; ``threads``),
    ``layers`` (``name``, ``before``, ``after``), ``deploy``
    (``trtexec`` command, ``notes``), ``gate``, ``stages_ran``, ``stages_skipped``,
    ``artifacts``. Returns {kind: path}.
    """
    out = Path(out_dir)
    paths = {
        "report.json": fsutil.write_json(out / "report.json", report),
        "report.md": fsutil.write_text(out / "report.md", render_markdown(report)),
    }
    for name, path in write_plots(report, out / "plots").items():
        paths[f"plots/{name}"] = path
    return paths


# ----------------------------------------------------------------------------- markdown
def _fmt_int(n) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"  # 3 significant digits keep the summary table narrow
    return f"{n:.0f}"


def _fmt_ms(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _fmt_bytes(n) -> str:
    if n is None:
        return "-"
    for unit, div in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _acc(stage) -> tuple[str, str]:
    acc = stage.get("accuracy") or {}
    if acc.get("value") is None:
        return "-", "-"
    delta = acc.get("delta_pts")
    return f"{100 * acc['value']:.2f}%", "-" if delta is None else f"{delta:+.2f}"


def headline_text(report: dict[str, Any]) -> str | None:
    """One sentence: what ships, what it cost in accuracy, what it buys in (estimated) latency."""
    stages = report.get("stages") or []
    if len(stages) < 2:
        return None
    base, last = stages[0], stages[-1]
    tname = (report.get("target") or {}).get("name", "the target")
    name, precision = last.get("name"), last.get("precision")
    what = name if name == precision else f"{name}, {precision}"
    parts = [
        f"**Result:** the shipped model ({what}) has {100 * last['macs'] / base['macs']:.0f}% of the MACs"
        if base.get("macs")
        else f"**Result:** the shipped model ({what})"
    ]
    acc = last.get("accuracy") or {}
    if acc.get("value") is not None and acc.get("delta_pts") is not None:
        parts.append(f"{100 * acc['value']:.2f}% top-1 ({acc['delta_pts']:+.2f} pts)")
    b_est, l_est = (base.get("estimate") or {}).get("total_ms"), (last.get("estimate") or {}).get("total_ms")
    if b_est and l_est:
        parts.append(f"an estimated {b_est / l_est:.2f}x speed-up on {tname} ({b_est:.3f} → {l_est:.3f} ms)")
    return ", ".join(parts) + "."


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per stage: name, params, MACs, size, accuracy, delta, host ms, estimated ms, and
    device ms after host ms when the build measured on a device (see :func:`summary_header`)."""
    on_device = _has_device(report)
    rows = []
    for s in report.get("stages", []):
        acc, delta = _acc(s)
        host = (s.get("host_latency") or {}).get("median_ms")
        est = (s.get("estimate") or {}).get("total_ms")
        row = [
            s.get("name", "?"),
            _fmt_int(s.get("params")),
            _fmt_int(s.get("macs")),
            _fmt_bytes(s.get("size_bytes")),
            acc,
            delta,
            _fmt_ms(host),
            _fmt_ms(est),
        ]
        if on_device:
            row.insert(7, _fmt_ms((s.get("device_latency") or {}).get("median_ms")))
        rows.append(row)
    return rows


def _has_device(report: dict[str, Any]) -> bool:
    return any(s.get("device_latency") for s in report.get("stages", []))


def summary_header(report: dict[str, Any]) -> list[str]:
    """The column names of :func:`summary_rows` for this report."""
    return SUMMARY_HEADER[:7] + ["device ms"] + SUMMARY_HEADER[7:] if _has_device(report) else list(SUMMARY_HEADER)


SUMMARY_HEADER = ["stage", "params", "MACs", "size", "top-1", "Δ pts", "host ms", "target ms"]


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: summary, gate, pruning, host and target latency, channels, deploying, files, plots."""
    lines = _intro_section(report) + _gate_section(report) + _pruning_section(report)
    lines += _host_section(report) + _host_runtimes_section(report) + _device_section(report)
    lines += _estimate_section(report) + _layers_section(report)
    lines += _deploy_section(report) + _artifacts_section(report)
    return "\n".join(lines)


def _intro_section(report: dict[str, Any]) -> list[str]:
    """Title, target, stages run and skipped, headline, summary table."""
    target = report.get("target") or {}
    tname = target.get("name", "?")
    lines = [f"# edgeprune build report: {report.get('model', '?')} for {tname}", ""]
    if target.get("description"):
        lines += [f"Target: **{tname}**: {target['description']}", ""]
    ran = report.get("stages_ran")
    if ran:
        lines.append(f"Stages run: {', '.join(ran)}.")
    for stage, why in (report.get("stages_skipped") or {}).items():
        lines.append(f"- skipped **{stage}**: {why}")
    lines.append("")

    headline = headline_text(report)
    if headline:
        lines += [headline, ""]
    header = summary_header(report)
    lines += ["## Summary", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in summary_rows(report)]
    lines += [
        "",
        "host ms: median measured on the build machine (ONNX Runtime); target ms: estimated for the target.",
        "",
        f'Target latencies are **estimates** (`"estimate": true` in report.json: a calibrated '
        f"roofline for {tname}, not a measurement); host latencies are measured on the build machine. "
        "Run `edgeprune bench` on the device for real numbers.",
        "",
    ]
    return lines


def _gate_section(report: dict[str, Any]) -> list[str]:
    """The accuracy gate and whether it passed."""
    lines: list[str] = []
    gate = report.get("gate")
    if gate:
        status = "passed" if gate.get("passed") else "FAILED"
        lines += [
            f"Accuracy gate: drop {gate.get('drop_pts', 0):.2f} pts vs allowed "
            f"{gate.get('max_acc_drop')} pts: **{status}**.",
            "",
        ]
    return lines


def _host_section(report: dict[str, Any]) -> list[str]:
    """Host latency per stage (measured)."""
    return _latency_section(report, "host_latency", "## Host latency (measured)")


def _host_runtimes_section(report: dict[str, Any]) -> list[str]:
    """The shipped fp32 model on each CPU runtime of the build machine, and the fastest."""
    hr = report.get("host_runtimes") or {}
    if not hr.get("rows"):
        return []
    lines = [
        f"## Host runtimes (measured, fp32, {hr.get('threads')} thread(s))",
        "",
        "| runtime | file | median ms | init ms | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for r in hr["rows"]:
        lines.append(
            f"| {r['runtime']} | {r['artifact']} | {_fmt_ms(r['median_ms'])} | {_fmt_ms(r.get('init_ms'))} | "
            f"{r.get('peak_rss_mb', '-')} |"
        )
    lines += ["", f"Fastest on this host: **{hr['fastest']}**."]
    lines += [f"- {rt} did not run: {why}" for rt, why in (hr.get("not_run") or {}).items()]
    return lines + [""]


def _device_section(report: dict[str, Any]) -> list[str]:
    """Latency per stage measured on the device over SSH (``build --device``), and what ran where."""
    rows = [s["device_latency"] for s in report.get("stages", []) if s.get("device_latency")]
    if not rows:
        return []
    host = rows[0].get("host") or {}
    where = ", ".join(str(host[k]) for k in ("device", "system", "machine") if host.get(k))
    if host.get("cpus"):
        where += f", {host['cpus']} CPUs"
    return _latency_section(report, "device_latency", f"## Device latency (measured on {where})")


def _latency_section(report: dict[str, Any], key: str, title: str) -> list[str]:
    """A table of one bench dict per stage (``key``), then its warnings."""
    lines: list[str] = []
    host_rows = [(s["name"], s[key]) for s in report.get("stages", []) if s.get(key)]
    if host_rows:
        lines += [
            title,
            "",
            "| stage | runtime | threads | init | first | mean | median | p90 | p99 | std | runs |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, h in host_rows:
            lines.append(
                f"| {name} | {h.get('runtime_version', h.get('runtime'))} | {h.get('threads')} | "
                f"{_fmt_ms(h.get('init_ms'))} | {_fmt_ms(h.get('first_ms'))} | {_fmt_ms(h.get('mean_ms'))} | "
                f"{_fmt_ms(h.get('median_ms'))} | {_fmt_ms(h.get('p90_ms'))} | {_fmt_ms(h.get('p99_ms'))} | "
                f"{_fmt_ms(h.get('std_ms'))} | {h.get('runs')} |"
            )
        for name, h in host_rows:
            for w in h.get("warnings", []):
                lines.append(f"- {name}: {w}")
        lines.append("")
    return lines


def _estimate_section(report: dict[str, Any]) -> list[str]:
    """Estimated latency per stage, the slowest layers, the GPU estimate."""
    tname = (report.get("target") or {}).get("name", "?")
    lines: list[str] = []
    est_rows = [(s["name"], s["estimate"]) for s in report.get("stages", []) if s.get("estimate")]
    if est_rows:
        lines += [
            f"## Estimated latency on {tname}",
            "",
            "| stage | precision | threads | total ms | by kind (ms) |",
            "|---|---|---|---|---|",
        ]
        for name, e in est_rows:
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in (e.get("by_kind_ms") or {}).items())
            lines.append(
                f"| {name} | {e.get('precision')} | {e.get('threads')} | {_fmt_ms(e.get('total_ms'))} | {kinds} |"
            )
        lines.append("")

    te = report.get("target_estimate") or {}
    if te.get("layers"):
        slow = sorted(te["layers"], key=lambda r: -r["ms"])[:8]
        lines += [
            f"Slowest layers of the shipped model on {tname} (estimate, {te.get('precision')}, "
            f"{te.get('threads')} threads, total {_fmt_ms(te.get('total_ms'))} ms):",
            "",
            "| layer | kind | MACs | ms | bound by |",
            "|---|---|---|---|---|",
        ]
        for r in slow:
            lines.append(f"| {r['name']} | {r['kind']} | {_fmt_int(r['macs'])} | {r['ms']:.4f} | {r['bound']} |")
        lines.append("")
    gpu = report.get("target_estimate_gpu")
    if gpu:
        cal = gpu.get("calibration") or "none"
        label = "**uncalibrated**" if cal == "none" else f"calibrated ({cal})"
        lines += [
            f"GPU ({gpu.get('precision')}, TensorRT-style roofline, {label}): {_fmt_ms(gpu.get('total_ms'))} ms.",
            "",
        ]
    return lines


def _layers_section(report: dict[str, Any]) -> list[str]:
    """Channels per layer before and after pruning."""
    lines: list[str] = []
    layers = report.get("layers") or []
    if layers:
        lines += ["## Channels per layer", "", "| layer | before | after | kept |", "|---|---|---|---|"]
        for layer in layers:
            before, after = layer.get("before"), layer.get("after")
            kept = f"{100 * after / before:.0f}%" if before else "-"
            lines.append(f"| {layer.get('name')} | {before} | {after} | {kept} |")
        lines.append("")
    return lines


# the skeleton of every *_section on purpose (lines, empty without the key, a trailing blank):
# the headers and rows are each section's own
def _deploy_section(report: dict[str, Any]) -> list[str]:
    """How to run and measure the shipped file on the device."""
    lines: list[str] = []
    deploy = report.get("deploy") or {}
    if deploy:
        lines += ["## Deploying", ""]
        for note in deploy.get("notes", []):
            lines.append(f"- {note}")
        if deploy.get("trtexec"):
            lines += ["", "Build and time the TensorRT engine on the device:", "", "```sh", deploy["trtexec"], "```"]
        if deploy.get("bench"):
            lines += ["", "Measure on the device:", "", "```sh", *deploy["bench"], "```"]
        lines.append("")
    return lines


# the skeleton of every *_section on purpose (lines, empty without the key, a trailing blank):
# the headers and rows are each section's own
def _artifacts_section(report: dict[str, Any]) -> list[str]:
    """The files written, and the plots."""
    lines: list[str] = []
    artifacts = report.get("artifacts") or {}
    if artifacts:
        lines += ["## Artifacts", "", "| file | size |", "|---|---|"]
        for name, info in artifacts.items():
            lines.append(f"| `{name}` | {_fmt_bytes(info.get('size_bytes') if isinstance(info, dict) else None)} |")
        lines.append("")

    plots = report.get("plots") or []
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return lines


def _pruning_section(report: dict[str, Any]) -> list[str]:
    settings = report.get("settings") or {}
    budget = report.get("budget")
    if not settings and not budget:
        return []
    lines = ["## Pruning", ""]
    if budget:
        unit = "MACs" if budget.get("kind") == "macs" else "ms (estimated)"
        lines.append(
            f"Goal: {budget.get('kind')} budget {budget.get('value'):.6g} {unit}; achieved "
            f"{budget.get('achieved'):.6g}: **{'met' if budget.get('met') else 'NOT met'}**"
            + (f" ({budget['reason']})" if budget.get("reason") else "")
            + "."
        )
    elif settings.get("ratio") is not None:
        lines.append(f"Goal: remove {100 * settings['ratio']:.0f}% of the channels (global ranking).")
    if report.get("nothing_pruned"):
        lines.append(f"Nothing was pruned: {report['nothing_pruned']}.")
    how = settings.get("search")
    if how == "adaptive":
        lines.append(
            "Method: adaptive search (sensitivity scan per channel group, allocation to the budget, "
            "prune + recover steps with back-off on the accuracy limit)."
        )
    elif how == "bisect":
        lines.append(f"Method: one global ratio found by bisection on the cost: {settings.get('chosen_ratio'):.4f}.")
    if settings.get("importance"):
        lines.append(
            f"Importance: {settings['importance']}; channel counts rounded to multiples of "
            f"{settings.get('round_to')}; recovery epochs: {settings.get('recover_epochs')}."
        )
    sc = report.get("scratch")
    if sc:
        lines.append(
            f"The pruned shape trained from scratch ({sc['epochs']} epochs) reaches {100 * sc['top1']:.2f}% "
            f"top-1 against {100 * sc['prune_recover_top1']:.2f}% for prune + recover "
            f"({sc['delta_pts']:+.2f} pts; {sc['reference']})."
        )
    lines.append("")
    steps = (report.get("search") or {}).get("steps") or []
    if steps:
        lines += [
            "| step | fraction | cost | val before recovery | val after | drop pts | accepted |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in steps:
            if "skipped" in row:
                lines.append(f"| {row['step']} | {row.get('fraction', 0):.3f} | - | - | - | - | skipped |")
                continue
            lines.append(
                f"| {row['step']} | {row['fraction']:.3f} | {row['cost']:.6g} | "
                f"{100 * row['val_pruned']:.2f}% | {100 * row['val_recovered']:.2f}% | "
                f"{row['drop_points']:.2f} | {'yes' if row['accepted'] else 'no'} |"
            )
        lines.append("")
    return lines


# ----------------------------------------------------------------------------- plots
def write_plots(report: dict[str, Any], plot_dir) -> dict[str, Path]:
    """metric vs MACs, metric vs estimated latency (one point per stage or search step) and
    channels per layer before/after. Returns {file name: path}; a plot with no data is skipped."""
    # Figure objects rendered by the Agg canvas directly: no pyplot global state, no display,
    # and the caller's own matplotlib backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def subplots(figsize):
        fig = Figure(figsize=figsize, dpi=100)
        FigureCanvasAgg(fig)
        return fig, fig.subplots()

    plot_dir = Path(plot_dir)
    points = _points(report)
    written: dict[str, Path] = {}
    target = (report.get("target") or {}).get("name", "target")

    for fname, key, xlabel in (
        ("metric_vs_macs.png", "macs", "MACs (M)"),
        ("metric_vs_latency.png", "estimate_ms", f"estimated latency on {target} (ms)"),
    ):
        pts = [p for p in points if p.get(key) is not None and p.get("metric") is not None]
        if not pts:
            continue
        fig, ax = subplots((6, 4))
        xs = [p[key] / 1e6 if key == "macs" else p[key] for p in pts]
        ys = [100 * p["metric"] for p in pts]
        # search steps are judged on the validation split, stages on the test split: the line shows
        # the order, the markers say which split each point is measured on
        ax.plot(xs, ys, "-", color="0.7", zorder=1)
        for split, marker, color in (("test", "o", "tab:blue"), ("val", "s", "tab:orange")):
            sel = [(x, y) for x, y, p in zip(xs, ys, pts) if ("(val)" in p["label"]) == (split == "val")]
            if sel:
                ax.scatter(*zip(*sel), marker=marker, color=color, zorder=2, label=f"top-1 on {split} split")
        ax.legend(fontsize=8)
        for x, y, p in zip(xs, ys, pts):
            ax.annotate(p["label"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(
            f"{report.get('model', '')}: accuracy vs {'MACs' if key == 'macs' else 'estimated latency'}", fontsize=9
        )
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        written[fname] = _save(fig, plot_dir / fname)

    layers = report.get("layers") or []
    if layers:
        fig, ax = subplots((max(6, 0.35 * len(layers) + 2), 4))
        idx = list(range(len(layers)))
        ax.bar([i - 0.2 for i in idx], [layer.get("before", 0) for layer in layers], width=0.4, label="before")
        ax.bar([i + 0.2 for i in idx], [layer.get("after", 0) for layer in layers], width=0.4, label="after")
        ax.set_xticks(idx)
        ax.set_xticklabels([layer.get("name", "") for layer in layers], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("output channels")
        ax.set_title("channels per layer", fontsize=9)
        ax.legend()
        fig.tight_layout()
        written["channels.png"] = _save(fig, plot_dir / "channels.png")
    return written


def _points(report) -> list[dict[str, Any]]:
    """Search steps when the build recorded them, else one point per stage."""
    steps = report.get("steps") or []
    if steps:
        return [
            {
                "label": str(s.get("label", s.get("step", i))),
                "macs": s.get("macs"),
                "metric": s.get("metric"),
                "estimate_ms": s.get("estimate_ms"),
            }
            for i, s in enumerate(steps)
        ]
    pts = []
    for s in report.get("stages", []):
        pts.append(
            {
                "label": s.get("name", "?"),
                "macs": s.get("macs"),
                "metric": (s.get("accuracy") or {}).get("value"),
                "estimate_ms": (s.get("estimate") or {}).get("total_ms"),
            }
        )
    return pts


def _save(fig, path: Path) -> Path:
    with fsutil.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata=_PNG_METADATA)
    return path


def load_report(path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    return json.loads(p.read_text())
