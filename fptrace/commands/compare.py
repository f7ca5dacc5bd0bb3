"""`fptrace compare`: runs side by side, what changed between them, and what is significant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from fptrace.commands.common import not_negative, output_file, write_text
from fptrace.errors import UsageError


def add_parser(sub: Any) -> None:
    cp = sub.add_parser(
        "compare",
        help="set runs side by side: what changed, and which differences are significant",
        description="Compare recordings or bench results from different kernels, boot options, "
        "configs or CPUs. First what changed in the setup, then the metrics side by side: "
        "ratio of medians with a 95% interval and, with repeated runs, a Mann-Whitney test "
        "('~' = not significant).",
        epilog="examples:\n"
        "  fptrace compare old new                         one run a side\n"
        "  fptrace compare --baseline a1 a2 a3 --candidate b1 b2 b3\n"
        "  fptrace compare runs/ --group-by host.kernel.release -f html -o k.html\n"
        "  fptrace compare base new --fail-on-increase 5   exit 1 on a >5% regression\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cp.add_argument("runs", nargs="*", type=Path, help="A B [C…]: each compared with A")
    cp.add_argument("--baseline", nargs="+", type=Path, help="repeated runs of the baseline")
    cp.add_argument("--candidate", nargs="+", type=Path, help="repeated runs of the candidate")
    cp.add_argument(
        "--group-by",
        metavar="KEY",
        help="one DIR of runs, grouped as `fptrace fleet` groups them: host, kernel, date, cpu, "
        "or any manifest key (e.g. host.kernel_config.sha256)",
    )
    cp.add_argument("--baseline-group", metavar="VALUE", help="with --group-by: the baseline group")
    cp.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output file (default: stdout; html: fptrace-compare.html)",
    )
    cp.add_argument("-f", "--format", choices=("text", "html", "json"), default="text")
    cp.add_argument(
        "--fail-on-increase",
        type=not_negative,
        metavar="PCT",
        help="exit 1 if --metric grew by more than PCT percent (not '~')",
    )
    cp.add_argument(
        "--metric",
        default="est_cpu_ns_per_s",
        help="metric for --fail-on-increase (default est_cpu_ns_per_s)",
    )
    cp.add_argument(
        "--force", action="store_true", help="compare incomparable runs, with a warning"
    )
    cp.add_argument("--calibration", type=Path, help="cost table for the CPU-time estimates")


def _compare_sides(args: argparse.Namespace) -> list[tuple[str, list, str, list]]:
    """(label A, runs A, label B, runs B) for every comparison asked for."""
    from fptrace.analysis.fleet import discover, group_by
    from fptrace.recording.loader import load_recording

    def load(paths: list[Path]) -> list:
        return [load_recording(p) for p in paths]

    if args.group_by:
        if len(args.runs) != 1 or args.baseline or args.candidate:
            raise UsageError("--group-by takes exactly one directory of runs")
        groups = group_by(load(discover(args.runs[0])), args.group_by)
        if len(groups) < 2:
            raise UsageError(f"{args.runs[0]}: all runs have the same {args.group_by}")
        names = sorted(groups)
        base = args.baseline_group or names[0]
        if base not in groups:
            raise UsageError(f"no group {base!r}: the groups are {', '.join(names)}")
        return [(base, groups[base], n, groups[n]) for n in names if n != base]
    if args.baseline or args.candidate:
        if not (args.baseline and args.candidate) or args.runs:
            raise UsageError("give both --baseline and --candidate runs, and no others")
        return [("A", load(args.baseline), "B", load(args.candidate))]
    if len(args.runs) < 2:
        raise UsageError("compare needs at least two runs (or --baseline/--candidate)")
    base = load([args.runs[0]])
    return [(str(args.runs[0]), base, str(p), load([p])) for p in args.runs[1:]]


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    from fptrace.analysis import compare
    from fptrace.analysis.cost import choose_model
    from fptrace.analysis.fleet import collapse_many
    from fptrace.reports import compare as render

    if args.metric not in compare.METRICS:
        raise UsageError(f"unknown metric {args.metric}: choose from {', '.join(compare.METRICS)}")
    sides = _compare_sides(args)
    everyone = {id(r): r for _, a, _, b in sides for r in (*a, *b)}
    collapsed = collapse_many(list(everyone.values()))

    comparisons = [
        compare.build(
            (la, lb),
            a,
            b,
            collapsed,
            lambda m: choose_model(m, args.calibration),
            (a[0].kernel_config(), b[0].kernel_config()),
            force=args.force,
        )
        for la, a, lb, b in sides
    ]
    if args.format == "text":
        if args.output is None:
            render.render_text(comparisons, Console(highlight=False, width=min(console.width, 100)))
        else:
            with output_file(args.output) as f:
                render.render_text(comparisons, Console(file=f, width=100, highlight=False))
    else:
        text = (
            render.render_json(comparisons)
            if args.format == "json"
            else render.render_html(comparisons)
        )
        out = args.output or (Path("fptrace-compare.html") if args.format == "html" else None)
        if out is None:
            sys.stdout.write(text)
        else:
            write_text(out, text)
    if args.fail_on_increase is not None:
        for comp in comparisons:
            row = comp.regression(args.metric, args.fail_on_increase)
            if row is not None:
                rise = (
                    f"{(row.ratio - 1) * 100:+.1f}%"
                    if row.ratio is not None
                    else f"from 0 to {row.b_median:,.4g}"
                )
                print(
                    f"fptrace: {comp.labels[1]}: {args.metric} rose {rise} "
                    f"(> {args.fail_on_increase}%) vs {comp.labels[0]}",
                    file=sys.stderr,
                )
                return 1
    return 0
