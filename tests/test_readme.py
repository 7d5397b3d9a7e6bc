"""README.md's test command is the one .ci/run executes."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_the_two_setup_commands_first():
    commands = readme_commands()
    assert "pip install -e ." in commands[0] and "mrcnn_np" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_readme_test_command_verbatim():
    test_command = readme_commands()[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
