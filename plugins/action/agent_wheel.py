"""Action georelay.relay.agent_wheel: build georelay-agent's wheel on the control node.

The agent is pure Python, so its wheel is a zip of the package's modules and a dist-info
directory (PEP 427, PEP 566 core metadata, PEP 376 RECORD). It is written here from
agent/pyproject.toml's [project] table with no build backend and no network, and written
reproducibly (fixed timestamps, modes and order), so the same source always gives the same
bytes: the role's copy to the host then changes only when the agent's code or metadata did.
The module documentation is plugins/modules/agent_wheel.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

# The collection's own agent source: <collection>/agent (plugins/action/ is two levels down).
DEFAULT_SRC = Path(__file__).resolve().parents[2] / "agent"
DEFAULT_DEST = "~/.cache/georelay/wheels"
GENERATOR = "georelay.relay.agent_wheel"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: nothing of the build time
FILE_MODE = 0o100644 << 16
SUPPORTED = {"name", "version", "description", "requires-python", "license", "dependencies",
             "scripts", "classifiers", "urls", "keywords"}


class WheelError(ValueError):
    """agent/pyproject.toml or the agent's source cannot make a wheel; says which and how."""


def _normalize(name: str) -> str:
    """The distribution name as wheel file names and dist-info directories spell it."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _field(project: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = project.get(key)
    if not isinstance(value, kind):
        raise WheelError(f"{where}: [project].{key} must be a {kind.__name__}, got "
                         f"{value!r}. Fix: set it in the [project] table.")
    return value


def read_project(src: Path) -> dict[str, Any]:
    """The [project] table of src/pyproject.toml, checked for what this builder writes."""
    where = str(src / "pyproject.toml")
    try:
        data = tomllib.loads((src / "pyproject.toml").read_text())
    except OSError as exc:
        raise WheelError(f"{where}: cannot read it ({exc.strerror}). Fix: give src, the "
                         "directory holding the agent's pyproject.toml") from exc
    except tomllib.TOMLDecodeError as exc:
        raise WheelError(f"{where}: not valid TOML ({exc})") from exc
    project = data.get("project")
    if not isinstance(project, dict):
        raise WheelError(f"{where}: no [project] table. Fix: describe the distribution there "
                         "(PEP 621)")
    if project.get("dynamic"):
        raise WheelError(f"{where}: [project].dynamic = {project['dynamic']!r}: this builder "
                         "reads static metadata only. Fix: write those fields out")
    unknown = sorted(set(project) - SUPPORTED)
    if unknown:
        raise WheelError(f"{where}: [project] fields {', '.join(unknown)} are not written by "
                         f"agent_wheel (it writes {', '.join(sorted(SUPPORTED))}). Fix: drop "
                         "them, or teach plugins/action/agent_wheel.py to write them")
    name = _field(project, "name", str, where)
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", name):
        raise WheelError(f"{where}: [project].name {name!r} is not a valid distribution name")
    try:
        version = str(Version(_field(project, "version", str, where)))
    except InvalidVersion as exc:
        raise WheelError(f"{where}: [project].version: {exc}. Fix: a PEP 440 version, "
                         "e.g. 0.2.0") from exc
    requires_python = project.get("requires-python")
    if requires_python is not None:
        try:
            SpecifierSet(_field(project, "requires-python", str, where))
        except InvalidSpecifier as exc:
            raise WheelError(f"{where}: [project].requires-python: {exc}") from exc
    dependencies = project.get("dependencies", [])
    if not isinstance(dependencies, list):
        raise WheelError(f"{where}: [project].dependencies must be a list of requirements")
    for dep in dependencies:
        try:
            Requirement(dep)
        except (InvalidRequirement, TypeError) as exc:
            raise WheelError(f"{where}: [project].dependencies: {dep!r} is not a "
                             f"requirement ({exc}). Fix: e.g. prometheus-client>=0.17") from exc
    scripts = project.get("scripts", {})
    if not isinstance(scripts, dict) or not all(
            isinstance(v, str) and re.fullmatch(r"[\w.]+:[\w.]+", v) for v in scripts.values()):
        raise WheelError(f"{where}: [project.scripts] must map command names to "
                         "'module:function' entry points")
    packages = data.get("tool", {}).get("setuptools", {}).get("packages", [_normalize(name)])
    return {**project, "name": name, "version": version, "dependencies": dependencies,
            "scripts": scripts, "packages": packages}


def metadata(project: dict[str, Any]) -> str:
    """Core metadata (METADATA) of the distribution."""
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}",
             f"Version: {project['version']}"]
    if project.get("description"):
        lines.append(f"Summary: {project['description']}")
    if project.get("keywords"):
        lines.append(f"Keywords: {','.join(project['keywords'])}")
    license_ = project.get("license")
    if isinstance(license_, dict) and license_.get("text"):
        lines.append(f"License: {license_['text']}")
    elif isinstance(license_, str):
        lines.append(f"License: {license_}")
    lines += [f"Classifier: {c}" for c in project.get("classifiers", [])]
    lines += [f"Project-URL: {k}, {v}" for k, v in project.get("urls", {}).items()]
    if project.get("requires-python"):
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {dep}" for dep in project["dependencies"]]
    return "\n".join(lines) + "\n"


def wheel_files(src: Path, project: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(archive name, content) of every file of the wheel but RECORD, in archive order."""
    files: list[tuple[str, bytes]] = []
    for package in project["packages"]:
        directory = src / package.replace(".", "/")
        modules = sorted(directory.glob("*.py"))  # a symlinked module gives its target's text
        if not modules:
            raise WheelError(f"{directory}: no modules of package {package!r}. Fix: give src, "
                             "the agent's source directory (agent/ of the collection)")
        for module in modules:
            try:
                files.append((f"{package.replace('.', '/')}/{module.name}", module.read_bytes()))
            except OSError as exc:
                raise WheelError(f"{module}: cannot read it ({exc.strerror}); a symlink "
                                 "must point at a file of the collection") from exc
    info = f"{_normalize(project['name'])}-{project['version']}.dist-info"
    files.append((f"{info}/METADATA", metadata(project).encode()))
    files.append((f"{info}/WHEEL", (f"Wheel-Version: 1.0\nGenerator: {GENERATOR}\n"
                                    "Root-Is-Purelib: true\nTag: py3-none-any\n").encode()))
    if project["scripts"]:
        entries = "".join(f"{k} = {v}\n" for k, v in sorted(project["scripts"].items()))
        files.append((f"{info}/entry_points.txt", f"[console_scripts]\n{entries}".encode()))
    tops = sorted({p.split(".")[0] for p in project["packages"]})
    files.append((f"{info}/top_level.txt", "".join(f"{t}\n" for t in tops).encode()))
    return files


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def build(src: Path) -> tuple[str, bytes, dict[str, Any]]:
    """(file name, bytes, project) of the wheel of the distribution in src."""
    project = read_project(src)
    files = wheel_files(src, project)
    info = f"{_normalize(project['name'])}-{project['version']}.dist-info"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files)
    files.append((f"{info}/RECORD", (record + f"{info}/RECORD,,\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            entry = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.create_system = 3  # unix: external_attr holds the file mode
            entry.external_attr = FILE_MODE
            archive.writestr(entry, data, compresslevel=9)
    filename = f"{_normalize(project['name'])}-{project['version']}-py3-none-any.whl"
    return filename, buffer.getvalue(), project


Pins = dict[str, tuple[str, set[str], str]]


def read_pins(path: Path, project: dict[str, Any]) -> Pins:
    """{normalized name: (version, sha256 hashes, name as written)} of a hash-pinned
    requirements file (what pip --require-hashes accepts), checked to satisfy the wheel's
    dependencies."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise WheelError(f"georelay_agent_requirements: cannot read {path} "
                         f"({exc.strerror}). Fix: a control-node requirements file, or '' for "
                         "the collection's agent/requirements-host.txt") from exc
    pins: Pins = {}
    for line in text.replace("\\\n", " ").splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        hashes = {w.split("=", 1)[1].removeprefix("sha256:") for w in words[1:]
                  if w.startswith("--hash=sha256:")}
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^;\s]+)", words[0])
        if not match or not hashes:
            raise WheelError(f"georelay_agent_requirements: {path}: {words[0]!r} is not "
                             "pinned with its hashes, which pip --require-hashes needs. Fix: "
                             "NAME==VERSION --hash=sha256:... for every file pip may pick "
                             "(pip download, then pip hash)")
        pins[_normalize(match.group(1))] = (match.group(2), hashes, match.group(1))
    for dep in project["dependencies"]:
        req = Requirement(dep)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        pin = pins.get(_normalize(req.name))
        if pin is None or not req.specifier.contains(pin[0], prereleases=True):
            raise WheelError(f"georelay_agent_requirements: {path} does not satisfy the agent's "
                             f"dependency {dep} (pinned: {pin[0] if pin else 'nothing'}). Fix: "
                             "pin a version the agent's pyproject.toml accepts")
    return pins


def check_wheelhouse(wheelhouse: Path, pins: Pins) -> None:
    """Fail unless the wheelhouse holds, for every pin, a file with one of its hashes."""
    if not wheelhouse.is_dir():
        raise WheelError(f"georelay_agent_wheelhouse: {wheelhouse} is not a directory on the "
                         "control node. Fix: pip download --require-hashes -r "
                         f"agent/requirements-host.txt --only-binary :all: -d {wheelhouse}")
    files = [f for f in wheelhouse.iterdir() if f.is_file()]
    digests = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    for name, (version, hashes, _written) in sorted(pins.items()):
        # A file is the pin's when its sha256 is one the requirements allow for it.
        found = [f for f in files if digests[f] in hashes]
        if not found:
            raise WheelError(f"georelay_agent_wheelhouse: {wheelhouse} has no file of "
                             f"{name}=={version} with a hash the requirements allow. Fix: pip "
                             "download --require-hashes -r <requirements> --only-binary :all: "
                             f"-d {wheelhouse}")


def write(dest: Path, filename: str, data: bytes) -> bool:
    """Write the wheel into dest atomically; False when the same bytes are already there."""
    path = dest / filename
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{filename}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("src", "dest", "requirements", "wheelhouse"))
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec={
            "src": {"type": "path"},
            "dest": {"type": "path", "default": DEFAULT_DEST},
            "requirements": {"type": "path"},
            "wheelhouse": {"type": "path"},
        })
        src = Path(args["src"]) if args["src"] else DEFAULT_SRC
        dest = Path(os.path.expanduser(args["dest"]))
        try:
            filename, data, project = build(src)
            requirements = (Path(args["requirements"]) if args["requirements"]
                            else src / "requirements-host.txt")
            pins = read_pins(requirements, project)
            if args["wheelhouse"]:
                check_wheelhouse(Path(args["wheelhouse"]), pins)
            # Also in check mode: the wheel is a control-node artifact the role's copy task
            # previews against; nothing on the host changes here.
            changed = write(dest, filename, data)
        except WheelError as exc:
            raise AnsibleActionFail(f"agent_wheel: {exc}") from exc
        except OSError as exc:
            raise AnsibleActionFail(f"agent_wheel: cannot write the wheel into {dest}: "
                                    f"{exc.strerror}. Fix: give dest, a writable "
                                    "control-node directory") from exc
        result.update(changed=changed, path=str(dest / filename), filename=filename,
                      sha256=hashlib.sha256(data).hexdigest(), name=project["name"],
                      version=project["version"], src=str(src),
                      requires_python=project.get("requires-python"),
                      dependencies=project["dependencies"], requirements=str(requirements),
                      pins=[f"{w}=={v}" for _n, (v, _h, w) in sorted(pins.items())])
        return result
