"""Pure argv builders and host parsing: no network, no processes."""

import pytest

from tensorboard_remote import sshargv
from tensorboard_remote.settings import TbError
from tensorboard_remote.sshargv import Target


def test_the_master_opens_with_no_forward_and_strict_options():
    argv = sshargv.master_argv(Target("hostA"), "/cm/tb-abc", 15, "/cm/tb-abc.log")
    assert argv[0] == "ssh" and "-L" not in argv
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    assert "ExitOnForwardFailure=yes" in options
    assert "ControlPersist=no" in options
    assert "ServerAliveInterval=15" in options
    assert "ClearAllForwardings=yes" in options
    assert any(o.startswith("ConnectTimeout=") for o in options)
    assert {"-M", "-f", "-N"} <= set(argv)
    assert argv[argv.index("-S") + 1] == "/cm/tb-abc"
    assert argv[argv.index("-E") + 1] == "/cm/tb-abc.log"


def test_forwards_bind_loopback_here_and_reach_a_socket_or_loopback_there():
    assert sshargv.forward_spec(6006, "unix /home/u/.tensorboard-remote/ab/tb.sock") == (
        "127.0.0.1:6006:/home/u/.tensorboard-remote/ab/tb.sock"
    )
    assert sshargv.forward_spec(6006, "tcp 41234") == "127.0.0.1:6006:127.0.0.1:41234"
    argv = sshargv.forward_argv(Target("hostA"), "/s", "127.0.0.1:1:/x", "forward")
    assert argv[argv.index("-O") + 1] == "forward" and argv[argv.index("-L") + 1] == "127.0.0.1:1:/x"
    with pytest.raises(ValueError):
        sshargv.forward_spec(6006, "unix relative/path")


@pytest.mark.parametrize(
    "build",
    [
        lambda t: sshargv.master_argv(t, "/s", 15, "/s.log"),
        lambda t: sshargv.forward_argv(t, "/s", "127.0.0.1:1:/x"),
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
    assert argv[argv.index("-F") + 1] == "/cfg" and argv.index("-F") < argv.index("--")


def test_a_call_that_rides_a_master_cannot_log_in_by_itself_when_the_master_is_gone():
    jump = Target("login")
    node = Target("cn1", jump=jump, jump_socket="/cm/tb-login")
    for argv in (sshargv.remote_argv(node, "/cm/tb-node"), sshargv.link_probe_argv(node, "/cm/tb-node"),
                 sshargv.remote_argv(Target("hostA"), "/cm/tb-abc")):
        proxies = [argv[i + 1] for i, word in enumerate(argv) if word == "-o" and argv[i + 1].startswith("ProxyCommand=")]
        assert proxies[0] == "ProxyCommand=false", argv  # the first one is the one ssh uses
    # A login of its own (the master gone on purpose) keeps the jump.
    alone = sshargv.remote_argv(node, None)
    assert "ProxyCommand=false" not in alone and any(w.startswith("ProxyCommand=ssh") for w in alone)


def test_the_control_path_is_short_and_expanded_by_ssh():
    argv = sshargv.resolve_argv(Target("a-very-long-host-name.example.org"), "/home/u/.ssh/controlmasters")
    assert "IdentityAgent=/home/u/.ssh/controlmasters/tb-%C" in argv
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


def test_a_compute_node_is_reached_through_the_login_nodes_master_without_a_second_login():
    login = Target("login", user="alice", ssh_config="/etc/my ssh/config", identities=("/k/id",))
    node = Target("cn1", user="alice", jump=login, jump_socket="/cm/tb-ab-j1%x", tag="job 7 via login")
    argv = sshargv.master_argv(node, "/cm/n", 15, "/cm/n.log")
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    (proxy,) = [o.split("=", 1)[1] for o in options if o.startswith("ProxyCommand=")]
    # ssh hands the command to /bin/sh after expanding %h/%p: quoted words,
    # a doubled literal %, and the two tokens left for ssh.
    import shlex

    words = shlex.split(proxy.replace("%%", "%"))
    assert words[0] == "ssh" and words[-2:] == ["--", "login"]
    assert words[words.index("-S") + 1] == "/cm/tb-ab-j1%x"
    assert words[words.index("-W") + 1] == "%h:%p"
    assert words[words.index("-F") + 1] == "/etc/my ssh/config"
    assert "BatchMode=yes" in words and "ControlMaster=no" in words
    assert "'%h:%p'" not in proxy and "%%x" in proxy
    assert node.label == "alice@cn1 (job 7 via login)"
    assert Target.from_dict(node.to_dict()) == node


def test_a_job_session_has_a_control_path_of_its_own_and_forwards_to_the_node():
    argv = sshargv.resolve_argv(Target("login"), "/cm", "-j0123abcd")
    assert "IdentityAgent=/cm/tb-%C-j0123abcd" in argv
    with pytest.raises(ValueError):
        sshargv.control_path_pattern("/cm", "-j%h")
    assert sshargv.forward_spec(6006, "tcp 41234", "10.1.2.3") == "127.0.0.1:6006:10.1.2.3:41234"
    with pytest.raises(ValueError):
        sshargv.forward_spec(6006, "unix /x/tb.sock", "cn1")  # a node's socket is not on the login node
    with pytest.raises(ValueError):
        sshargv.forward_spec(6006, "tcp 1", "-oProxyCommand=x")


def test_a_compute_node_gets_the_login_hosts_user_unless_ssh_config_names_one(tmp_path):
    import getpass

    from tensorboard_remote import slurm
    from tensorboard_remote.shell import Shell

    cfg = tmp_path / "ssh_config"
    other = "alice" if getpass.getuser() != "alice" else "alice2"
    cfg.write_text(f"Host login\n  User {other}\nHost cn9\n  User bob\n")
    login = Target("login", ssh_config=str(cfg))
    shell = Shell()
    # ssh -G only: OpenSSH resolves; nothing connects.
    assert slurm._node_user(shell, login, "cn1") == other
    assert slurm._node_user(shell, login, "cn9") is None  # OpenSSH uses bob
