"""A 10,000-testcase JUnit file reported (issue #17): parsed, titled, tabled and annotated.

Run: .venv/bin/python benchmarks/bench_junit.py [--runs N] [--cases N]

The file is pytest-shaped (`testsuites/testsuite/testcase`, each failure with a traceback whose
last frame is in the repository), 2% of the cases failing, the repository's file list given, as
the `flops/test: <name>` report reads it. The figure is the median of `--runs` runs of
`junit.parse` + `title` + `table` + `annotations`; the target is < 1 s. The same-run baseline is
a bare `xml.etree.ElementTree.fromstring` of the same bytes (no defusedxml, nothing extracted), for
the ratio: what the safe parser and the report add on top of reading the XML at all.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.core import junit

TARGET_S = 1.0


def junit_file(cases: int) -> tuple[bytes, set[str]]:
    rows = []
    for i in range(cases):
        module = f"tests.test_m{i % 97}"
        failure = (f'<failure message="AssertionError: value {i} is NaN">def test_{i}():\n&gt; assert x\n'
                   f'E AssertionError\n\nsrc/model.py:{i % 300 + 1}: in step\ntests/test_m{i % 97}.py:{i % 500 + 1}: '
                   f'AssertionError</failure>' if i % 50 == 0 else "")
        rows.append(f'<testcase classname="{module}" name="test_{i}" time="0.0{i % 10}">{failure}</testcase>')
    xml = f'<?xml version="1.0"?><testsuites><testsuite name="pytest" time="192.0">{"".join(rows)}</testsuite></testsuites>'
    files = {f"tests/test_m{n}.py" for n in range(97)} | {"src/model.py"}
    return xml.encode(), files


def report(data: bytes, files: set[str]) -> float:
    start = time.perf_counter()
    result = junit.parse([("junit.xml", data)], files)
    _ = result.title, result.table({"tests.test_m0::test_0"}, "main"), result.annotations()
    return time.perf_counter() - start


def bare(data: bytes) -> float:
    start = time.perf_counter()
    ET.fromstring(data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--cases", type=int, default=10_000)
    args = parser.parse_args()
    data, files = junit_file(args.cases)
    ours = statistics.median(report(data, files) for _ in range(args.runs))
    floor = statistics.median(bare(data) for _ in range(args.runs))
    result = junit.parse([("junit.xml", data)], files)
    print(f"{args.cases:,} test cases ({len(data) / 1e6:.1f} MB, {result.count(junit.FAILED)} failed, "
          f"{len(result.annotations())} annotations): title '{result.title}'")
    print(f"reported in {ours * 1000:.1f} ms (median of {args.runs}; target < {TARGET_S * 1000:.0f} ms: "
          f"{'met' if ours < TARGET_S else 'MISSED'})")
    print(f"bare ElementTree parse {floor * 1000:.1f} ms; ratio {ours / floor:.1f}x")


if __name__ == "__main__":
    main()
