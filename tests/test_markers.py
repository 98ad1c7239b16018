"""Every test that skips without CUDA carries the ``cuda`` marker, so that ``pytest -m cuda`` (the
GPU run of benchmarks/gpu_check.py) selects all of them."""
import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_cuda_mark(node: ast.AST) -> bool:
    """``pytest.mark.cuda`` (bare or called)."""
    node = node.func if isinstance(node, ast.Call) else node
    return isinstance(node, ast.Attribute) and node.attr == "cuda" and isinstance(node.value, ast.Attribute) and node.value.attr == "mark"


def _skips_without_cuda(node: ast.AST) -> bool:
    """``pytest.mark.skipif(<condition naming cuda.is_available>, ...)``."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "skipif"
            and bool(node.args) and "cuda.is_available" in ast.unparse(node.args[0]))


def test_cuda_skips_are_marked_cuda():
    unmarked = []
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_marked = any(
            isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets)
            and any(_is_cuda_mark(n) for n in ast.walk(stmt.value))
            for stmt in tree.body
        )
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(_skips_without_cuda(d) for d in fn.decorator_list):
                if not (module_marked or any(_is_cuda_mark(d) for d in fn.decorator_list)):
                    unmarked.append(f"{path.relative_to(TESTS)}::{fn.name}")
    assert not unmarked, f"add @pytest.mark.cuda to: {', '.join(unmarked)}"
