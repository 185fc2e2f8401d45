"""The real S3 server for tests (SeaweedFS `weed mini`), through the minio client and plain HTTP."""
from __future__ import annotations

import io
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta

import minio
import pytest
from minio.error import S3Error

from tests.emulators.s3 import S3Server, free_port


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3-server"))
    server.start()
    yield server
    server.stop()
    assert not server.running


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = "t-" + uuid.uuid4().hex[:12]
    s3.client().make_bucket(name)
    return name


def test_started_on_loopback_with_the_configured_credentials(s3: S3Server) -> None:
    assert s3.running
    assert s3.endpoint == f"127.0.0.1:{s3.port}" and s3.url == f"http://{s3.endpoint}"
    assert s3.startup_seconds is not None and s3.startup_seconds < 60
    assert isinstance(s3.client().list_buckets(), list)
    intruder = minio.Minio(s3.endpoint, access_key=s3.access_key, secret_key="wrong-secret", secure=False)
    with pytest.raises(S3Error) as denied:
        intruder.list_buckets()
    assert denied.value.code in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")


def test_put_and_get_an_object(s3: S3Server, bucket: str) -> None:
    client = s3.client()
    assert client.bucket_exists(bucket)
    payload = b"model weights \x00\x01" * 1000
    client.put_object(bucket, "runs/1/model.bin", io.BytesIO(payload), len(payload),
                      content_type="application/octet-stream", metadata={"run": "1"})
    stat = client.stat_object(bucket, "runs/1/model.bin")
    assert stat.size == len(payload)
    response = client.get_object(bucket, "runs/1/model.bin")
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()
    assert [o.object_name for o in client.list_objects(bucket, prefix="runs/", recursive=True)] == [
        "runs/1/model.bin"]
    client.remove_object(bucket, "runs/1/model.bin")
    with pytest.raises(S3Error) as missing:
        client.stat_object(bucket, "runs/1/model.bin")
    assert missing.value.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound")


def test_presigned_get_url_works_over_plain_http(s3: S3Server, bucket: str) -> None:
    client = s3.client()
    client.put_object(bucket, "report.txt", io.BytesIO(b"all green\n"), 10, content_type="text/plain")
    url = client.presigned_get_object(bucket, "report.txt", expires=timedelta(minutes=5))
    assert url.startswith(f"{s3.url}/{bucket}/report.txt?")
    with urllib.request.urlopen(url, timeout=10) as response:  # no credentials: the signature is the key
        assert response.status == 200
        assert response.read() == b"all green\n"
    with pytest.raises(urllib.error.HTTPError) as unsigned:
        urllib.request.urlopen(f"{s3.url}/{bucket}/report.txt", timeout=10)
    assert unsigned.value.code == 403


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
