"""Session.start, check and stop against a fake shell: every ssh call a
decision makes is declared, and what the session says and records is
checked. (The same paths against a real sshd: tests/test_lifecycle.py.)"""

import dataclasses
import io
import re

import pytest

from tensorboard_remote import ports, record
from tensorboard_remote.errors import TbError
from tensorboard_remote.health import Probe, Status
from tensorboard_remote.host import Host
from tensorboard_remote.progress import Reporter
from tensorboard_remote.record import JobRef, Record
from tensorboard_remote.session import Session, requested
from tensorboard_remote.settings import settings as resolve_settings
from tensorboard_remote.shell import Outcome
from tensorboard_remote.slurm import SrunStep, placement_of
from tensorboard_remote.sshargv import Target
from tensorboard_remote.state import Paths

from .fakes import FakeShell, hangs, reply

START = r"sh -s'\n.*setsid -f"
STATUS = r"sh -s'\n.*echo \"tbr dead"
STOP = r"sh -s'\n.*TBR_KILL_EOF"
LOG = r"sh -s'\n.*tail -n"


class World:
    """A host with a fake ssh, our files in a temporary directory."""

    def __init__(self, tmp_path, run=None, *, master_up=False, probes=("ok",)):
        self.paths = Paths(tmp_path / "tb-abc")
        self.settings = resolve_settings({}, control_dir=str(tmp_path), local_port=6100, remote_dir="/r", start_timeout=2, reconnect="no")
        if master_up:
            self.paths.socket.write_text("")
        self.probes = list(probes)
        answers = {
            r"-O check": self._check,
            r"-O exit": self._exit,
            r" -M ": self._open,
            r"-O forward": Outcome(0),
            r"-O cancel": Outcome(0),
            **(run or {}),
        }
        self.shell = FakeShell(answers)
        self.host = Host(self.shell, Target("h", batch=True), self.paths)
        self.out = io.StringIO()
        self.report = Reporter(stream=self.out)
        self.session = Session(self.host, probe=self._probe)

    def _check(self, argv, stdin):
        if self.paths.socket.exists():
            return Outcome(0, "", "Master running (pid=42)\n")
        return Outcome(255, "", "Control socket connect: No such file or directory\n")

    def _exit(self, argv, stdin):
        self.paths.socket.unlink(missing_ok=True)
        return Outcome(0, "", "Exit request sent.\n")

    def _open(self, argv, stdin):
        self.paths.socket.write_text("")
        return Outcome(0)

    def _probe(self, url, timeout=3.0, via=None):
        answer = self.probes.pop(0) if len(self.probes) > 1 else self.probes[0]
        return Probe(True, "ok") if answer == "ok" else Probe(False, answer)

    def record(self, **changes) -> Record:
        values = dict(
            sid="0123456789abcdef", target=self.host.target, serve="unix", logdir="./logdir", remote_dir="/r",
            socket=str(self.paths.socket), started_at=0.0, requested=requested(self.settings),
            token="tok3n-abcdefgh", local_port=6100, master_pid=42, remote_pid=22,
            forward="127.0.0.1:6100:/r/0123456789abcdef/tb.sock", endpoint="unix /r/0123456789abcdef/tb.sock",
            isolation="netns",
        )
        values.update(changes)
        rec = Record(**values)
        record.save(self.paths, rec)
        return rec

    def said(self) -> list[str]:
        return [re.sub(r"  \[[0-9.]+s\]$", "", line) for line in self.out.getvalue().splitlines()]

    def start(self):
        return self.session.start(self.settings, self.report)


@pytest.fixture(autouse=True)
def free_ports(monkeypatch):
    monkeypatch.setattr(ports, "CLAIMS", ports.Claims(is_free=lambda port: True))


STARTED = reply("tbr-info endpoint unix /r/0123456789abcdef/tb.sock", "tbr-info isolation netns", "tbr started 22")


def test_a_warm_start_reuses_tunnel_and_tensorboard_without_a_remote_command(tmp_path):
    world = World(tmp_path, master_up=True)
    world.record()
    started = world.start()
    assert started.reused and started.url == "http://127.0.0.1:6100/tok3n-abcdefgh/"
    assert world.shell.ran(r"sh -s") == [] and world.shell.ran(r" -M ") == []
    assert world.said() == [
        "h: reusing the tunnel (ssh master pid 42) and TensorBoard (pid 22)",
        "h: TensorBoard ready at http://127.0.0.1:6100/tok3n-abcdefgh/",
    ]


