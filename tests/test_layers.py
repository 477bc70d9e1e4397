"""The import graph, drawn from the code: no arrow runs back up (docs/layers.md draws it).

Layers, top to bottom: ``cli`` → ``deployments`` → ``flows`` → ``tasks`` → ``opcd``. An import may
point down or stay in its package, never up. ``sandbox`` imports only ``opcd`` and itself, and no
product code imports ``sandbox`` (the CLI finds it through the ``opcd.sandbox`` entry point). Flow
modules share helpers through ``flows.common``; one imports another only as :data:`FLOW_IMPORTS`
allows. An import inside a function is allowed only as :data:`LAZY` says why.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["cli", "deployments", "flows", "tasks", "opcd"]  # top to bottom
PRODUCT = [*LAYERS, "sandbox"]

# Which flow module may import which other one (flows.common, the shared helpers, any may import).
FLOW_IMPORTS = {
    # release runs the child deploy flows of each component and builds their artifacts first
    ("flows.release", "flows.components"),
    ("flows.release", "flows.lambda_deploy"),
    ("flows.release", "flows.frontend_deploy"),
    ("flows.release", "flows.ecs_deploy"),
    # with release.on_failure = rollback-all it rolls an environment's other components back on a failure
    ("flows.release", "flows.rollback"),
    # which flow deploys a component: the registry of the deploy flows
    ("flows.components", "flows.lambda_deploy"),
    ("flows.components", "flows.frontend_deploy"),
    ("flows.components", "flows.ecs_deploy"),
    # an ECS deploy builds and pushes its image as the App Runner deploy does
    ("flows.ecs_deploy", "flows.frontend_deploy"),
    # a rollback is a deploy of an older version: the same plan, shift and checks, in the other direction
    ("flows.rollback", "flows.lambda_deploy"),
    ("flows.rollback", "flows.frontend_deploy"),
    ("flows.rollback", "flows.ecs_deploy"),
    # the plan's builders run the flows' own checks (read-only); its renderers show its models
    ("flows.plan.build", "flows.plan.models"),
    ("flows.plan.build", "flows.lambda_deploy"),
    ("flows.plan.build", "flows.frontend_deploy"),
    ("flows.plan.build", "flows.ecs_deploy"),
    ("flows.plan.build", "flows.rollback"),
    ("flows.plan.render", "flows.plan.models"),
    # a run executes its plan: the plan's types (flows.plan.models imports no flow)
    ("flows.common", "flows.plan.models"),
    ("flows.common", "flows.plan.build"),
    ("flows.lambda_deploy", "flows.plan.models"),
    ("flows.frontend_deploy", "flows.plan.models"),
    ("flows.ecs_deploy", "flows.plan.models"),
    ("flows.release", "flows.plan.models"),
    ("flows.release", "flows.plan.build"),
}

_COMMANDS = "a command's module, its flows and tasks: `opcd --help` costs 1.3 s of CPU without them, 6.9 s with"
_EXTRA = "the sandbox extra (moto, werkzeug): `opcd sandbox down`, `env`, `fire-rule` load the module without it"
# (file, imported module or package) -> why the import is inside a function.
LAZY = {
    ("cli/main.py", "cli.deploy"): _COMMANDS,
    ("cli/main.py", "cli.release"): _COMMANDS,
    ("cli/main.py", "cli.status"): _COMMANDS,
    ("cli/main.py", "cli.validate"): _COMMANDS,
    ("cli/main.py", "cli.history"): _COMMANDS,
    ("cli/main.py", "cli.infra"): _COMMANDS,
    ("opcd/iam.py", "prefect"): "every command imports opcd.iam: Prefect adds 3.5 s of CPU to `opcd --help`",
    ("tasks/checks.py", "detect_secrets"): "the validate extra: the secret scan says how to install it if missing",
    ("sandbox/server.py", "moto"): _EXTRA,
    ("sandbox/server.py", "werkzeug"): _EXTRA,
    ("sandbox/server.py", "sandbox.apprunner"): _EXTRA + " (it imports werkzeug)",
    ("sandbox/server.py", "sandbox.registry"): _EXTRA + " (it imports moto and werkzeug)",
    ("sandbox/server.py", "sandbox.ecs"): _EXTRA + " (it imports moto and werkzeug)",
    ("sandbox/seed.py", "sandbox.registry"): _EXTRA + " (it imports moto and werkzeug)",
    ("flows/common.py", "flows.plan.build"): "a run given no plan makes it; the builder runs the deploy flows' checks,"
    " which import flows.common: at the top, a cycle",
}  # fmt: skip


@dataclass(frozen=True)
class Import:
    file: str  # relative to the checkout, e.g. flows/release.py
    importer: str  # flows.release
    imported: str  # flows.lambda_deploy (a module, or the package a name comes from)
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, source: str | None = None) -> list[Import]:
    """Every import of a module (``source``: its text, if not the file's), at its top or in a function.

    Imports under ``if TYPE_CHECKING:`` are left out: they never run.
    """
    importer, file = module_name(path), path.relative_to(ROOT).as_posix()
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            if isinstance(child, ast.Import):
                found.extend(Import(file, importer, a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the package up
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                for alias in child.names:  # `from flows import lambda_deploy` imports the module flows.lambda_deploy
                    sub = f"{base}.{alias.name}"
                    is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").exists()
                    found.append(Import(file, importer, sub if is_module else base, child.lineno, in_function))
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(path.read_text() if source is None else source, str(path)), False)
    return found


def all_imports() -> list[Import]:
    return [i for package in PRODUCT for path in sorted((ROOT / package).rglob("*.py")) for i in imports_of(path)]


def _within(module: str, name: str) -> bool:
    """``module`` is ``name`` or inside it (``moto.ecr.models`` is within ``moto``)."""
    return module == name or module.startswith(name + ".")


def top(module: str) -> str:
    return module.split(".")[0]


def problems(imports: list[Import]) -> list[str]:
    """Every import that breaks the rule, one line each."""
    found = []
    for i in imports:
        where, source, target = (
            f"{i.file}:{i.line}: {i.importer} imports {i.imported}",
            top(i.importer),
            top(i.imported),
        )
        if target == "sandbox" and source != "sandbox":
            found.append(f"{where}: product code never imports the sandbox (the CLI finds it by its entry point)")
        elif source == "sandbox" and target in LAYERS and target != "opcd":
            found.append(f"{where}: the sandbox imports only opcd (and itself)")
        elif source in LAYERS and target in LAYERS and LAYERS.index(target) < LAYERS.index(source):
            found.append(f"{where}: an upward arrow ({source} is below {target})")
        elif (
            source == target == "flows"
            and i.imported not in (i.importer, "flows", "flows.common")
            and (i.importer, i.imported) not in FLOW_IMPORTS
        ):
            found.append(f"{where}: flows share helpers through flows.common, not sideways (or add it to FLOW_IMPORTS)")
        if i.in_function and not any(file == i.file and _within(i.imported, name) for file, name in LAZY):
            found.append(f"{where} inside a function: import it at the top (or say in LAZY why not)")
    return found


def package_arrows(imports: list[Import]) -> list[tuple[str, str]]:
    """The arrows between the product's packages, as the diagram draws them."""
    arrows = {(top(i.importer), top(i.imported)) for i in imports}
    return sorted((a, b) for a, b in arrows if a != b and a in PRODUCT and b in PRODUCT)


def mermaid(arrows: list[tuple[str, str]]) -> str:
    return "\n".join(["```mermaid", "graph TD", *(f"  {a} --> {b}" for a, b in arrows), "```"])


def test_no_import_breaks_the_layers() -> None:
    imports = all_imports()
    assert len(imports) > 300 and any(i.in_function for i in imports)  # the walk sees them, lazy ones too
    assert not problems(imports), "\n".join(problems(imports))


def test_every_allowance_is_still_needed() -> None:
    """An allowance nothing uses any more goes: the lists say what the code does."""
    imports = all_imports()
    lazy = {(f, n) for f, n in LAZY if any(i.in_function and i.file == f and _within(i.imported, n) for i in imports)}
    assert lazy == set(LAZY), f"unused LAZY entries: {set(LAZY) - lazy}"
    used = {(i.importer, i.imported) for i in imports}
    assert FLOW_IMPORTS <= used, f"unused FLOW_IMPORTS entries: {FLOW_IMPORTS - used}"


@pytest.mark.parametrize(
    ("file", "code", "problem"),
    [
        ("opcd/config.py", "from cli.main import main\n", "an upward arrow (opcd is below cli)"),
        (
            "tasks/ledger.py",
            "def f():\n    from flows.common import finish\n",
            "an upward arrow (tasks is below flows)",
        ),
        ("flows/drift.py", "from flows.release import release\n", "not sideways"),
        ("flows/release.py", "from flows.drift import drift_check\n", "not sideways"),
        ("cli/status.py", "import sandbox.commands\n", "never imports the sandbox"),
        ("sandbox/seed.py", "from tasks.ledger import Record\n", "the sandbox imports only opcd"),
        ("tasks/git.py", "def f():\n    import json\n", "inside a function"),
        ("opcd/iam.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cli.main import main\n", None),
    ],
)
def test_a_planted_import_is_caught(file: str, code: str, problem: str | None) -> None:
    """The checker on a module with one more import: every kind of bad arrow is named, TYPE_CHECKING is not."""
    planted = ROOT / file
    found = problems(imports_of(planted, planted.read_text() + "\n\n" + code))
    if problem is None:
        assert not found
    else:  # one problem at least, each about the planted line
        last = len(planted.read_text().splitlines())
        assert any(problem in f for f in found) and all(int(f.split(":")[1]) > last for f in found), found


def test_docs_draw_the_graph_the_code_has() -> None:
    diagram = mermaid(package_arrows(all_imports()))
    assert diagram in (ROOT / "docs" / "layers.md").read_text(), f"docs/layers.md should draw:\n{diagram}"
