"""The launcher's guard: the token URL trades for a cookie, everything else needs it."""

from __future__ import annotations

from tasks import launcher

TOKEN = "Yk3v0Zr1QpA8mT2xWc9sLbNe"


def inner(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


def call(path, cookie=None, method="GET", query="", token=TOKEN):
    environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "QUERY_STRING": query, "SCRIPT_NAME": ""}
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(launcher.guard(inner, token)(environ, start_response))
    return seen["status"], seen["headers"], body


def test_the_token_url_sets_an_httponly_strict_cookie_and_redirects_to_the_root():
    for path in (f"/{TOKEN}/", f"/{TOKEN}"):
        status, headers, _ = call(path)
        name, value = launcher.cookie_for(TOKEN)
        assert status == "302 Found" and headers["Location"] == "/"
        assert headers["Set-Cookie"] == f"{name}={value}; Path=/; HttpOnly; SameSite=Strict"


def test_the_redirect_keeps_the_query_for_links_like_the_graph_viewers():
    _, headers, _ = call(f"/{TOKEN}/", query="tool=graph_viewer")
    assert headers["Location"] == "/?tool=graph_viewer"


def test_a_path_under_the_token_is_served_with_the_prefix_stripped_and_no_cookie():
    status, _, body = call(f"/{TOKEN}/data/logdir")
    assert status == "200 OK" and body == b"/data/logdir"


def test_with_the_cookie_any_path_is_served_as_it_is():
    name, value = launcher.cookie_for(TOKEN)
    status, _, body = call("/font-roboto/x.woff2", cookie=f"other=1; {name}={value}; bad")
    assert status == "200 OK" and body == b"/font-roboto/x.woff2"


def test_without_the_cookie_or_with_a_wrong_one_it_is_403_with_a_short_text():
    name, value = launcher.cookie_for(TOKEN)
    for cookie in (None, f"{name}=x{value[1:]}", f"{name}=", "\u00e9=\u00e9", f"tbr-other={value}"):
        status, headers, body = call("/data/logdir", cookie=cookie)
        assert status == "403 Forbidden", cookie
        assert body.startswith(b"tensorboard-remote: this TensorBoard needs its secret URL")
        assert TOKEN.encode() not in body and value.encode() not in body


def test_a_wrong_or_longer_token_is_no_token():
    for path in (f"/{TOKEN[:-1]}/", f"/{TOKEN}x/", f"/x{TOKEN}/", "/\u00e9\u00e9/"):
        assert call(path)[0] == "403 Forbidden", path


def test_two_tokens_get_different_cookie_names_and_values_that_are_not_the_token():
    first, second = launcher.cookie_for(TOKEN), launcher.cookie_for(TOKEN[::-1])
    assert first[0] != second[0] and first[1] != second[1]
    assert first[0].startswith("tbr-") and TOKEN not in first[0] + first[1]
