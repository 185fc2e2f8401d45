"""Where the server's results go: `s3://$FLOPS_S3_BUCKET/$FLOPS_OUTPUT...` in the bot's Jobs
(credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, as the Jobs get them), or a local
`./output/` folder when FLOPS_OUTPUT is not set (on your laptop)."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import minio


class Output:
    def __init__(self, client: minio.Minio | None, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix

    @classmethod
    def from_env(cls) -> Output:
        prefix = os.environ.get("FLOPS_OUTPUT")
        if not prefix:
            return cls(None, "", "output/")
        url = urlsplit(os.environ["FLOPS_S3_ENDPOINT"])
        if url.scheme not in ("http", "https") or not url.netloc:
            raise SystemExit(f"FLOPS_S3_ENDPOINT must be a URL like http://minio:9000, got {url.geturl()!r}")
        client = minio.Minio(url.netloc, access_key=os.environ["AWS_ACCESS_KEY_ID"],
                             secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], secure=url.scheme == "https",
                             region=os.environ.get("AWS_REGION", "us-east-1"))
        return cls(client, os.environ["FLOPS_S3_BUCKET"], prefix)

    def write_bytes(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self.client is None:
            path = Path(self.prefix) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        self.client.put_object(self.bucket, self.prefix + name, io.BytesIO(data), len(data), content_type=content_type)

    def write_json(self, name: str, value: Any) -> None:
        self.write_bytes(name, json.dumps(value, indent=2).encode(), "application/json")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.client else f"./{self.prefix}"
