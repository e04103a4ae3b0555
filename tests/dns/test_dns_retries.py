"""Retries are botocore's alone, as the user configures them (AWS_MAX_ATTEMPTS,
AWS_RETRY_MODE, the profile's max_attempts / retry_mode), with georelay-dns's default
(adaptive, 8 attempts) only for what the user leaves unset.

Throttling, PriorRequestNotComplete and RequestTimeout answers are AWS-only behaviour that
moto does not produce. botocore's Stubber cannot stand in for them here: it answers in
``before-call``, before botocore's retry handler runs, so a stubbed error is never retried.
Instead a small HTTP endpoint on 127.0.0.1 answers Route53's XML errors a scripted number of
times, reached through AWS_ENDPOINT_URL_ROUTE_53 like any Route53 endpoint: every request
goes through botocore's real retry machinery, and the endpoint counts the attempts made.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from georelay_dns.apply import apply_plan
from georelay_dns.cli_common import aws
from georelay_dns.plan import Plan, RecordChange
from georelay_dns.records import Record
from georelay_dns.route53 import DEFAULT_RETRIES, call, make_client, read_live

NS = "https://route53.amazonaws.com/doc/2013-04-01/"
CHANGE_INFO = ("<ChangeInfo><Id>/change/C1</Id><Status>{}</Status>"
               "<SubmittedAt>2024-01-01T00:00:00Z</SubmittedAt></ChangeInfo>")
OK = {
    "GetChange": f'<GetChangeResponse xmlns="{NS}">{CHANGE_INFO.format("INSYNC")}'
                 "</GetChangeResponse>",
    "ChangeResourceRecordSets": f'<ChangeResourceRecordSetsResponse xmlns="{NS}">'
                                f'{CHANGE_INFO.format("PENDING")}'
                                "</ChangeResourceRecordSetsResponse>",
    "ListResourceRecordSets": f'<ListResourceRecordSetsResponse xmlns="{NS}">'
                              "<ResourceRecordSets/><IsTruncated>false</IsTruncated>"
                              "<MaxItems>300</MaxItems></ListResourceRecordSetsResponse>",
    "ListHealthChecks": f'<ListHealthChecksResponse xmlns="{NS}"><HealthChecks/>'
                        "<Marker></Marker><IsTruncated>false</IsTruncated>"
                        "<MaxItems>1000</MaxItems></ListHealthChecksResponse>",
}


def _operation(method: str, path: str) -> str:
    parts = path.split("?")[0].strip("/").split("/")[1:]  # after /2013-04-01
    if parts[:1] == ["change"]:
        return "GetChange"
    if parts[:1] == ["healthcheck"] and len(parts) == 1:
        return "ListHealthChecks"
    if parts[:1] == ["hostedzone"] and parts[-1:] == ["rrset"]:
        return "ChangeResourceRecordSets" if method == "POST" else "ListResourceRecordSets"
    return f"unknown {method} {path}"


class Route53Script:
    """Answers each operation's first requests with the scripted error codes, then OK."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def fail(self, op: str, code: str, times: int) -> None:
        self.errors[op] = [code] * times

    def answer(self, method: str, path: str) -> tuple[int, str]:
        op = _operation(method, path)
        with self.lock:
            self.attempts[op] += 1
            pending = self.errors.get(op, [])
            code = pending.pop(0) if pending else None
        if op not in OK:
            return 404, self._error("UnknownOperation", op)
        if code:
            return 400, self._error(code, f"scripted {code}")
        return 200, OK[op]

    @staticmethod
    def _error(code: str, message: str) -> str:
        return (f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
                f"<Message>{message}</Message></Error><RequestId>r1</RequestId>"
                "</ErrorResponse>")


@pytest.fixture
def route53(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Route53Script]:
    script = Route53Script()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, body = script.answer(self.command, self.path)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _reply

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    config = tmp_path / "aws-config"
    config.write_text("")  # nothing of the machine's own ~/.aws/config
    for k, v in {"AWS_ENDPOINT_URL_ROUTE_53": f"http://127.0.0.1:{server.server_port}",
                 "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(config),
                 "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials")}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
              "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    try:
        yield script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _one_record_plan() -> Plan:
    plan = Plan("example.com", "Z0RETRY", "georelay")
    plan.records = [RecordChange("CREATE", Record(
        "proxy-us-east-1-fast.example.com", "A", "georelay:w:fast.example.com:p0", weight=1,
        ttl=60, values=("192.0.2.1",), service="fast.example.com", site="us-east-1",
        proxy="p0"), None, 0)]
    return plan


def test_aws_max_attempts_2_means_exactly_2_attempts(route53: Route53Script,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The issue: botocore's retries inside a loop of 8 made up to 56 attempts a call."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    route53.fail("ListResourceRecordSets", "Throttling", 10)
    client = make_client()
    assert client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 2}
    with pytest.raises(SystemExit) as exited:
        aws(lambda: read_live(client, "Z0RETRY"))
    assert exited.value.code == 1
    assert route53.attempts["ListResourceRecordSets"] == 2
    err = capsys.readouterr().err
    assert "Route53 ListResourceRecordSets: Throttling: scripted Throttling" in err
    assert "gave up after 2 attempts" in err and "AWS_MAX_ATTEMPTS" in err


