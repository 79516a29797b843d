"""Output files are whole or absent, and output paths are refused before any work starts."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from popgrad._io import INCOMPLETE, LEDGER, atomic_path, check_output_file, check_output_folder, write_json, write_text
from popgrad._validation import InvalidArgument


def test_a_failing_writer_leaves_the_previous_file(tmp_path):
    target = write_text(tmp_path / "result.json", "previous")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir() if p.name != LEDGER] == ["result.json"]  # the ledger lists what popgrad wrote


def test_a_writer_killed_mid_file_leaves_the_previous_file(tmp_path):
    target = write_text(tmp_path / "result.txt", "previous")
    script = (
        "import sys, time\n"
        "from popgrad._io import atomic_path\n"
        f"with atomic_path({str(target)!r}) as temporary:\n"
        "    with open(temporary, 'w') as handle:\n"
        "        handle.write('x' * 100000)\n"
        "        handle.flush()\n"
        "        print('writing', flush=True)\n"
        "        time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    assert target.read_text() == "previous"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("result.txt", LEDGER)]
    assert all(name.startswith(".result.txt.") and name.endswith(".partial") for name in leftovers)


def test_strict_json_has_no_nan_tokens(tmp_path):
    path = write_json(tmp_path / "a.json", {"mean": float("nan"), "values": [1.0, float("inf")]})
    assert path.read_text().split() == ["{", '"mean":', "null,", '"values":', "[", "1.0,", "null", "]", "}"]


def test_output_paths_are_checked(tmp_path):
    with pytest.raises(InvalidArgument, match="does not exist"):
        check_output_file(tmp_path / "missing" / "a.json")
    with pytest.raises(InvalidArgument, match="is a folder"):
        check_output_file(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidArgument, match="is a file"):
        check_output_folder(tmp_path / "file")
    assert check_output_folder(tmp_path / "new") == tmp_path / "new"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_folders_are_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(InvalidArgument, match="not writable"):
        check_output_file(locked / "a.json")


def test_an_interrupted_report_is_marked_incomplete(tmp_path, monkeypatch):
    from popgrad.analysis.comparison import Comparison, compare
    from popgrad.models.finetuning.spec import orthonormal_problem

    result = compare(orthonormal_problem("relu", 3, 1.0, seed=0), 60, 0.1 / 60, [0, 100], trajectories=4, noise_samples=640, seed=1)

    def broken_plot(self, observables=None):  # Comparison.plot's signature
        raise KeyboardInterrupt

    monkeypatch.setattr(Comparison, "plot", broken_plot)
    with pytest.raises(KeyboardInterrupt):
        result.save(tmp_path / "report")
    names = {p.name for p in (tmp_path / "report").iterdir()} - {LEDGER}
    assert names == {INCOMPLETE, "comparison.nc", "comparison.json"}


@pytest.mark.parametrize(
    "args",
    [
        ["problem", "--out", "/nonexistent-folder/p.json"],
        ["compare", "--out", __file__],
        ["run", "--out", "/nonexistent-folder/report"],
        ["simulate", "--out", "/tmp"],
        ["h", "--plot", "/nonexistent-folder/h.png"],
    ],
)
def test_the_cli_refuses_bad_output_paths_before_computing(args):
    begin = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "popgrad", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "--" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert time.perf_counter() - begin < 30  # refused up front, not after a simulation


@pytest.mark.parametrize(
    "call",
    [
        "noise_estimate(problem, 100, samples=10**10, seed=1)",
        "simulate(problem, 100, 1e-4, [0, 10**11], trajectories=4, method='chain', seed=1)",
        "simulate(problem, 100, 1e-4, [0, 10**11], trajectories=4, method='full', seed=1)",
    ],
)
def test_long_loops_honour_an_interrupt_within_a_second_or_two(call):
    script = (
        "import sys\n"
        "from popgrad import noise_estimate, orthonormal_problem, simulate\n"
        "problem = orthonormal_problem('relu', 8, 1.0, seed=0)\n"
        "noise_estimate(problem, 100, samples=6400); simulate(problem, 100, 1e-4, [0, 10], trajectories=4, method='chain'); simulate(problem, 100, 1e-4, [0, 10], trajectories=4, method='full')\n"
        "print('running', flush=True)\n"
        f"{call}\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "running"
    time.sleep(0.5)
    # the bound is on the CPU time the child spends after the interrupt (from /proc and wait4's rusage), not
    # on wall time, which a loaded machine stretches: a loop that ignored SIGINT would burn CPU until the
    # 60 s guard below
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_at_interrupt = (int(fields[11]) + int(fields[12])) / ticks
    process.send_signal(signal.SIGINT)
    timer = threading.Timer(60, process.kill)
    timer.start()
    err = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stdout.close()
    process.stderr.close()
    assert "KeyboardInterrupt" in err
    assert usage.ru_utime + usage.ru_stime - cpu_at_interrupt < 2.5
