"""Where an image lives in a manifest: a `field` path, pod-spec containers, kustomization `images:`."""
from __future__ import annotations

import yaml

from bot.core import yq
from bot.core.manifests.model import (
    CONFIG,
    CONTAINER_LISTS,
    KUSTOMIZE_KINDS,
    WORKLOADS,
    Found,
    ManifestError,
    _Document,
    _Slot,
    join_image,
    split_image,
)
from bot.core.manifests.nodes import _contains_all, _documents, _flow_along, _get, _line, _scalar, _walk, _where
from bot.core.yq import Path

# --- locating -------------------------------------------------------------------------------


def _field_slots(text: str, field: str, repository: str, reference: str, file: str,
                 only: frozenset[int] | None = None) -> list[_Slot]:
    """The scalars at `field`; each must already hold an image of `repository` (any tag or digest),
    so `field` can only move an image along, never overwrite (or reveal) another value."""
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
        if not _holds_image_of(node, repository):
            raise ManifestError(f"field `{field}` in {_where(document, node, text, file)} does not hold an image of "
                                f"{repository}: `field` may only point at that image's reference (its current "
                                f"value is not shown); fix `field` in {CONFIG}")
        slots.append(_Slot(document, yq.format(path), reference, node, _flow_along(document.root, path)))
    if not slots:
        raise ManifestError(_missing_field(text, field, path, file))
    return slots


def _holds_image_of(node: yaml.ScalarNode, repository: str) -> bool:
    value = node.value.strip() if isinstance(node.value, str) else ""  # a block scalar's newline
    return bool(value) and value.isprintable() and " " not in value and split_image(value)[0] == repository


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
        return [_found(text, s, s.node.value if s.node else "") for s in _field_slots(text, field, repository, "", file)]
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
