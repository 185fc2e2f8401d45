"""JUnit XML of the common shapes -> the report on a `flops/test: <name>` check: pure, no server."""
from __future__ import annotations

import time

import pytest

from bot.core import junit
from bot.core.text import escape

PYTEST = b"""<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="2" skipped="1" tests="5" time="192.4">
<testcase classname="tests.test_features" name="test_scale" time="0.010"/>
<testcase classname="tests.test_features" name="test_nan" time="1.5">
<failure message="AssertionError: loss is nan&#10;assert False">def test_nan():
&gt;       assert not math.isnan(loss)
E       AssertionError: loss is nan

src/model.py:40: in train
    step()
tests/test_features.py:17: AssertionError</failure></testcase>
<testcase classname="tests.test_train" name="test_converges" time="12.0">
<failure message="assert 0.9 &lt; 0.5">tests/test_train.py:8: assert</failure></testcase>
<testcase classname="tests.test_train" name="test_gpu" time="0"><skipped message="no GPU"/></testcase>
<testcase classname="tests.test_train" name="test_ok" time="0.2"/>
</testsuite></testsuites>"""

UNITTEST = b"""<?xml version="1.0" encoding="UTF-8"?>
<testsuite errors="1" failures="0" name="tests.test_x.T-20261204" skipped="0" tests="2" time="0.5">
  <testcase classname="tests.test_x.T" name="test_a" time="0.1" file="tests/test_x.py" line="5"/>
  <testcase classname="tests.test_x.T" name="test_b" time="0.4" file="tests/test_x.py" line="9">
    <error type="ValueError" message="bad value"><![CDATA[Traceback (most recent call last):
  File "/usr/lib/python3.11/unittest/case.py", line 57, in testPartExecutor
  File "/workspace/tests/test_x.py", line 11, in test_b
    raise ValueError("bad value")
ValueError: bad value]]></error>
  </testcase>
</testsuite>"""

SUREFIRE = b"""<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="com.example.FeatureTest" time="0.05" tests="2" errors="0" skipped="0" failures="1">
  <properties><property name="java.version" value="21"/></properties>
  <testcase name="extractsFeatures" classname="com.example.FeatureTest" time="0.03">
    <failure message="expected: &lt;3&gt; but was: &lt;2&gt;" type="org.opentest4j.AssertionFailedError">
org.opentest4j.AssertionFailedError: expected: &lt;3&gt; but was: &lt;2&gt;
	at org.junit.jupiter.api.AssertionUtils.fail(AssertionUtils.java:55)
	at com.example.FeatureTest.extractsFeatures(FeatureTest.java:21)
</failure>
    <system-out><![CDATA[hello]]></system-out>
  </testcase>
  <testcase name="ok" classname="com.example.FeatureTest" time="0.02"/>
</testsuite>"""

GO = b"""<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="2" failures="1" time="0.010">
	<testsuite name="example.com/ml/features" tests="2" failures="1" errors="0" time="0.010" id="0">
		<properties><property name="go.version" value="go1.22"></property></properties>
		<testcase name="TestScale" classname="features" time="0.000"></testcase>
		<testcase name="TestNaN" classname="features" time="0.010">
			<failure message="Failed" type="">    scale_test.go:14: got NaN, want 0.5</failure>
		</testcase>
	</testsuite>
</testsuites>"""

REPO_FILES = {"tests/test_features.py", "tests/test_train.py", "src/model.py", "tests/test_x.py",
              "src/test/java/com/example/FeatureTest.java", "features/scale_test.go", "other/scale_test.go"}


def test_pytest_title_table_and_annotations_at_the_failing_frame() -> None:
    report = junit.parse([("junit.xml", PYTEST)], REPO_FILES)
    assert report.title == "2 failed, 2 passed, 1 skipped in 3m12s"
    table = report.table(also_failing={"tests.test_train::test_converges"}, base="main")
    rows = table.splitlines()
    assert rows[0] == "| test | message | duration |"
    assert rows[2].startswith("| tests\\.test\\_features::test\\_nan | AssertionError: loss is nan | 1.5s")
    assert "*(also failing on main)*" in rows[3] and "also failing" not in rows[2]
    notes = report.annotations()
    assert [(a["path"], a["start_line"], a["annotation_level"]) for a in notes] == [
        ("tests/test_features.py", 17, "failure"), ("tests/test_train.py", 8, "failure")]
    assert notes[0]["title"] == "tests.test_features::test_nan"


