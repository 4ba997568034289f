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

import json
import os
import pwd
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tensorboard_remote.sandbox import Sandbox, write_sample_logdir

from . import procs
from .conftest import Runner, http_json
from .procs import alive, cmdline, wait_gone
from .slurmcluster import NODE, NODE_ADDR, SlurmCluster

ALICE = "tbr-alice"
BOB = "tbr-bob"
CLUSTER_VENV = Path("/tmp/tbr-cluster-venv")
TENSORBOARD_VERSION = "2.21.0"
DEFAULT_PROCTRACK = "cgroup"


def _user(name: str) -> pwd.struct_passwd:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["/usr/sbin/useradd", "-m", "-s", "/bin/bash", name], check=True)
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


@pytest.fixture(scope="module")
def slurm(short_base, request):
    proctrack = getattr(request.module, "PROCTRACK", DEFAULT_PROCTRACK)
    cluster = SlurmCluster(Path("/tmp") / f"tbr-slurm-{os.getpid()}-{proctrack}", proctrack=proctrack).start()
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
    logdir = home / f"tbr-test-{os.getpid()}" / "logdir"
    write_sample_logdir(logdir)
    for path in (logdir.parent, *logdir.parent.rglob("*")):
        os.chown(path, alice.pw_uid, alice.pw_gid)
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


@pytest.fixture
def session(cluster, short_dir, tmp_path, slurm):
    world = Session(cluster, short_dir, tmp_path)
    yield world
    # Whatever a test left: exit every session, then nothing of ours runs.
    world.invoke("tb.exit")
    left = [pid for pid in slurm.ours() if "launch.py" in cmdline(pid)]
    for pid in left:
        os.kill(pid, 9)
    masters = [pid for pid in procs.pids() if str(short_dir) in cmdline(pid)]
    for pid in masters:
        os.kill(pid, 9)
    assert not left and not masters, f"left behind: {left + masters}"


def job_tensorboards(slurm: SlurmCluster) -> list[int]:
    return [pid for pid in slurm.ours() if "launch.py" in cmdline(pid) and alive(pid)]


def running_job(slurm: SlurmCluster, user: str = ALICE, **kw) -> str:
    job = slurm.submit(user, **kw)
    slurm.wait_running(job)
    return job


def ready_url(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stdout.splitlines() if "ready at " in line]
    assert lines, result.stdout + result.stderr
    return lines[-1].split("ready at ")[1].split()[0]


def cycle(session: Session, slurm: SlurmCluster, cluster: dict) -> None:
    """start, check, warm start, logs, list and exit on a running job."""
    job = running_job(slurm)
    logins = cluster["login"].accepted_logins()

    started = session.fab("tb.start", "--job", job)
    assert started.returncode == 0, started.stdout + started.stderr
    url = ready_url(started)
    assert f"job {job} runs on {NODE} ({NODE_ADDR})" in started.stdout
    runs = http_json(url + "data/runs")
    assert sorted(runs) == ["baseline", "wider"]

    # TensorBoard is a step of the job, on the node's address only.
    (pid,) = job_tensorboards(slurm)
    env = procs.environ(pid)
    assert env["SLURM_JOB_ID"] == job and "SLURM_STEP_ID" in env
    # Its launcher and token flagfile live in a private directory on the node.
    private = Path(env["TBR_DIR"])
    assert private.is_dir() and (private.stat().st_mode & 0o777) == 0o700
    assert (private / "flags").stat().st_mode & 0o777 == 0o600
    assert procs.uid(pid) == pwd.getpwnam(ALICE).pw_uid
    state = [p for p in session.control_dir.glob("tb-*.json")]
    assert len(state) == 1
    recorded = json.loads(state[0].read_text())
    assert recorded["job"] == {"spec": job, "id": job, "node": NODE, "addr": NODE_ADDR, "via": "srun"}
    remote_port = int(recorded["endpoint"].split()[1])
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{remote_port}/", timeout=2)
    # Without the token, the node's port gives nothing away.
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://{NODE_ADDR}:{remote_port}/data/runs", timeout=2)

    checked = session.fab("tb.check", "--job", job)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"login (job {job}): ok {url}" in checked.stdout
    again = session.fab("tb.start", "--job", job)
    assert again.returncode == 0 and ready_url(again) == url, again.stdout + again.stderr
    assert "reusing the tunnel" in again.stdout and job_tensorboards(slurm) == [pid]
    logs = session.fab("tb.logs", "--job", job)
    assert logs.returncode == 0 and f"serving on tcp {remote_port}" in logs.stdout, logs.stdout + logs.stderr

    listed = session.invoke("tb.list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert f"(job {job})" in listed.stdout and '"healthy": true' in listed.stdout

    stopped = session.fab("tb.exit", "--job", job)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"ended TensorBoard's step in job {job} on {NODE} (srun pid " in stopped.stdout
    assert "the job itself is left running" in stopped.stdout
    assert wait_gone(pid)
    assert not private.exists(), "the node's private directory (with the token) was left behind"
    assert slurm.job_state(job) == "RUNNING"
    assert not list(session.control_dir.glob("tb-*.json"))
    # start, check and exit: one login to the login node.
    assert cluster["login"].accepted_logins() - logins == 1
    slurm.cancel(job)
