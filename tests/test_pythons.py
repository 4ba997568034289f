"""The Python TensorBoard lives in: wrappers, container-style prefixes, and
TensorBoards (or their dependencies) that the launcher cannot import.

The "remote" is the sandbox sshd: its non-interactive PATH has a python3
without TensorBoard (Debian's), as a cluster's login shell often does.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from .conftest import tensorboards
from .test_lifecycle import started
from .unit import tracebacks

VENV_PYTHON = sys.executable


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def environ(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")


def only_tensorboard(rig) -> int:
    pids = tensorboards(rig)
    assert len(pids) == 1, pids
    return pids[0]


@pytest.fixture
def wrapper(tmp_path) -> str:
    """A wrapper script as tensorboard_cmd: it runs TensorBoard, but its
    first line names no Python."""
    path = script(tmp_path / "tb-wrapper", f'exec {shlex.quote(VENV_PYTHON)} -m tensorboard.main "$@"\n')
    return str(path)


def test_a_wrapper_script_as_tensorboard_cmd_says_to_set_python(rig, wrapper):
    result = rig.fab("tb.start", env=rig.env(FABRIC_TB_TENSORBOARD_CMD=wrapper))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"tensorboard-remote: the Python that {wrapper!r} led to on sandbox (python3) has no TensorBoard "
        "(No module named 'tensorboard'): set tb.python to the Python TensorBoard lives in "
        "(e.g. --python 'conda run -n tb python'"
    ), result.stderr
    assert rig.states() == [] and tensorboards(rig) == []


def test_a_wrapper_script_works_with_python_set_to_the_venvs(rig, wrapper):
    env = rig.env(FABRIC_TB_TENSORBOARD_CMD=wrapper)
    started(rig.fab("tb.start", "--python", VENV_PYTHON, env=env), rig)
    cmdline = Path(f"/proc/{only_tensorboard(rig)}/cmdline").read_bytes().split(b"\0")
    assert cmdline[0].decode() == VENV_PYTHON
    assert rig.fab("tb.check", env=env).returncode == 0


def test_a_command_prefix_before_the_python_is_run_by_the_remote_shell(rig):
    # tensorboard_cmd is not on PATH at all: with python set it is not needed.
    env = rig.env(FABRIC_TB_TENSORBOARD_CMD="tensorboard-not-installed-here")
    started(rig.fab("tb.start", "--python", f"env TBR_TEST=1 {shlex.quote(VENV_PYTHON)}", env=env), rig)
    assert "TBR_TEST=1" in environ(only_tensorboard(rig))


def test_a_container_style_python_runs_the_launcher_inside_it(rig, tmp_path):
    # As `apptainer exec IMAGE python3 ...` would: the image path is a word
    # of the setting, with a ~ that the remote shell expands.
    fake = script(
        tmp_path / "fakeapptainer",
        '[ "$1" = exec ] && [ "$3" = python3 ] || { echo "fakeapptainer: usage: exec IMAGE python3 ARGS" >&2; exit 2; }\n'
        f'TBR_IMAGE=$2; export TBR_IMAGE; shift 3; exec {shlex.quote(VENV_PYTHON)} "$@"\n',
    )
    started(rig.fab("tb.start", "--python", f"{fake} exec ~/tb.sif python3"), rig)
    image = [line for line in environ(only_tensorboard(rig)) if line.startswith("TBR_IMAGE=")]
    assert image and image[0].endswith("/tb.sif") and not image[0].startswith("TBR_IMAGE=~"), image


def test_another_python_for_a_running_session_is_refused_naming_the_one_in_force(rig):
    started(rig.fab("tb.start", "--python", VENV_PYTHON), rig)
    pid = only_tensorboard(rig)
    other = f"env TBR_TEST=1 {VENV_PYTHON}"
    result = rig.fab("tb.start", "--python", other)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"tensorboard-remote: sandbox already has a tb session with python={VENV_PYTHON!r} "
        f"(this start asks for python={other!r})"
    ), result.stderr
    assert tensorboards(rig) == [pid]


@pytest.mark.parametrize(
    "traceback, head",
    [
        (tracebacks.SIX, "TensorBoard cannot be imported by {py} on sandbox: a module it needs is missing "
                         "(No module named 'six'); install it into that Python: {py} -m pip install six"),
        (tracebacks.MAIN_LIB, "the TensorBoard of {py} on sandbox is older than 2.5 (it has no tensorboard.main_lib), "
                              "too old for tensorboard-remote (which supports TensorBoard 2.5 to 2.21): "
                              "upgrade it: {py} -m pip install 'tensorboard>=2.5'"),
        (tracebacks.NUMPY2, "the TensorBoard of {py} on sandbox is older than 2.18 and does not work with NumPy 2 "
                            "(np.string_ is gone): install NumPy 1 into that Python (or a TensorBoard >= 2.18): "
                            "{py} -m pip install 'numpy<2'"),
        (tracebacks.PKG_RESOURCES, "TensorBoard cannot be imported by {py} on sandbox: a module it needs is missing "
                                   "(No module named 'pkg_resources'); install it into that Python: "
                                   "{py} -m pip install 'setuptools<82'"),
    ],
    ids=["six", "main_lib", "numpy2", "pkg_resources"],
)
def test_a_tensorboard_the_launcher_cannot_import_says_what_to_install(rig, tmp_path, traceback, head):
    # A Python that answers our launcher as that TensorBoard's does.
    stub = script(tmp_path / "python-old", f"cat >&2 <<'EOF'\n{tracebacks.text(traceback)}EOF\nexit 1\n")
    result = rig.fab("tb.start", env=rig.env(FABRIC_TB_TENSORBOARD_CMD=f"{stub} -m tensorboard.main"))
    assert result.returncode == 1
    assert result.stderr.split("\n")[0] == "tensorboard-remote: " + head.format(py=stub)
    # The log's tail ends in the traceback's own last line.
    assert result.stderr.rstrip().endswith("  | " + tracebacks.text(traceback).rstrip().splitlines()[-1])
    assert rig.states() == [] and tensorboards(rig) == []
