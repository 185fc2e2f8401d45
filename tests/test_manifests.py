"""bot.manifests: image bumps are byte edits; everything but the bumped scalars stays identical."""
from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.manifests import (
    Change,
    Found,
    ManifestError,
    diff_lines,
    find_images,
    render,
    set_image,
    split_image,
)
from bot.core.yq import parse as parse_path

REPO = "harbor.example.com/flops/server"
OLD = f"{REPO}:main-20261120080000-0aa0aa0"
DIGEST = "sha256:" + "ab" * 32
NEW = f"{REPO}:main-20261121090000-1bb1bb1@{DIGEST}"
FIELD = ".spec.jobTemplate.spec.template.spec.containers[0].image"

SEED = f"""\
apiVersion: batch/v1
kind: CronJob
metadata: {{name: fl-server}}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          imagePullSecrets: [{{name: harbor}}]
          containers:
            # the FL server; bumped by flops-bot
            - name: server
              image: {OLD}
              ports:
                - containerPort: 8080
"""

STREAM = f"""\
# Leading comment: the flops stack — überall ünïcode ✓
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: fl-server
  labels:
    "app.kubernetes.io/name": fl-server   # quoted key
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: &server {OLD}
      containers:
        - name: server
          image: *server
        - name: sidecar
          image: 'harbor.example.com/flops/sidecar:v1'
        - name: proxy
          image: "{REPO}-proxy:v2"
...
# between documents

---
apiVersion: v1
kind: Service
metadata: {{name: fl-server}}
spec:
  ports: [{{port: 80, targetPort: 8080}}]
  selector: {{app: '{REPO}:not-an-image'}}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: fl-migrate
spec:
  template:
    spec:
      initContainers: [{{name: wait, image: '{OLD}'}}]
      containers:
        - {{name: run, image: "{OLD}"}}
        - name: other
          image: harbor.example.com/flops/other:v1  # untouched
"""

KUSTOMIZATION = f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - cronjob.yaml
images:
  - name: nginx
    newTag: "1.25"
  - name: {REPO}  # bumped by flops-bot
    newTag: main-20261120080000-0aa0aa0
    digest: sha256:{"00" * 32}
