"""The base image of the host lab: debootstrap'd Debian 12 with a local package cache.

Built once per recipe and cached under ``/var/cache/georelay-lab``; every host of the lab
(hosts.py) is an overlayfs over it. See hosts.py for the whole recipe. Beside it, on this
machine (the control node), the wheelhouse of the agent's locked dependencies: lab hosts
reach no network, so the role copies it to them (``georelay_agent_wheelhouse``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from georelay_lab.checkout import checkout

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
CACHE_DIR = Path(os.environ.get("GEORELAY_LAB_CACHE", "/var/cache/georelay-lab"))

# What a fresh Debian 12 server has that the lab relies on (minbase lacks them).
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "libpam-systemd", "openssh-server",
                 "python3", "sudo", "cron", "ca-certificates", "procps", "iproute2",
                 "curl")
# Installed by the roles from the local package cache, never preinstalled: the hosts start
# as fresh as a real one, and the roles' install path runs for real.
REPO_PACKAGES = ("haproxy", "python3-venv", "python3-apt", "python3-packaging",
                 "python3-setuptools")
RECIPE_VERSION = "2"

LOCAL_REPO = "/srv/georelay-lab/debs"
# Control node: the agent's hash-pinned dependencies (agent/requirements-host.txt) as files
# for the hosts' Python (Debian 12's 3.11), filled by ensure_wheelhouse().
WHEELHOUSE = CACHE_DIR / "wheelhouse"
HOST_PYTHON = "3.11"
REQUIREMENTS = "agent/requirements-host.txt"  # of the checkout
# Inventory settings for lab hosts: the role copies the wheelhouse to them, pip reads only it.
AGENT_VARS = {"georelay_agent_wheelhouse": str(WHEELHOUSE)}
USER = "deploy"
NOSUDO_USER = "nosudo"
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                "fstrim.timer", "systemd-timesyncd.service", "console-getty.service")


class HostLabError(RuntimeError):
    """A lab step failed; the message says which and why."""


def _run(cmd: Sequence[str], *, check: bool = True, capture: bool = True,
         timeout: float | None = None, input_text: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), text=True, capture_output=capture, timeout=timeout,
                          input=input_text, check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip()[-2000:] if capture else ""
        raise HostLabError(f"`{shlex.join(cmd)}` exited {proc.returncode}: {detail}")
    return proc


def recipe_key() -> str:
    text = json.dumps([RECIPE_VERSION, SUITE, BASE_PACKAGES, REPO_PACKAGES, MASKED_UNITS])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_dir() -> Path:
    return CACHE_DIR / f"{SUITE}-{recipe_key()}"


def _nspawn_in(root: Path, *command: str) -> None:
    """Run one command inside root (no boot), sharing this machine's network."""
    _run(["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--pipe",
          "-D", str(root), "--", *command], timeout=900)


def ensure_wheelhouse(log: list[str]) -> Path:
    """The control-node wheelhouse of the agent's locked dependencies, (re)filled when the
    requirements file changed: `pip download --require-hashes --only-binary :all:`, so it
    holds exactly the files whose hashes the file allows, for the hosts' Python."""
    requirements = checkout() / REQUIREMENTS
    try:
        text = requirements.read_text()
    except OSError as exc:
        raise HostLabError(f"cannot read {requirements} ({exc.strerror}): the lab hosts' "
                           "agent installs its dependencies from it") from exc
    stamp = hashlib.sha256(f"{HOST_PYTHON}\n{text}".encode()).hexdigest()
    stamp_file = WHEELHOUSE.with_name(WHEELHOUSE.name + ".sha256")  # beside: not copied
    if WHEELHOUSE.is_dir() and stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
        return WHEELHOUSE
    tmp = WHEELHOUSE.with_name(WHEELHOUSE.name + ".fill")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
          "--require-hashes", "-r", str(requirements), "--only-binary", ":all:",
          "--python-version", HOST_PYTHON, "--dest", str(tmp)], timeout=600)
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    tmp.rename(WHEELHOUSE)
    stamp_file.write_text(f"{stamp}\n")
    log.append(f"wheelhouse {WHEELHOUSE} filled from {requirements}")
    return WHEELHOUSE


def ensure_base(log: list[str]) -> Path:
    """The cached base image for the current recipe, built first if missing (~1-2 min), and
    the control-node wheelhouse of the agent's dependencies (ensure_wheelhouse)."""
    ensure_wheelhouse(log)
    base = base_dir()
    if (base / ".georelay-lab-base").exists():
        return base
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = base.with_name(base.name + ".build")
    if tmp.exists():
        shutil.rmtree(tmp)
    started = time.monotonic()
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
          SUITE, str(tmp), MIRROR], timeout=1800)
    # This machine's apt settings (the mirror may be a dated snapshot).
    for conf in Path("/etc/apt/apt.conf.d").glob("*"):
        if conf.is_file() and "Check-Valid-Until" in conf.read_text(errors="replace"):
            shutil.copy(conf, tmp / "etc/apt/apt.conf.d" / conf.name)
    # The local package cache: Debian's own .debs of what the roles install.
    _nspawn_in(tmp, "apt-get", "update", "-qq")
    _nspawn_in(tmp, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y",
               "-qq", "--download-only", "--no-install-recommends", *REPO_PACKAGES)
    repo = tmp / LOCAL_REPO.lstrip("/")
    repo.mkdir(parents=True)
    for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
        shutil.move(str(deb), repo / deb.name)
    with (repo / "Packages").open("w") as fh:
        subprocess.run(["apt-ftparchive", "packages", "."], cwd=repo, stdout=fh, check=True,
                       text=True)
    (tmp / "etc/apt/sources.list").write_text(
        f"# georelay host lab: a local copy of what the roles install (no network)\n"
        f"deb [trusted=yes] file:{LOCAL_REPO} ./\n")
    for extra in (tmp / "etc/apt/sources.list.d").glob("*"):
        extra.unlink()
    _nspawn_in(tmp, "apt-get", "update", "-qq")
    _nspawn_in(tmp, "apt-get", "clean")
    _configure_base(tmp)
    (tmp / ".georelay-lab-base").write_text(f"{recipe_key()}\n")
    tmp.rename(base)
    log.append(f"base image {base} built in {time.monotonic() - started:.0f} s")
    return base


def _configure_base(root: Path) -> None:
    etc = root / "etc"
    for unit in MASKED_UNITS:
        link = etc / "systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    wants = etc / "systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    networkd = wants / "systemd-networkd.service"
    networkd.unlink(missing_ok=True)
    networkd.symlink_to("/lib/systemd/system/systemd-networkd.service")
    # Host keys are made per host at `up`: no two hosts share one.
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    (etc / "ssh/sshd_config.d/georelay-lab.conf").write_text(
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n")
    (etc / "machine-id").write_text("")
    _nspawn_in(root, "useradd", "--create-home", "--shell", "/bin/bash", USER)
    _nspawn_in(root, "useradd", "--create-home", "--shell", "/bin/bash", NOSUDO_USER)
    sudoers = etc / "sudoers.d" / USER
    sudoers.write_text(f"{USER} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
