"""bot.core.records: the build record's stored JSON format, read back unchanged and typed."""
from __future__ import annotations

import pytest

from bot.core.config import DeployTarget
from bot.core.records import BuildRecord, RecordError

# A record as the previous release wrote it (builds/<repo>/<sha>/<image>.json): the keys are a stored format.
STORED = {
    "repo": "acme/fl", "sha": "a" * 40, "image": "server", "ref": "main",
    "tag": "main-20261120080000-aaaaaaa", "destination": "harbor.example.com/flops/server:main-20261120080000-aaaaaaa",
    "digest": "sha256:" + "1" * 64,
    "reference": "harbor.example.com/flops/server:main-20261120080000-aaaaaaa@sha256:" + "1" * 64,
    "job": "flops-build-server-aaaaaaa-12345678", "built_at": "2026-11-20T08:01:00Z",
    "deploy_targets": '[{"name":"dev","repo":"acme/cfg","branch":"main","file":"dev.yaml","images":["server"],'
                      '"field":null,"mode":"commit"}]',
    "push_images": "server,client", "fast_forward_of": "b" * 40,
}


def test_a_stored_record_reads_typed_and_writes_back_the_same_json() -> None:
    record = BuildRecord.from_json(STORED)
    assert record.deploy_targets == (DeployTarget("dev", "acme/cfg", "main", "dev.yaml", ("server",)),)
    assert record.push_images == ("server", "client")
    assert record.reference == STORED["reference"]
    assert record.to_json() == {**STORED, "inputs": "", "reused_from": ""}  # the keys content addressing added
    reused = {**STORED, "inputs": "in-" + "c" * 12, "reused_from": "d" * 40}
    assert BuildRecord.from_json(reused).to_json() == reused


def test_a_record_of_an_older_version_without_optional_keys_reads() -> None:
    old = {k: v for k, v in STORED.items() if k not in ("deploy_targets", "push_images", "fast_forward_of")}
    record = BuildRecord.from_json(old)
    assert (record.deploy_targets, record.push_images, record.fast_forward_of) == ((), (), "")


@pytest.mark.parametrize("data", [None, [], {**STORED, "digest": 7}, {k: v for k, v in STORED.items() if k != "sha"},
                                  {**STORED, "deploy_targets": '{"name": "dev"}'}, {**STORED, "deploy_targets": "[{}]"}])
def test_a_record_without_the_documented_shape_is_refused(data: object) -> None:
    with pytest.raises(RecordError):
        BuildRecord.from_json(data)
