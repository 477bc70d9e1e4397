"""Build a component's Lambda package: dependencies for the Lambda platform plus the source, zipped
deterministically (sorted entries, fixed timestamps and modes), so the same source and lockfile
give the same sha256, byte for byte.

Before anything is zipped, every Python file of the package is compiled with the Lambda runtime's
interpreter (:func:`opcd.pythons.find_python`), in a subprocess that writes nothing: a file of the
component's own source that does not compile refuses the build with ``file:line``. A dependency's
file that does not compile is only a warning: wheels ship files that are never imported on purpose
(Python 2 compatibility modules, test data, templates), and the runtime imports only what it needs.
A dependency set is compiled once per interpreter (the result is kept next to it in the cache).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from opcd.config import LambdaComponent
from opcd.errors import BuildFailed
from opcd.logs import run_logger
from opcd.progress import report
from opcd.pythons import find_python

_EXCLUDED_DIRS = {"__pycache__", "tests", "node_modules", ".pytest_cache", ".mypy_cache", ".venv"}
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Packages are kept in the build cache by everything that goes into them; FORMAT changes whenever
# the way a package is laid out changes, so a kept package is never one an older opcd made.
FORMAT = "lambda-zip-2"  # 2: every Python file compiled before it is zipped
KEEP = 20

_ONE_AT_A_TIME: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _one_at_a_time(entry: Path) -> threading.Lock:
    """A lock per build-cache entry: a release builds its components in threads of one process, and components
    with the same requirements share their dependency set; the first installs it (and checks it compiles), the
    others wait and reuse it. (Other processes may still race: :func:`publish` keeps one copy.)"""
    with _LOCKS_LOCK:
        return _ONE_AT_A_TIME.setdefault(entry, threading.Lock())


PLATFORMS = {"x86_64": "manylinux2014_x86_64"}


@dataclass(frozen=True)
class Package:
    """A built Lambda package on local disk."""

    component: str
    version: str
    path: Path
    sha256_hex: str
    size: int
    source_hash: str
    cached: bool = False  # the same bytes as a build from the same inputs kept in the build cache

    @property
    def code_sha256(self) -> str:
        """The package's sha256 as Lambda reports it (``CodeSha256``: base64 of the digest)."""
        return base64.b64encode(bytes.fromhex(self.sha256_hex)).decode()


def _source_files(source: Path, requirements: str) -> list[tuple[str, Path]]:
    files = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in _EXCLUDED_DIRS and not d.startswith("."))
        for name in names:
            if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                continue
            path = Path(root) / name
            rel = path.relative_to(source).as_posix()
            if rel != requirements:
                files.append((rel, path))
    return sorted(files)


def lambda_source_hash(component: LambdaComponent, source: Path) -> str:
    """sha256 of everything a build reads: source files, lockfile, runtime and platform."""
    digest = hashlib.sha256()
    digest.update(f"{component.runtime}|{component.architecture}|{component.handler}\n".encode())
    lockfile = source / component.requirements
    if lockfile.exists():
        digest.update(b"requirements\0" + lockfile.read_bytes() + b"\0")
    for rel, path in _source_files(source, component.requirements):
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def install_dependencies(component: LambdaComponent, source: Path, cache_dir: Path) -> Path | None:
    """Install the lockfile's wheels for the Lambda platform; cached by lockfile content."""
    lockfile = source / component.requirements
    if not lockfile.exists():
        return None
    platform = PLATFORMS[component.architecture]
    py = component.runtime.removeprefix("python")
    key = hashlib.sha256(lockfile.read_bytes() + f"{platform}{py}".encode()).hexdigest()[:24]
    target = cache_dir / "deps" / key
    with _one_at_a_time(target):
        return target if target.exists() else _install(lockfile, platform, py, target)


