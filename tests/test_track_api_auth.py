"""TRACK_API_AUTH=x-api-key: the token goes in `x-api-key`, from the same sources, rotated the same way.

The Track API stand-in accepts only `x-api-key: <token>` (and refuses a request that also carries
`Authorization`). The token file starts wrong: 401s, /readyz 503, auth_failing 1, as for a bearer
token; the file is replaced → every record delivered and committed, no key in the log.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness import kafkautil
from harness.process import ConsumerProcess
from harness.records import encode_raw, sample_record
from harness.trackapi import TrackApi
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 2
WRONG, RIGHT = "wrong-key-0000", "right-key-5678"


def test_x_api_key_header_with_a_rotated_key_file(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = new_topic(kafka_bootstrap, PARTITIONS, prefix="apikey")
    records = [sample_record(i, "apikey") for i in range(1000)]
    kafkautil.produce(kafka_bootstrap, topic, [(r["group_id"].encode(), encode_raw(r)) for r in records], PARTITIONS)
    expected = {r["user_id"] for r in records}
    key_file = tmp_path / "secret" / "key"
    key_file.parent.mkdir()
    key_file.write_text(WRONG + "\n")
    with TrackApi(token=RIGHT, auth="x-api-key") as api:
        env = consumer_env(kafka_bootstrap, topic, api, TRACK_API_TOKEN_FILE=str(key_file), TRACK_API_AUTH="x-api-key")
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:

            def stalled() -> bool:
                return proc.get("/readyz")[0] == 503 and proc.metrics().get("group_enriched_auth_failing") == 1

            wait_until(lambda: any(r.status == 401 for r in api.requests), 60, "the first 401", proc.logs)
            wait_until(stalled, 30, "/readyz 503 and auth_failing 1", proc.logs)
            refused = [r.auth for r in api.requests if r.status == 401]
            fresh = key_file.with_name(".key.new")
            fresh.write_text(RIGHT + "\n")
            os.replace(fresh, key_file)
            rotated = time.monotonic()
            wait_until(lambda: {e["user_id"] for e in api.events} >= expected, 60, "every event", proc.logs)
            resumed = time.monotonic() - rotated
            wait_until(lambda: proc.get("/readyz")[0] == 200, 30, "/readyz 200", proc.logs)
            wait_until(
                lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 60, "offsets at the end", proc.logs
            )
            m = proc.metrics()
            assert proc.stop() == 0, proc.logs()[-2000:]
            logs = proc.logs()
    accepted = [r for r in api.requests if r.status == 200]
    print(
        f"\nx-api-key: {len(refused)} requests refused with the wrong key ({sorted(set(refused))}),"
        f" {len(accepted)} accepted carrying {sorted({r.auth.split(':')[0] for r in accepted})},"
        f" {api.count()} events for {len(expected)} records, all delivered {resumed:.1f}s after rotation"
    )
    assert refused and set(refused) == {f"x-api-key: {WRONG}"}
    assert accepted and {r.auth for r in accepted} == {f"x-api-key: {RIGHT}"}
    assert api.count() == len(expected) and {e["user_id"] for e in api.events} == expected
    assert m["group_enriched_auth_failing"] == 0
    assert WRONG not in logs and RIGHT not in logs, "a key reached the log"
