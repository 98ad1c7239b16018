"""The tests mirror the modules (issue 20): ``physgen/X/Y.py`` is tested in ``tests/X/test_Y*.py``,
``physgen/Y.py`` in ``tests/test_Y*.py``, ``solvers/Y.py`` in ``tests/solvers/test_Y*.py``, a package's
``__init__.py`` in ``tests/X/test_X*.py`` (a leading underscore dropped: ``_loop.py`` -> ``test_loop*.py``).
Cross-cutting end-to-end tests live in ``tests/end_to_end``, the shared helper modules in ``tests/helpers``.

A module counts when it defines a function or a class (a package ``__init__`` that only re-exports does
not).  The modules below are tested, but not yet in a file of their own: each names the file that tests it
now, which must exist and name the module (its dotted path, one of its public names, or for a command its
command line).  An entry that gets its own file, or whose module goes, fails here: the list only shrinks.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

NOT_YET_MIRRORED = {  # module: the test file that tests it today (a split for later, once nobody edits it)
    "physgen/editing/replacement.py": "tests/editing/test_editing_targets.py",
    "physgen/editing/sdedit.py": "tests/editing/test_editing_methods.py",
    "physgen/editing/steps.py": "tests/editing/test_editing_methods.py",
    "physgen/guidance/fit.py": "tests/guidance/test_guidance.py",  # through train-classifier
    "physgen/ncsnv2_plan.py": "tests/processes/test_ncsn.py",
    "physgen/nets/blocks.py": "tests/nets/test_unet_ncsnpp.py",
    # commands: tested through their command line, where the feature they drive is tested
    "physgen/cli/main.py": "tests/cli/test_fuzz.py",  # the dispatcher: every CLI test runs it
    "physgen/cli/compare_solvers.py": "tests/compare/test_run.py",
    "physgen/cli/eval.py": "tests/end_to_end/test_images_cli.py",
    "physgen/cli/experiment.py": "tests/experiments/test_guidance.py",
    "physgen/cli/genphys.py": "tests/genphys/test_framework.py",
    "physgen/cli/nll.py": "tests/test_likelihood.py",
    "physgen/cli/sample.py": "tests/end_to_end/test_images_cli.py",
    "physgen/cli/train.py": "tests/end_to_end/test_images_cli.py",
    "physgen/cli/train_classifier.py": "tests/guidance/test_guidance.py",
    "physgen/toy.py": "tests/cli/test_toy.py",
    # experiments: run end to end by the test of what they study
    "physgen/experiments/d_sweep.py": "tests/test_robustness.py",
    "physgen/experiments/langevin_mixture.py": "tests/end_to_end/test_ncsn_training.py",
    "physgen/experiments/telegrapher.py": "tests/processes/test_telegrapher.py",
    "physgen/experiments/yukawa.py": "tests/cli/test_toy_yukawa.py",
    # tested together with the module they serve
    "physgen/errors.py": "tests/test_config.py",  # and every other one-line-error test
    "physgen/compare/problems.py": "tests/compare/test_run.py",
    "physgen/fields/analytic.py": "tests/fields/test_exact.py",  # against the exact field's infinite-sample limit
    "physgen/fields/neural.py": "tests/pretrained/test_edm.py",
    "physgen/genphys/catalogue.py": "tests/genphys/test_framework.py",
    "physgen/guidance/bayes.py": "tests/guidance/test_guidance.py",
    "physgen/guidance/classifier.py": "tests/guidance/test_guidance.py",
    "physgen/guidance/wrappers.py": "tests/guidance/test_guidance.py",
    "physgen/images/evaluate.py": "tests/end_to_end/test_images_cli.py",
    "physgen/images/generate.py": "tests/end_to_end/test_images_cli.py",
    "physgen/images/quality.py": "tests/end_to_end/test_train_scripts.py",  # through benchmarks/gpu_digits.py
    "physgen/kernels/special.py": "tests/kernels/test_nig.py",  # the Bessel functions of the NIG kernel
    "physgen/nets/adm.py": "tests/nets/test_unet_ncsnpp.py",
    "physgen/nets/classifier.py": "tests/guidance/test_guidance.py",
    "physgen/nets/inception.py": "tests/images/test_metrics.py",
    "physgen/pretrained/load.py": "tests/pretrained/test_edm.py",
    "physgen/pretrained/precond.py": "tests/pretrained/test_edm.py",
    "physgen/processes/__init__.py": "tests/test_sampling_table.py",  # the registry: every process by name
    "physgen/processes/base.py": "tests/processes/test_gaussian.py",  # the interface, through every process
    "physgen/processes/ncsnv2.py": "tests/processes/test_ncsn.py",
    "solvers/base.py": "tests/solvers/test_solvers.py",
    "solvers/dpm_adaptive.py": "tests/solvers/test_dpm.py",
    "solvers/expint.py": "tests/solvers/test_dpm.py",
    "solvers/optimal.py": "tests/test_optimal_schedule.py",
    "solvers/unipc.py": "tests/solvers/test_dpm.py",
}

# names too common to show that a test file is about a module
_GENERIC = {"run", "register", "add_arguments", "main"}
# modules a test reaches by another route: what its file names instead (a regular expression)
_ROUTE = {
    "physgen/toy.py": r'main\(\[\s*"toy"',
    "physgen/images/evaluate.py": r'main\(\[\s*"eval"',
    "physgen/images/quality.py": r"gpu_digits",
    "physgen/fields/analytic.py": r"\.analytic_field\(",
    "physgen/nets/classifier.py": r"make_classifier\(proc, \(1, 8, 8\)",  # the image classifier: a ConvClassifierNet
    "physgen/pretrained/precond.py": r"preconditioning",
    "physgen/guidance/fit.py": r'"train-classifier"',  # through the command that fits it
    "physgen/processes/base.py": r"\.perturb\(",
}


def _modules() -> list[Path]:
    return sorted([*ROOT.glob("physgen/**/*.py"), *ROOT.glob("solvers/*.py")])


def _defines_code(path: Path) -> bool:
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in ast.parse(path.read_text()).body)


def _mirror(path: Path) -> tuple[Path, str]:
    """The mirrored folder and the stem a test file of ``path`` starts with."""
    rel = path.relative_to(ROOT)
    inner = rel.parts[1:-1] if rel.parts[0] == "physgen" else rel.parts[:-1]
    stem = path.parent.name if path.stem == "__init__" else path.stem
    return TESTS.joinpath(*inner), stem.lstrip("_")


def _own_tests(path: Path) -> list[Path]:
    folder, stem = _mirror(path)
    longer = {p.stem for p in path.parent.glob(f"{stem}_*.py")}  # sibling modules named with this prefix own their tests
    return sorted(t for t in folder.glob(f"test_{stem}*.py") if not any(t.stem.startswith(f"test_{o}") for o in longer))


def _named_in(module: Path, test_file: Path) -> bool:
    text = test_file.read_text()
    rel = module.relative_to(ROOT).with_suffix("")
    if rel.parts[0] == "physgen" and rel.parts[1] == "cli":
        command = rel.name.replace("_", "-")
        return re.search(rf'\[\s*"{command}"|"physgen\.cli\.main", "{command}"|\b{command}\.py\b', text) is not None or rel.name == "main"
    dotted = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    names = [n.name for n in ast.parse(module.read_text()).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    names = [n for n in names if not n.startswith("_") and n not in _GENERIC]
    route = _ROUTE.get(str(module.relative_to(ROOT)))
    if rel.parts[:2] == ("physgen", "experiments"):
        route = rf'"experiment",\s*"{rel.name.replace("_", "-")}"'

    return any(re.search(rf"\b{re.escape(w)}\b", text) for w in [dotted, *names]) or bool(route and re.search(route, text))


def test_every_module_has_a_test_file_in_its_mirrored_folder():
    missing = [str(p.relative_to(ROOT)) for p in _modules()
               if _defines_code(p) and not _own_tests(p) and str(p.relative_to(ROOT)) not in NOT_YET_MIRRORED]
    assert not missing, "add a test file in the mirrored folder (tests/X/test_Y.py) for: " + ", ".join(missing)


def test_the_not_yet_mirrored_list_is_true():
    modules = {str(p.relative_to(ROOT)): p for p in _modules()}
    for name, test_file in NOT_YET_MIRRORED.items():
        assert name in modules, f"{name} is gone: drop it from NOT_YET_MIRRORED"
        own = _own_tests(modules[name])
        assert not own, f"{name} now has {own[0].relative_to(ROOT)}: drop it from NOT_YET_MIRRORED"
        assert (ROOT / test_file).is_file(), f"{name}: {test_file} does not exist"
        assert _named_in(modules[name], ROOT / test_file), f"{test_file} does not name {name}"


def test_every_test_folder_is_a_package_and_helpers_stay_out_of_collection():
    """Test folders are packages (two folders may then hold test files of one name under pytest's default
    import mode); tests/helpers holds no test file and is no package (its modules import by bare name)."""
    folders = {p.parent for p in TESTS.rglob("test_*.py")}
    assert not [str(f) for f in folders if not (f / "__init__.py").is_file()]
    helpers = TESTS / "helpers"
    assert not list(helpers.glob("test_*.py")) and not (helpers / "__init__.py").exists()
