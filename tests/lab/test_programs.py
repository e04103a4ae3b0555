"""lab/debian-packages.txt is the one list of Debian packages: `make system` installs exactly
it, and a test cannot start a system program that it does not declare."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from georelay_lab import programs
from georelay_testing import fleet as support
from georelay_testing.fleet import REPO, require_program, run


def test_make_system_installs_exactly_the_list() -> None:
    out = run(["make", "-s", "--no-print-directory", "debian-packages"], check=True)
    assert out.stdout.split() == programs.packages()


def test_each_line_names_a_debian_package_and_each_program_a_check() -> None:
    assert programs.entries()
    for entry in programs.entries():
        assert re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", entry.package), entry
        assert entry.program is None or entry.check, entry
    names = [e.program for e in programs.entries() if e.program]
    assert len(names) == len(set(names)), "a program is declared twice"


def test_the_lab_and_the_tests_programs_are_declared() -> None:
    for name in ("haproxy", "nginx", "dnsmasq", "curl", "openssl", "bash", "wrk", "taskset",
                 "systemd-nspawn", "debootstrap", "apt-ftparchive", "ssh", "ip"):
        assert name in programs.declared(), name


def test_a_declared_program_is_found_with_its_path() -> None:
    assert require_program("haproxy").endswith("/haproxy")
    assert programs.entry("dnsmasq").package == "dnsmasq-base"


def test_an_undeclared_program_is_refused_by_name() -> None:
    with pytest.raises(programs.ProgramError, match="not declared"):
        programs.path("no-such-georelay-tool")
    with pytest.raises(pytest.fail.Exception, match="not declared"):
        require_program("no-such-georelay-tool")


def test_starting_an_undeclared_system_program_fails_the_test() -> None:
    seen = len(support.UNDECLARED)
    with pytest.raises(programs.ProgramError, match="not declared"):
        subprocess.run(["env", "true"], check=False)  # coreutils: not in the list
    with pytest.raises(programs.ProgramError, match="not declared"):
        os.system("env true")
    with pytest.raises(programs.ProgramError, match="not declared"):
        os.posix_spawn("/usr/bin/env", ["env", "true"], dict(os.environ))
    assert len(support.UNDECLARED) == seen + 3
    del support.UNDECLARED[seen:]  # this test wanted them; any other test would fail


def test_declared_and_the_projects_own_programs_start() -> None:
    assert subprocess.run(["bash", "-c", "true"], check=False).returncode == 0
    assert subprocess.run([sys.executable, "-c", "pass"], check=False).returncode == 0
    assert (REPO / "lab/debian-packages.txt") == programs.LIST
