"""The profiler (xprof) behind the cookie guard (issue 12, point 15): with a
tiny real profile in the logdir, its API and the links its frontend builds
from the page's origin answer after the token URL, and 403 without it."""

from __future__ import annotations

import gzip
import http.cookiejar
import importlib.util
import os
import subprocess
import urllib.parse

import pytest

from .conftest import chromium_flags, rig_in
from .test_experience import CHROMIUM
from .test_origin_links import answers, direct, status
from .xspace import tiny_xspace

if importlib.util.find_spec("xprof") is None and not os.environ.get("CI"):
    pytest.skip("tensorboard-plugin-profile not installed (the test extra and CI install it)", allow_module_level=True)

RUN, HOST = "step_100", "worker0"
QUERY = urllib.parse.urlencode({"run": RUN, "tag": "trace_viewer", "host": HOST})
#: Unprefixed paths as the profiler's frontend builds them, and what each answer holds.
ORIGIN_PATHS = {
    "/data/plugin/profile/runs": f'"{RUN}"',
    f"/data/plugin/profile/run_tools?run={RUN}": '"trace_viewer@"',
    f"/data/plugin/profile/data?{QUERY}": '"matmul"',
    # The graph viewer link (the fragment stays in the browser).
    f"/?tool=graph_viewer&run={RUN}&host={HOST}": "<tb-webapp>",
}


@pytest.fixture
def profiler_rig(sandbox, tmp_path, short_dir):
    """A session whose logdir holds one profile: a hand-built XSpace with one
    CPU plane, one line and two events (train_step around matmul)."""
    logdir = tmp_path / "profiled"
    run = logdir / "plugins" / "profile" / RUN
    run.mkdir(parents=True)
    (run / f"{HOST}.xplane.pb").write_bytes(tiny_xspace(HOST))
    root = tmp_path / "rig"
    root.mkdir()
    with rig_in(sandbox, logdir, root, short_dir) as world:
        result = world.fab("tb.start")
        assert result.returncode == 0, result.stdout + result.stderr
        yield world


def body(opener, url: str) -> str:
    with opener.open(url, timeout=30) as response:
        assert response.status == 200, url
        data = response.read()
        # xprof gzips its answers whatever the request accepts.
        if response.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        return data.decode()


def test_after_the_token_url_the_profilers_api_and_origin_built_links_answer_with_the_profile(profiler_rig):
    jar = http.cookiejar.CookieJar()
    opener = direct(jar)
    body(opener, profiler_rig.url)
    origin = profiler_rig.url.rsplit("/", 2)[0]
    for path, expected in ORIGIN_PATHS.items():
        assert expected in body(opener, origin + path), path


def test_the_same_profiler_paths_are_403_without_the_cookie_and_200_under_the_token_prefix(profiler_rig):
    origin = profiler_rig.url.rsplit("/", 2)[0]
    for path, expected in ORIGIN_PATHS.items():
        assert status(direct(), origin + path) == 403, path
        # A fresh jar: the API under the prefix needs no cookie; the page
        # (the token URL with a query) trades for one and keeps its query.
        assert expected in body(direct(http.cookiejar.CookieJar()), profiler_rig.url + path.lstrip("/")), path


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed (CI installs it)")
def test_a_real_browser_opens_the_profile_page_and_none_of_its_requests_is_refused(profiler_rig, tmp_path):
    netlog = tmp_path / "netlog.json"
    flags = chromium_flags(tmp_path / "chromium") + [f"--log-net-log={netlog}", "--virtual-time-budget=15000"]
    page = profiler_rig.url + "#profile"
    subprocess.run([CHROMIUM, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    origin = profiler_rig.url.rsplit("/", 2)[0] + "/"
    ours = {url: codes for url, codes in answers(netlog).items() if url.startswith(origin)}
    # The profiler's frontend found the run and loaded its first tool's data.
    for path in ("data/plugin/profile/runs", f"data/plugin/profile/run_tools?run={RUN}",
                 f"data/plugin/profile/data?run={RUN}&tag=overview_page&host={HOST}"):
        assert ours.get(origin + path) == [200], (path, sorted(ours))
    refused = {url: codes for url, codes in ours.items() if any(code >= 400 for code in codes)}
    assert not refused, refused
