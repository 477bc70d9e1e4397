"""The docs stay true: docs/config.md's key table is the one the models generate, its examples are
valid opcd.toml, every relative link of the README and docs/ reaches a file (and heading), and the
demo the README shows commits its project on the branch its opcd.toml releases from."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Discriminator, Field

from opcd.config import Duration, parse_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


config_doc = load_script("config_doc")


def test_the_key_table_of_config_md_is_current() -> None:
    document = config_doc.DOC.read_text()
    assert config_doc.with_table(document, config_doc.table()) == document, (
        "docs/config.md's key table is stale: run `python scripts/config_doc.py --write`"
    )
    assert config_doc.main(["--check"]) == 0


def test_every_config_key_is_in_the_table() -> None:
    document = config_doc.DOC.read_text()
    for key in ("project.artifact_bucket", "components.NAME.kind", "environments.ENV.approval.approvers[].github",
                "environments.ENV.bake.poll_interval", "validation.timeouts", "terraform.lock_timeout"):  # fmt: skip
        assert f"| `{key}` |" in document, key
    assert "`root`" not in document  # excluded from the file: where it was read from


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Wait(_Model):
    """How long to wait."""

    timeout: Duration = Field(default=300.0, description="Give up after this long.")


class Fn(_Model):
    kind: Literal["lambda"] = Field(description="Which kind.")
    source: str = Field(description="Where the source is.")
    handler: str = Field(description="The handler.")


class Service(_Model):
    kind: Literal["service"] = Field(description="Which kind.")
    source: str = Field(description="Where the source is.")
    image: str | None = Field(default=None, description="The image.")
    wait: Wait = Wait()


class Gate(_Model):
    people: list[str] = Field(alias="approvers", description="Who may answer.")


class Root(_Model):
    components: dict[str, Annotated[Fn | Service, Field(discriminator="kind")]] = Field(description="What.")
    gate: Literal[False] | Gate = Field(default=False, description="A gate.")
    checks: list[Wait] = Field(default_factory=list, description="Waits.")
    note: str | None = None
    mode: Literal["a", "b"] | int = Field(default="a", description="A | B.")


def test_the_table_walks_unions_discriminated_on_kind() -> None:
    rows = {row.path: row for row in config_doc.rows(Root)}
    assert list(rows) == [
        "components", "components.NAME.kind", "components.NAME.source", "components.NAME.handler",
        "components.NAME.image", "components.NAME.wait", "components.NAME.wait.timeout",
        "gate", "gate.approvers", "checks", "checks[].timeout", "note", "mode",
    ]  # fmt: skip
    assert rows["components"].type == "table of table"
    kind = rows["components.NAME.kind"]
    assert (kind.type, kind.default, kind.kinds) == ('"lambda" | "service"', "required", ())
    assert rows["components.NAME.source"].kinds == ()  # every kind has it alike
    assert rows["components.NAME.handler"].kinds == ("lambda",)
    assert rows["components.NAME.wait.timeout"] == config_doc.Row(
        "components.NAME.wait.timeout", "duration", '"5m"', "Give up after this long.", ("service",)
    )
    assert (rows["gate"].type, rows["gate"].default) == ("false | table", "false")
    assert (rows["checks"].type, rows["checks"].default) == ("list of table", "[]")
    assert (rows["note"].type, rows["note"].default, rows["note"].description) == ("str", "unset", "")
    assert rows["mode"].type == '"a" | "b" | int'
    table = config_doc.table(Root)
    assert "| `components.NAME.handler` | `str` | `required` | *lambda:* The handler. |" in table
    assert '| `mode` | `"a" \\| "b" \\| int` | `"a"` | A \\| B. |' in table


class Undeclared(_Model):
    """The same union with its discriminator declared otherwise, or not at all."""

    declared: dict[str, Annotated[Fn | Service, Discriminator("kind")]] = Field(description="What.")
    inferred: dict[str, Fn | Service] = Field(description="What.")


@pytest.mark.parametrize("key", ["declared", "inferred"])
def test_a_union_is_told_apart_by_its_literal_field(key: str) -> None:
    rows = {row.path: row for row in config_doc.rows(Undeclared)}
    kind = rows[f"{key}.NAME.kind"]
    assert (kind.type, kind.kinds) == ('"lambda" | "service"', ())
    assert rows[f"{key}.NAME.image"].kinds == ("service",)


def test_a_changed_description_makes_the_table_stale() -> None:
    document = f"# keys\n\n{config_doc.START}\n{config_doc.table(Root)}{config_doc.END}\nmore\n"
    assert config_doc.with_table(document, config_doc.table(Root)) == document

    class Changed(Root):
        note: str | None = Field(default=None, description="A note.")

    assert config_doc.with_table(document, config_doc.table(Changed)) != document


def test_a_document_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="marker comments"):
        config_doc.with_table("# keys\n", config_doc.table(Root))


def _merge(into: dict[str, Any], data: dict[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def test_the_examples_of_config_md_are_valid_opcd_toml() -> None:
    """Each ```toml block, laid over this repository's opcd.toml, loads without a problem."""
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "docs" / "config.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        data = tomllib.loads((ROOT / "opcd.toml").read_text())
        _merge(data, tomllib.loads(block))
        parse_config(data, ROOT)


FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def anchors(markdown: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces as hyphens, -N for repeats."""
    seen: dict[str, int] = {}
    out = set()
    lines, fenced = [], False
    for line in markdown.read_text().splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    for line in lines:
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def broken_links(markdown: Path) -> list[str]:
    problems = []
    for target in (m.group(1) for line in prose(markdown.read_text()) for m in LINK.finditer(line)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (markdown.parent / path).resolve() if path else markdown
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: no heading #{anchor} in {file.name}")
    return problems


@pytest.mark.parametrize("markdown", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(markdown: Path) -> None:
    assert broken_links(markdown) == []


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## `opcd.toml`: keys\n\n```sh\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#other-page) [ok](other.md#opcdtoml-keys) [ok](#page) [web](https://example.org/x)\n"
        "[gone](missing.md) [anchor](other.md#not-a-heading) `[code](nowhere.md)`\n"
        "```\n[fenced](nowhere.md)\n```\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#not-a-heading: no heading #not-a-heading in other.md",
    ]


def test_the_demo_commits_its_project_on_the_release_branch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make demo` releases commits of its own repository; opcd.toml's release_branch is main, which
    git's default branch is not everywhere."""
    demo = load_script("demo")
    monkeypatch.setattr(demo, "DEMO", tmp_path)
    (tmp_path / "opcd.toml").write_text("")
    sha = demo.commit("v1")
    branch = subprocess.run(["git", "rev-parse", "main"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert branch.stdout.strip() == sha
