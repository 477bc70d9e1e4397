"""The Lambda package build: deterministic bytes, the right files, clear failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from opcd.config import load_config
from opcd.errors import BuildFailed
from tasks.build import build_zip, install_dependencies, lambda_source_hash

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG = load_config(ROOT / "opcd.toml")
BACKEND = CONFIG.component("backend")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "examples" / "outreachpass" / "backend", src, ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_same_source_gives_the_same_bytes(source: Path, tmp_path: Path, build_cache: Path) -> None:
    shutil.rmtree(build_cache / "packages", ignore_errors=True)  # built here, not reused from an earlier test
    first = build_zip("backend", "v1", BACKEND, source, tmp_path / "a", build_cache)
    (source / "app" / "__pycache__").mkdir(exist_ok=True)
    (source / "app" / "__pycache__" / "x.cpython-312.pyc").write_bytes(b"noise")  # ignored
    (source / "app" / "schema.py").touch()  # a new mtime changes nothing
    shutil.rmtree(build_cache / "packages")  # built again, not reused
    second = build_zip("backend", "v1", BACKEND, source, tmp_path / "b", build_cache)
    assert not first.cached and not second.cached
    assert first.sha256_hex == second.sha256_hex
    assert first.path.read_bytes() == second.path.read_bytes()
    assert len(first.code_sha256) == 44  # base64 of 32 bytes, as Lambda reports CodeSha256


def test_package_contents(source: Path, tmp_path: Path, build_cache: Path) -> None:
    package = build_zip("backend", "v1", BACKEND, source, tmp_path / "out", build_cache)
    with zipfile.ZipFile(package.path) as archive:
        names = archive.namelist()
        infos = archive.infolist()
        build_info = archive.read("BUILD_INFO.json").decode()
    assert names == sorted(names[:-1]) + ["BUILD_INFO.json"]
    assert "app/__init__.py" in names and "app/migrations/versions/0001_create_passes.py" in names
    assert any(n.startswith("sqlalchemy/") for n in names) and any(n.startswith("alembic/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") or n.startswith("tests/") for n in names)
    assert "requirements.txt" not in names and not any(n.startswith("bin/") for n in names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert '"version": "v1"' in build_info


def test_version_and_source_change_the_hash(source: Path, tmp_path: Path, build_cache: Path) -> None:
    v1 = build_zip("backend", "v1", BACKEND, source, tmp_path / "a", build_cache)
    v2 = build_zip("backend", "v2", BACKEND, source, tmp_path / "b", build_cache)
    assert v1.sha256_hex != v2.sha256_hex and v1.source_hash == v2.source_hash
    (source / "app" / "schema.py").write_text("# changed\n", encoding="utf-8")
    assert lambda_source_hash(BACKEND, source) != v1.source_hash


def test_unresolvable_requirement_is_a_build_failure(source: Path, tmp_path: Path) -> None:
    (source / "requirements.txt").write_text("no-such-package-opcd-test==0.0.1\n")
    with pytest.raises(BuildFailed) as info:
        build_zip("backend", "v1", BACKEND, source, tmp_path / "out", tmp_path / "cache")
    assert "installing requirements.txt for manylinux2014_x86_64 / Python 3.12 failed" in str(info.value)
    assert not list((tmp_path / "cache" / "deps").glob("*"))  # no half-installed cache entry


def test_missing_source_directory(tmp_path: Path) -> None:
    with pytest.raises(BuildFailed, match="does not exist"):
        build_zip("backend", "v1", BACKEND, tmp_path / "nope", tmp_path / "out", tmp_path / "cache")


def test_a_package_built_from_the_same_inputs_is_reused(source: Path, tmp_path: Path, build_cache: Path) -> None:
    first = build_zip("backend", "v7", BACKEND, source, tmp_path / "a", build_cache)
    again = build_zip("backend", "v7", BACKEND, source, tmp_path / "b", build_cache)
    assert again.cached and again.sha256_hex == first.sha256_hex and again.size == first.size
    assert again.path.read_bytes() == first.path.read_bytes()

    (kept,) = [
        p for p in (build_cache / "packages").iterdir() if (p / "sha256").read_text().strip() == first.sha256_hex
    ]
    (kept / "lambda.zip").write_bytes(b"damaged")
    rebuilt = build_zip("backend", "v7", BACKEND, source, tmp_path / "c", build_cache)
    assert not rebuilt.cached and rebuilt.sha256_hex == first.sha256_hex  # built again, the same bytes

    (source / "app" / "schema.py").write_text("# changed\n", encoding="utf-8")
    changed = build_zip("backend", "v7", BACKEND, source, tmp_path / "d", build_cache)
    assert not changed.cached and changed.sha256_hex != first.sha256_hex


def test_only_the_most_recent_packages_are_kept(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build_cache: Path
) -> None:
    import tasks.build

    cache = tmp_path / "cache"
    cache.mkdir()
    install_dependencies(BACKEND, source, build_cache)
    (cache / "deps").symlink_to(build_cache / "deps")  # the installed wheels, not the packages
    monkeypatch.setattr(tasks.build, "KEEP", 2)
    for version in ("v1", "v2", "v3"):
        build_zip("backend", version, BACKEND, source, tmp_path / version, cache)
    assert len(list((cache / "packages").iterdir())) == 2
    assert build_zip("backend", "v3", BACKEND, source, tmp_path / "again", cache).cached
    assert not build_zip("backend", "v1", BACKEND, source, tmp_path / "first", cache).cached


def test_a_file_that_does_not_compile_refuses_the_build(source: Path, tmp_path: Path, build_cache: Path) -> None:
    shutil.rmtree(build_cache / "packages", ignore_errors=True)  # built here, not reused from an earlier test
    models = source / "app" / "models.py"
    models.write_text("".join(f"# line {n}\n" for n in range(1, 12)) + "def broken(:\n    return 1\n")
    (source / "app" / "later.py").write_text("x = (\n")  # a second error: counted, the first named
    with pytest.raises(BuildFailed) as info:
        build_zip("backend", "v3", BACKEND, source, tmp_path / "out", build_cache)
    assert info.value.message == "backend v3: app/later.py:1: '(' was never closed (SyntaxError) (and 1 more)"
    assert info.value.hint == "fix the file and build again"
    assert not (tmp_path / "out" / "lambda.zip").exists()

    (source / "app" / "later.py").unlink()
    with pytest.raises(BuildFailed) as info:
        build_zip("backend", "v3", BACKEND, source, tmp_path / "out", build_cache)
    assert info.value.message == "backend v3: app/models.py:12: invalid syntax (SyntaxError)"
    assert not (tmp_path / "out" / "lambda.zip").exists()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("def f():\n  x = 1\n    y = 2\n", "app/bad.py:3: unexpected indent (IndentationError)"),
        ("def f():\n    return\nawait g()\n", "app/bad.py:3: 'await' outside function (SyntaxError)"),
        ("import os\nnonlocal x\n", "app/bad.py:2: nonlocal declaration not allowed at module level (SyntaxError)"),
    ],
)
def test_compile_errors_beyond_the_parser_are_found(source: Path, tmp_path: Path, text: str, error: str) -> None:
    (source / "app" / "bad.py").write_text(text)
    with pytest.raises(BuildFailed) as info:
        build_zip("backend", "v3", BACKEND, source, tmp_path / "out", tmp_path / "cache")
    assert str(info.value) == f"backend v3: {error} — fix the file and build again"
    assert not (tmp_path / "cache" / "deps").exists()  # refused before the dependencies were installed


def test_a_dependency_file_that_does_not_compile_is_a_warning(
    source: Path, tmp_path: Path, build_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.rmtree(build_cache / "packages", ignore_errors=True)  # built here: its dependencies compiled
    package = build_zip("backend", "v1", BACKEND, source, tmp_path / "a", build_cache)
    deps = next(p for p in (build_cache / "deps").iterdir() if p.is_dir() and (p / "sqlalchemy").is_dir())
    (compiled,) = deps.parent.glob(f"{deps.name}.compiled-*.json")  # one per interpreter that compiled the set
    assert json.loads(compiled.read_text()) == []  # every file of the example's dependencies compiles
    shutil.rmtree(build_cache / "packages")
    for kept in deps.parent.glob(f"{deps.name}.compiled-*.json"):
        kept.unlink()
    py2 = deps / "sqlalchemy" / "_py2_only.py"
    py2.write_text('print "never imported on Python 3"\n')
    try:
        with caplog.at_level("WARNING", logger="opcd.build"):
            again = build_zip("backend", "v1", BACKEND, source, tmp_path / "b", build_cache)
    finally:
        py2.unlink()
        for kept in deps.parent.glob(f"{deps.name}.compiled-*.json"):
            kept.unlink()
    assert "A dependency's file does not compile (importing it would fail): sqlalchemy/_py2_only.py:1:" in caplog.text
    assert again.sha256_hex != package.sha256_hex  # the file is in the package: the runtime imports what it needs


def test_builds_in_threads_of_one_process_install_and_check_a_shared_dependency_set_once(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release builds its components in threads: those with the same requirements share one dependency set."""
    from tasks import build

    installs: list[list[str]] = []
    compiles: list[int] = []
    asked: list[int] = []
    both_asked = threading.Event()

    def pip(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        installs.append(command)
        assert both_asked.wait(30), "the other build never asked"  # it asks while this install runs
        time.sleep(0.2)  # and, without the lock, would look for the set before this one is in place
        (Path(command[command.index("--target") + 1]) / "lib.py").write_text("x = 1\n")
        return subprocess.CompletedProcess(command, 0, "", "")

    def compile_files(runtime: str, files: list[tuple[str, Path]]) -> tuple[str, list[build.CompileError]]:
        compiles.append(len(files))
        return "3.12", []

    monkeypatch.setattr(build.subprocess, "run", pip)
    monkeypatch.setattr(build, "compile_files", compile_files)

    def dependencies(_: int) -> tuple[Path | None, list[build.CompileError]]:
        asked.append(1)
        if len(asked) == 2:
            both_asked.set()
        deps = install_dependencies(BACKEND, source, tmp_path / "cache")
        assert deps is not None
        return deps, build._dependency_errors(BACKEND.runtime, deps, "3.12")

    with ThreadPoolExecutor(2) as pool:
        (one, errors), (other, _) = pool.map(dependencies, range(2))
    assert one == other and errors == []
    assert len(installs) == 1 and compiles == [1]  # once each, not once per component
    assert sorted(p.name for p in one.parent.iterdir()) == [one.name, f"{one.name}.compiled-3.12.json"]
