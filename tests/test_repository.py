"""House rules: CI runs exactly the README's commands; requirements are exact pins; a run leaves only its failed
tests' files; the code is formatted and lint clean as pyproject.toml configures ruff."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_command(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", text)
    assert match, f"README.md has no command after <!-- {marker} -->"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command_in_a_fresh_environment():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    setup, test = _readme_command("setup-command"), _readme_command("test-command")
    assert "rm -rf .venv" in ci
    assert ci.index("rm -rf .venv") < ci.index(setup) < ci.index(test)


def test_requirements_are_exact_pins():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and line != "-e .":
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][A-Za-z0-9.+]*", line), line


def test_a_passed_tests_files_are_removed_when_it_ends(request):
    """The suite's checkpoints and exports would fill a CI disk (about 9 GB in one run) if pytest kept them all; a
    failed test's files stay, for a look."""
    assert request.config.getini("tmp_path_retention_policy") == "failed"


def test_the_code_is_formatted_and_lint_clean():
    # --no-cache: ruff would otherwise leave .ruff_cache in the checkout, which the suite forbids (conftest)
    for args in (["format", "--check", "--quiet", "--no-cache", "."], ["check", "--quiet", "--no-cache", "."]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"ruff {' '.join(args)}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"


def test_the_packages_import_one_another_without_a_cycle():
    """monai_ext's packages form floors (docs/architecture.md): a package imports only those below it."""
    package = ROOT / "monai_ext"
    imports = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).parts
        name = parts[0] if len(parts) > 1 else parts[0][:-3]
        found = set(re.findall(r"^\s*(?:from|import) monai_ext\.([a-z_]+)", path.read_text(), flags=re.M))
        imports.setdefault(name, set()).update(found - {name})
    done, visiting = set(), []

    def visit(name):
        assert name not in visiting, f"import cycle: {' -> '.join(visiting[visiting.index(name) :] + [name])}"
        if name in done:
            return
        visiting.append(name)
        for other in sorted(imports.get(name, ())):
            visit(other)
        visiting.pop()
        done.add(name)

    for name in sorted(imports):
        visit(name)
    assert {"errors", "atomic", "threads"} <= done and not imports["errors"] and not imports["atomic"]


LAZY_CHECK = """
import sys
import monai_ext
from monai_ext.networks.nets import ResUNet
loaded = {m for m in sys.modules if m.startswith("monai_ext.")}
assert "monai_ext.networks.nets.resunet" in loaded, loaded
assert not {"monai_ext.networks.nets.medsegdiff", "monai_ext.networks.nets.madgnet"} & loaded, loaded
assert not [m for m in loaded if m.startswith(("monai_ext.inferers", "monai_ext.data"))], loaded
assert monai_ext.data.plan.stride_product([[2, 1]], 2) == [2, 1]  # a submodule, by attribute as configs reach it
from monai_ext.inferers import *
assert {"CompiledNetwork", "StreamingSlidingWindowInferer", "export_program"} <= set(dir())
"""


def test_a_packages_names_load_only_their_own_module():
    """``from monai_ext.networks.nets import ResUNet`` loads ResUNet's module, not its siblings: a bundle loads the
    code it uses, and an export vendors only that (each package's ``__init__`` is a PEP 562 ``__getattr__``)."""
    proc = subprocess.run([sys.executable, "-c", LAZY_CHECK], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
