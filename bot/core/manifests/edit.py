"""Byte-exact edits of the located scalars, the style each keeps, the check after editing, diffs."""
from __future__ import annotations

import difflib

import yaml

from bot.core.manifests.locate import _auto_slots, _field_slots
from bot.core.manifests.model import (
    _INDICATORS,
    _NOT_PRINTABLE,
    BREAKS,
    Change,
    Edit,
    ManifestError,
    _Slot,
    _Splice,
    split_image,
)
from bot.core.manifests.nodes import _where

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
        return _field_slots(text, field, repository, reference, file, only)
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
