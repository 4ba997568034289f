"""What a researcher sees: progress, --quiet, the browser, logs, --verbose, help, completion."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import BIN, REPO, chromium_flags

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="class")
def plain_start(class_rig):
    """fab tb.start with the defaults, once for the class of tests that asks."""
    return class_rig.fab("tb.start")


class TestWhatAPlainStartShows:
    """One fab tb.start with the defaults: what it printed, its remote log,
    and the page in a real browser. None of them changes the session, so
    they share it: plain_start runs once for the class (the log is read
    before the browser's requests)."""

    @pytest.fixture
    def rig(self, class_rig):
        return class_rig

    def test_start_prints_each_phase_with_its_elapsed_time(self, rig, plain_start):
        result = plain_start
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert [re.search(r"  \[\d+\.\d\ds\]$", line) is not None for line in lines] == [True] * len(lines)
        text = result.stdout
        order = ["opened the tunnel", "forwarding 127.0.0.1:", "TensorBoard ready at"]
        positions = [text.index(phrase) for phrase in order]
        assert positions == sorted(positions)
        times = [float(t) for t in re.findall(r"\[(\d+\.\d\d)s\]", text)]
        assert times == sorted(times)

    def test_logs_shows_the_remote_tensorboard_log_and_follow_stops_on_ctrl_c(self, rig, plain_start):
        assert plain_start.returncode == 0, plain_start.stdout + plain_start.stderr
        logs = rig.fab("tb.logs")
        assert logs.returncode == 0, logs.stderr
        assert "tensorboard-remote: starting TensorBoard" in logs.stdout
        assert "serving on unix" in logs.stdout

        argv = [str(BIN / "fab"), "-H", "sandbox", "-S", rig.ssh_config, "tb.logs", "--follow", "--lines", "3"]
        proc = subprocess.Popen(argv, env=rig.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        time.sleep(1.5)
        assert proc.poll() is None, "--follow returned by itself"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert "serving on unix" in out
        assert "Traceback" not in err

    @pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed (CI installs it)")
    def test_a_real_browser_shows_the_runs_through_the_tunnel(self, rig, plain_start, tmp_path):
        assert CHROMIUM, "CI must install chromium"
        assert plain_start.returncode == 0, plain_start.stdout + plain_start.stderr
        url = rig.url + "#timeseries"
        flags = chromium_flags(tmp_path / "chromium")
        dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert "baseline" in dom.stdout and "wider" in dom.stdout, dom.stdout[-2000:]
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "tensorboard-through-the-tunnel.png"
        subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
        assert shot.exists() and shot.stat().st_size > 10_000


def test_quiet_prints_only_the_url(rig):
    result = rig.fab("tb.start", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == rig.url + "\n"


def test_a_terminal_gets_a_live_spinner(rig):
    primary, secondary = pty.openpty()
    argv = [str(BIN / "fab"), "-H", "sandbox", "-S", rig.ssh_config, "tb.start"]
    proc = subprocess.Popen(argv, env=rig.env(TERM="xterm-256color"), stdout=secondary, stderr=secondary, stdin=subprocess.DEVNULL, cwd=REPO)
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(primary, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert proc.wait(timeout=30) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "waiting for" in screen, screen  # a phase shown while under way
    assert "\x1b[" in screen and "\r" in screen  # redrawn in place: a spinner
    assert "TensorBoard ready at http://127.0.0.1:" in screen


def fake_browser(tmp_path: Path) -> tuple[str, Path]:
    seen = tmp_path / "browser-saw"
    script = tmp_path / "fake-browser"
    script.write_text(f'#!/bin/sh\necho "$1" >> {seen}\n')
    script.chmod(0o755)
    return str(script), seen


def test_open_hands_the_url_to_the_browser_named_in_BROWSER(rig, tmp_path):
    browser, seen = fake_browser(tmp_path)
    result = rig.fab("tb.start", "--open", env=rig.env(BROWSER=browser))
    assert result.returncode == 0, result.stderr
    assert f"opened {rig.url} in your browser" in result.stdout
    deadline = time.monotonic() + 5
    while not seen.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen.read_text() == rig.url + "\n"
    # And the tb.open task for a running session.
    again = rig.fab("tb.open", env=rig.env(BROWSER=browser))
    assert again.returncode == 0, again.stderr
    time.sleep(0.3)
    assert seen.read_text() == 2 * (rig.url + "\n")


def test_open_on_a_headless_machine_says_so_and_still_starts(rig):
    env = rig.env(FABRIC_TB_OPEN="yes")
    for key in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        env.pop(key, None)
    result = rig.fab("tb.start", env=env)
    assert result.returncode == 0, result.stderr
    assert f"no browser here (no DISPLAY, WAYLAND_DISPLAY or BROWSER): open {rig.url} yourself" in result.stdout


def test_verbose_prints_every_ssh_command_ready_to_paste(rig):
    result = rig.fab("tb.start", "--verbose")
    assert result.returncode == 0, result.stderr
    commands = [line[2:] for line in result.stderr.splitlines() if line.startswith("+ ")]
    assert any(" -M " in command for command in commands)
    assert any("-O forward" in command for command in commands)
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "ssh" and "--" in words


def test_every_task_has_help_on_the_command_line(rig):
    for name in ("start", "check", "exit", "logs", "open"):
        result = rig.run([str(BIN / "fab"), "--help", f"tb.{name}"])
        assert result.returncode == 0
        options = re.findall(r"^\s+(--[\w-]+)", result.stdout, flags=re.M)
        assert options, result.stdout
        for line in result.stdout.splitlines():
            if line.strip().startswith("--"):
                assert len(line.split(None, 1)) == 2, f"flag without help: {line}"


def test_shell_completion_offers_the_tb_tasks(rig):
    for binary in ("fab", "invoke"):
        result = rig.run([str(BIN / binary), "--complete", "--", binary, "tb."])
        assert result.returncode == 0
        assert {"tb.start", "tb.check", "tb.exit", "tb.logs", "tb.open"} <= set(result.stdout.split())
        script = rig.run([str(BIN / binary), "--print-completion-script", "bash"])
        assert script.returncode == 0 and "complete" in script.stdout


def test_a_host_behind_a_jump_host_works_with_no_extra_setting(rig, strict_sandbox, tmp_path):
    # The target is only named in ssh_config, reached through a bastion
    # (ProxyJump), from an Include'd file: OpenSSH resolves all of it.
    included = tmp_path / "cluster.conf"
    target_cfg = rig.sandbox.ssh_config.read_text().replace("Host sandbox", "Host gpu-node")
    included.write_text(target_cfg.rstrip("\n") + "\n  ProxyJump strict\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Include {included}\n\n" + strict_sandbox.ssh_config.read_text())
    before = strict_sandbox.accepted_logins()
    fab = [str(BIN / "fab"), "-H", "gpu-node", "-S", str(cfg)]
    start = rig.run([*fab, "tb.start"])
    assert start.returncode == 0, start.stdout + start.stderr
    assert strict_sandbox.accepted_logins() == before + 1, "the bastion was not used"
    assert rig.run([*fab, "tb.check"]).returncode == 0
    assert "serving on unix" in rig.run([*fab, "tb.logs"]).stdout
    stop = rig.run([*fab, "tb.exit"])
    assert stop.returncode == 0 and "stopped TensorBoard" in stop.stdout


def test_a_host_defined_only_in_a_match_block_works_with_no_extra_setting(rig, tmp_path):
    # No "Host exp-box" anywhere: a Match block gives its address, port, user
    # and key. Only OpenSSH (ssh -G, and ssh itself) reads it.
    body = rig.sandbox.ssh_config.read_text().split("\n", 1)[1]
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Match originalhost exp-box exec \"test -n '%h'\"\n" + body)
    assert "Host " not in cfg.read_text()
    before = rig.sandbox.accepted_logins()
    fab = [str(BIN / "fab"), "-H", "exp-box", "-S", str(cfg)]
    start = rig.run([*fab, "tb.start"])
    assert start.returncode == 0, start.stdout + start.stderr
    assert "exp-box: TensorBoard ready at" in start.stdout
    check = rig.run([*fab, "tb.check"])
    assert check.returncode == 0 and "exp-box: ok" in check.stdout, check.stdout + check.stderr
    stop = rig.run([*fab, "tb.exit"])
    assert stop.returncode == 0 and "stopped TensorBoard" in stop.stdout
    assert rig.sandbox.accepted_logins() == before + 1
