"""Webhook intake, sans-I/O: the signature check and the parsing of a verified delivery.

The signature is checked before anything is parsed (constant time, several secrets for rotation).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Mapping

from gidgethub import sansio


def verify_signature(body: bytes, header: str | None, secrets: tuple[str, ...]) -> bool:
    """GitHub's `X-Hub-Signature-256: sha256=<hex>`, checked in constant time against every secret."""
    if not header or not header.startswith("sha256="):
        return False
    given = header[len("sha256="):].encode()
    matched = False
    for secret in secrets:  # no early exit: every secret is always compared
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        matched |= hmac.compare_digest(expected, given)
    return matched



def parse_event(headers: Mapping[str, str], body: bytes) -> sansio.Event:
    """A verified delivery's body and headers as a gidgethub Event; ValueError when malformed."""
    name = headers.get("X-GitHub-Event", "")
    if not name:
        raise ValueError("X-GitHub-Event header is missing")
    content_type = headers.get("Content-Type", "").split(";")[0].strip()
    if content_type == "application/x-www-form-urlencoded":
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        body = form.get("payload", [""])[0].encode()
    elif content_type != "application/json":
        raise ValueError(f"content type {content_type!r}; set the webhook to application/json")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    return sansio.Event(data, event=name, delivery_id=headers.get("X-GitHub-Delivery", ""))

