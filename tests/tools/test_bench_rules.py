"""bench-rules' variants of the generated haproxy.cfg: each edit, applied to a config the real
role rendered, changes exactly its lines and leaves a config HAProxy accepts; an edit that
finds nothing raises. The instruction counter runs a variant under callgrind for real."""

from __future__ import annotations

import difflib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from georelay_testing.fleet import DeployedFleet, require_program, running_fleet
from georelay_tools import bench_configs, bench_rules, callgrind
from georelay_tools.bench_rules import BY_NAME, RuleError


@pytest.fixture(scope="module")
def fleet() -> Iterator[DeployedFleet]:
    """Two regions, so that each proxy has a backup (http-send-name-header, observe)."""
    with running_fleet(regions={"us-east-1": ["e1"], "us-west-2": ["w1"]},
                       gateway_kind="nginx") as fleet:
        yield fleet


@pytest.fixture(scope="module")
def rendered(fleet: DeployedFleet) -> str:
    return fleet.config("e1").read_text()


def haproxy_accepts(text: str, path: Path) -> None:
    path.write_text(text)
    proc = subprocess.run([require_program("haproxy"), "-c", "-f", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# What each variant should do, said with words of the lines (not the tool's expressions).
def without(words: list[str], flags: set[str], with_value: set[str]) -> list[str]:
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in with_value:
            skip = True
        elif word not in flags:
            out.append(word)
    return out


def on_servers(change: Callable[[list[str]], list[str]]) -> Callable[[str], str]:
    def rewrite(line: str) -> str:
        words = line.split()
        if not words or words[0] != "server":
            return line
        return line[:len(line) - len(line.lstrip())] + " ".join(change(words))
    return rewrite


def alpn_h2(words: list[str]) -> list[str]:
    if "alpn" not in words:  # the agent's server: plain HTTP
        return words
    i = words.index("alpn")
    assert words[i + 1] == "http/1.1"
    return [*words[:i + 1], "h2,http/1.1", *words[i + 2:]]


def retry_on_connections(line: str) -> str:
    if line.split()[:1] != ["retry-on"]:
        return line
    return line[:len(line) - len(line.lstrip())] + "retry-on conn-failure"


def routing_on_host(rendered: str) -> Callable[[str], str]:
    key = next(line.split("set-var(txn.public_host) ")[1] for line in rendered.splitlines()
               if "set-var(txn.public_host)" in line)
    return lambda line: (line.replace("{ var(txn.public_host) ", "{ " + key + " ")
                         if line.strip().startswith("use_backend ") else line)


CHECKS = {"check"}, {"check-sni", "check-alpn", "observe", "error-limit", "on-error"}
EXPECTED: dict[str, tuple[tuple[str, ...], Callable[[str], Callable[[str], str]] | None]] = {
    "no-l7-retries": ((), lambda _: retry_on_connections),
    "no-forwarding-headers": (("http-request del-header X-Forwarded-",
                               "http-request add-header X-Forwarded-Host ",
                               "http-request add-header X-Forwarded-Proto ",
                               "option forwardfor"), None),
    "no-routing-variable": (("http-request set-var(txn.public_host) ",), routing_on_host),
    "no-hsts": (("http-response set-header Strict-Transport-Security ",), None),
    "no-agent-route": (("use_backend georelay_agent ",), None),
    "no-health-checks": (("option httpchk", "http-check "),
                         lambda _: on_servers(lambda w: without(w, *CHECKS))),
    "no-name-header": (("http-send-name-header ", "http-request set-uri "), None),
    "h2-backend": ((), lambda _: on_servers(alpn_h2)),
    "h2-backend-no-l7-retries": ((), lambda _: lambda line: retry_on_connections(
        on_servers(alpn_h2)(line))),
}


def test_every_variant_has_an_expectation() -> None:
    assert set(EXPECTED) == set(BY_NAME) - {"generated"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_variant_changes_exactly_its_lines(name: str, rendered: str, fleet: DeployedFleet,
                                             tmp_path: Path) -> None:
    removed, rewrite = EXPECTED[name]
    line_change = rewrite(rendered) if rewrite else (lambda line: line)
    for start in removed:  # the expectation is about lines that are there
        assert any(line.strip().startswith(start) for line in rendered.splitlines()), start
    expected = [line_change(line) for line in rendered.splitlines()
                if not line.strip().startswith(removed)]
    out = BY_NAME[name].apply(rendered)
    diff = "\n".join(difflib.unified_diff(expected, out.splitlines(), lineterm=""))
    assert out.splitlines() == expected, diff
    assert out != rendered
    haproxy_accepts(out, tmp_path / "variant.cfg")
    # As the bench runs it: its own address, sockets and state file, no chroot.
    address = f"127.0.{fleet.net}.{bench_rules.FIRST_VARIANT}"
    run = bench_rules.runnable(out, fleet.address("e1"), address, tmp_path, callgrind=True)
    binds = [line.split()[1] for line in run.splitlines() if line.strip().startswith("bind ")]
    assert binds and all(b.startswith(f"{address}:") for b in binds), binds
    assert str(fleet.root("e1")) not in "".join(
        line for line in run.splitlines() if "stats socket" in line or "state-file" in line)
    haproxy_accepts(run, tmp_path / "runnable.cfg")


def test_generated_is_the_rendered_config(rendered: str, tmp_path: Path) -> None:
    assert BY_NAME["generated"].apply(rendered) == rendered
    haproxy_accepts(rendered, tmp_path / "generated.cfg")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_variant_whose_lines_are_gone_raises(name: str, rendered: str) -> None:
    """Applied twice, the second time finds nothing to change: as after a template change."""
    once = BY_NAME[name].apply(rendered)
    with pytest.raises(RuleError):
        BY_NAME[name].apply(once)


def test_a_moved_routing_expression_raises(rendered: str) -> None:
    moved = rendered.replace("req.hdr(host),field(1,:),lower", "req.hdr(host),lower")
    assert moved != rendered
    with pytest.raises(RuleError, match="routing variable"):
        BY_NAME["no-routing-variable"].apply(moved)


def test_the_name_header_variant_is_skipped_where_there_are_no_backups(rendered: str) -> None:
    variant = BY_NAME["no-name-header"]
    single = variant.apply(rendered)  # what a one-region proxy's config lacks
    assert variant.applies(rendered)
    assert not variant.applies(single)


def test_the_minimal_relay_is_valid_with_the_generated_timeouts(
        rendered: str, fleet: DeployedFleet, tmp_path: Path) -> None:
    timeouts = bench_rules.timeouts_of(rendered)
    assert set(timeouts) == set(bench_rules.TIMEOUTS)
    ip, port = fleet.gateway("us-east-1")
    text = bench_configs.minimal_haproxy(f"127.0.{fleet.net}.40",
                                         fleet.lab_dir / "certs/public.pem",
                                         Path(fleet.ca_file), f"{ip}:{port}", timeouts)
    assert all(f"timeout {k} {v}" in text for k, v in timeouts.items())
    haproxy_accepts(text, tmp_path / "minimal.cfg")


def test_callgrind_counts_the_instructions_of_every_request(rendered: str,
                                                            fleet: DeployedFleet) -> None:
    """The generated config under callgrind: 200 requests over 4 kept-alive connections, all
    answered 200 by the gateway, a positive instruction count that the functions' self costs
    add up to."""
    require_program("valgrind")
    run_dir = fleet.base / "callgrind"
    run_dir.mkdir()
    address = f"127.0.{fleet.net}.{bench_rules.FIRST_VARIANT + 1}"
    config = run_dir / "haproxy.cfg"
    config.write_text(bench_rules.runnable(rendered, fleet.address("e1"), address, run_dir,
                                           callgrind=True))
    count = callgrind.count_instructions(
        config, address, fleet.https_port, Path(fleet.ca_file), run_dir, requests=200,
        connections=4, warmup=20, path="/anything", top=5)
    assert count.statuses == {200: 220}
    assert count.instructions > 0
    dump = next(run_dir.glob("callgrind.out.*"))
    assert sum(callgrind.self_costs(dump).values()) == count.instructions
    assert len(count.top) == 5 and all(ir > 0 for _, ir in count.top)
