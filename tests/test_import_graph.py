"""No import cycles between lightning_des modules, counting imports inside functions too, and
the data layer imports no models."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "lightning_des"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                # parent packages and their own submodules import each other by Python's design
                if n in mods and n != m and not m.startswith(n + ".") and not n.startswith(m + "."):
                    edges[m].add(n)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_data_layer_imports_no_models():
    edges = graph()
    bad = {m: sorted(n for n in e if n.startswith("lightning_des.models")) for m, e in edges.items() if m.startswith("lightning_des.data")}
    assert not {m: v for m, v in bad.items() if v}
