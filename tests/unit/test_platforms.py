"""Platform decisions: control socket names that fit macOS, sessions named by
an earlier release, and the refusal of native Windows (pure; no sshd)."""

from pathlib import Path

import pytest

from tensorboard_remote import state
from tensorboard_remote.errors import TbError
from tensorboard_remote.shell import require_multiplexing
from tensorboard_remote.slurm import job_key

#: The default control directory of a macOS user with a 16-character name.
MAC_DIR = Path("/Users/abcdefghijklmnop/.ssh/controlmasters")
#: What ``ssh -G`` prints for ``tb-%C``: 40 hex digits.
DIGEST = "0123456789abcdef0123456789abcdef01234567"


def expanded(directory: Path, suffix: str = "") -> Path:
    return directory / f"tb-{DIGEST}{suffix}"


def sockets(directory: Path) -> dict[str, Path]:
    """The control socket of every kind of session: plain, a --job session
    through srun, and the node's master of a --job session through ssh."""
    srun, ssh = job_key("a-job-name", "srun"), job_key("a-job-name", "ssh")
    return {
        "plain": state.session_paths(expanded(directory)).socket,
        "srun job": state.session_paths(expanded(directory, srun), srun).socket,
        "ssh job's node": state.session_paths(expanded(directory, ssh), ssh).node.socket,
    }


def test_macos_leaves_86_bytes_for_a_control_path_and_linux_90():
    assert state.socket_path_max("darwin") == 86
    assert state.socket_path_max("linux") == 90


@pytest.mark.parametrize("kind", ["plain", "srun job", "ssh job's node"])
def test_every_kind_of_session_fits_macos_for_a_16_character_user_with_the_default_control_dir(kind):
    socket = sockets(MAC_DIR)[kind]
    assert len(str(MAC_DIR)) == 43
    assert len(str(socket).encode()) <= state.socket_path_max("darwin"), socket


def test_the_full_hash_of_the_previous_release_did_not_fit_there():
    node = expanded(MAC_DIR, job_key("a-job-name", "ssh") + "n")
    assert len(str(node).encode()) > state.socket_path_max("darwin")


def test_names_stay_distinct_per_host_and_per_kind():
    names = sockets(MAC_DIR)
    assert len({path.name for path in names.values()}) == 3
    assert names["plain"].name == f"tb-{DIGEST[:state.NAME_DIGITS]}"


def test_a_new_session_takes_the_short_name(tmp_path):
    assert state.session_paths(expanded(tmp_path)).socket.name == f"tb-{DIGEST[:20]}"


@pytest.mark.parametrize("left", ["record", "socket"])
def test_a_session_an_earlier_release_recorded_under_the_full_hash_is_found_there(tmp_path, left):
    old = state.Paths(expanded(tmp_path))
    (old.state if left == "record" else old.socket).write_text("")
    assert state.session_paths(expanded(tmp_path)) == old


def test_an_ssh_job_whose_login_master_is_gone_is_found_by_its_nodes_old_record(tmp_path):
    key = job_key("7", "ssh")
    old = state.Paths(expanded(tmp_path, key))
    old.node.state.write_text("{}")
    assert state.session_paths(expanded(tmp_path, key), key) == old


def test_leftover_lock_or_log_files_of_the_old_name_do_not_keep_it(tmp_path):
    old = state.Paths(expanded(tmp_path))
    old.lock.write_text("")
    old.log.write_text("")
    assert state.session_paths(expanded(tmp_path)) != old


def test_the_short_name_wins_once_it_has_a_session(tmp_path):
    old = state.Paths(expanded(tmp_path))
    old.state.write_text("{}")
    new = state.Paths(tmp_path / f"tb-{DIGEST[:20]}")
    new.state.write_text("{}")
    assert state.session_paths(expanded(tmp_path)) == new


def test_a_control_path_ssh_did_not_expand_from_ours_is_an_error(tmp_path):
    with pytest.raises(TbError, match="unexpected"):
        state.session_paths(tmp_path / "other", "-j00000000")


def test_native_windows_is_refused_with_a_pointer_to_wsl():
    with pytest.raises(TbError) as refused:
        require_multiplexing("win32")
    assert "WSL" in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("platform", ["linux", "darwin", "cygwin", "freebsd14"])
def test_unix_platforms_including_wsl_and_cygwin_are_not_refused(platform):
    require_multiplexing(platform)