def _install(lockfile: Path, platform: str, py: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".install-"))
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-compile", "--only-binary=:all:", "--platform", platform,
        "--implementation", "cp", "--python-version", py, "--target", str(tmp),
        "-r", str(lockfile),
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")] or proc.stderr.splitlines()
        raise BuildFailed(
            f"installing {lockfile.name} for {platform} / Python {py} failed: {' '.join(lines[-2:])}",
            "every dependency must be pinned and have a binary wheel for the Lambda platform",
        )
    shutil.rmtree(tmp / "bin", ignore_errors=True)
    publish(tmp, target)
    return target


def publish(tmp: Path, target: Path) -> None:
    """Move a finished cache entry into place; if a parallel build published the same one first, keep theirs."""
    try:
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.exists():
            raise


# Run by the runtime's interpreter: compiles each [name, path] of stdin's JSON list as an import
# would (full compile, not only parsing), writes no .pyc, prints one JSON line per file that fails.
_COMPILE = """
import json, sys, warnings
warnings.simplefilter("ignore")
print(json.dumps({"python": "%d.%d" % sys.version_info[:2]}))
for name, path in json.load(sys.stdin):
    try:
        with open(path, "rb") as f:
            compile(f.read(), name, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        print(json.dumps({"file": name, "line": line, "error": "%s (%s)" % (getattr(exc, "msg", None) or exc,
                                                                         type(exc).__name__)}))
"""


@dataclass(frozen=True)
class CompileError:
    file: str
    line: int | None
    error: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.error}" if self.line else f"{self.file}: {self.error}"


def compile_files(runtime: str, files: list[tuple[str, Path]]) -> tuple[str, list[CompileError]]:
    """Compile ``files`` (name in the package, path) with ``runtime``'s Python: (its version, the failures)."""
    python = find_python(runtime)
    listing = json.dumps([[name, str(path)] for name, path in files if name.endswith(".py")])
    proc = subprocess.run(
        [python, "-I", "-c", _COMPILE], input=listing, capture_output=True, text=True, check=False, timeout=600
    )
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or not lines:
        raise BuildFailed(f"compiling the package with {python} failed: {proc.stderr.strip()[-300:]}")
    version = json.loads(lines[0])["python"]
    return version, [CompileError(**json.loads(line)) for line in lines[1:]]


def check_sources(name: str, version: str, component: LambdaComponent, sources: list[tuple[str, Path]]) -> str:
    """Refuse a package whose own source does not compile; the Python version that compiled it."""
    python, errors = compile_files(component.runtime, sources)
    if python != component.runtime.removeprefix("python"):
        run_logger("opcd.build").warning(
            "Compiled %s %s with Python %s: no %s interpreter on this machine (install it to check with the runtime's)",
            name, version, python, component.runtime,
        )  # fmt: skip
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BuildFailed(f"{name} {version}: {errors[0]}{more}", "fix the file and build again")
    return python


def warn_dependencies(component: LambdaComponent, deps: Path, python: str, sources: list[tuple[str, Path]]) -> None:
    """Log each dependency file that does not compile (and that the component's own source does not replace)."""
    own = {rel for rel, _ in sources}
    for error in _dependency_errors(component.runtime, deps, python):
        if error.file not in own:
            run_logger("opcd.build").warning(
                "A dependency's file does not compile (importing it would fail): %s", error
            )


def _dependency_errors(runtime: str, deps: Path, python: str) -> list[CompileError]:
    """The files of an installed dependency set that do not compile; computed once per set and interpreter."""
    kept = deps.with_name(f"{deps.name}.compiled-{python}.json")
    with _one_at_a_time(kept):
        try:
            return [CompileError(**e) for e in json.loads(kept.read_text())]
        except (OSError, ValueError, TypeError):
            return _check_dependencies(runtime, deps, kept)


