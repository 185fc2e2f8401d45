"""bot.core.yq: the one yq path grammar, read by `field` validation (config) and by manifests alike."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core import yq
from bot.core.config import ConfigError, parse, yq_path
from bot.core.manifests import ManifestError, set_image

VALID = [
    (".", ()),
    (".a", ("a",)),
    (".a.b", ("a", "b")),
    (".a[0]", ("a", 0)),
    (".a[0][1]", ("a", 0, 1)),
    (".a[10]", ("a", 10)),
    (".a[-1]", ("a", -1)),
    (".[0]", (0,)),
    (".[0].image", (0, "image")),
    (".a.[2]", ("a", 2)),
    ('.["a.b"]', ("a.b",)),
    ('."a.b"', ("a.b",)),
    (".'a.b'", ("a.b",)),
    ('.a["b.c"]', ("a", "b.c")),
    (".a['b']", ("a", "b")),
    ('.a."q\\"x"', ("a", 'q"x')),
    ('.metadata.labels."app.kubernetes.io/name"', ("metadata", "labels", "app.kubernetes.io/name")),
    (".my-key_2.0", ("my-key_2", "0")),
    (".spec.jobTemplate.spec.template.spec.containers[0].image",
     ("spec", "jobTemplate", "spec", "template", "spec", "containers", 0, "image")),
]

INVALID = [
    ("", "starts with `.`", 1),
    ("spec.a", "starts with `.`", 1),
    (".a.", "empty key; write keys as `.key`", 4),
    (".a..b", "empty key; write keys as `.key`", 4),
    ('.""', "empty key", 2),
    (".a[", "unexpected `[`", 3),
    (".a[x]", "an index is like `[0]`", 3),
    (".a[0", "unexpected `[0`", 3),
    (".a[1.5]", "unexpected `[1.5]`", 3),
    ('.a["b"', "expected `]` after the quoted key", 7),
    ('."open', "unterminated quote", 2),
    (".a b", "unexpected ` b`", 3),
    (".a]", "unexpected `]`", 3),
    (".a[0]b", "unexpected `b`", 6),
    (".a.b/c", "unexpected `/c`", 5),
]


@pytest.mark.parametrize(("text", "segments"), VALID)
def test_valid_paths_read_as_their_segments(text: str, segments: tuple[str | int, ...]) -> None:
    assert yq.parse(text) == segments
    assert yq.parse(yq.format(segments)) == segments


@pytest.mark.parametrize(("text", "message", "column"), INVALID)
def test_invalid_paths_say_what_and_where(text: str, message: str, column: int) -> None:
    with pytest.raises(ValueError) as error:
        yq.parse(text)
    assert message in str(error.value)
    assert str(error.value).endswith(f"(column {column})")
    assert str(error.value).startswith(f"bad yq path `{text}`")


@pytest.mark.parametrize(("segments", "text"), [
    ((), "."), (("a", 0, "b"), ".a[0].b"), ((0, "a"), ".[0].a"), (("a.b",), '."a.b"'), (("a", -1), ".a[-1]"),
    (('q"x\\',), '."q\\"x\\\\"'),
])
def test_format_spells_what_parse_reads(segments: tuple[str | int, ...], text: str) -> None:
    assert yq.format(segments) == text


@given(st.lists(st.one_of(st.integers(-5, 50), st.text(min_size=1, max_size=8)), max_size=6))
def test_every_path_survives_a_round_trip(segments: list[str | int]) -> None:
    assert yq.parse(yq.format(tuple(segments))) == tuple(segments)


@pytest.mark.parametrize(("text", "segments"), [(t, s) for t, s in VALID if s])
def test_config_accepts_every_path_manifests_apply(text: str, segments: tuple[str | int, ...]) -> None:
    assert yq_path(text) == segments


def test_the_document_root_is_no_field() -> None:
    with pytest.raises(ValueError, match="whole document, not an image field"):
        yq_path(".")
    with pytest.raises(ConfigError) as error:
        parse("registry: r.example.com/x\nimages: [{name: s, dockerfile: D}]\n"
              "deploy: [{name: dev, repo: a/b, branch: main, file: f.yaml, image: s, field: .}]\n")
    assert [(p.path, "whole document" in p.message) for p in error.value.problems] == [("deploy[0].field", True)]


def test_a_negative_index_counts_from_the_end_in_manifests() -> None:
    text = "spec:\n  containers:\n  - image: a:1\n  - image: b:1\n"
    edit = set_image(text, repository="b", reference="b:2", field=".spec.containers[-1].image")
    assert edit.text == "spec:\n  containers:\n  - image: a:1\n  - image: b:2\n"
    with pytest.raises(ManifestError, match="bad yq path"):
        set_image(text, repository="b", reference="b:2", field=".spec..image")
