"""The words of failed and odd starts, from what the remote said."""

import pytest

from tensorboard_remote import messages
from tensorboard_remote.settings import settings

from . import tracebacks


def test_a_logdir_under_this_machines_home_says_to_quote_the_tilde():
    line = messages.logdir_missing("/Users/you/runs/exp3", "/home/you", local_home="/Users/you")
    assert line.endswith(
        "; /Users/you is this machine's home directory (your shell expanded an unquoted ~): "
        "quote it, --logdir '~/runs/exp3', for the remote's home (/home/you)"
    )


def test_a_logdir_elsewhere_is_only_noted():
    assert "quote" not in messages.logdir_missing("/data/runs", "/home/you", local_home="/Users/you")
    # The same home on both sides (a shared home): the path is right as typed.
    assert "quote" not in messages.logdir_missing("/home/you/runs", "/home/you", local_home="/home/you")


@pytest.mark.parametrize(
    "log, head",
    [
        ("tensorboard-remote: the activation snippet failed with exit status 1", "the activation snippet failed on h"),
        ("tensorboard-remote: tensorboard: command not found on PATH=/usr/bin", "'tensorboard' not found on h"),
        ("unshare -rn is not permitted here, and data_server=netns requires it", "h does not allow private network namespaces"),
        ("E0101 could not bind to port 6008, it was already in use", "TensorBoard could not bind remote port 6008"),
        ("Segmentation fault", "TensorBoard exited on h before it answered"),
    ],
)
def test_a_tensorboard_that_died_is_explained_from_its_log(log, head):
    message = messages.died(log, "h", settings({}))
    assert message.startswith(head) and message.endswith("  | " + log)


def test_a_start_error_detail_becomes_its_sentence():
    config = settings({})
    assert messages.start_error("no-setsid", "h", config).startswith("h has no 'setsid' command")
    assert "scancel 12.3" in messages.start_error("step-exists 12.3", "h", config)
    assert messages.start_error("odd thing", "h", config) == "starting TensorBoard on h failed (odd thing)"


def test_a_forbidden_forward_is_one_line_that_says_what_to_do():
    line = messages.forwarding_forbidden("gpu1")
    assert line.startswith("gpu1 forbids port forwarding") and "nothing was left running" in line and "\n" not in line


PY = "/home/you/venvs/tb/bin/python"


def launched(traceback: str, python: str = PY) -> str:
    """A remote log as the launcher leaves it: its python line, then the traceback."""
    return f"tensorboard-remote: starting TensorBoard (today)\ntensorboard-remote: python {python}\n" + tracebacks.text(traceback)


@pytest.mark.parametrize(
    "traceback, head",
    [
        (tracebacks.SIX, f"TensorBoard cannot be imported by {PY} on h: a module it needs is missing "
                         f"(No module named 'six'); install it into that Python: {PY} -m pip install six"),
        (tracebacks.PKG_RESOURCES, f"TensorBoard cannot be imported by {PY} on h: a module it needs is missing "
                                   f"(No module named 'pkg_resources'); install it into that Python: "
                                   f"{PY} -m pip install 'setuptools<82'"),
        (tracebacks.NUMPY2, f"the TensorBoard of {PY} on h is older than 2.18 and does not work with NumPy 2 "
                            f"(np.string_ is gone): install NumPy 1 into that Python (or a TensorBoard >= 2.18): "
                            f"{PY} -m pip install 'numpy<2'"),
        (tracebacks.MAIN_LIB, f"the TensorBoard of {PY} on h is older than 2.5 (it has no tensorboard.main_lib), "
                              f"too old for tensorboard-remote (which supports TensorBoard 2.5 to 2.21): "
                              f"upgrade it: {PY} -m pip install 'tensorboard>=2.5'"),
    ],
)
def test_an_import_failure_names_the_missing_piece_and_what_to_install(traceback, head):
    message = messages.died(launched(traceback), "h", settings({}))
    assert message.split("\nremote log:\n")[0] == head


def test_a_found_python_without_tensorboard_says_to_set_python():
    config = settings({"tb": {"tensorboard_cmd": "tb-wrapper --reload_interval 5"}})
    head = messages.died(launched(tracebacks.NO_TENSORBOARD, "python3"), "h", config).split("\n")[0]
    assert head.startswith(
        "the Python that 'tb-wrapper' led to on h (python3) has no TensorBoard (No module named 'tensorboard'): "
        "set tb.python to the Python TensorBoard lives in (e.g. --python 'conda run -n tb python'"
    )


def test_a_python_setting_without_tensorboard_is_named():
    config = settings({"tb": {"python": "conda run -n base python"}})
    head = messages.died(launched(tracebacks.NO_TENSORBOARD, "conda run -n base python"), "h", config).split("\n")[0]
    assert head == (
        "tb.python ('conda run -n base python') on h has no TensorBoard (No module named 'tensorboard'): "
        "set it to the command of the Python TensorBoard lives in"
    )


@pytest.mark.parametrize("module, package", [("absl", "absl-py"), ("imghdr", "standard-imghdr"), ("google.protobuf", "protobuf"), ("markdown", "markdown")])
def test_a_missing_dependency_is_installed_under_its_package_name(module, package):
    log = launched(f"ModuleNotFoundError: No module named '{module}'\n")
    assert messages.died(log, "h", settings({})).split("\n")[0].endswith(f"{PY} -m pip install {package}")


def test_a_python_that_is_not_on_path_names_the_python_setting():
    config = settings({"tb": {"python": "apptainer exec ~/tb.sif python3"}})
    log = "tensorboard-remote: apptainer: command not found on PATH=/usr/bin:/bin"
    assert messages.died(log, "h", config).startswith(
        "'apptainer' not found on h in a non-interactive shell: set tb.activate (e.g. 'source ~/venvs/tb/bin/activate') "
        "or tb.python to its full path"
    )
