"""`make bench`: run every benchmarks/bench_*.py (or the ones named) and rewrite BENCHMARKS.md.

Usage: python -m benchmarks.run [NAME ...]   (NAME = load, cache, ...; default: all)
Results of each benchmark are kept in benchmarks/results/NAME.json, so re-running one
benchmark rewrites BENCHMARKS.md with the others' last figures intact.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from benchmarks.common import RESULTS_DIR, typed_command

ROOT = Path(__file__).resolve().parent.parent
ORDER = [
    "load",
    "cache",
    "train_cls",
    "train_seg",
    "diagnose",
    "batch",
    "pacs",
    "contention",
    "quality",
    "quality_levers",
    "volumetry",
    "followup",
]
# Sections recorded by a command of their own rather than a bench_*.py (they need trained models, hours):
# `python -m benchmarks.quality_report` writes results/quality.json, `benchmarks.volumetry --record` volumetry.json.
RECORDED = ["quality", "quality_levers", "volumetry", "followup"]


def _available() -> list[str]:
    names = [p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def render() -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run`); do not edit by hand. Every figure is measured",
        "next to its baseline in the same run on the same machine; the ratio is oriented so that bigger is better.",
        "",
    ]
    for name in [*_available(), *RECORDED]:
        path = RESULTS_DIR / f"{name}.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        machine = record["machine"]
        lines += [
            f"## {record['title']}",
            "",
            f"Command: `{typed_command(record['command'])}`  ",  # also records saved before typed_command
            f"Measured: {record['measured_at']} on {machine['cpu']} ({machine['cores']} cores), "
            f"Python {machine['python']}, torch {machine['torch']}, numpy {machine['numpy']}  ",
            f"Set-up: {record['setup']}",
            "",
        ]
        if record.get("expectation"):
            lines += [f"Expected before measuring: {record['expectation']}", ""]
        lines += ["| figure | ours | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
        for fig in record["figures"]:
            baseline = f"{_fmt(fig['baseline'])} ({fig['baseline_name']})" if fig["baseline"] is not None else ""
            met = "" if fig["met"] is None else ("yes" if fig["met"] else "**no**")
            ratio = f"{fig['ratio']:.2f}x" if fig["ratio"] is not None else ""
            lines.append(
                f"| {fig['name']} | {_fmt(fig['value'])} {fig['unit']} | {baseline} | {ratio} | {fig['target']} | {met} |"
            )
        notes = [f"- {fig['name']}: {fig['note']}" for fig in record["figures"] if fig.get("note")]
        lines += ["", *notes, ""] if notes else [""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    names = argv or _available()
    unknown = [n for n in names if n not in _available()]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {_available()}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== bench {name}", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        section = module.run()
        section.save()
        for fig in section.figures:
            print(
                f"   {fig.name}: {_fmt(fig.value)} {fig.unit}" + (f"  ratio {fig.ratio:.2f}x" if fig.ratio else ""),
                flush=True,
            )
    write_benchmarks_md()
    return 0


def write_benchmarks_md() -> None:
    """Rewrite BENCHMARKS.md (atomically) from every section's last recorded figures."""
    out = ROOT / "BENCHMARKS.md"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(render())
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
