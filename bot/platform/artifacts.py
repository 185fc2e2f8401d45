"""MinIO / S3: the bot's state (FLOPS_BUCKET) and the Jobs' outputs (FLOPS_RUNS_BUCKET, `Artifacts.runs`).
The minio client is synchronous: threads."""
from __future__ import annotations

import asyncio
import io
import itertools
import json
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO

import minio
from minio.datatypes import PostPolicy
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from bot.platform.settings import S3Settings

JSON_LIMIT = 16 * 1024 * 1024  # metrics.json, build records, run requests: far below this
LIST_LIMIT = 1000  # keys read from one listing (one ListObjects page): Jobs choose how many they write


class TooLarge(ValueError):
    """An object larger than the bot is willing to read into memory."""


class Artifacts:
    """One bucket. `Artifacts(s3)` is the bot's state; its `runs` the workload outputs, same client."""

    def __init__(self, s3: S3Settings, *, bucket: str | None = None, client: minio.Minio | None = None) -> None:
        self.settings = s3
        self.bucket = bucket or s3.bucket
        self.client = client or minio.Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                                            secure=s3.secure)
        self._bucket_ready = False
        self._runs: Artifacts | None = None

    @property
    def runs(self) -> Artifacts:
        """The runs bucket (FLOPS_RUNS_BUCKET): what Jobs write; read by the bot, never trusted as its state."""
        if self.bucket == self.settings.runs_bucket:
            return self
        if self._runs is None:
            self._runs = Artifacts(self.settings, bucket=self.settings.runs_bucket or self.bucket, client=self.client)
        return self._runs

    @property
    def endpoint_url(self) -> str:
        return ("https://" if self.settings.secure else "http://") + self.settings.endpoint

    async def ping(self) -> None:
        """Readiness: S3 answers and both buckets exist (created on first success)."""
        await self.ensure_bucket()
        await self.runs.ensure_bucket()

    async def ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        if not await asyncio.to_thread(self.client.bucket_exists, self.bucket):
            try:
                await asyncio.to_thread(self.client.make_bucket, self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self._bucket_ready = True

    async def exists(self, key: str) -> bool:
        await self.ensure_bucket()
        try:
            await asyncio.to_thread(self.client.stat_object, self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise
        return True

    async def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await self.ensure_bucket()
        await asyncio.to_thread(self.client.put_object, self.bucket, key, io.BytesIO(data), len(data),
                                content_type=content_type)

    async def put_stream(self, key: str, stream: BinaryIO, size: int, content_type: str) -> None:
        await self.ensure_bucket()
        await asyncio.to_thread(self.client.put_object, self.bucket, key, stream, size, content_type=content_type)

    async def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes | None:
        """The object's bytes, None when it does not exist; over `max_bytes`: TooLarge."""
        await self.ensure_bucket()

        def read() -> bytes | None:
            try:
                response = self.client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return None
                raise
            try:
                data = response.read(None if max_bytes is None else max_bytes + 1)
            finally:
                response.close()
                response.release_conn()
            if max_bytes is not None and len(data) > max_bytes:
                raise TooLarge(f"`{key}` is larger than {max_bytes // 1024} KiB, more than flops-bot reads; "
                               "write a smaller file (metrics and links only, models go next to it)")
            return bytes(data)

        return await asyncio.to_thread(read)

    async def get_json(self, key: str, max_bytes: int = JSON_LIMIT) -> Any | None:
        """Parsed JSON, None when absent. Workloads write some of these files: a file that is too
        large or not JSON raises ValueError (TooLarge, json.JSONDecodeError) for the report to show."""
        data = await self.get_bytes(key, max_bytes)
        return None if data is None else json.loads(data)

    async def put_json(self, key: str, value: Any) -> None:
        await self.put_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode(), "application/json")

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.remove_object, self.bucket, key)

    async def delete_prefix(self, prefix: str, limit: int = LIST_LIMIT) -> bool:
        """Delete what is under `prefix`, at most `limit` keys (one DeleteObjects request per
        1000); True when more were left (a workload wrote more than that)."""
        keys, truncated = await self.list_page(prefix, limit)
        if keys:
            def remove() -> None:
                errors = list(self.client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
                if errors:
                    raise RuntimeError(f"S3 did not delete {errors[0].name}: {errors[0].code} ({len(errors)} keys)")

            await asyncio.to_thread(remove)
        return truncated

    async def list_keys(self, prefix: str, limit: int = LIST_LIMIT) -> list[str]:
        """The first `limit` keys under `prefix`, in key order (the rest is never listed)."""
        return (await self.list_page(prefix, limit))[0]

    async def list_page(self, prefix: str, limit: int = LIST_LIMIT) -> tuple[list[str], bool]:
        """(the first `limit` keys under `prefix`, whether there are more): the listing stops one
        key past the cap, so a prefix with millions of keys costs at most two ListObjects pages."""
        await self.ensure_bucket()

        def keys() -> list[str]:
            listing = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return [o.object_name for o in itertools.islice(listing, limit + 1) if o.object_name]

        found = await asyncio.to_thread(keys)
        return found[:limit], len(found) > limit

    async def presigned_get(self, key: str, expires: timedelta) -> str:
        return await asyncio.to_thread(self.client.presigned_get_object, self.bucket, key, expires)

    async def presigned_post(self, prefix: str, expires: timedelta, max_bytes: int) -> dict[str, Any]:
        """A browser-style POST policy that admits objects under `prefix` only, each at most
        `max_bytes`: `{"url", "fields", "prefix"}` (the form fields, then `key` and `file`)."""
        await self.ensure_bucket()
        policy = PostPolicy(self.bucket, datetime.now(timezone.utc) + expires)
        policy.add_starts_with_condition("key", prefix)
        policy.add_content_length_range_condition(0, max_bytes)
        fields = await asyncio.to_thread(self.client.presigned_post_policy, policy)
        return {"url": f"{self.endpoint_url}/{self.bucket}", "fields": dict(fields), "prefix": prefix}
