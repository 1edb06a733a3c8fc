"""The core stays small and framework-free (issue 14): its size, its largest file, no import
cycle among its modules (imports inside functions count; ``if TYPE_CHECKING:`` ones do not),
no deep-learning framework imported anywhere in it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORE = ROOT / "core" / "cifarfw"
FRAMEWORKS = {"torch", "torchvision", "tensorflow", "keras", "jax", "timm"}
MAX_FILE_LINES = 400
MAX_CORE_LINES = 3500


def modules() -> dict[str, Path]:
    """cifarfw.<dotted name> -> its file."""
    found = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(CORE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str, path: Path) -> set[str]:
    """Every module this one imports, at any depth, outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # `from cifarfw import runs`
    return out


def test_core_is_small():
    sizes = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in modules().values()}
    too_long = {str(p.relative_to(ROOT)): n for p, n in sizes.items() if n > MAX_FILE_LINES}
    assert not too_long, f"core files over {MAX_FILE_LINES} lines: {too_long}"
    assert sum(sizes.values()) <= MAX_CORE_LINES, f"core/cifarfw holds {sum(sizes.values())} lines"


def test_no_framework_import_in_the_core():
    offenders = {
        name: sorted(i for i in imports_of(name, path) if i.split(".")[0] in FRAMEWORKS)
        for name, path in modules().items()
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_no_import_cycle_in_the_core():
    mods = modules()
    graph = {name: {i for i in imports_of(name, path) if i in mods and i != name} for name, path in mods.items()}
    # A package's __init__ is not an edge to its children: `import cifarfw.x` runs cifarfw first.
    graph = {name: {i for i in deps if not name.startswith(i + ".")} for name, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))
