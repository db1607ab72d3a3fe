"""The README and the manuals say what the code does: their Python snippets run, the Hugging Face loop example does
what its comments say, the commands use flags and extras that exist, the links lead to files, and the test command
is the one CI runs."""
import os
import re
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "docs/train.md", "docs/real-models.md", "docs/benchmarks.md", "docs/verify.md",
        "docs/own-loop.md", "results/README.md"]


def read(path):
    return open(os.path.join(ROOT, path), encoding="utf-8").read()


def blocks(path, lang):
    return re.findall(rf"```{lang}\n(.*?)```", read(path), flags=re.S)


README = read("README.md")
SNIPPETS = [(path, i, code) for path in DOCS for i, code in enumerate(blocks(path, "python"))]


def test_readme_is_short_and_has_one_snippet_per_component():
    assert len(README) <= 15_000, f"README.md is {len(README)} characters; the manuals in docs/ take the rest"
    readme_blocks = blocks("README.md", "python")
    assert len(readme_blocks) == 2
    assert "import passk_at_k" in readme_blocks[0] and "import simko" in readme_blocks[1]


def test_every_manual_is_linked_from_the_readme():
    for path in DOCS[1:]:
        assert f"]({path})" in README, f"README.md does not link {path}"


@pytest.mark.parametrize("path, index, code", SNIPPETS, ids=[f"{p}#{i}" for p, i, _ in SNIPPETS])
def test_python_snippet_runs(path, index, code):
    exec(compile(code, f"{path} python block {index}", "exec"), {})


def test_relative_links_lead_to_files():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", read(path)):
            if re.match(r"[a-z]+://", target):
                continue
            file = target.split("#")[0]
            if not file:
                continue
            full = os.path.normpath(os.path.join(ROOT, os.path.dirname(path), file))
            assert os.path.exists(full), f"{path} links {target}, which does not exist"


def _pyproject_extras():
    tomllib = pytest.importorskip("tomllib",
                                  reason="needs Python >= 3.11 (tomllib is in its standard library)")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


def test_install_lines_name_extras_that_exist():
    extras = _pyproject_extras()
    named = set()
    for path in DOCS:
        for group in re.findall(r'pip install -e "?\.\[([a-z,]+)\]', read(path)):
            named |= set(group.split(","))
    assert named >= {"test", "real", "trl"}
    assert named <= extras, f"the docs name extras that pyproject.toml lacks: {named - extras}"


def _train_commands(text):
    """Each `python train.py ...` command of the text's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "python train.py" in line:
                commands.append(line.split("python train.py", 1)[1].split("#")[0])
    return commands


def test_train_commands_use_flags_train_py_has():
    help_text = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                               check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    known = set(re.findall(r"--[a-z][a-z0-9-]*", help_text))
    used = set()
    for path in DOCS:
        text = read(path)
        for command in _train_commands(text):
            used |= set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", command))
        if path in ("docs/train.md", "docs/real-models.md"):     # prose about train.py names its flags too
            used |= set(re.findall(r"`(--[a-z][a-z0-9-]*)", text)) - {"--no-deps", "--index-url"}
    assert len(used) > 20
    assert used <= known, f"flags the docs use that `python train.py --help` does not list: {sorted(used - known)}"


def test_readme_commands_are_the_ones_ci_runs():
    ci = read(".ci/run")
    assert re.search(r"^python -m pytest$", ci, flags=re.M)
    assert re.search(r"^python -m pytest\s", README, flags=re.M)
    assert 'pip install torch==2.13.0 && pip install -e ".[test]" && python train.py' in README
    assert "make_venv .venv-real \".[real,test]\"" in ci       # the real extra alone must run the real-model test


def _hf_block():
    (block,) = [code for path, _, code in SNIPPETS if "model.generate(" in code and "padding_side" not in code]
    return block


def test_hf_loop_example_means_what_it_says():
    """The one-position shift, the mask with its EOS, the row order and old_logp, checked on the example's own
    variables against a token-by-token recomputation."""
    torch.manual_seed(3)
    ns = {}
    exec(compile(_hf_block(), "docs/own-loop.md HF example", "exec"), ns)
    model, seq, response, mask, L = ns["model"], ns["seq"], ns["response"], ns["mask"], ns["L"]
    P, N, eos = ns["P"], ns["N"], model.config.eos_token_id
    T = response.shape[1]
    for row in range(P * N):
        hits = (response[row] == eos).nonzero().flatten().tolist()
        length = hits[0] + 1 if hits else T                         # up to and including the first EOS
        assert mask[row].tolist() == [True] * length + [False] * (T - length)
        assert (seq[row, :L] == seq[(row // N) * N, :L]).all()      # rows p*N .. p*N + N-1 share prompt p
    with torch.no_grad():                                           # logp of token t from a forward of seq[:, :L+t]
        for t in (0, 1, T - 1):
            lp = model(seq[:, :L + t]).logits[:, -1].log_softmax(-1).gather(1, response[:, t:t + 1]).squeeze(1)
            torch.testing.assert_close(ns["stats"].logp[:, t].detach(), lp, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ns["old_logp"][:, t], lp, rtol=1e-5, atol=1e-5)
    assert not ns["old_logp"].requires_grad
    rewards, adv = ns["rewards"], ns["advantages"]
    assert rewards.shape == (P, N) and torch.equal(rewards.flatten(), (response[:, 0] % 2 == 0).float())
    assert adv.shape == (P * N,) and adv.abs().sum() > 0
    assert 0 < int((~mask).sum()), "this seed samples an EOS before the end, so the mask check has teeth"
    assert ns["metrics"]["ratio_mean"] == pytest.approx(1.0, abs=1e-5)   # old_logp is the same policy's


def test_gpu_check_runs_the_documented_real_model_recipe():
    """benchmarks/gpu_check.py's stage d runs the recipe of docs/real-models.md, so its GPU numbers are that recipe's."""
    import shlex
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    (documented,) = [c for c in _train_commands(read("docs/real-models.md")) if "--sft-steps 40" in c]
    pairs = lambda args: {(a, b) for a, b in zip(args, args[1:] + [""]) if a.startswith("--")}
    doc = {p for p in pairs(shlex.split(documented.replace('"$GGUF"', "{gguf}"))) if p[0] not in ("--threads", "--out")}
    assert doc == pairs(shlex.split(gpu_check.REAL_MODEL_RECIPE))


def test_train_md_flag_table_is_the_help():
    """docs/train.md's flag table lists every flag of train.py with the help text that `--help` prints."""
    import train
    table = re.search(r"## Flags\n.*?\n\| flag \| what it sets \(default\) \|\n\|---\|---\|\n(.*?)\n\n",
                      read("docs/train.md"), flags=re.S).group(1)
    rows = {}
    for line in table.splitlines():
        flags, text = re.fullmatch(r"\| `(--[a-z-]+)`(?: / `--no-[a-z-]+`)? \| (.*) \|", line).groups()
        rows[flags] = text.replace("\\|", "|")
    parser = train.build_parser()
    helps = {a.option_strings[0]: a.help.replace("%%", "%") for a in parser._actions if a.dest != "help"}
    assert rows == helps
