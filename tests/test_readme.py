"""The README's code is exercised: its Python snippets run, the TRL snippet is the one its test runs, and the test
command it gives is the one CI runs."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_the_snippets():
    assert len(PYTHON_BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_snippet_runs(index):
    code = PYTHON_BLOCKS[index]
    if "integrations.trl" in code:
        # Runs in tests/test_integrations_trl.py with a tiny model (needs TRL); here: it is that test's snippet.
        path = os.path.join(ROOT, "tests", "test_integrations_trl.py")
        source = open(path, encoding="utf-8").read()
        snippet = re.search(r'README_TRL_SNIPPET = """\n(.*?)"""', source, flags=re.S).group(1)
        assert snippet.strip() == code.strip()
        return
    exec(compile(code, f"README.md python block {index}", "exec"), {})


def test_readme_test_command_is_the_one_ci_runs():
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert re.search(r"&& python -m pytest\s", README)
    assert re.search(r"^python -m pytest$", ci, flags=re.M)
    assert "pip install torch==2.13.0" in README and "python train.py" in README