"""


def swapped(text: str, old: str, new: str, count: int = 1) -> str:
    """`text` with `old` replaced exactly `count` times: what a byte edit must produce."""
    assert text.count(old) == count
    return text.replace(old, new)


def changed_lines(old: str, new: str) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(old.split("\n"), new.split("\n")) if a != b]


# --- the seed CronJob ---------------------------------------------------------------------------


def test_seed_cronjob_field_bump_is_a_one_line_byte_edit() -> None:
    edit = set_image(SEED, repository=REPO, reference=NEW, field=FIELD)
    assert edit.text == swapped(SEED, f"image: {OLD}", f"image: {NEW}")
    assert diff_lines(SEED, edit.text) == 1
    assert edit.changes == (Change(0, FIELD, 15, OLD, NEW),)


def test_seed_cronjob_auto_mode_matches_the_field_mode() -> None:
    assert set_image(SEED, repository=REPO, reference=NEW) == set_image(SEED, repository=REPO, reference=NEW,
                                                                       field=FIELD)


def test_seed_cronjob_find_images() -> None:
    assert find_images(SEED, repository=REPO) == [Found(0, FIELD, 15, OLD)]
    assert find_images(SEED, repository=REPO, field=FIELD) == [Found(0, FIELD, 15, OLD)]


def test_already_up_to_date_changes_nothing() -> None:
    bumped = set_image(SEED, repository=REPO, reference=NEW, field=FIELD).text
    for field in (FIELD, None):
        again = set_image(bumped, repository=REPO, reference=NEW, field=field)
        assert again.text == bumped
        assert again.changes == ()


# --- multi-document stream, auto mode --------------------------------------------------------------


def test_stream_auto_mode_edits_only_matching_images() -> None:
    edit = set_image(STREAM, repository=REPO, reference=NEW)
    expected = (STREAM.replace(f"&server {OLD}", f"&server {NEW}")
                .replace(f"image: '{OLD}'", f"image: '{NEW}'")
                .replace(f'image: "{OLD}"', f'image: "{NEW}"'))
    assert edit.text == expected
    assert diff_lines(STREAM, edit.text) == 3


def test_stream_changes_name_documents_paths_and_lines() -> None:
    edit = set_image(STREAM, repository=REPO, reference=NEW)
    assert [(c.document, c.path, c.line, c.old) for c in edit.changes] == [
        (0, ".spec.template.spec.initContainers[0].image", 14, OLD),  # the anchor, edited once for its alias
        (2, ".spec.template.spec.initContainers[0].image", 40, OLD),
        (2, ".spec.template.spec.containers[0].image", 42, OLD),
    ]
    assert {c.new for c in edit.changes} == {NEW}


def test_stream_find_images_sees_the_alias_through_the_anchor() -> None:
    found = find_images(STREAM, repository=REPO)
    assert [(f.document, f.path, f.line, f.value) for f in found] == [
        (0, ".spec.template.spec.initContainers[0].image", 14, OLD),
        (0, ".spec.template.spec.containers[0].image", 14, OLD),
        (2, ".spec.template.spec.initContainers[0].image", 40, OLD),
        (2, ".spec.template.spec.containers[0].image", 42, OLD),
    ]


def test_stream_other_repositories_stay() -> None:
    edit = set_image(STREAM, repository="harbor.example.com/flops/sidecar", reference="harbor.example.com/flops/sidecar:v2")
    assert edit.text == swapped(STREAM, "flops/sidecar:v1'", "flops/sidecar:v2'")


def test_stream_field_mode_edits_every_document_that_has_the_field() -> None:
    field = ".spec.template.spec.containers[0].image"
    edit = set_image(STREAM, repository=REPO, reference=NEW, field=field)
    assert [(c.document, c.line) for c in edit.changes] == [(0, 14), (2, 42)]  # the Service has no such field
    assert diff_lines(STREAM, edit.text) == 2


def test_quoted_key_in_field_path() -> None:
    text = f'kind: Pod\nmetadata:\n  annotations:\n    "flops.dev/image": {OLD}  # pinned\n'
    edit = set_image(text, repository=REPO, reference=NEW, field='.metadata.annotations."flops.dev/image"')
    assert edit.text == swapped(text, OLD, NEW)


def test_field_on_a_value_that_is_not_that_image_fails_without_showing_it() -> None:
    text = "kind: Secret\nstringData:\n  password: hunter2-do-not-leak\n  other: harbor.example.com/flops/client:v1\n"
    for field in (".stringData.password", ".stringData.other"):
        with pytest.raises(ManifestError, match="does not hold an image of harbor.example.com/flops/server") as exc:
            set_image(text, repository=REPO, reference=NEW, field=field, file="prod/secret.yaml")
        assert "hunter2" not in str(exc.value) and "client:v1" not in str(exc.value)
        assert f"field `{field}` in prod/secret.yaml" in str(exc.value)
        with pytest.raises(ManifestError, match="does not hold an image"):
            find_images(text, repository=REPO, field=field)


@pytest.mark.parametrize("empty", ["image: ", "image: ~", "image: ''"])
def test_field_that_holds_no_image_yet_is_refused(empty: str) -> None:
    text = f"kind: Pod\nspec:\n  containers:\n    - name: a\n      {empty}\n"
    with pytest.raises(ManifestError, match="does not hold an image"):
        set_image(text, repository=REPO, reference=NEW, field=".spec.containers[0].image")


@pytest.mark.parametrize("text", [
    f"---\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: {OLD}\n...\n",
    f"# only a comment\n---\nkind: Pod\nspec: {{containers: [{{name: a, image: {OLD}}}]}}\n",
    f"kind: Pod\nspec:\n  containers:\n  - {{name: a, image: {OLD}}}\n---\nkind: Pod\n",
    f"%YAML 1.1\n---\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: {OLD}\n",
    f"kind: Pod\nspec:\n  containers:\n  - name: a\n    image: !!str {OLD}\n",
    f"kind: Pod\nspec:\n  containers:\n  - name: a\n    image: {OLD}",  # no final newline
])
def test_stream_shapes(text: str) -> None:
    edit = set_image(text, repository=REPO, reference=NEW)
    assert edit.text == swapped(text, OLD, NEW)
    assert len(edit.changes) == 1


def test_document_indices_count_skipped_documents() -> None:
    text = f"# head\n---\nkind: ConfigMap\n---\nkind: Service\n---\nkind: Pod\nspec:\n  containers:\n  - image: {OLD}\n"
    (change,) = set_image(text, repository=REPO, reference=NEW).changes
    assert (change.document, change.line) == (2, 10)


def test_every_workload_kind() -> None:
    for kind, spec in [("Deployment", "spec:\n  template:\n    spec:"), ("StatefulSet", "spec:\n  template:\n    spec:"),
                       ("DaemonSet", "spec:\n  template:\n    spec:"), ("ReplicaSet", "spec:\n  template:\n    spec:"),
                       ("Job", "spec:\n  template:\n    spec:"), ("Pod", "spec:")]:
        indent = " " * (spec.count("\n") * 2 + 2)
        text = f"kind: {kind}\n{spec}\n{indent}containers:\n{indent}- image: {OLD}\n"
        assert set_image(text, repository=REPO, reference=NEW).text == swapped(text, OLD, NEW), kind


def test_unknown_kinds_are_not_touched_in_auto_mode() -> None:
    text = f"kind: Rollout\nspec:\n  template:\n    spec:\n      containers:\n      - image: {OLD}\n"
    with pytest.raises(ManifestError, match="no container image or kustomization entry"):
        set_image(text, repository=REPO, reference=NEW)
    assert set_image(text, repository=REPO, reference=NEW,
                     field=".spec.template.spec.containers[0].image").text == swapped(text, OLD, NEW)


# --- kustomization ------------------------------------------------------------------------------


def test_kustomization_with_new_tag_and_digest() -> None:
    edit = set_image(KUSTOMIZATION, repository=REPO, reference=NEW)
    expected = swapped(KUSTOMIZATION, "newTag: main-20261120080000-0aa0aa0", "newTag: main-20261121090000-1bb1bb1")
    assert edit.text == swapped(expected, f"digest: sha256:{'00' * 32}", f"digest: {DIGEST}")
    assert [(c.path, c.line) for c in edit.changes] == [("images[1].newTag", 9), ("images[1].digest", 10)]
    assert diff_lines(KUSTOMIZATION, edit.text) == 2


def test_kustomization_find_images_reconstructs_the_reference() -> None:
    assert find_images(KUSTOMIZATION, repository=REPO) == [
        Found(0, "images[1]", 8, f"{REPO}:main-20261120080000-0aa0aa0@sha256:{'00' * 32}")]


def test_kustomization_without_new_tag_and_digest_gets_them_inserted() -> None:
    text = f"kind: Kustomization\nimages:\n  - name: {REPO}  # the app\n    newName: {REPO}\n  - name: nginx\n"
    edit = set_image(text, repository=REPO, reference=NEW)
    assert edit.text == swapped(text, f"newName: {REPO}\n",
                                f"newName: {REPO}\n    newTag: main-20261121090000-1bb1bb1\n    digest: {DIGEST}\n")
    assert [(c.path, c.line, c.old) for c in edit.changes] == [("images[0].newTag", 5, ""), ("images[0].digest", 6, "")]
    assert find_images(edit.text, repository=REPO)[0].value == NEW


def test_kustomization_insertion_keeps_indentation_crlf_and_missing_final_newline() -> None:
    text = f"images:\r\n-   name: {REPO}\r\n    newTag: old"
    edit = set_image(text, repository=REPO, reference=NEW)
    assert edit.text == f"images:\r\n-   name: {REPO}\r\n    newTag: main-20261121090000-1bb1bb1\r\n    digest: {DIGEST}"
    assert [c.line for c in edit.changes] == [3, 4]


def test_kustomization_matches_new_name() -> None:
    text = f"images:\n- name: server\n  newName: {REPO}\n  newTag: old\n  digest: sha256:{'00' * 32}\n"
    edit = set_image(text, repository=REPO, reference=NEW)
    assert diff_lines(text, edit.text) == 2
    assert find_images(edit.text, repository=REPO) == [Found(0, "images[0]", 2, NEW)]


def test_kustomization_flow_entry() -> None:
    with_keys = f"images: [{{name: {REPO}, newTag: old, digest: 'sha256:{'00' * 32}'}}]\n"
    edit = set_image(with_keys, repository=REPO, reference=NEW)
    assert edit.text == f"images: [{{name: {REPO}, newTag: main-20261121090000-1bb1bb1, digest: '{DIGEST}'}}]\n"
    with pytest.raises(ManifestError, match="flow mapping"):
        set_image(f"images: [{{name: {REPO}}}]\n", repository=REPO, reference=NEW)


def test_kustomization_numeric_looking_tag_is_quoted() -> None:
    text = f"images:\n- name: {REPO}\n  newTag: main\n"
    edit = set_image(text, repository=REPO, reference=f"{REPO}:1.20")
    assert edit.text == swapped(text, "newTag: main", 'newTag: "1.20"')


# --- errors -------------------------------------------------------------------------------------


def test_missing_field_names_the_field() -> None:
    field = ".spec.template.spec.containers[3].image"
    with pytest.raises(ManifestError) as exc:
        set_image(SEED, repository=REPO, reference=NEW, field=field, file="dev/cronjob.yaml")
    assert str(exc.value).startswith(f"field `{field}` does not exist in dev/cronjob.yaml (document 1)")
    assert "check `field` in .github/flops.yml" in str(exc.value)
    with pytest.raises(ManifestError, match=r"containers\[3\]"):
        find_images(SEED, repository=REPO, field=field)


def test_missing_field_hints_how_far_the_path_exists() -> None:
    with pytest.raises(ManifestError, match=r"`\.spec\.jobTemplate\.spec\.template\.spec\.containers` exists but has 1 item\(s\), no `\[3\]`"):
        set_image(SEED, repository=REPO, reference=NEW, field=".spec.jobTemplate.spec.template.spec.containers[3].image")
    with pytest.raises(ManifestError, match="none of its 3 documents"):
        set_image(STREAM, repository=REPO, reference=NEW, field=".nope")


@pytest.mark.parametrize("field, what", [
    (".spec.jobTemplate.spec.template.spec.containers[0]", "mapping"),
    (".spec.jobTemplate.spec.template.spec.containers", "list"),
])
def test_non_scalar_target(field: str, what: str) -> None:
    with pytest.raises(ManifestError, match=f"is a {what}, not a string"):
        set_image(SEED, repository=REPO, reference=NEW, field=field)


def test_no_match_in_auto_mode() -> None:
    with pytest.raises(ManifestError) as exc:
        set_image(SEED, repository="harbor.example.com/flops/client", reference="harbor.example.com/flops/client:x",
                  file="dev/cronjob.yaml")
    assert str(exc.value).startswith("no container image or kustomization entry for harbor.example.com/flops/client "
                                     "in dev/cronjob.yaml")
    assert f"it has: {REPO}" in str(exc.value)
    assert "set `field`" in str(exc.value)


def test_bad_field_syntax_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="fix `field`"):
        set_image(SEED, repository=REPO, reference=NEW, field="spec.x")


def test_block_scalar_is_refused() -> None:
    text = f"kind: Pod\nspec:\n  containers:\n  - image: |\n      {OLD}\n"
    with pytest.raises(ManifestError, match="block scalar"):
        set_image(text, repository=REPO, reference=NEW, field=".spec.containers[0].image")


def test_invalid_yaml_is_reported_with_a_line() -> None:
    text = f"kind: Pod\nspec:\n  containers:\n  - image: {OLD}\n   bad: [\n"
    with pytest.raises(ManifestError, match="not valid YAML at line"):
        set_image(text, repository=REPO, reference=NEW)


def test_reference_of_another_repository_is_refused() -> None:
    with pytest.raises(ManifestError, match="is not an image of"):
        set_image(SEED, repository=REPO, reference="harbor.example.com/flops/client:x")


# --- style preservation -------------------------------------------------------------------------


@pytest.mark.parametrize("before, after", [
    (f"image: {OLD}", f"image: {NEW}"),
    (f"image: '{OLD}'", f"image: '{NEW}'"),
    (f'image: "{OLD}"', f'image: "{NEW}"'),
    (f"image: &img {OLD}  # pinned", f"image: &img {NEW}  # pinned"),
    (f"image: !!str '{OLD}'", f"image: !!str '{NEW}'"),
    (f'"image": "{OLD}"', f'"image": "{NEW}"'),
    (f"image:\n        {OLD}", f"image:\n        {NEW}"),
])
def test_style_is_preserved(before: str, after: str) -> None:
    text = f"kind: Pod\nspec:\n  containers:\n    - name: a\n      {before}\n    - name: b\n"
    edit = set_image(text, repository=REPO, reference=NEW, field=".spec.containers[0].image")
    assert edit.text == text.replace(before, after)


@pytest.mark.parametrize("value, plain, single, double", [
    ("v1", "v1", "'v1'", '"v1"'),
    ("it's", "it's", "'it''s'", '"it\'s"'),
    ('say "hi"', 'say "hi"', "'say \"hi\"'", '"say \\"hi\\""'),
    ("1.20", '"1.20"', "'1.20'", '"1.20"'),
    ("true", '"true"', "'true'", '"true"'),
    ("a: b", '"a: b"', "'a: b'", '"a: b"'),
    ("#x", '"#x"', "'#x'", '"#x"'),
    ("back\\slash", "back\\slash", "'back\\slash'", '"back\\\\slash"'),
    ("tab\there", '"tab\\there"', '"tab\\there"', '"tab\\there"'),
])
def test_rendering_keeps_the_value(value: str, plain: str, single: str, double: str) -> None:
    for rendered, style in ((plain, None), (single, "'"), (double, '"')):
        assert render(value, style) == rendered
        assert yaml.safe_load(f"b: {rendered}  # c\n") == {"b": value}


def test_crlf_file_stays_crlf() -> None:
    text = STREAM.replace("\n", "\r\n")
    edit = set_image(text, repository=REPO, reference=NEW)
    assert edit.text == set_image(STREAM, repository=REPO, reference=NEW).text.replace("\n", "\r\n")
    assert edit.text.count("\r\n") == edit.text.count("\n")
    assert [c.line for c in edit.changes] == [14, 40, 42]


def test_flow_sequence_value_needing_quotes_is_quoted() -> None:
    assert render("a,b", None, flow=True) == '"a,b"'
    assert render("a,b", None) == "a,b"
    assert yaml.safe_load('spec: {containers: [{name: a, image: "a,b"}]}')["spec"]["containers"][0]["image"] == "a,b"


# --- paths and references -----------------------------------------------------------------------


@pytest.mark.parametrize("text, path", [
    (".spec.jobTemplate.spec.template.spec.containers[0].image",
     ("spec", "jobTemplate", "spec", "template", "spec", "containers", 0, "image")),
    ('."app.kubernetes.io/name"', ("app.kubernetes.io/name",)),
    ('.a["b.c"]', ("a", "b.c")),
    (".a['b.c'].d", ("a", "b.c", "d")),
    ('.a."q\\"x"', ("a", 'q"x')),
    (".a[-1]", ("a", -1)),
    (".[0].a", (0, "a")),
    (".", ()),
    (".a_b-c.0", ("a_b-c", "0")),
    (".a[10][2]", ("a", 10, 2)),
])
def test_parse_path(text: str, path: tuple[str | int, ...]) -> None:
    assert parse_path(text) == path


@pytest.mark.parametrize("text, where", [
    ("", "column 1"),
    ("spec", "column 1"),
    (".spec.", "column 7"),
    (".a..b", "column 4"),
    (".a[", "column 3"),
    (".a[x]", "column 3"),
    (".a[0", "column 3"),
    ('.a["b"', "column 7"),
    ('."b', "column 2"),
    (".a b", "column 3"),
    (".a[0]b", "column 6"),
    ('.""', "column 2"),
    (".a.b/c", "column 5"),
])
def test_parse_path_errors_say_where(text: str, where: str) -> None:
    with pytest.raises(ValueError, match=where):
        parse_path(text)


@pytest.mark.parametrize("ref, parts", [
    (f"{REPO}:main-2026-abc@{DIGEST}", (REPO, "main-2026-abc", DIGEST)),
    (f"{REPO}:main-2026-abc", (REPO, "main-2026-abc", None)),
    (f"{REPO}@{DIGEST}", (REPO, None, DIGEST)),
    (REPO, (REPO, None, None)),
    ("localhost:5000/x/y:tag", ("localhost:5000/x/y", "tag", None)),
    ("localhost:5000/x/y", ("localhost:5000/x/y", None, None)),
    (f"localhost:5000/x/y@{DIGEST}", ("localhost:5000/x/y", None, DIGEST)),
    ("nginx", ("nginx", None, None)),
    ("nginx:1.25", ("nginx", "1.25", None)),
])
def test_split_image(ref: str, parts: tuple[str, str | None, str | None]) -> None:
    assert split_image(ref) == parts


@pytest.mark.parametrize("old, new, count", [
    ("a\nb\nc\n", "a\nb\nc\n", 0),
    ("a\nb\nc\n", "a\nB\nc\n", 1),
    ("a\nb\nc\n", "a\nB\nC\n", 2),
    ("a\nb\n", "a\nx\ny\nb\n", 2),
    ("a\nb\nc\n", "a\nc\n", 1),
])
def test_diff_lines(old: str, new: str, count: int) -> None:
    assert diff_lines(old, new) == count


# --- property -----------------------------------------------------------------------------------

TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}", fullmatch=True)
DIGESTS = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())


@settings(max_examples=60, deadline=None)
@given(tag=TAGS, digest=DIGESTS, field=st.sampled_from([None, ".spec.template.spec.containers[0].image"]))
def test_set_then_find_returns_the_new_reference(tag: str, digest: str, field: str | None) -> None:
    reference = f"{REPO}:{tag}@{digest}"
    edit = set_image(STREAM, repository=REPO, reference=reference, field=field)
    assert {f.value for f in find_images(edit.text, repository=REPO, field=field)} == {reference}
    assert diff_lines(STREAM, edit.text) == len(edit.changes)
    assert set_image(edit.text, repository=REPO, reference=reference, field=field).changes == ()


@settings(max_examples=40, deadline=None)
@given(tag=TAGS, digest=DIGESTS)
def test_kustomization_set_then_find(tag: str, digest: str) -> None:
    reference = f"{REPO}:{tag}@{digest}"
    edit = set_image(KUSTOMIZATION, repository=REPO, reference=reference)
    assert [f.value for f in find_images(edit.text, repository=REPO)] == [reference]
    assert diff_lines(KUSTOMIZATION, edit.text) == len(edit.changes)


# --- only documents that can match are parsed: the shortcut must not change results ----------------

POD = f"kind: Pod\nspec:\n  containers:\n  - image: {OLD}\n"


@pytest.mark.parametrize("head", [
    "",
    "# leading comment\n\n",
    "---\n",
    "--- # a comment on the marker\n",
    "kind: ConfigMap\ndata: {a: '--- not a marker'}\n---\n",
    "kind: ConfigMap\ndata:\n  s: |\n    ---- dashes, indented\n...\n# between\n---\n",
    "---\nkind: ConfigMap\n...\n---\n# only a comment\n---\n",
    "---\n---\n",  # an empty document
    "kind: Secret\nstringData: {k: \"v\\tescaped\"}\n---\n",
])
def test_document_index_matches_a_full_parse(head: str) -> None:
    text = head + ("---\n" if head and not head.endswith("---\n") else "") + POD
    documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    (change,) = set_image(text, repository=REPO, reference=NEW).changes
    assert change.document == len(documents) - 1
    assert change.line == text.count("\n")
    assert set_image(text, repository=REPO, reference=NEW).text == swapped(text, OLD, NEW)


def test_escaped_repository_is_still_found() -> None:
    text = 'kind: Pod\nspec:\n  containers:\n  - image: "harbor\\x2eexample.com/flops/server:old"\n'
    edit = set_image(text, repository=REPO, reference=NEW)
    assert edit.text == text.replace('"harbor\\x2eexample.com/flops/server:old"', f'"{NEW}"')


def test_escaped_key_is_still_found() -> None:
    text = f"---\nkind: Pod\n\"sp\\x65c\":\n  containers:\n  - image: {OLD}\n"
    edit = set_image(text, repository=REPO, reference=NEW, field=".spec.containers[0].image")
    assert edit.text == swapped(text, OLD, NEW)


def test_duplicate_keys_are_refused() -> None:
    text = f"kind: Pod\nspec:\n  containers:\n  - image: {OLD}\n    image: {OLD}\n"
    with pytest.raises(ManifestError, match="appears 2 times"):
        set_image(text, repository=REPO, reference=NEW)


def test_anchor_outside_the_container_is_edited_once() -> None:
    text = (f"kind: Deployment\nmetadata:\n  annotations:\n    image: &img {OLD}\nspec:\n  template:\n    spec:\n"
            f"      containers:\n      - image: *img\n      - image: *img\n")
    edit = set_image(text, repository=REPO, reference=NEW)
    assert edit.text == swapped(text, OLD, NEW)
    assert [(c.path, c.line) for c in edit.changes] == [(".spec.template.spec.containers[0].image", 4)]
