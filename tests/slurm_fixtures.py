"""The Slurm tests' cluster and runner, shared by test_slurm.py
(``proctrack/cgroup``) and test_slurm_linuxproc.py (``proctrack/linuxproc``);
registered as a plugin in conftest.py.

The login node is a test sshd that lets in an ordinary user, ``tbr-alice``,
with ``SLURM_CONF`` set for her sessions (sshd's SetEnv). Her job runs on
node ``cn1`` at 127.0.0.2; TensorBoard is the cluster's own (a venv of
Debian's python3 that she can read), reached through ``activate``. In ssh
mode a second sshd on 127.0.0.2 plays the node's sshd.

The ``slurm`` fixture is per test module: a module's ``PROCTRACK`` says how
slurmd tracks a step's processes (``cgroup`` if it says nothing).
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tensorboard_remote.sandbox import Sandbox, write_sample_logdir

from . import procs
from .conftest import Runner, http_json
from .procs import alive, cmdline, wait_gone
from .slurmcluster import NODE, NODE_ADDR, SlurmCluster

#: One of TensorBoard's Roboto fonts, which its CSS asks for from the origin.
FONT = "/font-roboto/oMMgfZMQthOryQo9n22dcuvvDin1pK8aKteLpeZ5c0A.woff2"
ALICE = "tbr-alice"
BOB = "tbr-bob"
CLUSTER_VENV = Path("/tmp/tbr-cluster-venv")
TENSORBOARD_VERSION = "2.21.0"
DEFAULT_PROCTRACK = "cgroup"


def _user(name: str, password: str = "") -> pwd.struct_passwd:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["/usr/sbin/useradd", "-m", "-s", "/bin/bash", name], check=True)
    if password:
        subprocess.run(["/usr/sbin/chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    else:
        # No password, but not locked: sshd refuses locked accounts even for keys.
        subprocess.run(["/usr/sbin/usermod", "-p", "*", name], check=True)
    return pwd.getpwnam(name)


def _cluster_tensorboard() -> Path:
    """The cluster's TensorBoard: a venv of Debian's python3, readable by all
    (the test runner's own Python may live in root's 0700 home)."""
    python = CLUSTER_VENV / "bin" / "python"
    check = [str(python), "-c", f"import tensorboard; assert tensorboard.__version__ == {TENSORBOARD_VERSION!r}"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return CLUSTER_VENV
    shutil.rmtree(CLUSTER_VENV, ignore_errors=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(CLUSTER_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"tensorboard=={TENSORBOARD_VERSION}"],
        check=True,
    )
    subprocess.run(check, check=True)
    return CLUSTER_VENV


def _logdir_of(user: pwd.struct_passwd) -> Path:
    """A sample logdir in the user's home, theirs (remove its parent after)."""
    logdir = Path(user.pw_dir) / f"tbr-test-{os.getpid()}" / "logdir"
    write_sample_logdir(logdir)
    for path in (logdir.parent, *logdir.parent.rglob("*")):
        os.chown(path, user.pw_uid, user.pw_gid)
    return logdir


@pytest.fixture(scope="module")
def slurm(short_base, request):
    proctrack = getattr(request.module, "PROCTRACK", DEFAULT_PROCTRACK)
    nodes = getattr(request.module, "NODES", 1)
    cluster = SlurmCluster(Path("/tmp") / f"tbr-slurm-{os.getpid()}-{proctrack}-{nodes}", proctrack=proctrack, nodes=nodes).start()
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(slurm, base, short_base):
    """Users, the login node's sshd, the node's sshd, TensorBoard and a logdir."""
    alice = _user(ALICE)
    _user(BOB)
    venv = _cluster_tensorboard()
    # sshd reads authorized_keys as the user: not under pytest's 0700 base.
    login = Sandbox(slurm.dir / "sshd-login", alias="login", user=ALICE).create(
        extra_sshd=f"SetEnv SLURM_CONF={slurm.conf}"
    ).start()
    node = Sandbox(slurm.dir / "sshd-cn1", alias=NODE, user=ALICE, address=NODE_ADDR).create().start()
    config = base / "cluster_ssh_config"
    config.write_text(login.ssh_config.read_text() + node.ssh_config.read_text())
    home = Path(alice.pw_dir)
    logdir = _logdir_of(alice)
    yield {
        "login": login,
        "node": node,
        "config": config,
        "activate": f"source {venv}/bin/activate",
        "logdir": logdir,
        "home": home,
    }
    login.stop()
    node.stop()
    shutil.rmtree(logdir.parent, ignore_errors=True)


class Session(Runner):
    """One test's runner: fab against the login host, hermetic env."""

    host = "login"
    timeout = 120

    def __init__(self, cluster: dict, control_dir: Path, tmp_path: Path) -> None:
        self.cluster = cluster
        self.control_dir = control_dir
        self.home = tmp_path / "home"
        self.home.mkdir()

    @property
    def ssh_config(self) -> str:
        return str(self.cluster["config"])

    def settings(self) -> dict[str, str]:
        return {
            "CONTROL_DIR": str(self.control_dir),
            "LOGDIR": str(self.cluster["logdir"]),
            "ACTIVATE": self.cluster["activate"],
            "START_TIMEOUT": "40",
        }