def _check_dependencies(runtime: str, deps: Path, kept: Path) -> list[CompileError]:
    files = [(p.relative_to(deps).as_posix(), p) for p in sorted(deps.rglob("*.py")) if "__pycache__" not in p.parts]
    _, errors = compile_files(runtime, files)
    # A name of its own per writer: builds in other processes (two releases, a deploy beside a release) may
    # write the same record at once.
    fd, tmp = tempfile.mkstemp(dir=kept.parent, prefix=f".{kept.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps([e.__dict__ for e in errors]))
        Path(tmp).replace(kept)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return errors


def _add(archive: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.create_system = 3
    info.external_attr = ((0o100755 if executable else 0o100644) & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data, compresslevel=6)


def build_zip(
    name: str, version: str, component: LambdaComponent, source: Path, out_dir: Path, cache_dir: Path
) -> Package:
    """Build ``out_dir/lambda.zip``; deterministic for a given source, lockfile and version.

    A package built before from the same inputs is reused from the build cache (the same bytes).
    """
    if not source.is_dir():
        raise BuildFailed(f"source directory {source} does not exist", "check components.*.source")
    hashed = lambda_source_hash(component, source)
    build_info = json.dumps(
        {"component": name, "version": version, "runtime": component.runtime, "source_hash": hashed}, sort_keys=True
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / "lambda.zip"
    kept = cache_dir / "packages" / hashlib.sha256(f"{FORMAT}|{build_info}".encode()).hexdigest()
    if (digest := _reuse(kept, zip_path)) is not None:
        return Package(name, version, zip_path, digest, zip_path.stat().st_size, hashed, cached=True)
    sources = _source_files(source, component.requirements)
    python = check_sources(name, version, component, sources)
    deps = install_dependencies(component, source, cache_dir)
    entries: dict[str, Path] = {}
    if deps:
        warn_dependencies(component, deps, python, sources)
        for root, dirs, names in os.walk(deps):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for fname in names:
                path = Path(root) / fname
                if not fname.endswith((".pyc", ".pyo")):
                    entries[path.relative_to(deps).as_posix()] = path
    for rel, path in sources:
        entries[rel] = path  # the component's own code wins over a dependency's file
    tmp = zip_path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for rel in sorted(entries):
            path = entries[rel]
            _add(archive, rel, path.read_bytes(), executable=os.access(path, os.X_OK))
        _add(archive, "BUILD_INFO.json", build_info.encode())
    tmp.replace(zip_path)
    data = zip_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    _keep(zip_path, digest, kept)
    return Package(name, version, zip_path, digest, len(data), hashed)


def _reuse(kept: Path, zip_path: Path) -> str | None:
    """Copy a package kept from a build of the same inputs; its sha256, or None if none is (intact)."""
    try:
        recorded = (kept / "sha256").read_text().strip()
        data = (kept / "lambda.zip").read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != recorded:
        shutil.rmtree(kept, ignore_errors=True)  # damaged: build again
        return None
    tmp = zip_path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(zip_path)
    os.utime(kept)  # the most recently used are pruned last
    return recorded


def _keep(zip_path: Path, digest: str, kept: Path) -> None:
    """Keep a copy of a new package for the next build of the same inputs; the oldest beyond KEEP go."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=kept.parent, prefix=".package-"))
    shutil.copyfile(zip_path, tmp / "lambda.zip")
    (tmp / "sha256").write_text(digest + "\n")
    publish(tmp, kept)
    packages = sorted((p for p in kept.parent.iterdir() if not p.name.startswith(".")), key=_mtime, reverse=True)
    for old in packages[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@task(name="build-lambda-package", cache_policy=NO_CACHE)
def build_lambda_package(
    name: str, version: str, component: LambdaComponent, source: Path, out_dir: Path, cache_dir: Path
) -> Package:
    logger = get_run_logger()
    logger.info("Building %s %s from %s", name, version, source)
    report("build", f"{name} {version}: lambda.zip from {source.name}/")
    package = build_zip(name, version, component, source, out_dir, cache_dir)
    how = "Reused from the build cache (same source, lockfile and version)" if package.cached else "Built"
    logger.info("%s %s: %d bytes, sha256 %s", how, package.path.name, package.size, package.sha256_hex)
    return package
