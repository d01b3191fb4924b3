"""Secrets mask themselves everywhere they could be shown."""

from __future__ import annotations

import json
import pickle

import pytest

from bluegreen.hosts.executor import LocalExecutor
from bluegreen.model.errors import RemoteError
from bluegreen.model.sensitive import MASK, Sensitive, redact


def test_sensitive_never_shows_its_value() -> None:
    s = Sensitive("hunter2-secret")
    for shown in (str(s), repr(s), f"{s}", f"{s!r}", json.dumps({"x": str(s)})):
        assert "hunter2" not in shown
    assert s.reveal() == "hunter2-secret"
    assert pickle.loads(pickle.dumps(s)).reveal() == "hunter2-secret"


@pytest.mark.parametrize("text,secrets,leak", [
    ("connect with hunter2-secret now", ["hunter2-secret"], "hunter2"),
    ("Authorization: PVEAPIToken=root@pam!deploy=1234-abcd-5678", [], "1234-abcd"),
    ("postgresql://jw_app:s3cr3tpw@10.0.0.1:5432/db", [], "s3cr3tpw"),
    ("DB_PASSWORD=topsecret other=1", [], "topsecret"),
    ("apiToken: 'zzzyyyxxx'", [], "zzzyyyxxx"),
])
def test_redact(text: str, secrets: list[str], leak: str) -> None:
    cleaned = redact(text, [Sensitive(s) for s in secrets])
    assert leak not in cleaned
    assert MASK in cleaned


def test_executor_errors_are_redacted() -> None:
    ex = LocalExecutor(secrets=[Sensitive("sup3r-s3cret-value")])
    with pytest.raises(RemoteError) as info:
        ex.run("echo 'login failed for sup3r-s3cret-value' >&2; exit 3", step="login")
    message = str(info.value)
    assert "sup3r-s3cret-value" not in message
    assert "localhost: login failed: exit code 3" in message