@contextlib.contextmanager
def session_in(cluster: dict, slurm: SlurmCluster, control_dir: Path, root: Path):
    """A Session; on the way out every tb session is exited and nothing of
    ours may still run."""
    world = Session(cluster, control_dir, root)
    before = set(slurm.run(["squeue", "-h", "-o", "%i"]).stdout.split())
    yield world
    # Whatever a test left: exit every session, then nothing of ours runs.
    world.invoke("tb.exit")
    left = [pid for pid in slurm.ours() if "launch.py" in cmdline(pid)]
    for pid in left:
        os.kill(pid, 9)
    masters = [pid for pid in procs.pids() if str(control_dir) in cmdline(pid)]
    for pid in masters:
        os.kill(pid, 9)
    # The one-node cluster has room for two jobs at a time: the jobs this
    # test submitted go with it, even when it failed half-way.
    submitted = set(slurm.run(["squeue", "-h", "-o", "%i"]).stdout.split()) - before
    if submitted:
        slurm.run(["scancel", "--full", *sorted(submitted)])
    assert not left and not masters, f"left behind: {left + masters}"


@pytest.fixture
def session(cluster, short_dir, tmp_path, slurm):
    with session_in(cluster, slurm, short_dir, tmp_path) as world:
        yield world


def job_tensorboards(slurm: SlurmCluster) -> list[int]:
    """TensorBoards in jobs (not our relays beside them in srun mode)."""
    return [pid for pid in slurm.ours() if "launch.py" in cmdline(pid) and "--tbr-relay" not in cmdline(pid) and alive(pid)]


def job_relays(slurm: SlurmCluster) -> list[int]:
    return [pid for pid in slurm.ours() if "--tbr-relay" in cmdline(pid) and alive(pid)]


def running_job(slurm: SlurmCluster, user: str = ALICE, **kw) -> str:
    job = slurm.submit(user, **kw)
    slurm.wait_running(job)
    return job


def ready_url(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stdout.splitlines() if "ready at " in line]
    assert lines, result.stdout + result.stderr
    return lines[-1].split("ready at ")[1].split()[0]


def records(session: Session) -> list[dict]:
    """The session records in the runner's control directory."""
    return [json.loads(path.read_text()) for path in session.control_dir.glob("tb-*.json")]


@dataclass
class Started:
    """tb.start --job on a fresh job, and what ran and was seen right after it."""

    job: str
    logins_before: int  # the login node's accepted logins before tb.start
    result: subprocess.CompletedProcess
    tensorboards: list[int]
    environ: dict[str, str]  # of the TensorBoard, if there was one


@pytest.fixture(scope="class")
def cycle_session(cluster, slurm, short_base, tmp_path_factory):
    """A Session for a class of tests (JobCycle)."""
    control_dir = Path(tempfile.mkdtemp(dir=short_base))
    with session_in(cluster, slurm, control_dir, tmp_path_factory.mktemp("cycle")) as world:
        yield world


@pytest.fixture(scope="class")
def cycle_job(slurm):
    """A running job of alice's, cancelled after the class."""
    job = running_job(slurm)
    yield job
    slurm.cancel(job)


@pytest.fixture(scope="class")
def cycle_start(cycle_session, slurm, cluster, cycle_job) -> Started:
    logins = cluster["login"].accepted_logins()
    result = cycle_session.fab("tb.start", "--job", cycle_job)
    pids = job_tensorboards(slurm)
    return Started(cycle_job, logins, result, pids, procs.environ(pids[0]) if len(pids) == 1 else {})


@pytest.fixture(scope="class")
def cycle_stop(cycle_session, cycle_start) -> tuple[subprocess.CompletedProcess, list[bool]]:
    """tb.exit --job, and whether each TensorBoard seen after tb.start is then gone."""
    result = cycle_session.fab("tb.exit", "--job", cycle_start.job)
    return result, [wait_gone(pid) for pid in cycle_start.tensorboards]


