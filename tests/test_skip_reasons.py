"""Every test skipped for a missing package says how to install it, as the README promises: the extra and its pin
from pyproject.toml (`pip install -e ".[trl]" (trl==1.16.0)`), or the pinned command for what no extra holds."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where the repository pins what no extra of pyproject.toml holds (the SmolLM2 GGUF, verl's own environment).
PIN_SOURCES = ("pyproject.toml", ".ci/run", ".ci/verl", "integrations/requirements-verl.txt")


def _extras() -> dict[str, tuple[str, str]]:
    """Import name -> (extra, "dist==version") for every pinned requirement of pyproject.toml's extras."""
    tomllib = pytest.importorskip("tomllib",
                                  reason="needs Python >= 3.11 (tomllib is in its standard library)")
    with open(ROOT / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    pins = {}
    for extra, requirements in extras.items():
        for requirement in requirements:
            if "==" in requirement:
                pins[requirement.split("==")[0].replace("-", "_")] = (extra, requirement)
    return pins


def _skips() -> list[tuple[str, int, str, str | None, str | None]]:
    """(file, line, kind, module, reason) for every pytest.importorskip / pytest.skip / pytest.mark.skip(if) call
    in tests/; reason None where it is not a string literal."""
    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("importorskip", "skip", "skipif")):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            arg = keywords.get("reason")
            if arg is None and node.func.attr == "skip" and node.args:
                arg = node.args[0]
            reason = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
            module = node.args[0].value if node.func.attr == "importorskip" and node.args else None
            found.append((path.name, node.lineno, node.func.attr, module, reason))
    return found


def test_every_skip_for_a_package_names_its_pinned_install_line():
    extras = _extras()
    pinned = "\n".join((ROOT / f).read_text(encoding="utf-8") for f in PIN_SOURCES if (ROOT / f).exists())
    checked = 0
    for file, line, kind, module, reason in _skips():
        where = f"tests/{file}:{line}"
        if kind == "importorskip":
            assert reason is not None, f"{where}: importorskip({module!r}) without reason= prints no install line"
            top = module.split(".")[0]
            if top in sys.stdlib_module_names:
                assert "Python >=" in reason, f"{where}: a standard-library module's skip names the Python version"
                continue
            assert "pip install" in reason, f"{where}: {reason!r} names no install line"
            if top in extras:
                extra, pin = extras[top]
                assert f'pip install -e ".[{extra}]" ({pin})' in reason, \
                    f"{where}: {reason!r} should name pip install -e \".[{extra}]\" ({pin}), as pyproject.toml pins it"
        if reason is None or "pip install" not in reason:
            continue
        checked += 1
        for pin in re.findall(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", reason):
            assert pin in pinned, f"{where}: {pin} is not the version the repository pins ({', '.join(PIN_SOURCES)})"
        unpinned = re.findall(r"pip install (?:--no-deps )?([A-Za-z][A-Za-z0-9_.-]*)(?!\S*==)", reason)
        assert not unpinned, f"{where}: {reason!r} installs {unpinned} without a pin"
    assert checked >= 10, f"only {checked} skip reasons with an install line found: is the scan still finding them?"


def test_a_missing_trl_skips_with_its_install_line(tmp_path):
    """What a user without TRL sees: pytest's skip line with the extra and the pin."""
    hidden = tmp_path / "trl"
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'trl'\", name='trl')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "tests/test_integrations_trl.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert "1 skipped" in proc.stdout and "error" not in proc.stdout.lower(), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(r"SKIPPED \[1\] tests/test_integrations_trl\.py:\d+: needs trl: "
                     r"pip install -e \"\.\[trl\]\" \(trl==1\.16\.0\)", proc.stdout), proc.stdout[-2000:]
