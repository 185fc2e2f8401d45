"""PUT one object to S3 / MinIO with an AWS Signature Version 4, standard library only.

So the runtime image needs nothing but numpy. With boto3 in your image, this is
`boto3.client("s3", endpoint_url=os.environ["FLOPS_S3_ENDPOINT"]).put_object(...)`.
"""
from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone


def put_object(endpoint: str, bucket: str, key: str, body: bytes, *, access_key: str, secret_key: str,
               region: str = "us-east-1", content_type: str = "application/json") -> None:
    """Path-style PUT `<endpoint>/<bucket>/<key>`; raises RuntimeError with S3's answer on failure."""
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise RuntimeError(f"FLOPS_S3_ENDPOINT must be a URL like http://minio:9000, got {endpoint!r}")
    path = "/" + urllib.parse.quote(f"{bucket}/{key}", safe="/~")
    now = datetime.now(timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"content-type": content_type, "host": url.netloc, "x-amz-content-sha256": payload_hash,
               "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["PUT", path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed,
                           payload_hash])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key_bytes = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key_bytes = hmac.new(key_bytes, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
                                f"Signature={signature}")
    request = urllib.request.Request(f"{url.scheme}://{url.netloc}{path}", data=body, method="PUT",
                                     headers={k: v for k, v in headers.items() if k != "host"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        answer = exc.read().decode(errors="replace")[:500]
        raise RuntimeError(f"S3 refused PUT {bucket}/{key}: HTTP {exc.code}: {answer}") from None
