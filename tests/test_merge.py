"""One TensorBoard over many hosts (issue 14), end to end: the three CLIs,
real sshd hosts (one behind a jump host, one without rsync), a real local
TensorBoard over the mirror, the real syncer, real rsync and our stream, a
real Chromium.

The class shares one merged view (sandbox, host2, far, bare; started from
the tb.merge mapping) across its tests, in order; the other tests start
views of their own. Every test ends with tb.exit and nothing of ours left
(fixtures: ``merge_fixtures.py``). sync_every is 1 s except where a test
says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, chromium_flags, http_json
from .merge_fixtures import (
    LINKED_RUN,
    MAPPED,
    NEWLINE_RUN,
    PRUNED,
    SPACE_RUN,
    append_steps,
    event_files,
    remote_files,
    write_runs,
)
from .png import column_colours, count_near
from .procs import alive, cmdline, family, frozen, listening_tcp_inodes, ours, pids, socket_inodes, wait_gone
from .test_experience import CHROMIUM

READY = re.compile(r"ready at (http://\S+)")
#: The class's view: the tb.merge mapping's hosts, in its order.
VIEW = "merged view of " + ", ".join(MAPPED)
HOSTS = ",".join(MAPPED)
#: Polls that wait on the sync: sync_every (1 s, or 5) plus TensorBoard's
#: 5 s reload, with room; the issue's target for new steps is 15 s.
SYNC_DEADLINE = 15.0
#: The runs of each host (populate() in merge_fixtures.py).
RUNS = {
    "sandbox": {"baseline", "wider", SPACE_RUN, NEWLINE_RUN, "rewrite", LINKED_RUN},
    "host2": {"deeper", "baseline"},
    "far": {"far-run"},
    "bare": {"bare-run", SPACE_RUN, NEWLINE_RUN, "rewrite", LINKED_RUN},
}


# ------------------------------------------------------------------ helpers


def url_of(result: subprocess.CompletedProcess) -> str:
    """The one URL a start printed (on its last line)."""
    assert result.returncode in (0, 1), result.stdout + result.stderr
    found = READY.findall(result.stdout)
    assert len(found) == 1, result.stdout
    assert READY.search(result.stdout.strip().splitlines()[-1]), result.stdout
    return found[0]


def line_of(text: str, prefix: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (prefix, text)
    return lines[0]


def mirror_of(result: subprocess.CompletedProcess, label: str) -> Path:
    """The mirror a start says it uses (``LABEL: mirror PATH``)."""
    line = line_of(result.stdout, f"{label}: mirror ")
    return Path(line[len(f"{label}: mirror "):].split("  [")[0].strip())


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def runs(url: str) -> set[str]:
    return set(http_json(url + "data/runs"))


def steps(url: str, run: str, tag: str = "loss") -> list[int]:
    """The steps of ``tag`` in ``run`` the view serves ([] if none yet)."""
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    status, body = fetch(f"{url}data/plugin/scalars/scalars?{query}")
    if status != 200:
        return []
    return [int(point[1]) for point in json.loads(body)]


def wait_until(predicate, timeout: float, what: str, every: float = 0.2):
    """Poll ``predicate`` until it returns something true; fail saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        time.sleep(every)


def pids_of(line: str) -> tuple[int, int]:
    """TensorBoard's and the syncer's pids from a check line."""
    found = re.search(r" tensorboard=(\d+) syncer=(\d+);", line)
    assert found, line
    return int(found.group(1)), int(found.group(2))


def exposed_ports(pid: int) -> list[str]:
    """Listening TCP sockets (this machine's network namespace) held by ``pid`` or its children."""
    listening = listening_tcp_inodes()
    return [f"{p}:{cmdline(p)[:80]}" for p in family(pid) if socket_inodes(p) & listening]