def test_a_cold_start_opens_one_master_starts_tensorboard_and_forwards_to_its_socket(tmp_path):
    world = World(tmp_path, {START: STARTED})
    started = world.start()
    rec = record.load(world.paths)
    assert not started.reused and rec == dataclasses.replace(started.record, target=rec.target)
    assert rec.target.host == "h" and not rec.target.batch  # batch is decided per call, never stored
    assert rec.remote_pid == 22 and rec.master_pid == 42 and rec.endpoint == "unix /r/0123456789abcdef/tb.sock"
    assert rec.forward == "127.0.0.1:6100:/r/0123456789abcdef/tb.sock" and rec.token and rec.url == started.url
    assert len(world.shell.ran(r" -M ")) == 1 and len(world.shell.ran(START)) == 1
    assert world.said() == [
        "h: opened the tunnel (ssh master pid 42)",
        "h: started TensorBoard (pid 22; Unix socket, data server in a private network namespace)",
        "h: forwarding 127.0.0.1:6100 here to socket /r/0123456789abcdef/tb.sock there",
        f"h: TensorBoard ready at {started.url}",
    ]


def test_a_stale_socket_is_cleared_and_only_the_tunnel_reopened(tmp_path):
    world = World(tmp_path, {START: reply("tbr-info endpoint unix /r/0123456789abcdef/tb.sock", "tbr running 22")})
    world.record()
    world.paths.socket.write_text("")  # left by a master that was killed
    checks = iter([Outcome(255, "", "Control socket connect: Connection refused\n")])
    world.shell.patterns.insert(0, (re.compile(r"-O check"), lambda argv, stdin: next(checks, None) or world._check(argv, stdin)))
    world.start()
    said = world.said()
    assert said[0] == "h: removing a stale control socket left by a master that died"
    assert said[1] == "h: reopened the tunnel (ssh master pid 42)"
    assert "h: TensorBoard pid 22 was still running" in said


def test_a_master_of_ours_without_a_record_is_replaced(tmp_path):
    world = World(tmp_path, {START: STARTED}, master_up=True)
    world.start()
    calls = world.shell.calls
    exit_at = next(i for i, call in enumerate(calls) if "-O exit" in call)
    open_at = next(i for i, call in enumerate(calls) if " -M " in call)
    assert exit_at < open_at


def test_a_hung_link_is_dropped_and_reopened_to_the_same_tensorboard(tmp_path):
    running = reply("tbr-info endpoint unix /r/0123456789abcdef/tb.sock", "tbr running 22")
    world = World(tmp_path, {START: running, r"-W 127\.0\.0\.1:1": hangs("ssh -W")}, master_up=True,
                  probes=("timed out", "ok"))
    world.record()
    world.start()
    said = world.said()
    assert said[0] == "h: the tunnel does not answer (a laptop that slept, or a dropped link?); reconnecting"
    assert "h: reopened the tunnel (ssh master pid 42)" in said and "h: TensorBoard pid 22 was still running" in said
    assert world.shell.ran("-O exit") and record.load(world.paths).remote_pid == 22


def test_a_slow_page_behind_a_live_link_keeps_the_tunnel_and_its_port(tmp_path):
    running = reply("tbr-info endpoint unix /r/0123456789abcdef/tb.sock", "tbr running 22")
    world = World(tmp_path, {START: running, r"-W 127\.0\.0\.1:1": Outcome(1, "", "channel 0: open failed\n")},
                  master_up=True, probes=("timed out", "ok"))
    world.record()
    world.start()
    assert world.shell.ran("-O exit") == [] and world.shell.ran(" -M ") == []
    assert world.shell.ran("-O forward") == []  # the forward was already right
    assert world.said()[0] == "h: reusing the tunnel (ssh master pid 42) and TensorBoard (pid 22)"


def test_a_tensorboard_that_dies_at_start_is_explained_and_leaves_nothing(tmp_path):
    log = reply("tensorboard-remote: tensorboard: command not found on PATH=/usr/bin")
    world = World(tmp_path, {START: reply("tbr died 5"), LOG: log, STOP: reply("tbr gone 5")})
    with pytest.raises(TbError) as error:
        world.start()
    assert str(error.value).startswith("'tensorboard' not found on h in a non-interactive shell: set tb.activate")
    assert "  | tensorboard-remote: tensorboard: command not found" in str(error.value)
    assert world.shell.ran(STOP) and world.shell.ran("-O exit")
    assert record.load(world.paths) is None and not world.paths.socket.exists()


def test_a_remote_port_in_use_is_named_and_nothing_is_left(tmp_path):
    world = World(tmp_path, {START: reply("tbr error port-in-use 6008"), STOP: reply("tbr none")})
    with pytest.raises(TbError, match=r"remote port 6008 on h is already in use by another program \(not ours; left alone\)"):
        world.start()
    assert record.load(world.paths) is None


def test_a_session_with_other_settings_is_refused_before_any_ssh(tmp_path):
    world = World(tmp_path)
    world.record(requested={**requested(world.settings), "logdir": "other"})
    with pytest.raises(TbError, match=r"h already has a tb session with logdir='other' \(this start asks for logdir='./logdir'\): run tb.exit"):
        world.start()
    assert world.shell.calls == []


@pytest.mark.parametrize("key, value", [("data_server", "shared"), ("tensorboard_cmd", "/opt/tb"), ("activate", "module load tb")])
def test_every_setting_that_shapes_the_remote_tensorboard_is_compared(tmp_path, key, value):
    world = World(tmp_path)
    world.record(requested={**requested(world.settings), key: value})
    with pytest.raises(TbError, match=f"already has a tb session with {key}={value!r}"):
        world.start()


