"""Links built from the page's origin (issue 12, point 15): the token URL
trades for a per-session cookie, so that TensorBoard's Roboto fonts and the
profiler's origin-built links answer, while the port stays guarded."""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import chromium_flags, rig_in
from .test_experience import CHROMIUM

#: One of TensorBoard's Roboto files, as its CSS asks for it: from the origin.
FONT = "/font-roboto/oMMgfZMQthOryQo9n22dcuvvDin1pK8aKteLpeZ5c0A.woff2"


def direct(jar: http.cookiejar.CookieJar | None = None) -> urllib.request.OpenerDirector:
    """A urllib opener with a cookie jar, as a browser, never via a proxy."""
    handlers = [urllib.request.ProxyHandler({})]
    if jar is not None:
        handlers.append(urllib.request.HTTPCookieProcessor(jar))
    return urllib.request.build_opener(*handlers)


def status(opener: urllib.request.OpenerDirector, url: str) -> int:
    try:
        with opener.open(url, timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def first_answer(port: int, path: str) -> http.client.HTTPResponse:
    """The answer to one GET, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def started(rig) -> tuple[str, int]:
    result = rig.fab("tb.start")
    assert result.returncode == 0, result.stdout + result.stderr
    data = rig.only_state()
    return data["token"], data["local_port"]


@pytest.fixture(scope="class")
def origin_start(class_rig) -> tuple[str, int]:
    """fab tb.start with the defaults, once for the class: its token and local port."""
    return started(class_rig)


class TestTheTokenURLsCookie:
    """One session with the defaults, and a test per thing its cookie opens
    or keeps shut. None of them changes the session, so they share it:
    origin_start runs once for the class."""

    @pytest.fixture
    def rig(self, class_rig):
        return class_rig

    def test_the_token_url_sets_an_httponly_samesite_strict_cookie_and_redirects_to_the_root(self, rig, origin_start):
        token, port = origin_start
        assert rig.url == f"http://127.0.0.1:{port}/{token}/"
        response = first_answer(port, f"/{token}/")
        assert response.status == 302 and response.getheader("Location") == "/"
        cookie = response.getheader("Set-Cookie")
        name, _, rest = cookie.partition("=")
        value, *attributes = rest.split("; ")
        assert name.startswith("tbr-") and token not in cookie
        assert set(attributes) == {"Path=/", "HttpOnly", "SameSite=Strict"}

    def test_after_the_token_url_the_fonts_and_unprefixed_paths_answer_200(self, rig, origin_start):
        token, port = origin_start
        jar = http.cookiejar.CookieJar()
        opener = direct(jar)
        with opener.open(rig.url, timeout=10) as page:
            assert page.url == f"http://127.0.0.1:{port}/" and b"<tb-webapp>" in page.read()
        origin = f"http://127.0.0.1:{port}"
        for path in (FONT, "/data/logdir", "/data/plugin/scalars/tags", "/?tool=graph_viewer"):
            assert status(opener, origin + path) == 200, path
        # Our own probe, the token path without a cookie, still works.
        assert status(direct(), rig.url + "data/logdir") == 200

    def test_without_the_cookie_or_the_token_every_path_is_403(self, rig, origin_start):
        token, port = origin_start
        origin = f"http://127.0.0.1:{port}"
        for path in ("/", FONT, "/data/logdir", f"/{token[:-1]}/", "/data/plugin/profile/data"):
            try:
                direct().open(origin + path, timeout=10)
            except urllib.error.HTTPError as error:
                assert error.code == 403, path
                assert error.read().startswith(b"tensorboard-remote: this TensorBoard needs its secret URL"), path
            else:
                pytest.fail(f"{path} answered without the cookie")

    def test_two_sessions_on_two_ports_get_different_cookies_and_neither_opens_the_other(
        self, rig, origin_start, sandbox, logdir, short_base, tmp_path
    ):
        first_token, first_port = origin_start
        root = tmp_path / "second"
        root.mkdir()
        with rig_in(sandbox, logdir, root, Path(tempfile.mkdtemp(dir=short_base))) as other:
            second_token, second_port = started(other)
            assert second_port != first_port
            names = [first_answer(port, f"/{token}/").getheader("Set-Cookie").split("=")[0]
                     for token, port in ((first_token, first_port), (second_token, second_port))]
            assert names[0] != names[1]
            # One jar, as one browser: cookies on 127.0.0.1 reach every port,
            # and the first session's cookie does not open the second.
            jar = http.cookiejar.CookieJar()
            assert status(direct(jar), rig.url) == 200
            assert status(direct(jar), f"http://127.0.0.1:{second_port}/data/logdir") == 403
            assert status(direct(jar), other.url) == 200
            assert status(direct(jar), f"http://127.0.0.1:{second_port}/data/logdir") == 200

    @pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs it)")
    def test_a_real_browser_gets_the_roboto_fonts_and_nothing_is_refused(self, rig, origin_start, tmp_path):
        _, port = origin_start
        netlog = tmp_path / "netlog.json"
        flags = chromium_flags(tmp_path / "chromium") + [f"--log-net-log={netlog}"]
        page = rig.url + "#timeseries"
        dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
        assert "baseline" in dom.stdout and "wider" in dom.stdout, dom.stdout[-2000:]
        origin = f"http://127.0.0.1:{port}/"
        ours = {url: codes for url, codes in answers(netlog).items() if url.startswith(origin)}
        assert ours[page] == [302] and ours[origin + "#timeseries"] == [200]
        fonts = {url: codes for url, codes in ours.items() if "/font-roboto/" in url}
        assert fonts and all(codes == [200] for codes in fonts.values()), fonts
        refused = {url: codes for url, codes in ours.items() if any(code >= 400 for code in codes)}
        assert not refused, refused
        assert tcp_connects(netlog) <= {"127.0.0.1"}  # nothing left this machine


def test_without_a_url_token_nothing_is_guarded_and_the_fonts_answer(rig):
    result = rig.fab("tb.start", env=rig.env(FABRIC_TB_URL_TOKEN="no"))
    assert result.returncode == 0, result.stdout + result.stderr
    origin = f"http://127.0.0.1:{rig.only_state()['local_port']}"
    assert rig.url == origin + "/"
    response = first_answer(rig.only_state()["local_port"], "/")
    assert response.status == 200 and response.getheader("Set-Cookie") is None
    assert status(direct(), origin + FONT) == 200


def tcp_connects(netlog: Path) -> set[str]:
    """The addresses Chromium opened a TCP connection to."""
    log = json.loads(netlog.read_text())
    kinds = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    return {
        event["params"]["address"].rsplit(":", 1)[0]
        for event in log["events"]
        if kinds.get(event["type"]) == "TCP_CONNECT_ATTEMPT" and "address" in event.get("params", {})
    }


def answers(netlog: Path) -> dict[str, list[int]]:
    """Every URL Chromium requested, with the HTTP statuses it got, from its
    ``--log-net-log`` (a redirect is one request with two answers)."""
    log = json.loads(netlog.read_text())
    kinds = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    current: dict[int, str] = {}
    seen: dict[str, list[int]] = {}
    for event in log["events"]:
        kind, source, params = kinds.get(event["type"]), event["source"]["id"], event.get("params", {})
        if kind == "URL_REQUEST_START_JOB" and "url" in params:  # its start, not its end
            current[source] = params["url"]
        elif kind == "HTTP_TRANSACTION_READ_RESPONSE_HEADERS" and source in current:
            seen.setdefault(current[source], []).append(int(params["headers"][0].split()[1]))
    return seen

