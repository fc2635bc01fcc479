"""The layering, read from the source: nothing below the HTTP face imports it; the two faces stay apart."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mailer", "sandbox")
# The app factory composes both faces over the engine: it alone may import every layer.
COMPOSITION_ROOT = "mailer.app"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[str]:
    """Every module an import statement names, at any depth (imports inside functions count)."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def all_imports() -> dict[str, set[str]]:
    return {
        module_name(path): set(imported_modules(path))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    }


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def offenders(importer_outside: str, imported: str, exempt: frozenset[str] = frozenset()) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in all_imports().items()
        if not within(module, importer_outside) and module not in exempt
        for name in names
        if within(name, imported)
    )


def test_the_walk_sees_imports_of_every_form() -> None:
    # Guards the guard: a walk that missed a form would pass everything below.
    source = ROOT / "mailer" / "app.py"
    names = set(imported_modules(source))
    assert "mailer.api.auth" in names  # from mailer.api import auth
    assert "mailer.api.docs" in names  # the same form, inside a function
    assert "mailer.keys" in names  # from mailer import keys


def test_nothing_below_the_api_imports_it() -> None:
    assert offenders("mailer.api", "mailer.api", frozenset({COMPOSITION_ROOT})) == []


@pytest.mark.parametrize(("face", "other"), [("mailer.admin", "mailer.api"), ("mailer.api", "mailer.admin")])
def test_the_two_faces_do_not_import_each_other(face: str, other: str) -> None:
    found = sorted(
        f"{module} imports {name}"
        for module, names in all_imports().items()
        if within(module, face)
        for name in names
        if within(name, other)
    )
    assert found == []


def test_the_service_does_not_depend_on_the_sandbox() -> None:
    # Only the app factory (the embedded default) and the command line start it, and both import it lazily.
    assert offenders("sandbox", "sandbox", frozenset({COMPOSITION_ROOT, "mailer.cli"})) == []


@pytest.mark.parametrize(
    ("layer", "allowed"),
    [
        # Pure code: time windows, filters, retry policy, breaker; nothing of the service around it.
        ("mailer.domain", ("mailer.domain",)),
        # The models both faces validate with: the domain's rules, and the version for the index page.
        ("mailer.schemas", ("mailer.domain", "mailer.schemas", "mailer.__version__")),
    ],
)
def test_the_lower_layers_import_only_what_is_below_them(layer: str, allowed: tuple[str, ...]) -> None:
    found = sorted(
        f"{module} imports {name}"
        for module, names in all_imports().items()
        if within(module, layer)
        for name in names
        if within(name, "mailer") and name != "mailer" and not any(within(name, ok) for ok in allowed)
    )
    assert found == []