class JobCycle:
    """tb.start --job, check, a warm start, logs, list and exit on one running
    job: a test per step, in this order; the job, tb.start and tb.exit
    (cycle_job, cycle_start, cycle_stop) run once for the class.
    test_slurm.py and test_slurm_linuxproc.py each run it under their
    module's proctrack."""

    @pytest.fixture
    def session(self, cycle_session):
        return cycle_session

    @pytest.fixture
    def start(self, cycle_start):
        return cycle_start

    @pytest.fixture
    def stop(self, cycle_stop):
        return cycle_stop

    def test_start_says_where_the_job_runs_and_serves_its_runs(self, start):
        assert start.result.returncode == 0, start.result.stdout + start.result.stderr
        url = ready_url(start.result)
        # The cluster's partition has no time limit: the job has none.
        assert f"job {start.job} runs on {NODE} ({NODE_ADDR}), no time limit (UNLIMITED)" in start.result.stdout
        runs = http_json(url + "data/runs")
        assert sorted(runs) == ["baseline", "wider"]

    def test_tensorboard_is_a_step_of_the_job_run_as_its_user(self, start):
        (pid,) = start.tensorboards
        env = start.environ
        assert env["SLURM_JOB_ID"] == start.job and "SLURM_STEP_ID" in env
        assert procs.uid(pid) == pwd.getpwnam(ALICE).pw_uid

    def test_the_fast_loader_runs_in_a_private_network_namespace_behind_our_relay(self, slurm, start):
        """No port of the data server is reachable by the node's other
        users: TensorBoard (and its data server) live in a namespace of
        their own; our relay, in the job's, is what the login node reaches."""
        assert "data server in a private network namespace" in start.result.stdout, start.result.stdout
        (pid,) = start.tensorboards
        (relay,) = job_relays(slurm)
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink(f"/proc/{relay}/ns/net")
        assert os.readlink(f"/proc/{relay}/ns/net") == os.readlink("/proc/self/ns/net")
        assert "--load_fast=false" not in cmdline(pid)

    def test_its_launcher_and_token_file_live_in_a_private_directory_on_the_node(self, start):
        private = Path(start.environ["TBR_DIR"])
        assert private.is_dir() and (private.stat().st_mode & 0o777) == 0o700
        assert (private / "token").stat().st_mode & 0o777 == 0o600

    def test_the_record_names_the_job_its_node_and_srun(self, session, start):
        recorded = records(session)
        assert len(recorded) == 1
        job = start.job
        seen = float(recorded[0]["job"].pop("seen"))
        assert recorded[0]["job"] == {"spec": job, "id": job, "node": NODE, "addr": NODE_ADDR, "via": "srun", "left": "UNLIMITED"}
        assert abs(seen - time.time()) < 600

    def test_tensorboard_listens_on_the_nodes_address_only_and_not_without_the_token(self, session, start):
        remote_port = int(records(session)[0]["endpoint"].split()[1])
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{remote_port}/", timeout=2)
        # Without the token, the node's port gives nothing away.
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://{NODE_ADDR}:{remote_port}/data/runs", timeout=2)

    def test_the_token_url_gives_the_cookie_that_opens_the_fonts_built_from_the_origin(self, start):
        url = ready_url(start.result)
        origin = "/".join(url.split("/")[:3])  # http://127.0.0.1:PORT
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        with opener.open(url, timeout=10) as page:
            assert page.url == origin + "/"
        with opener.open(origin + FONT, timeout=10) as font:
            assert font.status == 200 and font.read(4) == b"wOF2"

    def test_check_reports_the_job_ok_with_its_url(self, session, start):
        url = ready_url(start.result)
        checked = session.fab("tb.check", "--job", start.job)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"login (job {start.job}): ok {url}" in checked.stdout
        assert f"; job {start.job}: no time limit (UNLIMITED)" in checked.stdout and "warning" not in checked.stdout

    def test_a_second_start_reuses_the_tunnel_and_the_step(self, session, slurm, start):
        url = ready_url(start.result)
        (pid,) = start.tensorboards
        again = session.fab("tb.start", "--job", start.job)
        assert again.returncode == 0 and ready_url(again) == url, again.stdout + again.stderr
        assert "reusing the tunnel" in again.stdout and job_tensorboards(slurm) == [pid]

    def test_logs_show_tensorboard_serving_on_the_nodes_port(self, session, start):
        remote_port = int(records(session)[0]["endpoint"].split()[1])
        logs = session.fab("tb.logs", "--job", start.job)
        assert logs.returncode == 0 and f"serving on tcp {remote_port}" in logs.stdout, logs.stdout + logs.stderr

    def test_list_shows_the_job_healthy(self, session, start):
        listed = session.invoke("tb.list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert f"(job {start.job})" in listed.stdout and '"healthy": true' in listed.stdout
        (row,) = [r for r in json.loads(listed.stdout) if f"(job {start.job})" in r["host"]]
        assert row["job"] == {"id": start.job, "left": "no time limit (UNLIMITED)", "left_seconds": None, "unlimited": True, "warning": None}

    def test_exit_ends_tensorboards_step_and_leaves_the_job_running(self, slurm, start, stop):
        stopped, (gone,) = stop
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert f"ended TensorBoard's step in job {start.job} on {NODE} (srun pid " in stopped.stdout
        assert "the job itself is left running" in stopped.stdout
        assert gone
        assert slurm.job_state(start.job) == "RUNNING"

    def test_exit_removes_the_nodes_private_directory_and_the_record(self, session, start, stop):
        private = Path(start.environ["TBR_DIR"])
        assert not private.exists(), "the node's private directory (with the token) was left behind"
        assert not list(session.control_dir.glob("tb-*.json"))

    def test_start_check_and_exit_log_in_to_the_login_node_once(self, cluster, start, stop):
        assert cluster["login"].accepted_logins() - start.logins_before == 1
