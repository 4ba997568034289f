"""The words of failed and odd starts, from what the remote said."""

import pytest

from tensorboard_remote import messages
from tensorboard_remote.settings import settings


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
