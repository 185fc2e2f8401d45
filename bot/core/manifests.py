"""Bump image references in Kubernetes manifests by editing bytes, never by re-dumping YAML.

Sans-I/O: every function maps text to text (or to what it found in it).

How an edit works: PyYAML composes the text (`yaml.compose_all`, `yaml.SafeLoader`) into nodes
whose `start_mark.index` / `end_mark.index` point into the text; the bot replaces exactly the
characters of the target scalars, so comments, key order, quoting, blank lines, anchors, line
endings (CRLF stays CRLF) and every other byte stay as they were and a bump is a one-line diff.
After editing, the edited documents are composed again and the new values checked, so a broken
manifest is never handed back.

- Style: a plain scalar stays plain, 'single' stays single-quoted, "double" stays double-quoted
  (escaped as needed). A plain scalar that could not hold the new value as a string (`1.20`,
  `true`, `#x`...) becomes double-quoted rather than change type. Block scalars (`|`, `>`) are
  refused.
- Aliases: PyYAML hands the anchored node to every alias, so when the target is an alias
  (`image: *server`), the anchor's scalar (`&server harbor.example.com/...`) is edited, once;
  every alias of it follows. Merge keys (`<<: *base`) are not followed.
- Speed: documents are composed by libyaml when PyYAML has it (the same marks, character offsets;
  a BOM stream takes the pure-Python loader, ~60 ms per 1,000 lines), with no tag resolution (the
  bot reads values and marks, never tags). On top of that, the stream is
  split at its `---` document markers (a `---` at column 0 always starts a document in PyYAML)
  and only documents that can match are composed: those containing the repository (auto mode)
  or every key of the field path (field mode) literally, or any backslash (a double-quoted
  escape could spell them). Documents that cannot match are neither parsed nor touched, so a
  syntax error in them is left to Argo CD to report. Streams with directives (`%YAML`, `%TAG`)
  or a BOM are composed whole. After an edit only the edited documents are composed again.
- Numbers for people: `Change.line` / `Found.line` are 1-based line numbers (after the edit for
  `Change`); `document` is the 0-based index of the document in the stream; error messages count
  documents from 1, as an editor would.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import BaseConstructor
from yaml.resolver import BaseResolver

from bot.core import yq
from bot.core.yq import Path

CONFIG = ".github/flops.yml"
WORKLOADS = {  # kind -> path of its pod spec
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}
CONTAINER_LISTS = ("initContainers", "containers")
KUSTOMIZE_KINDS = ("Kustomization", "Component")
BREAKS = "\r\n\x85\u2028\u2029"
_DOCUMENT_START = re.compile(f"---(?=[ \t{BREAKS}]|\\Z)")  # and at column 0: see _at_line_start
_INDICATORS = "-?:,[]{}#&*!|>'\"%@`"
_NOT_PRINTABLE = re.compile("[^\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


class ManifestError(Exception):
    """The manifest cannot be edited as asked; the message says what to change."""


@dataclass(frozen=True)
class Change:
    document: int  # 0-based index in the stream
    path: str      # ".spec.template.spec.containers[0].image", or "images[0].newTag" in a kustomization
    line: int      # 1-based, in the edited text
    old: str       # "" when the key was inserted
    new: str


@dataclass(frozen=True)
class Edit:
    text: str
    changes: tuple[Change, ...]  # only the scalars whose value actually changed


@dataclass(frozen=True)
class Found:
    document: int  # 0-based index in the stream
    path: str
    line: int      # 1-based
    value: str     # the image reference; for a kustomization entry "<newName or name>:<newTag>@<digest>"


@dataclass(frozen=True)
class _Document:
    index: int
    offset: int  # of the composed chunk in the whole text
    root: yaml.Node | None


@dataclass(frozen=True)
class _Slot:
    """One scalar to set (or, when `node` is None, one key to insert into `entry`)."""
    document: _Document
    path: str
    want: str
    node: yaml.ScalarNode | None
    flow: bool = False  # inside a flow collection (`[...]`, `{...}`)
    entry: yaml.MappingNode | None = None
    key: str = ""


@dataclass(frozen=True)
class _Splice:
    start: int
    end: int
    text: str
    slot: _Slot
    old: str


# --- image references -----------------------------------------------------------------------


def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of `registry[:port]/path[:tag][@digest]`; absent parts are None."""
    name, at, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:] or None, digest if at and digest else None
    return name, None, digest if at and digest else None