def port_owners(port: int) -> tuple[list[str], list[int]]:
    """Who listens on TCP ``port`` here: the addresses, and the pids holding the socket."""
    addresses, inodes = [], set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hexport = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hexport, 16) == port:
                addresses.append(address)
                inodes.add(fields[9])
    return addresses, [pid for pid in pids() if socket_inodes(pid) & inodes]


def masters_of(mirror: Path) -> list[int]:
    """A merged view's ssh masters: ``-S .../tb-<hash>-m<8 of its id>``."""
    sid = mirror.name[len("merge-"):]
    return [pid for pid, cmd in ours(f"-m{sid[:8]}") if cmd.startswith("ssh ") and " -M" in f" {cmd}"]


def mirrored(mirror: Path) -> dict[str, Path]:
    return {p.relative_to(mirror).as_posix(): p for p in mirror.rglob("*") if p.is_file()}


def identical(logdir: Path, mirror: Path) -> bool:
    """The mirror holds exactly the event files of the logdir, byte for byte."""
    want = remote_files(logdir)
    have = {rel: path for rel, path in mirrored(mirror).items() if not rel.endswith(".tbr-part")}
    return set(want) == set(have) and all(want[rel].read_bytes() == have[rel].read_bytes() for rel in want)


def nothing_left(rig) -> None:
    left = rig.wait_nothing_left()
    assert left == [], f"still running: {left}"
    # No connection of ours to any host (nor to the jump host) is left.
    for alias in (*rig.hosts.boxes, "strict"):
        wait_until(lambda: rig.sshd_sessions(alias) == [], 10, f"{alias}'s sshd still serves a connection of ours")
    assert list(rig.control_dir.glob("merge-*.json")) == []


# ------------------------------------------------------------------ one view, many tests


@pytest.fixture(scope="class")
def view(class_merge_rig):
    """The class's merged view: ``invoke tb.start --merge`` with no hosts:
    the tb.merge mapping's (sandbox, host2, far, bare)."""
    rig = class_merge_rig
    before = rig.hosts.bastion.accepted_logins()
    result = rig.invoke("tb.start", "--merge")
    assert result.returncode == 0, result.stdout + result.stderr
    return result, url_of(result), mirror_of(result, VIEW), rig.hosts.bastion.accepted_logins() - before


