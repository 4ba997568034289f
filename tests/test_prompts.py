"""A login that prompts, in a real terminal: ssh's password prompt stays
visible and answerable under fab, invoke and tensorboard-remote.

A tmux pane is the terminal; the host is an sshd that takes passwords,
reached as an ordinary user with a known password and no usable key (the
ssh_config turns public keys off, the host key stays pinned and strict).
TensorBoard is the cluster venv's, readable by that user (``activate``).
Two tests give the same host an ssh_config of their own: one with an empty
known_hosts and ``StrictHostKeyChecking ask`` (the host-key question), one
with a passphrase-protected key and no agent (the key's passphrase).
"""

from __future__ import annotations

import subprocess

import pytest

from .terminal_fixtures import (
    BY_PASSWORD, NEEDS_ROOT_AND_TMUX, PASSPHRASE, PASSWORD, PW_USER, goes_on_to_tensorboard, pwhost_config,
    shows_the_prompt,
)

pytestmark = NEEDS_ROOT_AND_TMUX


@pytest.mark.parametrize("cli", ["fab", "invoke", "tensorboard-remote"])
def test_the_password_prompt_stays_visible_on_a_terminal_and_typing_it_starts_tensorboard(user, terminal, cli):
    pane = terminal(*user.start_argv(cli))
    shows_the_prompt(pane, f"{PW_USER}@127.0.0.1's password:")
    pane.type(PASSWORD)
    goes_on_to_tensorboard(pane, user)


def test_the_host_key_question_stays_visible_and_yes_then_the_password_starts_tensorboard(user, terminal, tmp_path):
    box = user.cluster["box"]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.touch()
    user.config = pwhost_config(tmp_path / "ssh_config", box, known_hosts, "ask", *BY_PASSWORD)
    pane = terminal(*user.start_argv("fab"))
    screen = shows_the_prompt(pane, "Are you sure you want to continue connecting (yes/no/[fingerprint])?")
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(box.dir / "host_ed25519.pub")], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    assert f"ED25519 key fingerprint is {fingerprint}." in screen, screen
    pane.type("yes")
    shows_the_prompt(pane, f"{PW_USER}@127.0.0.1's password:")
    pane.type(PASSWORD)
    goes_on_to_tensorboard(pane, user)
    # What was written is the sandbox's own host key, for its address only.
    written = [line.split() for line in known_hosts.read_text().splitlines() if line.strip()]
    host_key = (box.dir / "host_ed25519.pub").read_text().split()[:2]
    assert written == [[f"[127.0.0.1]:{box.port}", *host_key]], known_hosts.read_text()



def test_the_key_passphrase_prompt_stays_visible_and_typing_it_starts_tensorboard(user, terminal, tmp_path, passphrase_key):
    box = user.cluster["box"]
    login = (f"IdentityFile {passphrase_key}", "IdentitiesOnly yes", "PreferredAuthentications publickey", "AddKeysToAgent no")
    user.config = pwhost_config(tmp_path / "ssh_config", box, box.dir / "known_hosts", "yes", *login)
    argv, env = user.start_argv("fab")
    assert "SSH_AUTH_SOCK" not in env  # no agent could answer for the key
    pane = terminal(argv, env)
    shows_the_prompt(pane, f"Enter passphrase for key '{passphrase_key}':")
    pane.type(PASSPHRASE)
    goes_on_to_tensorboard(pane, user)


def test_without_a_terminal_the_password_host_fails_at_once_and_nothing_waits_on_a_prompt(user):
    result = user.fab("tb.start")
    assert result.returncode == 1
    assert "cannot connect to pwhost: " in result.stderr and "Permission denied" in result.stderr, result.stderr
    assert not list(user.control_dir.iterdir())  # no record, socket or log
