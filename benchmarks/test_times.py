"""Where `make test`'s time goes: seconds per test file (and per solutions notebook under
nbval), from the JUnit report that `make test` writes to build/test-report.xml.

    python benchmarks/test_times.py [build/test-report.xml] [--json benchmarks/results/test_times.json]

Prints a Markdown table (file, tests, seconds, share), slowest first, for docs/benchmarks.md.
With two xdist workers the seconds add up to about twice the wall time of the pytest step.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree


def seconds_per_file(report: Path) -> dict[str, tuple[int, float]]:
    """{file: (number of tests, summed seconds)} from a JUnit XML report (xunit1 or xunit2)."""
    per_file: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for case in ElementTree.parse(report).iter("testcase"):
        name = case.get("file") or case.get("classname", "?").replace(".", "/") + ".py"
        per_file[name][0] += 1
        per_file[name][1] += float(case.get("time") or 0.0)
    return {name: (count, seconds) for name, (count, seconds) in per_file.items()}


def table(per_file: dict[str, tuple[int, float]]) -> str:
    total = sum(seconds for _, seconds in per_file.values()) or 1.0
    rows = ["| file | tests | seconds | share |", "|---|---|---|---|"]
    for name, (count, seconds) in sorted(per_file.items(), key=lambda item: -item[1][1]):
        rows.append(f"| `{name}` | {count} | {seconds:.1f} | {100 * seconds / total:.1f} % |")
    rows.append(f"| total | {sum(c for c, _ in per_file.values())} | {total:.1f} | |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", nargs="?", type=Path, default=Path("build/test-report.xml"))
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not args.report.exists():
        parser.error(f"{args.report} does not exist: run `make test` first")
    per_file = seconds_per_file(args.report)
    print(table(per_file))
    if args.json:
        args.json.write_text(json.dumps({name: {"tests": c, "seconds": round(s, 2)}
                                         for name, (c, s) in sorted(per_file.items())}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
