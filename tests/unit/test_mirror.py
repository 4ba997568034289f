"""The mirror's decisions: which files, which bytes, and the stream protocol.

The stream method's remote program runs for real here, by ``/bin/sh`` on this
machine instead of through ssh (a host whose "remote" command is ``sh -s``):
what it sends and what we write are the real code on both ends. The pattern
semantics are checked against rsync's own filter rules, run on a local tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tensorboard_remote import mirror
from tensorboard_remote.errors import TbError
from tensorboard_remote.shell import Shell
from tensorboard_remote.sshargv import Target


class ShHost:
    """A host whose remote shell is /bin/sh here."""

    label = "here"
    target = Target("here")
    socket = "/nonexistent"

    def __init__(self) -> None:
        self.shell = Shell(quick=10)

    def remote_argv(self, through_master: bool = True) -> list[str]:
        return ["/bin/sh", "-s"]

    def output(self, script: str, *, timeout=None) -> str:
        return subprocess.run(["/bin/sh", "-s"], input=script, capture_output=True, text=True, timeout=10).stdout


def tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def mirrored(dest: Path) -> dict[str, bytes]:
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


EVENTS = "events.out.tfevents.1700000000.gpu1.123.0"


@pytest.fixture
def logdir(tmp_path) -> Path:
    root = tmp_path / "logdir"
    tree(root, {
        f"baseline/{EVENTS}": b"a" * 10000,
        f"wider/{EVENTS}": b"b" * 300,
        "baseline/model.ckpt-1.data-00000-of-00001": b"c" * 50000,
        "baseline/checkpoint": b"model_checkpoint_path: x",
        "baseline/plugins/profile/2024_01_01/host.xplane.pb": b"p" * 700,
        "baseline/projector_config.pbtxt": b"embeddings {}",
        "notes.txt": b"hello",
    })
    return root


def sync(logdir: Path, dest: Path, patterns: mirror.Patterns = mirror.Patterns()) -> mirror.Synced:
    return mirror.sync(ShHost(), str(logdir), dest, patterns, "stream")


def test_patterns_match_the_end_of_a_path_at_a_directory_boundary():
    p = mirror.Patterns()
    assert p.matches(f"run/{EVENTS}")
    assert p.matches(f"a/b/c/{EVENTS}")
    assert p.matches("run/plugins/profile/x/host.xplane.pb")
    assert p.matches("projector_config.pbtxt")
    assert not p.matches("run/model.ckpt-1.index")
    assert not p.matches("run/checkpoint")
    assert not p.matches("run/notplugins/x")
    assert not p.matches(f"run/{EVENTS}x/y")


def test_patterns_parse_a_list_or_commas_and_refuse_what_is_not_a_pattern():
    assert mirror.Patterns.parse("a*, b/**").globs == ("a*", "b/**")
    assert mirror.Patterns.parse(["x"]).globs == ("x",)
    assert mirror.Patterns.parse(None) == mirror.Patterns()
    for bad in (",", "/abs", "-x", "a\nb"):
        with pytest.raises(TbError):
            mirror.Patterns.parse(bad)


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is installed by .ci/run")
def test_patterns_select_what_rsyncs_own_filter_rules_select(logdir, tmp_path):
    patterns = mirror.Patterns.parse(["events.out.tfevents.*", "plugins/**", "projector_config.pbtxt", "*.txt", "wid?r/*"])
    out = tmp_path / "by-rsync"
    subprocess.run(["rsync", "-r", "-m", *patterns.rsync_filters(), f"{logdir}/", f"{out}/"], check=True)
    by_rsync = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    ours = {p.relative_to(logdir).as_posix() for p in logdir.rglob("*") if p.is_file() and patterns.matches(p.relative_to(logdir).as_posix())}
    assert by_rsync == ours


def test_a_first_sync_copies_event_files_and_plugin_data_never_checkpoints(logdir, tmp_path):
    dest = tmp_path / "mirror"
    done = sync(logdir, dest)
    assert set(mirrored(dest)) == {
        f"baseline/{EVENTS}", f"wider/{EVENTS}", "baseline/plugins/profile/2024_01_01/host.xplane.pb", "baseline/projector_config.pbtxt",
    }
    assert done.files == 4 and done.changed == 4
    assert mirrored(dest)[f"baseline/{EVENTS}"] == b"a" * 10000
    assert done.bytes_in >= 10000 + 300 + 700 and done.bytes_in < 10000 + 300 + 700 + 13 + 2000


def test_a_round_with_nothing_new_moves_no_file_bytes(logdir, tmp_path):
    dest = tmp_path / "mirror"
    sync(logdir, dest)
    again = sync(logdir, dest)
    assert again.changed == 0
    assert again.bytes_in < 100  # the end marker only


def test_an_append_moves_only_the_new_bytes(logdir, tmp_path):
    dest = tmp_path / "mirror"
    sync(logdir, dest)
    with open(logdir / "baseline" / EVENTS, "ab") as handle:
        handle.write(b"NEW" * 1000)
    done = sync(logdir, dest)
    assert done.changed == 1
    assert 3000 <= done.bytes_in < 3000 + 300
    assert mirrored(dest)[f"baseline/{EVENTS}"] == (logdir / "baseline" / EVENTS).read_bytes()


def test_a_file_that_shrank_or_was_rewritten_is_fetched_whole(logdir, tmp_path):
    dest = tmp_path / "mirror"
    sync(logdir, dest)
    source = logdir / "baseline" / EVENTS
    source.write_bytes(b"short")
    sync(logdir, dest)
    assert mirrored(dest)[f"baseline/{EVENTS}"] == b"short"
    # Rewritten larger, with other bytes where ours end: not an append.
    source.write_bytes(b"x" * 20000)
    done = sync(logdir, dest)
    assert mirrored(dest)[f"baseline/{EVENTS}"] == b"x" * 20000
    assert done.bytes_in >= 20000


def test_names_with_spaces_and_newlines_and_symlinked_runs_are_mirrored(logdir, tmp_path):
    tree(logdir, {f"with space/{EVENTS}": b"s", f"new\nline/{EVENTS}": b"n"})
    elsewhere = tmp_path / "elsewhere"
    tree(elsewhere, {f"{EVENTS}": b"linked"})
    os.symlink(elsewhere, logdir / "linked-run")
    os.symlink(logdir, logdir / "loop")  # a loop is walked once
    dest = tmp_path / "mirror"
    sync(logdir, dest)
    got = mirrored(dest)
    assert got[f"with space/{EVENTS}"] == b"s"
    assert got[f"new\nline/{EVENTS}"] == b"n"
    assert got[f"linked-run/{EVENTS}"] == b"linked"
    assert not any(rel.startswith("loop/") for rel in got)


def test_a_missing_logdir_is_its_own_error(tmp_path):
    with pytest.raises(mirror.LogdirMissing):
        sync(tmp_path / "nope", tmp_path / "mirror")


def test_a_round_cut_short_leaves_no_half_file_under_its_name(logdir, tmp_path):
    dest = tmp_path / "mirror"
    (dest / "baseline").mkdir(parents=True)
    (dest / "baseline" / (EVENTS + mirror.PART)).write_bytes(b"half")
    sync(logdir, dest)
    assert not list(dest.rglob("*" + mirror.PART))


def test_a_name_that_leaves_the_mirror_is_refused(tmp_path):
    with pytest.raises(mirror.SyncFailed):
        mirror._inside(tmp_path, "../etc/passwd")
    with pytest.raises(mirror.SyncFailed):
        mirror._inside(tmp_path, "/etc/passwd")


def test_patterns_narrowed_or_widened(logdir, tmp_path):
    dest = tmp_path / "mirror"
    sync(logdir, dest, mirror.Patterns.parse("*.txt"))
    assert set(mirrored(dest)) == {"notes.txt"}


def test_rsync_stats_are_read_with_thousands_separators():
    out = (
        "Number of files: 7 (reg: 4, dir: 3)\nNumber of created files: 0\n"
        "Number of regular files transferred: 2\nTotal file size: 1,048,576 bytes\n"
        "Total bytes sent: 1,234\nTotal bytes received: 1,051,000\n"
    )
    assert mirror.parse_stats(out) == (4, 2, 1234, 1051000)


def test_the_remote_logdir_is_relative_to_the_login_directory():
    assert mirror.remote_logdir("~/runs") == "runs"
    assert mirror.remote_logdir("~") == "."
    assert mirror.remote_logdir("./logdir") == "./logdir"
    assert mirror.remote_logdir("/abs") == "/abs"
    with pytest.raises(TbError):
        mirror.remote_logdir("~bob/runs")


# ------------------------------------------------ what a host cannot give us

#: What rsync 3.5's sender said, run as a user who cannot read two of the
#: files (measured here with runuser -u nobody).
PARTIAL = '''symlink has no referent: "/home/u/runs/run1/events.out.tfevents.4"
rsync: [sender] opendir "/home/u/runs/run2" failed: Permission denied (13)
rsync: [sender] send_files failed to open "/home/u/runs/run1/events.out.tfevents.2": Permission denied (13)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]
'''


def _local_rsync(tmp_path: Path, monkeypatch) -> None:
    """rsync's remote shell: the command run here (the host argument dropped)."""
    shim = tmp_path / "here-shell"
    shim.write_text('#!/bin/sh\nshift\nexec "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setattr(mirror, "ssh_command", lambda host: [str(shim)])


@pytest.mark.parametrize("method", ["rsync", "stream"])
def test_a_dangling_event_file_symlink_is_said_and_the_rest_is_synced(logdir, tmp_path, monkeypatch, method):
    _local_rsync(tmp_path, monkeypatch)
    (logdir / "wider" / "events.out.tfevents.1.gone").symlink_to(tmp_path / "deleted")
    (logdir / "latest").symlink_to(tmp_path / "deleted-run")  # not an event file: nothing to say
    done = mirror.sync(ShHost(), str(logdir), tmp_path / "mirror", mirror.Patterns(), method)
    assert done.skipped == ("wider/events.out.tfevents.1.gone: a symlink to nothing",)
    assert set(mirrored(tmp_path / "mirror")) == {
        f"baseline/{EVENTS}", f"wider/{EVENTS}", "baseline/plugins/profile/2024_01_01/host.xplane.pb", "baseline/projector_config.pbtxt",
    }
    again = mirror.sync(ShHost(), str(logdir), tmp_path / "mirror", mirror.Patterns(), method)
    assert again.skipped == done.skipped and again.changed == 0


def test_rsyncs_words_for_what_it_cannot_give_are_read_and_anything_else_fails():
    assert mirror.skipped_by_rsync(PARTIAL) == [
        ("/home/u/runs/run1/events.out.tfevents.4", "a symlink to nothing"),
        ("/home/u/runs/run2", "Permission denied"),
        ("/home/u/runs/run1/events.out.tfevents.2", "Permission denied"),
    ]
    cut = "rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]\n" + PARTIAL.splitlines()[-1]
    assert mirror.skipped_by_rsync(cut) is None
    assert [mirror._within(path, "~/runs") for path, _ in mirror.skipped_by_rsync(PARTIAL)] == [
        "run1/events.out.tfevents.4", "run2", "run1/events.out.tfevents.2",
    ]
    # The logdir itself is "" (nothing synced: a failure); outside it, the path as it is.
    assert mirror._within("/home/u/runs", "~/runs") == "" and mirror._within("/scratch/runs", "/scratch/runs/") == ""
    assert mirror._within("/scratch/runs/a: b/x", "/scratch/runs") == "a: b/x"
    assert mirror._within("/elsewhere/x", "/scratch/runs") == "/elsewhere/x"


def test_a_partial_rsync_round_is_synced_with_what_it_skipped_unless_it_is_the_logdir(tmp_path):
    from tensorboard_remote.shell import Outcome

    from .fakes import FakeShell

    class Host(ShHost):
        def __init__(self, stderr: str) -> None:
            self.shell = FakeShell({r"^rsync ": Outcome(23, "Number of files: 3 (reg: 2)\n", stderr), r"tbr-yes": Outcome(0, "tbr-yes\ntbr-end\n", "")})

        def output(self, script: str, *, timeout=None) -> str:
            return self.shell.run(["sh"], timeout=1, stdin=script).stdout

    done = mirror.sync(Host(PARTIAL), "~/runs", tmp_path / "m", mirror.Patterns(), "rsync")
    assert done.skipped == (
        "run1/events.out.tfevents.4: a symlink to nothing", "run2: Permission denied", "run1/events.out.tfevents.2: Permission denied",
    )
    root = 'rsync: [sender] opendir "/home/u/runs" failed: Permission denied (13)\n' + PARTIAL.splitlines()[-1]
    with pytest.raises(mirror.SyncFailed, match="rsync from here failed"):
        mirror.sync(Host(root), "~/runs", tmp_path / "m", mirror.Patterns(), "rsync")