def test_unittest_xml_reporting_surefire_and_go_shapes_merged() -> None:
    report = junit.parse([("a.xml", UNITTEST), ("b.xml", SUREFIRE), ("c.xml", GO)], REPO_FILES)
    assert (report.count(junit.PASSED), report.count(junit.FAILED), report.count(junit.ERROR)) == (3, 2, 1)
    assert report.title == "2 failed, 1 errors, 3 passed in 0.6s"
    located = {a["title"]: (a["path"], a["start_line"]) for a in report.annotations()}
    assert located == {"tests.test_x.T::test_b": ("tests/test_x.py", 11),  # the traceback's frame in /workspace
                       "com.example.FeatureTest::extractsFeatures": ("src/test/java/com/example/FeatureTest.java", 21),
                       "features::TestNaN": ("features/scale_test.go", 14)}  # its package, not other/
    assert "error: bad value" in report.table()


def test_table_stops_at_fifty_rows_then_counts() -> None:
    cases = "".join(f'<testcase classname="t" name="n{i}" time="0.1"><failure message="m{i}"/></testcase>'
                    for i in range(73))
    report = junit.parse([("x.xml", f"<testsuite>{cases}</testsuite>".encode())])
    table = report.table()
    assert table.count("\n| t::n") == 50 and table.endswith("… and 23 more failed or errored tests.")
    assert len(report.annotations()) == 0  # no location known


def test_every_cell_is_escaped() -> None:
    xml = (b'<testsuite><testcase classname="a|b" name="@team [x](http://evil)">'
           b'<failure message="&lt;img src=x&gt; | ``` **"/></testcase></testsuite>')
    row = junit.parse([("x.xml", xml)]).table().splitlines()[2]
    assert escape("a|b::@team [x](http://evil)", 300) in row and "\\<img" in row and "](http" not in row


@pytest.mark.parametrize("data", [
    b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><testsuite>&b;</testsuite>',
    b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]><testsuite>&x;</testsuite>',
])
def test_entities_and_dtds_are_refused(data: bytes) -> None:
    with pytest.raises(junit.JUnitError, match="DTD"):
        junit.parse([("evil.xml", data)])


def test_not_junit_and_too_large_are_errors() -> None:
    with pytest.raises(junit.JUnitError, match="not JUnit XML"):
        junit.parse([("x.xml", b"<html/>")])
    with pytest.raises(junit.JUnitError, match="not XML"):
        junit.parse([("x.xml", b"<testsuite")])
    big = b" " * (junit.MAX_BYTES // 2 + 1)
    with pytest.raises(junit.JUnitError, match="50 MB"):
        junit.parse([("a.xml", b"<testsuite/>" + big), ("b.xml", b"<testsuite/>" + big)])


def test_locations_outside_the_repository_are_dropped() -> None:
    xml = (b'<testsuite><testcase classname="t" name="a" file="/etc/passwd" line="1"><failure/></testcase>'
           b'<testcase classname="t" name="b" file="../x.py" line="1"><failure/></testcase></testsuite>')
    assert junit.parse([("x.xml", xml)]).annotations() == []


def test_ten_thousand_cases_parse_within_a_second() -> None:
    cases = "".join(f'<testcase classname="tests.test_m{i % 97}" name="test_{i}" time="0.01">'
                    + (f'<failure message="boom {i}">tests/test_m{i % 97}.py:{i}: AssertionError</failure>'
                       if i % 50 == 0 else "") + "</testcase>" for i in range(10_000))
    data = f"<testsuites><testsuite>{cases}</testsuite></testsuites>".encode()
    start = time.perf_counter()
    report = junit.parse([("big.xml", data)])
    report.table(), report.annotations(), report.title
    assert time.perf_counter() - start < 1.0
    assert report.count(junit.FAILED) == 200


def test_bare_jvm_and_go_file_names_are_located_only_with_the_file_list() -> None:
    report = junit.parse([("b.xml", SUREFIRE), ("c.xml", GO)])
    assert report.annotations() == [] and len(report.broken) == 2  # in the table, not at a guessed path