def test_a_refusal_names_the_local_port_in_use_not_the_one_asked_for(tmp_path):
    world = World(tmp_path)
    world.record(requested={**requested(world.settings), "local_port": 6006}, local_port=6009)
    with pytest.raises(TbError, match=r"with local_port=6009 \(this start asks for local_port=6100\)"):
        world.start()


def test_a_record_of_the_previous_release_is_not_refused_for_settings_it_never_kept(tmp_path):
    world = World(tmp_path, master_up=True)
    old = {k: v for k, v in requested(world.settings).items() if k not in ("data_server", "tensorboard_cmd", "activate")}
    world.record(requested=old)
    assert world.start().reused


def test_check_without_anything_says_there_is_no_tunnel(tmp_path):
    health = World(tmp_path).session.check()
    assert health.status is Status.NO_TUNNEL and health.line == "h: no tunnel (start one with tb.start)"


def test_check_of_a_proven_page_asks_the_remote_nothing(tmp_path):
    world = World(tmp_path, master_up=True)
    world.record()
    health = world.session.check()
    assert health.ok and health.detail.startswith("ok http://127.0.0.1:6100/tok3n-abcdefgh/ ssh-master=42 tensorboard=22")
    assert world.shell.ran("sh -s") == []


def test_check_reports_a_dead_tensorboard_behind_a_live_tunnel(tmp_path):
    world = World(tmp_path, {STATUS: reply("tbr dead 22")}, master_up=True, probes=("HTTP 502",))
    world.record()
    health = world.session.check()
    assert health.status is Status.NOT_RUNNING
    assert health.detail == "TensorBoard is not running on h (pid 22 is gone); tb.start restarts it"


def test_check_reports_a_stale_socket_without_asking_the_remote(tmp_path):
    world = World(tmp_path, {r"-O check": Outcome(255)}, master_up=True)
    world.record()
    assert world.session.check().status is Status.STALE_SOCKET
    assert world.shell.ran("sh -s") == []


def test_check_says_when_the_remote_does_not_answer(tmp_path):
    world = World(tmp_path, {STATUS: Outcome(255, "", "Connection closed by remote host\n")}, master_up=True,
                  probes=("HTTP 404",))
    world.record(token=None, endpoint="tcp 6008", serve="tcp")
    health = world.session.check()
    assert health.status is Status.REMOTE_SILENT and "Connection closed by remote host" in health.detail


def test_exit_stops_our_tensorboard_closes_the_tunnel_and_forgets_the_session(tmp_path):
    world = World(tmp_path, {STOP: reply("tbr-info via pidfd", "tbr stopped 22")}, master_up=True)
    world.record()
    said = []
    world.session.stop(said.append)
    assert said == ["h: stopped TensorBoard (pid 22); closed the tunnel (ssh master pid 42)"]
    assert record.load(world.paths) is None and not world.paths.socket.exists()


def test_exit_that_cannot_reach_the_host_keeps_the_record(tmp_path):
    world = World(tmp_path, {STOP: Outcome(255, "", "ssh: connect to host h port 22: Connection refused\n")})
    world.record()
    said = []
    with pytest.raises(TbError, match="its record is kept, run tb.exit again when h is reachable"):
        world.session.stop(said.append)
    assert said == ["h: the tunnel is gone; connecting to stop TensorBoard"]
    assert record.load(world.paths) is not None


def test_exit_with_nothing_recorded_says_so(tmp_path):
    said = []
    World(tmp_path).session.stop(said.append)
    assert said == ["h: nothing to stop"]


def test_a_job_steps_session_speaks_of_its_step_and_never_of_the_job(tmp_path):
    world = World(tmp_path, {STOP: reply("tbr-info via scancel", "tbr stopped 31")}, master_up=True)
    job = JobRef(spec="train", id="12", node="cn1", addr="10.0.0.3", via="srun")
    rec = world.record(job=job, serve="tcp", endpoint="tcp 4444", forward="127.0.0.1:6100:10.0.0.3:4444")
    placement = placement_of(rec)
    assert isinstance(placement, SrunStep)
    assert placement.not_running("h", rec).startswith("TensorBoard's step in job 12 on cn1 has ended")
    said = []
    Session(world.host, placement, probe=world._probe).stop(said.append)
    assert said == [
        "h: ended TensorBoard's step in job 12 on cn1 (srun pid 31; the job itself is left running); "
        "closed the tunnel (ssh master pid 42)"
    ]


def test_a_missing_logdir_is_said_and_the_start_goes_on(tmp_path):
    started = reply("tbr-info endpoint unix /r/0123456789abcdef/tb.sock", "tbr-info isolation netns",
                    "tbr-info logdir-missing /home/alice", "tbr started 22")
    world = World(tmp_path, {START: started})
    world.start()
    assert "h: note: the logdir ./logdir does not exist there (yet): TensorBoard shows runs once training writes them" in world.said()
