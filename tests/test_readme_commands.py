"""The README's shell commands, run from a clean clone of the repository, leave `git status` clean
(issue 23, classes 4 and 12): no committed file rewritten, nothing written that is not ignored.

Every `popgrad ...` line of the README's bash blocks is either run here (its synopsis made concrete: the
placeholders filled in, the optional brackets left out, paper-scale runs replaced by their `--quick` or tiny
versions) or skipped with a reason; a new command in the README fails the coverage test until it is
classified. The commands run in this process (`popgrad.cli.main.main`), with the clone as the working
directory, so they reuse the kernels numba has compiled for this checkout.
"""

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from popgrad.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: a tiny version of the README's sweep specification (same keys; d and horizon small)
TINY_SWEEP = """[problem]
generator = "orthonormal"
activation = "relu"
k = 8
xi = 1.0
[run]
kind = "hitting_time"
method = "chain"
eps = 0.5
delta = 0.05
horizon = 40
trajectories = 8
seed = 1
[grid]
d = [50, 100]
"""

#: the README's command (its first words) -> the concrete command lines run, in order ({spec}: the tiny
#: sweep specification above, written outside the clone: an input, not an output)
RUN = {
    ("run",): [["run"]],
    ("hermite",): [["hermite", "gelu", "--order", "4", "--digits", "25"]],
    ("h",): [["h", "--activation", "tanh", "--k", "4", "--xi", "2", "--m=-1:1:5"]],
    ("problem",): [["problem", "--activation", "relu", "--features", "random", "--d", "50", "--k", "4", "--seed", "1", "--out", "problem.json"]],
    ("simulate",): [["simulate", "--problem", "problem.json", "--delta", "0.05", "--steps", "20000", "--trajectories", "256", "--method", "chain", "--hit", "0.5"]],
    ("compare",): [["compare", "--problem", "problem.json", "--delta", "0.05", "--steps", "20000", "--trajectories", "256", "--method", "chain", "--out", "report/"]],
    ("derive",): [["derive"]],  # regenerates derivations/ in the clone: they must come out byte-identical
    ("mf", "run"): [["mf", "run", "--init", "spectral", "--alpha", "1e-3", "--repeats", "4", "--steps", "1000"]],
    ("ntk", "build"): [["ntk", "build", "--out", "PROBLEM.json"]],
    ("ntk", "landscape"): [["ntk", "landscape", "PROBLEM.json", "--rank", "4", "--starts", "20", "--seed", "0"]],
    ("ntk", "threshold"): [["ntk", "threshold", "--ranks", "1,2", "--instances", "2", "--starts", "5"]],
    ("ntk", "example"): [["ntk", "example"]],
    ("sweep",): [["sweep", "{spec}", "--out", "store/", "--workers", "0"]],
    ("sweep-report",): [["sweep-report", "store/"]],
    ("reproduce", "NAME|all"): [["reproduce", "xu-theory", "--quick", "--workers", "0"]],
    ("digits", "pretrain"): [["digits", "pretrain", "--hidden", "16", "--steps", "100", "--network-out", "base.json"]],
    ("digits", "finetune"): [["digits", "finetune", "--network", "base.json", "--layers", "W1,W2", "--rank", "4", "--alpha", "1e-4", "--steps", "20"], ["digits", "finetune", "--network", "base.json", "--full", "--steps", "20"]],
}
#: README commands not run here, and why
SKIP = {
    ("reproduce", "xu-fig1"): "a full reproduction (minutes); reproduce --quick runs above",
    ("reproduce", "xu-h1"): "a full reproduction (minutes)",
    ("reproduce", "xu-theory"): "its --quick version runs above",
    ("reproduce", "jlr"): "a full reproduction (minutes)",
}
#: commands whose first two words name them (a subcommand or a reproduction)
TWO_WORDS = ("mf", "ntk", "reproduce", "digits")


def _readme_commands() -> set:
    """The first words of every `popgrad ...` command in the README's bash blocks."""
    commands = set()
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.splitlines():
            for match in re.finditer(r"(?:^|&&|;)\s*popgrad\s+(\S+)(?:\s+(\S+))?", line.split("#")[0]):
                first, second = match.groups()
                commands.add((first, second) if first in TWO_WORDS else (first,))
    return commands


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    commands = _readme_commands()
    assert len(commands) >= 15, commands
    unclassified = commands - set(RUN) - set(SKIP)
    assert not unclassified, f"README commands neither run by this test nor skipped with a reason: {sorted(unclassified)}"
    assert not (set(RUN) | set(SKIP)) - commands, "commands listed here that the README no longer has"


@pytest.mark.slow
def test_readme_commands_leave_a_clean_checkout_clean(tmp_path, monkeypatch, capsys):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)

    def status() -> str:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone, check=True, capture_output=True, text=True).stdout

    assert status() == ""
    spec = tmp_path / "sweep.toml"
    spec.write_text(TINY_SWEEP)
    monkeypatch.setenv("POPGRAD_CACHE", str(tmp_path / "cache"))  # the digits' base model is cached there
    monkeypatch.chdir(clone)
    for key in RUN:
        for argv in RUN[key]:
            argv = [str(spec) if word == "{spec}" else word for word in argv]
            started = time.perf_counter()
            code = main(argv)
            captured = capsys.readouterr()
            print(f"popgrad {' '.join(argv)}: {time.perf_counter() - started:.1f} s", file=sys.__stderr__)
            assert code == 0, f"popgrad {' '.join(argv)} exited {code}: {captured.err.strip()}"
    written = [path for path in ("popgrad-report", "problem.json", "report", "PROBLEM.json", "store", "popgrad-reproductions", "base.json") if (clone / path).exists()]
    assert len(written) == 7, written  # the commands did write their outputs
    assert status() == "", f"the README's commands changed the checkout:\n{status()}"
