"""Settings resolution: explicit > environment > state file > defaults."""

from __future__ import annotations

import json

import pytest

from labkit.config import Settings, read_state, update_state, write_state
from labkit.errors import ConfigError


def test_defaults_are_the_original_lab_names(tmp_path):
    s = Settings.load(state_dir=tmp_path, env={})
    assert (s.request_queue, s.response_queue, s.image_inbox, s.image_outbox) == (
        "requestQueue", "responseQueue", "imageInbox", "imageOutbox")
    assert s.region == "us-east-1"
    assert s.endpoint_url is None and s.bucket is None
    assert not s.is_local


def test_resolution_order(tmp_path):
    # Given a state file, an environment and an explicit argument that disagree
    write_state(tmp_path, {"endpoint_url": "http://127.0.0.1:1111", "bucket": "from-state",
                           "request_queue": "stateQueue", "region": "eu-west-3"})
    env = {"LABKIT_BUCKET": "from-env", "AWS_REGION": "eu-west-1"}
    # When settings are loaded
    s = Settings.load(state_dir=tmp_path, env=env, region="ap-south-1")
    # Then explicit beats environment beats state file beats defaults
    assert s.region == "ap-south-1"
    assert s.bucket == "from-env"
    assert s.request_queue == "stateQueue"
    assert s.endpoint_url == "http://127.0.0.1:1111" and s.is_local
    assert s.response_queue == "responseQueue"


def test_environment_variables(tmp_path):
    env = {"AWS_ENDPOINT_URL": "http://localhost:5000", "AWS_DEFAULT_REGION": "eu-central-1",
           "LABKIT_REQUEST_QUEUE": "rq", "LABKIT_RESPONSE_QUEUE": "rs", "LABKIT_IMAGE_INBOX": "ii",
           "LABKIT_IMAGE_OUTBOX": "io", "LABKIT_STATE_DIR": str(tmp_path / "elsewhere")}
    s = Settings.load(env=env)
    assert s.endpoint_url == "http://localhost:5000" and s.is_local
    assert s.region == "eu-central-1"
    assert s.queue_names() == {"request_queue": "rq", "response_queue": "rs", "image_inbox": "ii",
                               "image_outbox": "io"}
    assert s.state_dir == tmp_path / "elsewhere"
    # LABKIT_ENDPOINT_URL wins over the standard AWS_ENDPOINT_URL
    s2 = Settings.load(env={**env, "LABKIT_ENDPOINT_URL": "https://sqs.example.invalid"})
    assert s2.endpoint_url == "https://sqs.example.invalid" and not s2.is_local


@pytest.mark.parametrize("changes, fragment", [
    ({"request_queue": "bad name"}, "not a valid SQS queue name"),
    ({"request_queue": "x" * 81}, "not a valid SQS queue name"),
    ({"endpoint_url": "ftp://127.0.0.1"}, "must start with http"),
    ({"colour": "blue"}, "unknown setting"),
])
def test_invalid_settings_are_refused(tmp_path, changes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Settings.load(state_dir=tmp_path, env={}, **changes)


def test_state_file_round_trip_and_errors(tmp_path):
    assert read_state(tmp_path) == {}
    update_state(tmp_path, bucket="b", workers=[{"pid": 1}])
    update_state(tmp_path, bucket=None)
    assert read_state(tmp_path) == {"workers": [{"pid": 1}]}
    (tmp_path / "state.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_state(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps([1]))
    with pytest.raises(ConfigError, match="JSON object"):
        Settings.load(state_dir=tmp_path, env={})
