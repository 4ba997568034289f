"""Pure argv builders and host parsing: no network, no processes."""

import pytest

from tensorboard_remote import sshargv
from tensorboard_remote.settings import TbError
from tensorboard_remote.sshargv import Target


def test_master_forwards_loopback_to_loopback_and_fails_on_a_taken_port():
    argv = sshargv.master_argv(Target("hostA"), "/cm/tb-abc", 6006, 6008, 15)
    assert argv[0] == "ssh"
    assert argv[argv.index("-L") + 1] == "127.0.0.1:6006:127.0.0.1:6008"
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    assert "ExitOnForwardFailure=yes" in options
    assert "ControlPersist=no" in options
    assert "ServerAliveInterval=15" in options
    assert any(o.startswith("ConnectTimeout=") for o in options)
    assert {"-M", "-f", "-N"} <= set(argv)
    assert argv[argv.index("-S") + 1] == "/cm/tb-abc"


@pytest.mark.parametrize(
    "build",
    [
        lambda t: sshargv.master_argv(t, "/s", 1, 2, 15),
        lambda t: sshargv.control_argv(t, "/s", "check"),
        lambda t: sshargv.control_argv(t, "/s", "exit"),
        lambda t: sshargv.remote_argv(t, "/s"),
        lambda t: sshargv.remote_argv(t, None),
        lambda t: sshargv.resolve_argv(t, "/cm"),
    ],
)
def test_every_ssh_call_ends_options_with_a_double_dash_before_the_host(build):
    argv = build(Target("hostA", ssh_config="/cfg"))
    assert argv[argv.index("--") + 1] == "hostA"
    assert argv[1:3] == ["-G", "-F"] or argv[1:3] == ["-F", "/cfg"]


def test_the_control_path_is_short_and_expanded_by_ssh():
    argv = sshargv.resolve_argv(Target("a-very-long-host-name.example.org"), "/home/u/.ssh/controlmasters")
    assert "ControlPath=/home/u/.ssh/controlmasters/tb-%C" in argv
    assert argv[:2] == ["ssh", "-G"]


def test_remote_steps_ride_the_master_and_never_prompt():
    argv = sshargv.remote_argv(Target("hostA"), "/cm/tb-abc")
    assert argv[argv.index("-S") + 1] == "/cm/tb-abc"
    assert "ControlMaster=no" in argv and "BatchMode=yes" in argv
    assert argv[-1] == "sh -s"


def test_fabric_style_user_and_port_become_ssh_flags():
    target = Target("hostA", user="alice", port=2222, identities=("/k/id",), batch=True)
    argv = sshargv.control_argv(target, "/s", "check")
    assert argv[argv.index("-l") + 1] == "alice"
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-i") + 1] == "/k/id"
    assert "BatchMode=yes" in argv


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hostA", (None, "hostA", None)),
        ("alice@hostA", ("alice", "hostA", None)),
        ("alice@hostA:2222", ("alice", "hostA", 2222)),
        ("[::1]:22", (None, "::1", 22)),
        ("fe80::1", (None, "fe80::1", None)),
    ],
)
def test_hosts_parse_like_fabric_host_strings(text, expected):
    assert sshargv.parse_host(text) == expected


@pytest.mark.parametrize(
    "host",
    ["-oProxyCommand=touch /tmp/x", "-F/etc/passwd", "host name", "host\nname", "a;b", "$(id)", "`id`", "", "a@", "h:port"],
)
def test_hosts_that_could_be_options_or_shell_are_refused(host):
    with pytest.raises(TbError):
        sshargv.parse_host(host)