def test_throttling_is_retried_by_default(route53: Route53Script,
                                          caplog: pytest.LogCaptureFixture) -> None:
    client = make_client()
    assert client.meta.config.retries == DEFAULT_RETRIES == {
        "mode": "adaptive", "total_max_attempts": 8}
    route53.fail("GetChange", "Throttling", 1)
    with caplog.at_level(logging.WARNING, logger="georelay_dns.route53"):
        got = call(client, "get_change", Id="C1")
    assert got["ChangeInfo"]["Status"] == "INSYNC"
    assert route53.attempts["GetChange"] == 2
    assert "get_change: succeeded after 1 retry" in caplog.text


@pytest.mark.parametrize(("mode", "attempts"), [("legacy", 1), ("standard", 4),
                                                ("adaptive", 4)])
def test_aws_retry_mode_is_honoured(route53: Route53Script, monkeypatch: pytest.MonkeyPatch,
                                    mode: str, attempts: int) -> None:
    """RequestTimeout (HTTP 400) is retried by standard and adaptive mode, not by legacy."""
    monkeypatch.setenv("AWS_RETRY_MODE", mode)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    route53.fail("GetChange", "RequestTimeout", 10)
    client = make_client()
    assert client.meta.config.retries == {"mode": mode, "total_max_attempts": 4}
    with pytest.raises(ClientError, match="RequestTimeout"):
        call(client, "get_change", Id="C1")
    assert route53.attempts["GetChange"] == attempts


def test_the_profiles_config_file_settings_are_honoured(route53: Route53Script,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    config = tmp_path / "aws-config"
    config.write_text("[default]\nmax_attempts = 9\n\n"
                      "[profile ops]\nretry_mode = legacy\nmax_attempts = 3\n")
    monkeypatch.setenv("AWS_PROFILE", "ops")
    assert make_client().meta.config.retries == {"mode": "legacy", "total_max_attempts": 3}
    route53.fail("GetChange", "Throttling", 10)
    with pytest.raises(ClientError, match="Throttling"):
        call(make_client(), "get_change", Id="C1")
    assert route53.attempts["GetChange"] == 3
    # the environment wins over the config file, key by key, as in every AWS tool
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert make_client().meta.config.retries == {"mode": "legacy", "total_max_attempts": 1}
    monkeypatch.delenv("AWS_PROFILE")
    assert make_client().meta.config.retries == {"mode": "adaptive", "total_max_attempts": 1}


def test_prior_request_not_complete_on_a_write_is_retried_and_capped(
        route53: Route53Script, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    route53.fail("ChangeResourceRecordSets", "PriorRequestNotComplete", 2)
    res = apply_plan(make_client(), _one_record_plan(), sleep=lambda _: None)
    assert res.batches == 1 and res.changes == ["/change/C1"]
    assert route53.attempts == {"ChangeResourceRecordSets": 3, "GetChange": 1}

    route53.attempts.clear()
    route53.fail("ChangeResourceRecordSets", "PriorRequestNotComplete", 10)
    with pytest.raises(ClientError, match="PriorRequestNotComplete"):
        apply_plan(make_client(), _one_record_plan(), sleep=lambda _: None)
    assert route53.attempts == {"ChangeResourceRecordSets": 3}  # capped; no GetChange


def test_one_attempt_means_no_retry_at_all(route53: Route53Script,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No retry of georelay-dns's own on top of botocore's, on reads or on writes."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    route53.fail("ChangeResourceRecordSets", "PriorRequestNotComplete", 5)
    route53.fail("ListHealthChecks", "Throttling", 5)
    client = make_client()
    with pytest.raises(ClientError, match="PriorRequestNotComplete"):
        apply_plan(client, _one_record_plan(), sleep=lambda _: None)
    with pytest.raises(ClientError, match="Throttling"):
        read_live(client, "Z0RETRY")
    assert route53.attempts == {"ChangeResourceRecordSets": 1, "ListResourceRecordSets": 1,
                                "ListHealthChecks": 1}


@pytest.mark.parametrize(("env", "value", "words"), [
    ("AWS_MAX_ATTEMPTS", "lots", "AWS_MAX_ATTEMPTS: 'lots' is not a number of attempts"),
    ("AWS_MAX_ATTEMPTS", "0", "AWS_MAX_ATTEMPTS: '0' is not a number of attempts"),
    ("AWS_RETRY_MODE", "fast", "AWS_RETRY_MODE: 'fast' is not a botocore retry mode. Fix: "
                               "use one of legacy, standard, adaptive"),
    ("AWS_PROFILE", "nosuch", "The config profile (nosuch) could not be found. Fix: set "
                              "AWS_PROFILE"),
])
def test_bad_retry_settings_are_named_before_any_call(
        route53: Route53Script, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], env: str, value: str, words: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SystemExit) as exited:
        aws(make_client)
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("georelay-dns: ") and words in err and "Fix:" in err
    assert not route53.attempts  # nothing sent


def test_a_bad_value_in_the_config_file_names_the_file(route53: Route53Script,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    config = tmp_path / "aws-config"
    config.write_text("[profile ops]\nmax_attempts = three\n")
    monkeypatch.setenv("AWS_PROFILE", "ops")
    with pytest.raises(SystemExit):
        aws(make_client)
    err = capsys.readouterr().err
    assert f"max_attempts of profile ops in {config}: 'three' is not a number" in err