def join_image(repository: str, tag: str | None, digest: str | None) -> str:
    return repository + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


# --- composing ------------------------------------------------------------------------------


def _compose(chunk: str, offset: int, text: str, file: str) -> list[yaml.Node]:
    try:
        return list(yaml.compose_all(chunk, Loader=_loader(chunk)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = text.count("\n", 0, offset + mark.index) + 1 if mark else None
        where = f" at line {line}" if line else ""
        raise ManifestError(f"{file} is not valid YAML{where} ({exc.problem or exc.context}): "
                            "fix the file in the config repository") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{file} is not valid YAML ({exc}): fix the file in the config repository") from None


class _Untagged(BaseResolver):
    """Every node gets its kind's default tag: the bot reads nodes' values and marks, never their
    tags, and PyYAML's implicit-tag regexps are a third of the composing time."""

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            return str(self.DEFAULT_SCALAR_TAG)
        return str(self.DEFAULT_SEQUENCE_TAG if kind is yaml.SequenceNode else self.DEFAULT_MAPPING_TAG)


_FAST: Any = None  # without libyaml in PyYAML, the pure-Python loader does it all, slower
if yaml.__with_libyaml__:
    from yaml.cyaml import CParser  # type: ignore[attr-defined]

    class _FastComposer(CParser, BaseConstructor, _Untagged):
        """libyaml's parser and composer: the same marks (character offsets), ~10x faster."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            BaseConstructor.__init__(self)
            _Untagged.__init__(self)

    _FAST = _FastComposer


def _loader(chunk: str) -> Any:
    """libyaml when PyYAML was built with it; the pure-Python loader for a BOM (libyaml does not
    count its character in marks) or without libyaml."""
    return _FAST if _FAST is not None and not chunk.startswith("\ufeff") else yaml.SafeLoader


def _chunks(text: str) -> list[int]:
    """Start offsets of the stream's pieces: what precedes the first `---`, then one per `---`."""
    if text.startswith("\ufeff") or any(_at_line_start(text, i) for i in _indices(text, "%")):
        return [0]  # a BOM or a directive: compose the stream whole
    starts = [m.start() for m in _DOCUMENT_START.finditer(text) if _at_line_start(text, m.start())]
    return starts if starts[:1] == [0] else [0, *starts]


def _at_line_start(text: str, i: int) -> bool:
    return i == 0 or text[i - 1] in BREAKS


def _indices(text: str, needle: str) -> list[int]:
    found, i = [], text.find(needle)
    while i >= 0:
        found.append(i)
        i = text.find(needle, i + 1)
    return found


def _documents(text: str, may_match: Callable[[str], bool], file: str,
               only: frozenset[int] | None = None) -> tuple[list[_Document], int]:
    """The documents that may match (and, given `only`, have one of those indexes), composed, and
    how many documents the stream holds."""
    starts = _chunks(text)
    if len(starts) == 1:
        roots = _compose(text, 0, text, file)
        return [_Document(i, 0, root) for i, root in enumerate(roots) if only is None or i in only], len(roots)
    documents: list[_Document] = []
    index = 0
    for a, b in zip(starts, [*starts[1:], len(text)]):
        chunk = text[a:b]
        if not chunk.startswith("---") and _only_comments(chunk):
            continue  # before the first `---`: a leading comment, not a document
        if not may_match(chunk) or (only is not None and index not in only):
            index += 1
            continue
        for root in _compose(chunk, a, text, file):
            documents.append(_Document(index, a, root))
            index += 1
    return documents, index


def _only_comments(chunk: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in chunk.split("\n"))


def _contains_all(words: Iterable[str]) -> Callable[[str], bool]:
    """Can a chunk spell all `words`? Only when it has them literally or has an escape (\\)."""
    literal = [w for w in words if w and not any(c.isspace() or c in "'\"\\#" for c in w)]
    return lambda chunk: "\\" in chunk or all(w in chunk for w in literal)


def _get(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(key, int) and isinstance(node, yaml.SequenceNode):
        items = node.value
        return items[key] if -len(items) <= key < len(items) else None
    if isinstance(key, str) and isinstance(node, yaml.MappingNode):
        values = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
        if len(values) > 1:
            raise ManifestError(f"key `{key}` appears {len(values)} times in one mapping: remove the duplicates")
        return values[0] if values else None
    return None


def _walk(node: yaml.Node | None, path: Path) -> tuple[yaml.Node | None, int]:
    """The node at `path` (or None) and how many segments of it exist."""
    for depth, key in enumerate(path):
        child = _get(node, key)
        if child is None:
            return None, depth
        node = child
    return node, len(path)


def _flow_along(node: yaml.Node | None, path: Path) -> bool:
    """Does `path` pass through a flow collection?"""
    for key in path:
        if isinstance(node, yaml.CollectionNode) and node.flow_style:
            return True
        node = _get(node, key)
    return False


def _scalar(node: yaml.Node | None, key: str) -> str | None:
    value = _get(node, key)
    return value.value if isinstance(value, yaml.ScalarNode) else None


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _where(document: _Document, node: yaml.Node, text: str, file: str) -> str:
    return f"{file} (document {document.index + 1}, line {_line(text, document.offset + node.start_mark.index)})"


# --- locating -------------------------------------------------------------------------------


def _field_slots(text: str, field: str, reference: str, file: str, only: frozenset[int] | None = None) -> list[_Slot]:
    path = _field_path(field)
    documents, _ = _documents(text, _contains_all(k for k in path if isinstance(k, str)), file, only)
    slots = []
    for document in documents:
        node, _ = _walk(document.root, path)
        if node is None:
            continue
        if not isinstance(node, yaml.ScalarNode):
            kind = "mapping" if isinstance(node, yaml.MappingNode) else "list"
            raise ManifestError(f"field `{field}` in {_where(document, node, text, file)} is a {kind}, not a "
                                f"string: point `field` in {CONFIG} at the image itself (e.g. `...containers[0].image`)")
        slots.append(_Slot(document, yq.format(path), reference, node, _flow_along(document.root, path)))
    if not slots:
        raise ManifestError(_missing_field(text, field, path, file))
    return slots


def _field_path(field: str) -> Path:
    try:
        return yq.parse(field)
    except ValueError as exc:
        raise ManifestError(f"{exc}: fix `field` in {CONFIG}") from None


def _missing_field(text: str, field: str, path: Path, file: str) -> str:
    documents, count = _documents(text, lambda chunk: True, file)
    where = "(document 1)" if count == 1 else f"(none of its {count} documents has it)"
    return f"field `{field}` does not exist in {file} {where}{_furthest(documents, path)}: check `field` in {CONFIG}"


def _furthest(documents: list[_Document], path: Path) -> str:
    """How far `path` gets in the document where it gets furthest, as a hint."""
    best = max((_walk(d.root, path)[1] for d in documents), default=0)
    if not best:
        return ""
    root = next(d.root for d in documents if _walk(d.root, path)[1] == best)
    node, _ = _walk(root, path[:best])
    missing = path[best]
    if isinstance(missing, int) and isinstance(node, yaml.SequenceNode):
        return f"; `{yq.format(path[:best])}` exists but has {len(node.value)} item(s), no `[{missing}]`"
    return f"; `{yq.format(path[:best])}` exists but has no `{yq.format((missing,))}`"


def _pod_spec_images(document: _Document) -> list[tuple[Path, yaml.Node]]:
    kind = _scalar(document.root, "kind")
    spec_path = WORKLOADS.get(kind or "")
    if spec_path is None:
        return []
    spec, _ = _walk(document.root, spec_path)
    found: list[tuple[Path, yaml.Node]] = []
    for name in CONTAINER_LISTS:
        containers = _get(spec, name)
        items = containers.value if isinstance(containers, yaml.SequenceNode) else []
        for i, container in enumerate(items):
            image = _get(container, "image")
            path: Path = (*spec_path, name, i, "image")
            if image is not None:
                found.append((path, image))
    return found


def _kustomization_entries(document: _Document) -> list[tuple[int, yaml.MappingNode]]:
    root = document.root
    if not isinstance(root, yaml.MappingNode):
        return []
    if _get(root, "kind") is not None and _scalar(root, "kind") not in KUSTOMIZE_KINDS:
        return []
    images = _get(root, "images")
    items = images.value if isinstance(images, yaml.SequenceNode) else []
    return [(i, entry) for i, entry in enumerate(items) if isinstance(entry, yaml.MappingNode)]


def _matches_entry(entry: yaml.MappingNode, repository: str) -> bool:
    return repository in (_scalar(entry, "name"), _scalar(entry, "newName"))


def _auto_slots(text: str, repository: str, reference: str, file: str,
                only: frozenset[int] | None = None) -> list[_Slot]:
    _, tag, digest = split_image(reference)
    documents, _ = _documents(text, _contains_all([repository]), file, only)
    slots: list[_Slot] = []
    for document in documents:
        for path, node in _pod_spec_images(document):
            if isinstance(node, yaml.ScalarNode) and split_image(node.value)[0] == repository:
                slots.append(_Slot(document, yq.format(path), reference, node, _flow_along(document.root, path)))
        for i, entry in _kustomization_entries(document):
            if _matches_entry(entry, repository):
                slots.extend(_entry_slots(document, i, entry, tag, digest))
    if not slots:
        raise ManifestError(_no_match(text, repository, file))
    return slots


def _entry_slots(document: _Document, i: int, entry: yaml.MappingNode,
                 tag: str | None, digest: str | None) -> list[_Slot]:
    slots = []
    for key, want in (("newTag", tag), ("digest", digest)):
        if want is None:
            continue
        node = _get(entry, key)
        if node is not None and not isinstance(node, yaml.ScalarNode):
            raise ManifestError(f"kustomization entry `images[{i}].{key}` is not a string: make it one")
        flow = _flow_along(document.root, ("images", i, key))
        slots.append(_Slot(document, f"images[{i}].{key}", want, node, flow, entry, key))
    return slots


def _no_match(text: str, repository: str, file: str) -> str:
    documents, _ = _documents(text, lambda chunk: True, file)
    others = sorted({split_image(n.value)[0] for d in documents for _, n in _pod_spec_images(d)
                     if isinstance(n, yaml.ScalarNode)})
    seen = f" (it has: {', '.join(others[:5])})" if others else ""
    return (f"no container image or kustomization entry for {repository} in {file}{seen}: set `field` "
            f"in {CONFIG} to the yq path of the image (e.g. `.spec.template.spec.containers[0].image`), "
            "or check the image name")


def find_images(text: str, *, repository: str, field: str | None = None, file: str = "the manifest") -> list[Found]:
    """The current references that `set_image` with the same arguments would replace."""
    if field is not None:
        return [_found(text, s, s.node.value if s.node else "") for s in _field_slots(text, field, "", file)]
    documents, _ = _documents(text, _contains_all([repository]), file)
    found: list[Found] = []
    for document in documents:
        for path, node in _pod_spec_images(document):
            if isinstance(node, yaml.ScalarNode) and split_image(node.value)[0] == repository:
                found.append(_found(text, _Slot(document, yq.format(path), "", node), node.value))
        for i, entry in _kustomization_entries(document):
            if _matches_entry(entry, repository):
                value = join_image(_scalar(entry, "newName") or _scalar(entry, "name") or repository,
                                   _scalar(entry, "newTag"), _scalar(entry, "digest"))
                found.append(Found(document.index, f"images[{i}]",
                                   _line(text, document.offset + entry.start_mark.index), value))
    return found


def _found(text: str, slot: _Slot, value: str) -> Found:
    node = slot.node
    index = slot.document.offset + (node.start_mark.index if node else 0)
    return Found(slot.document.index, slot.path, _line(text, index), value)


# --- editing --------------------------------------------------------------------------------


def set_image(text: str, *, repository: str, reference: str, field: str | None = None,
              file: str = "the manifest") -> Edit:
    """Point every matching image (or the scalar at `field`) at `reference`; see the module doc."""
    if field is None and split_image(reference)[0] != repository:
        raise ManifestError(f"reference {reference} is not an image of {repository}: "
                            "pass the reference built for that repository")
    slots = _slots(text, repository, reference, field, file)
    splices = _dedupe([s for s in (_splice(text, slot, file) for slot in slots) if s is not None])
    if not splices:
        return Edit(text, ())
    new, changes = _apply(text, splices)
    _verify(new, slots, frozenset(s.slot.document.index for s in splices), repository, reference, field, file)
    return Edit(new, changes)


def _slots(text: str, repository: str, reference: str, field: str | None, file: str,
           only: frozenset[int] | None = None) -> list[_Slot]:
    if field is not None:
        return _field_slots(text, field, reference, file, only)
    return _auto_slots(text, repository, reference, file, only)


def _dedupe(splices: list[_Splice]) -> list[_Splice]:
    """One splice per place (an anchored scalar reached through aliases is edited once), in text order."""
    unique: dict[tuple[int, int, str], _Splice] = {}
    for s in splices:
        unique.setdefault((s.start, s.end, s.slot.key if s.start == s.end else ""), s)
    return sorted(unique.values(), key=lambda s: (s.start, s.end))


def _splice(text: str, slot: _Slot, file: str) -> _Splice | None:
    if slot.node is None:
        return _insertion(text, slot, file)
    node = slot.node
    if node.value == slot.want:
        return None
    style = node.style or None  # libyaml says "" for plain, the pure-Python loader None
    if style in ("|", ">"):
        raise ManifestError(f"`{slot.path}` in {_where(slot.document, node, text, file)} is a block scalar "
                            f"(| or >): write the image on one line")
    offset = slot.document.offset
    end = offset + node.end_mark.index
    start = min(_value_start(text, offset + node.start_mark.index), end)
    if style and text[start:start + 1] != style:
        raise ManifestError(f"cannot locate `{slot.path}` in {_where(slot.document, node, text, file)}: "
                            "please report this manifest to the flops-bot maintainers")
    rendered = render(slot.want, style, flow=slot.flow)
    if start == end and text[start:start + 1] in (" ", "\t"):
        start = end = start + 1  # `image: ` with no value: write after the space
    elif start == end and start > 0 and not text[start - 1].isspace():
        rendered = " " + rendered  # `image:` with no value
    return _Splice(start, end, rendered, slot, node.value)


def _value_start(text: str, i: int) -> int:
    """Skip an anchor (`&a`), a tag (`!!str`), spaces and comments before a scalar's first character."""
    while i < len(text):
        if text[i] in "&!":
            while i < len(text) and not text[i].isspace():
                i += 1
        elif text[i] in " \t" + BREAKS:
            i += 1
        elif text[i] == "#" and i > 0 and text[i - 1].isspace():
            while i < len(text) and text[i] not in BREAKS:
                i += 1
        else:
            break
    return i


def render(value: str, style: str | None, *, flow: bool = False) -> str:
    """`value` as a YAML scalar in `style` (None = plain, "'" or '"'); plain falls back to double quotes."""
    if style is None and _plain_ok(value, flow):
        return value
    if style == "'" and not _NOT_PRINTABLE.search(value):
        return "'" + value.replace("'", "''") + "'"
    return '"' + "".join(_escape(c) for c in value) + '"'


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"}


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if not _NOT_PRINTABLE.match(char):
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _plain_ok(value: str, flow: bool) -> bool:
    """Would `value` read back, unquoted, as this very string?"""
    if not value or _NOT_PRINTABLE.search(value) or value != value.strip() or value[0] in _INDICATORS:
        return False
    if ": " in value or " #" in value or value.endswith(":") or "\t" in value:
        return False
    if flow and any(c in value for c in ",[]{}"):
        return False
    resolvers = yaml.SafeLoader.yaml_implicit_resolvers
    return not any(regexp.match(value) for _, regexp in [*resolvers.get(value[0], []), *resolvers.get(None, [])])


def _insertion(text: str, slot: _Slot, file: str) -> _Splice:
    """A `key: value` line after the last key line of a block-mapping kustomization entry."""
    entry = slot.entry
    assert entry is not None
    last = entry.value[-1][1]
    if entry.flow_style or not isinstance(last, yaml.ScalarNode):
        raise ManifestError(f"kustomization entry `{slot.path.rsplit('.', 1)[0]}` in "
                            f"{_where(slot.document, entry, text, file)} has no `{slot.key}` and is "
                            f"{'a flow mapping' if entry.flow_style else 'not flat'}: add `{slot.key}:` "
                            "to it, or write the entry as a block mapping of strings")
    eol = _end_of_line(text, slot.document.offset + last.end_mark.index)
    line = f"{' ' * entry.value[0][0].start_mark.column}{slot.key}: {render(slot.want, None)}"
    if eol == len(text):
        return _Splice(eol, eol, ("\r\n" if "\r\n" in text else "\n") + line, slot, "")
    newline = "\r\n" if text.startswith("\r\n", eol) else text[eol]
    return _Splice(eol + len(newline), eol + len(newline), line + newline, slot, "")


def _end_of_line(text: str, i: int) -> int:
    while i < len(text) and text[i] not in BREAKS:
        i += 1
    return i


def _apply(text: str, splices: list[_Splice]) -> tuple[str, tuple[Change, ...]]:
    parts: list[str] = []
    changes: list[Change] = []
    done, line = 0, 1
    for s in splices:
        parts.append(text[done:s.start])
        line += text.count("\n", done, s.start)
        here = line + (1 if s.start == s.end and s.text.startswith(("\n", "\r")) else 0)
        changes.append(Change(s.slot.document.index, s.slot.path, here, s.old, s.slot.want))
        parts.append(s.text)
        line += s.text.count("\n") - text.count("\n", s.start, s.end)
        done = s.end
    parts.append(text[done:])
    return "".join(parts), tuple(changes)


def _verify(new: str, slots: list[_Slot], edited: frozenset[int], repository: str, reference: str,
            field: str | None, file: str) -> None:
    """Compose the edited documents again: every slot of them must now read back as wanted. (The
    other documents are byte-identical and composed on their own, so they read as before.)"""
    try:
        again = _slots(new, repository, reference, field, file, edited)
    except ManifestError as exc:
        raise ManifestError(f"editing {file} would break it ({exc}); please report this manifest "
                            "to the flops-bot maintainers") from None
    wanted = sorted((s.document.index, s.path, s.want) for s in slots if s.document.index in edited)
    got = sorted((s.document.index, s.path, s.node.value if s.node else "") for s in again)
    if wanted != got:
        raise ManifestError(f"editing {file} did not read back as written; please report this "
                            "manifest to the flops-bot maintainers")


# --- diffs ----------------------------------------------------------------------------------


def diff_lines(old: str, new: str) -> int:
    """How many lines differ (a replaced line counts once; inserted and deleted lines count each)."""
    a, b = old.split("\n"), new.split("\n")
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal")
