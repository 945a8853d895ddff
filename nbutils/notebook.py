"""What a notebook's first cells call: its parameters, checked before any work.

A notebook declares its parameters with type annotations in the cell tagged `parameters`
(`width: Optional[int] = None  # help`), which is also what `papermill --help-notebook` lists.
Papermill injects overrides as plain assignments in a cell headed `# Parameters`; a name the
notebook does not declare (a misspelt `-p eopchs 5`) would otherwise be ignored in silence.
"""

from __future__ import annotations

import ast
from typing import Any

INJECTED_HEADER = "# Parameters"


def _assigned(source: str, annotated: bool) -> list[str]:
    """Names a cell assigns at top level: with annotations, or plainly."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    if annotated:
        return [n.target.id for n in tree.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    return [t.id for n in tree.body if isinstance(n, ast.Assign)
            for t in n.targets if isinstance(t, ast.Name)]


def declared_and_injected(history: list[str]) -> tuple[list[str], list[str]]:
    """(declared, injected) parameter names from the sources of the cells executed so far."""
    declared: list[str] = []
    injected: list[str] = []
    for source in history:
        declared += [n for n in _assigned(source, annotated=True) if n not in declared]
        if source.lstrip().startswith(INJECTED_HEADER):
            injected += _assigned(source, annotated=False)
    return declared, injected


def parameters(namespace: dict[str, Any]) -> dict[str, Any]:
    """The declared parameters and their values; refuses injected names not declared."""
    declared, injected = declared_and_injected(list(namespace.get("In", [])))
    if not declared:
        raise ValueError("parameters: no annotated parameters were executed; run the "
                         "notebook's `parameters` cell first")
    unknown = sorted(set(injected) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; this notebook declares: "
                         f"{', '.join(declared)}")
    return {name: namespace[name] for name in declared}
