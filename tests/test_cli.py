import json
import subprocess
import sys

import pytest

from popgrad.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "popgrad.cli", *args], capture_output=True, text=True, timeout=600)


def test_hermite_json_for_scripts(capsys):
    assert main(["hermite", "relu", "--order", "4", "--digits", "25", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["activation"] == "relu" and payload["scale"] == "1" and payload["information_exponent"] == 1
    rows = payload["coefficients"]
    assert [row["p"] for row in rows] == [0, 1, 2, 3, 4]
    assert rows[1]["exact"] == "1/2" and rows[1]["value"].startswith("0.5")
    assert rows[3]["zero"] and rows[3]["value"] == "0"
    assert rows[2]["value"] == "0.2820947917738781434740397"
    assert all(row["verified_digits"] >= 24 for row in rows)


@pytest.mark.parametrize("fmt, marker", [("markdown", "| p |"), ("latex", r"\begin{tabular}"), ("csv", "p,exact,value"), ("table", "digits verified")])
def test_hermite_formats(capsys, fmt, marker):
    assert main(["hermite", "gelu", "--order", "3", "--scale", "1.7", "--format", fmt]) == 0
    assert marker in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["hermite", "nope", "--order", "3"], "unknown 'nope'"),
        (["hermite", "relu", "--order", "-2"], "--order"),
        (["hermite", "relu", "--order", "3", "--scale", "0"], "--scale must be > 0"),
        (["hermite", "relu", "--order", "3", "--scale", "-1.5"], "--scale must be > 0"),
        (["hermite", "__import__('os').system('true')", "--order", "3"], "only plain function calls"),
        (["hermite", "z.real", "--order", "3"], "attribute access"),
        (["hermite", "relu"], "--order"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_with_status_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popgrad: error:") and message in lines[0]
    assert "Traceback" not in result.stderr