class TestOneViewOverFourHosts:
    """A merged view over sandbox, host2 (both with a run called baseline),
    far (behind the jump host) and bare (no rsync there): a test per
    step, in this order."""

    @pytest.fixture
    def rig(self, class_merge_rig):
        return class_merge_rig

    def check(self, rig) -> subprocess.CompletedProcess:
        return rig.cli(HOSTS, "check", "--merge")

    def test_start_prints_one_url_and_a_first_sync_per_host(self, rig, view):
        result, url, mirror, bastion_logins = view
        last = result.stdout.strip().splitlines()[-1]
        assert re.fullmatch(rf"{re.escape(VIEW)}: TensorBoard ready at {re.escape(url)}(  \[\d+\.\d\ds\])?", last), last
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/[\w-]{20,}/", url), url
        for alias in MAPPED:
            method = "stream" if alias == "bare" else "rsync"
            line = line_of(result.stdout, f"{alias}: first sync: ")
            assert re.search(rf"^{alias}: first sync: \d+ files \([\d.]+ [KM]?B moved\) via {method}", line), line
        assert mirror.parent == rig.mirror_dir and mirror.is_dir()
        assert sorted(p.name for p in mirror.iterdir()) == sorted(MAPPED)
        # far was reached through the jump host: one login there.
        assert bastion_logins == 1

    def test_runs_are_named_host_slash_run_for_every_host(self, rig, view):
        _, url, _, _ = view
        served = runs(url)
        want = {f"{alias}/{run}" for alias, names in RUNS.items() for run in names}
        assert served == want

    def test_two_hosts_baseline_runs_stay_apart(self, rig, view):
        _, url, _, _ = view
        # sandbox's baseline has 20 steps, host2's (another curve) 30.
        assert steps(url, "sandbox/baseline") == list(range(20))
        assert steps(url, "host2/baseline") == list(range(30))

    def test_without_the_token_the_port_refuses(self, rig, view):
        _, url, _, _ = view
        port = urllib.parse.urlsplit(url).port
        for path in ("data/runs", "", "data/plugin/scalars/scalars?run=host2/baseline&tag=loss"):
            status, body = fetch(f"http://127.0.0.1:{port}/{path}")
            assert status == 403, (path, status, body[:200])
        assert fetch(url + "data/runs")[0] == 200

    def test_tensorboard_here_listens_on_no_tcp_port_only_the_syncer_holds_ours(self, rig, view):
        _, url, _, _ = view
        check = self.check(rig)
        assert check.returncode == 0, check.stdout + check.stderr
        board, syncer = pids_of(check.stdout)
        assert alive(board) and alive(syncer) and syncer not in family(board)
        assert exposed_ports(board) == []
        # Its fast loader's data server, if it has one, is in another network namespace.
        for server in [p for p in family(board) if "tensorboard_data_server" in cmdline(p)]:
            assert os.readlink(f"/proc/{server}/ns/net") != os.readlink("/proc/self/ns/net")
        addresses, owners = port_owners(urllib.parse.urlsplit(url).port)
        assert addresses == ["0100007F"] and owners == [syncer], (addresses, owners)
        assert ".syncer " in cmdline(syncer), cmdline(syncer)

    def test_checkpoints_and_other_files_never_reach_the_mirror(self, rig, view):
        _, _, mirror, _ = view
        # They are there on the hosts, beside the event files...
        assert (rig.logdir("sandbox") / "baseline" / "model.ckpt-1.data-00000-of-00001").stat().st_size == 20 << 20
        assert (rig.logdir("bare") / "bare-run" / "checkpoint").exists()
        assert (rig.logdir("host2") / "baseline" / "notes.txt").exists()
        # ...and only event files are here, on the rsync hosts and the stream one.
        names = {path.name for path in mirrored(mirror).values()}
        assert names and all(name.startswith("events.out.tfevents.") for name in names), names

    def test_odd_run_names_and_a_symlinked_run_appear(self, rig, view):
        _, url, _, _ = view
        for alias in ("sandbox", "bare"):  # rsync and the stream
            for run in (SPACE_RUN, NEWLINE_RUN, LINKED_RUN):
                assert steps(url, f"{alias}/{run}") == list(range(20)), (alias, run)

    def test_the_mirror_is_byte_identical_to_every_hosts_logdir(self, rig, view):
        _, _, mirror, _ = view
        for alias in MAPPED:
            assert identical(rig.logdir(alias), mirror / alias), alias

    def test_a_host_without_rsync_is_synced_by_our_stream(self, rig, view):
        result, _, mirror, _ = view
        assert " via stream" in line_of(result.stdout, "bare: first sync: ")
        check = self.check(rig)
        assert check.returncode == 0, check.stdout
        assert re.search(r"; bare: synced \d+s ago via stream(,[^;]*)?(;|$)", check.stdout), check.stdout
        assert re.search(r"; host2: synced \d+s ago via rsync(;|$)", check.stdout), check.stdout
        (row,) = json.loads(rig.invoke("tb.list", "--json").stdout)
        assert {alias: seen["method"] for alias, seen in row["hosts"].items()} == {
            "sandbox": "rsync", "host2": "rsync", "far": "rsync", "bare": "stream",
        }
        assert identical(rig.logdir("bare"), mirror / "bare")

    def test_a_file_the_host_cannot_give_is_named_and_the_rest_is_synced(self, rig, view):
        # A dangling event-file symlink (rsync's code 23, the stream's skip):
        # the host stays ok, check names the file, list counts it.
        _, url, mirror, _ = view
        check = self.check(rig)
        assert check.returncode == 0, check.stdout
        for alias, method in (("sandbox", "rsync"), ("bare", "stream")):
            said = f"; {alias}: synced "
            part = check.stdout.strip()[check.stdout.index(said):].split(";")[1]
            assert re.fullmatch(rf" {alias}: synced \d+s ago via {method}, but not {re.escape(PRUNED)}: a symlink to nothing", part), check.stdout
            assert not (mirror / alias / PRUNED).exists()
        assert re.search(r"; host2: synced \d+s ago via rsync(;|$)", check.stdout), check.stdout
        (row,) = json.loads(rig.invoke("tb.list", "--json").stdout)
        assert row["hosts"]["sandbox"]["skipped"] == row["hosts"]["bare"]["skipped"] == [f"{PRUNED}: a symlink to nothing"]
        assert row["hosts"]["host2"]["skipped"] == []
        assert not [run for run in runs(url) if run.endswith("/pruned")]

    def test_an_event_file_truncated_then_rewritten_is_mirrored_exactly(self, rig, view):
        _, _, mirror, _ = view
        for alias in ("sandbox", "bare"):
            (remote,) = event_files(rig.logdir(alias) / "rewrite")
            local = mirror / alias / "rewrite" / remote.name
            original = remote.read_bytes()
            assert local.read_bytes() == original
            # Shorter...
            with open(remote, "r+b") as handle:
                handle.truncate(len(original) // 2)
            wait_until(lambda: local.read_bytes() == remote.read_bytes(), SYNC_DEADLINE, f"{alias}: the truncated file")
            assert local.stat().st_size == len(original) // 2
            # ...then other content, longer than at first.
            scratch = write_runs(Path(tempfile.mkdtemp(dir=rig.root)), ("other",), steps=60)
            (other,) = event_files(scratch / "other")
            remote.write_bytes(other.read_bytes())
            assert remote.stat().st_size > len(original)
            wait_until(lambda: local.read_bytes() == remote.read_bytes(), SYNC_DEADLINE, f"{alias}: the rewritten file")

    def test_new_steps_written_on_a_host_appear_in_the_view(self, rig, view):
        _, url, _, _ = view
        for alias, run in (("sandbox", "baseline"), ("far", "far-run"), ("bare", "bare-run")):
            append_steps(rig.logdir(alias) / run, 20, 39)
        for alias, run in (("sandbox", "baseline"), ("far", "far-run"), ("bare", "bare-run")):
            wait_until(lambda: steps(url, f"{alias}/{run}")[-1:] == [39], SYNC_DEADLINE, f"step 39 of {alias}/{run}")
        assert steps(url, "host2/baseline") == list(range(30))

    def test_list_shows_one_row_with_each_hosts_health_and_age(self, rig, view):
        _, url, mirror, _ = view
        table = rig.invoke("tb.list")
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["HOST", "URL", "PID", "LOGDIR", "UPTIME", "HEALTH"] and len(lines) == 2, table.stdout
        row = lines[1]
        assert row.startswith(f"merge: {HOSTS} ") and url in row, row
        health = row.split(str(mirror), 1)[1].split(None, 1)[1]
        assert re.fullmatch(
            r"ok: sandbox=ok \(\d+s ago, rsync, 1 not synced\) host2=ok \(\d+s ago, rsync\) far=ok \(\d+s ago, rsync\) bare=ok \(\d+s ago, stream, 1 not synced\)",
            health.strip(),
        ), health
        listed = rig.invoke("tb.list", "--json")
        (data,) = json.loads(listed.stdout)
        assert data["kind"] == "merge" and data["url"] == url and data["health"] == "ok"
        assert data["mirror"] == str(mirror) and data["host"] == f"merge: {HOSTS}"
        assert list(data["hosts"]) == list(MAPPED)
        for alias, seen in data["hosts"].items():
            assert seen["health"] == "ok" and seen["error"] == "", (alias, seen)
            assert isinstance(seen["age"], (int, float)) and 0 <= seen["age"] < 30, (alias, seen)

    def test_a_real_browser_shows_two_hosts_runs_in_one_chart(self, rig, view, tmp_path):
        assert CHROMIUM, "CI must install chromium"
        _, url, _, _ = view
        # The Scalars dashboard, the runs called baseline (one per host), the loss chart
        # first. (Time Series draws an empty card in this headless Chromium: no WebGL,
        # and its forceSVG mode left the card blank in 3 of 3 tries here.)
        page = url + "#scalars&regexInput=baseline&tagFilter=loss"
        flags = chromium_flags(tmp_path / "chromium")
        # The page's app lists both (Time Series' run list is in the plain DOM; the
        # Scalars dashboard's is in shadow roots, which --dump-dom leaves out).
        listing = url + "?runFilter=baseline#timeseries"
        dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", listing], capture_output=True, text=True, timeout=120)
        assert "sandbox/baseline" in dom.stdout and "host2/baseline" in dom.stdout, dom.stdout[-2000:]
        shot = tmp_path / "merged-view.png"
        subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", page], capture_output=True, timeout=120)
        assert shot.exists(), "chromium wrote no screenshot"
        # Drawn, not just listed: the sidebar's run checkboxes give each run's colour
        # (two runs match the filter: two colours), and the first chart has a line of
        # each (a blank chart has grey only). Layout of the 1280x900 window.
        colours = column_colours(shot, 42, 400, 700)
        assert len(colours) == 2, colours
        drawn = {colour: count_near(shot, colour, (385, 225, 690, 415)) for colour in colours}
        assert all(n >= 50 for n in drawn.values()), drawn
        # The README's picture is this test's screenshot.
        shutil.copyfile(shot, REPO / "docs" / "merged-view.png")

    def test_a_second_view_over_overlapping_hosts_is_its_own_and_exits_alone(self, rig, view):
        _, url, mirror, _ = view
        later = rig.root / "logs-host3-later"  # host3's logdir: not there yet
        widened = "events.out.tfevents.*,plugins/**,projector_config.pbtxt,*.txt"
        second = rig.cli("host2,host3", "start", "--merge", settings={"LOGDIR": str(later), "MIRROR_PATTERNS": widened})
        assert second.returncode == 0, second.stdout + second.stderr
        url2, mirror2 = url_of(second), mirror_of(second, "merged view of host2, host3")
        assert f"host3: {later} does not exist there (yet): its runs appear when it does" in second.stdout
        assert urllib.parse.urlsplit(url2).port != urllib.parse.urlsplit(url).port and mirror2 != mirror
        # Both serve, each its own runs.
        assert runs(url2) == {"host2/baseline", "host2/deeper"}
        assert "sandbox/baseline" in runs(url)
        # The widened patterns copied the txt file into this view's mirror (not the other's).
        notes = rig.logdir("host2") / "baseline" / "notes.txt"
        assert (mirror2 / "host2" / "baseline" / "notes.txt").read_bytes() == notes.read_bytes()
        assert not (mirror / "host2" / "baseline" / "notes.txt").exists()
        assert not list(mirror2.rglob("*ckpt*")) and not list(mirror2.rglob("checkpoint"))
        # host3's logdir is missing: check says so; when it appears, its runs do.
        # (Until the syncer's first round, check says "not synced yet".)
        waiting = f"; host3: no logdir {later} there yet (checked "
        check2 = wait_until(
            lambda: (lambda c: c if waiting in c.stdout else None)(rig.cli("host2,host3", "check", "--merge")),
            SYNC_DEADLINE, "check to say host3's logdir is missing", every=0.5,
        )
        assert check2.returncode == 0, check2.stdout
        write_runs(later, ("late-run",), steps=20)
        wait_until(lambda: "host3/late-run" in runs(url2), SYNC_DEADLINE, "host3's run after its logdir appeared")
        check2 = rig.cli("host2,host3", "check", "--merge")
        assert check2.returncode == 0 and re.search(r"; host3: synced \d+s ago via rsync$", check2.stdout.strip()), check2.stdout
        # Its own masters: two more.
        board2, syncer2 = pids_of(check2.stdout)
        masters2 = masters_of(mirror2)
        assert len(masters2) == 2 and not set(masters2) & set(masters_of(mirror)), (masters2, masters_of(mirror))
        # Exiting it leaves the first serving and syncing host2.
        stop = rig.cli("host2,host3", "exit", "--merge")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert f"the mirror stays in {mirror2}" in stop.stdout
        assert all(wait_gone(pid) for pid in (board2, syncer2, *masters2))
        assert ours(str(mirror2)) == []
        assert len(masters_of(mirror)) == 4
        append_steps(rig.logdir("host2") / "deeper", 30, 34)
        wait_until(lambda: steps(url, "host2/deeper")[-1:] == [34], SYNC_DEADLINE, "host2's new steps in the first view")
        assert self.check(rig).returncode == 0

    def test_a_host_gone_away_is_stale_its_runs_still_served_and_it_comes_back(self, rig, view):
        _, url, mirror, _ = view
        box = rig.hosts.box("far")
        # far goes away: its sshd and the connections it serves end.
        serving = rig.sshd_sessions("far")
        box.stop()
        for pid in serving:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        try:
            check = wait_until(
                lambda: (lambda c: c if "far: stale" in c.stdout else None)(self.check(rig)), 30, "far marked stale", every=0.5
            )
            assert check.returncode == 1, check.stdout
            line = check.stdout.strip()
            assert line.startswith(f"{VIEW}: stale {url} (serves what was synced) tensorboard="), line
            far = re.search(r"; far: stale, last synced (\d+)s ago: (.+?)(;|$)", line)
            assert far and far.group(2).strip(), line
            assert re.search(r"; sandbox: synced \d+s ago via rsync[,;]", line), line
            (row,) = [r for r in json.loads(rig.invoke("tb.list", "--json").stdout) if r["url"] == url]
            assert row["health"] == "stale" and row["hosts"]["far"]["health"] == "stale", row
            assert row["hosts"]["far"]["age"] > 0 and row["hosts"]["far"]["error"]
            assert row["hosts"]["host2"]["health"] == "ok"
            # Readable offline: far's runs are still served, from the mirror.
            assert "far/far-run" in runs(url)
            assert steps(url, "far/far-run") == list(range(40))
        finally:
            box.start()
        # Back: the syncer reopens far's master (through the jump host) by itself.
        wait_until(lambda: self.check(rig).returncode == 0, 30, "far synced again", every=0.5)
        assert re.search(r"; far: synced \d+s ago via rsync", self.check(rig).stdout)
        append_steps(rig.logdir("far") / "far-run", 40, 44)
        wait_until(lambda: steps(url, "far/far-run")[-1:] == [44], SYNC_DEADLINE, "far's new steps after it came back")

    def test_exit_stops_everything_and_keeps_the_mirror(self, rig, view):
        _, url, mirror, _ = view
        check = self.check(rig)
        board, syncer = pids_of(check.stdout)
        masters = masters_of(mirror)
        assert len(masters) == 4
        log = next(rig.control_dir.glob("merge-*.watch.log")).read_text()
        stop = rig.fab("tb.exit", "--verbose")  # no host: everything
        assert stop.returncode == 0, stop.stdout + stop.stderr
        said = f"{stop.stdout}{stop.stderr}\nthe syncer's log:\n{log[-3000:]}"
        assert f"{VIEW}: stopped the syncer (pid {syncer})" in said, said
        assert f"stopped TensorBoard here (pid " in said, said
        assert f"closed the tunnels to {', '.join(MAPPED)}" in said, said
        assert f"the mirror stays in {mirror} (tb.exit --remove-mirror removes it)" in said, said
        assert all(wait_gone(pid) for pid in (board, syncer, *masters))
        nothing_left(rig)
        assert not _port_open(url)
        for alias in MAPPED:
            assert identical(rig.logdir(alias), mirror / alias), alias


def _port_open(url: str) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", urllib.parse.urlsplit(url).port)) == 0


# ------------------------------------------------------------------ views of their own


def test_an_unknown_host_and_one_that_refuses_us_are_named_and_the_others_start(merge_rig):
    rig = merge_rig
    result = rig.fab("tb.start", "--hosts", "sandbox,no-such-host.invalid,refuser,host3", "--merge")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    url = url_of(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr
    unknown = [line for line in lines if line.removeprefix("tensorboard-remote: ").startswith("no-such-host.invalid: ")]
    refused = [line for line in lines if line.removeprefix("tensorboard-remote: ").startswith("refuser: ")]
    assert len(unknown) == 1 and "Could not resolve hostname no-such-host.invalid" in unknown[0], lines
    assert len(refused) == 1 and "Permission denied" in refused[0], lines
    assert lines[-1] == f"the merged view of sandbox, host3 started without no-such-host.invalid, refuser: {url}", lines
    assert runs(url) == {"sandbox/baseline", "sandbox/wider", "host3/lr-0.1", "host3/lr-0.01"}
    check = rig.fab("tb.check", "--hosts", "sandbox,host3", "--merge")
    assert check.returncode == 0 and check.stdout.startswith("merged view of sandbox, host3: ok "), check.stdout
    stop = rig.fab("tb.exit", "--hosts", "sandbox,host3", "--merge")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    nothing_left(rig)


#: The process that sends a host's files, under its sshd: rsync's sender
#: (its command line has no path: -s sends them in the protocol), or on a
#: host without rsync our stream's remote Python (``python3 -``, by
#: whatever path bare's PATH gives it).
SENDERS = {"host3": re.compile(r"rsync --server --sender "), "bare": re.compile(r"(\S*/)?python3? - ")}


@pytest.mark.parametrize("host", ["host3", "bare"], ids=["rsync", "stream"])
def test_exit_during_a_sync_returns_leaves_nothing_and_keeps_the_mirror(merge_rig, host):
    rig = merge_rig
    hosts, label = f"host2,{host}", f"merged view of host2, {host}"
    start = rig.invoke("tb.start", "--hosts", hosts, "--merge")
    assert start.returncode == 0, start.stdout + start.stderr
    mirror = mirror_of(start, label)
    # A large event file (1 GB, sparse: cheap to make) appears on the host at
    # once (renamed into place): the next round copies it.
    run = next(path for path in sorted(rig.logdir(host).iterdir()) if path.is_dir() and not path.is_symlink())
    big = run / "events.out.tfevents.1.big"
    making = big.with_name("incoming")
    with open(making, "wb") as handle:
        handle.truncate(1 << 30)
    making.rename(big)
    # (rsync writes in place; the stream into a part file, renamed when whole)
    copy = mirror / host / run.name / (big.name + (".tbr-part" if host == "bare" else ""))

    def sender() -> list[int]:
        return [pid for pid in rig.sshd_sessions(host) if SENDERS[host].match(cmdline(pid) + " ")]

    # While it is being copied, hold that round in flight (the host's sender
    # stops sending), and exit. The stream's reader then sees its stream cut
    # short: that is the exit, not a lost master (found in CI: the syncer took
    # it for one and cleared the live master's socket, and tb.exit left that
    # master running).
    wait_until(lambda: copy.exists() and copy.stat().st_size > 0, 30, "the large file's copy to begin", every=0.002)
    senders = wait_until(sender, 5, f"{host}'s sender sending the large file", every=0.002)
    with frozen(senders):
        assert not copy.exists() or copy.stat().st_size < big.stat().st_size, "the copy was complete before the exit"
        stop = rig.invoke("tb.exit", "--hosts", hosts, "--merge")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert f"closed the tunnels to host2, {host};" in stop.stdout, stop.stdout
        assert f"the mirror stays in {mirror}" in stop.stdout
        assert [pid for pid, cmd in ours(str(mirror)) if "rsync" in cmd] == []
    nothing_left(rig)
    assert (mirror / "host2" / "baseline").is_dir() and identical(rig.logdir("host2"), mirror / "host2")
    # A later start over the same hosts uses the same mirror; exit --remove-mirror removes it.
    big.unlink()
    again = rig.invoke("tb.start", "--hosts", hosts, "--merge")
    assert again.returncode == 0, again.stdout + again.stderr
    assert mirror_of(again, label) == mirror
    stop = rig.invoke("tb.exit", "--hosts", hosts, "--merge", "--remove-mirror")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"removed the mirror {mirror}" in stop.stdout
    assert not mirror.exists()
    nothing_left(rig)


def test_run_on_local_serves_one_hosts_runs_by_their_names_with_nothing_on_the_host(merge_rig):
    rig = merge_rig
    # One host and --merge (no mapping): not a silent view of nothing; it says what fits.
    one = rig.cli("host2", "start", "--merge")
    assert one.returncode == 1 and one.stdout == "", one.stdout + one.stderr
    assert one.stderr.strip().endswith("for one host's runs served from a mirror here, use --run-on local"), one.stderr
    assert len(one.stderr.strip().splitlines()) == 1
    # The default sync_every (5 s) here.
    start = rig.cli("host2", "start", "--run-on", "local", settings={"SYNC_EVERY": None})
    assert start.returncode == 0, start.stdout + start.stderr
    url = url_of(start)
    assert f"host2 (TensorBoard here): TensorBoard ready at {url}" in start.stdout
    assert re.search(r"syncer pid \d+ holds 127\.0\.0\.1:\d+ and syncs every 5s", start.stdout), start.stdout
    assert runs(url) == {"baseline", "deeper"}
    # No TensorBoard on the host: nothing runs with its logdir but a sync round's rsync.
    remote = [cmd for _, cmd in ours(str(rig.logdir("host2"))) if "rsync" not in cmd]
    assert remote == [] and not (rig.root / "remote").exists(), remote
    # New steps appear within the 15 s.
    append_steps(rig.logdir("host2") / "baseline", 30, 44)
    wait_until(lambda: steps(url, "baseline")[-1:] == [44], SYNC_DEADLINE, "host2's new steps with sync_every 5")
    check = rig.invoke("tb.check", "--host", "host2")
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith(f"host2 (TensorBoard here): ok {url} tensorboard="), check.stdout
    assert re.search(r"; host2: synced \d+s ago via rsync$", check.stdout.strip()), check.stdout
    # check/exit take --run-on as start did: local is this view, remote none here.
    local = rig.cli("host2", "check", "--run-on", "local")
    assert local.returncode == 0 and local.stdout.startswith(f"host2 (TensorBoard here): ok {url} "), local.stdout + local.stderr
    remote = rig.cli("host2", "check", "--run-on", "remote")
    assert remote.returncode == 1 and remote.stdout == "", remote.stdout
    assert remote.stderr.strip() == "tensorboard-remote: no --run-on remote session of host2 is recorded here (tb.list shows what is)", remote.stderr
    bad = rig.invoke("tb.exit", "--host", "host2", "--run-on", "here")
    assert bad.returncode == 1 and bad.stderr.strip() == "tensorboard-remote: --run-on must be one of remote, local, got 'here'", bad.stderr
    stop = rig.invoke("tb.exit", "--host", "host2", "--run-on", "local")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped TensorBoard here" in stop.stdout
    nothing_left(rig)
