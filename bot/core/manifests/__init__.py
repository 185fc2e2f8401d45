"""Bump image references in Kubernetes manifests by editing bytes, never by re-dumping YAML.

Sans-I/O: every function maps text to text (or to what it found in it). `find_images` and
`set_image` are the entry points; `model` holds what they return, `nodes` composes the YAML,
`locate` finds the scalars to change, `edit` changes them.

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

from bot.core.manifests.edit import diff_lines, render, set_image
from bot.core.manifests.locate import find_images
from bot.core.manifests.model import (
    BREAKS,
    CONFIG,
    CONTAINER_LISTS,
    KUSTOMIZE_KINDS,
    WORKLOADS,
    Change,
    Edit,
    Found,
    ManifestError,
    join_image,
    split_image,
)

__all__ = ["BREAKS", "CONFIG", "CONTAINER_LISTS", "KUSTOMIZE_KINDS", "WORKLOADS", "Change", "Edit", "Found",
           "ManifestError", "diff_lines", "find_images", "join_image", "render", "set_image", "split_image"]
