"""Runs TensorBoard on the remote host for tensorboard-remote.

tensorboard-remote copies this file into the run directory on the remote and
runs it with the Python that has TensorBoard. It never imports
tensorboard_remote. It serves TensorBoard's own WSGI app through TensorBoard's
public ``server_class`` hook, on a Unix socket created 0600 (``--host
unix://`` crashes in TensorBoard 2.21, tensorboard#6057) or on TCP
127.0.0.1, and writes ``<run dir>/endpoint`` once it listens.

With a URL token, TensorBoard runs unprefixed behind :func:`guard`: links
that TensorBoard and its plugins build from ``location.origin`` (the Roboto
fonts, tensorboard#1885; the profiler's memory-timeline and graph-viewer
links) then work, while the port still answers only to whoever has the token.

Environment:
  TBR_DIR    the run directory (0700)
  TBR_SERVE  "unix" (default) or "tcp"
  TBR_SOCK   with unix: the socket's path (default TBR_DIR/tb.sock)
  TBR_PORT   with tcp: the port, 0 for any free one
  TBR_HOST   with tcp: the address to listen on (default 127.0.0.1; a
             Slurm compute node's own address when its login node forwards)
  TBR_REMOVE_DIR  "1": remove TBR_DIR when TensorBoard ends (a Slurm step's
             private directory on the node)
  TBR_NETNS  "1" when started inside a private network namespace
             (``unshare -rn``): bring its loopback up for the data server
  TBR_TOKEN_FILE  a 0600 file holding the secret URL token (the token is
             never in our environment or command line)
  TBR_RELAYED  "1": a relay of ours (``launch.py --tbr-relay HOST SOCK``,
             outside the namespace) says where to connect, not us
"""

import atexit
import fcntl
import hashlib
import hmac
import os
import shutil
import signal
import socket
import struct
import sys

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up():
    """Bring up ``lo`` in our new network namespace (we are root in it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


FORBIDDEN = (
    b"tensorboard-remote: this TensorBoard needs its secret URL: open the"
    b" http://127.0.0.1:PORT/TOKEN/ address that tb.start printed (tb.list shows it, tb.open opens it)\n"
)


def cookie_for(token):
    """The cookie's name and value for ``token``. Cookies are not separated
    by port on 127.0.0.1, so the name is per session; neither gives the
    token away."""
    secret = token.encode()
    name = "tbr-" + hashlib.sha256(b"tensorboard-remote cookie name " + secret).hexdigest()[:16]
    value = hmac.new(secret, b"tensorboard-remote cookie", hashlib.sha256).hexdigest()
    return name, value


def _cookies(header):
    """(name, value) pairs of a Cookie header, never failing on a malformed
    one (other programs on 127.0.0.1 set cookies too)."""
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            yield name, value.strip().strip('"')


def guard(app, token):
    """WSGI app that serves ``app`` (TensorBoard, unprefixed) to whoever
    knows ``token``: ``/TOKEN/...`` is served with the prefix stripped; a GET
    of ``/TOKEN/`` (or ``/TOKEN``) sets an HttpOnly, SameSite=Strict cookie
    and redirects to ``/``; anything else needs that cookie, or gets 403."""
    prefix = "/" + token
    name, value = cookie_for(token)
    expected = value.encode()
    set_cookie = "%s=%s; Path=/; HttpOnly; SameSite=Strict" % (name, value)

    def has_cookie(environ):
        found = False
        for key, candidate in _cookies(environ.get("HTTP_COOKIE", "")):
            # Every candidate is compared, in constant time.
            if key == name and hmac.compare_digest(candidate.encode("latin-1", "replace"), expected):
                found = True
        return found

    def guarded(environ, start_response):
        path = environ.get("PATH_INFO", "")
        raw = path.encode("latin-1", "replace")
        # The token is compared in constant time, as the cookie is.
        under = hmac.compare_digest(raw[:len(prefix)], prefix.encode()) and raw[len(prefix):len(prefix) + 1] in (b"", b"/")
        rest = path[len(prefix):]
        if under and rest in ("", "/") and environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD"):
            query = environ.get("QUERY_STRING", "")
            start_response("302 Found", [
                ("Location", "/" + ("?" + query if query else "")),
                ("Set-Cookie", set_cookie),
                ("Cache-Control", "no-store"),
                ("Content-Length", "0"),
            ])
            return [b""]
        if under:
            inner = dict(environ)
            inner["PATH_INFO"] = rest or "/"
            inner["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            return app(inner, start_response)
        if has_cookie(environ):
            return app(environ, start_response)
        start_response("403 Forbidden", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(FORBIDDEN))),
        ])
        return [FORBIDDEN]

    return guarded


def read_token():
    """The URL token from ``TBR_TOKEN_FILE``, or None (``url_token: no``)."""
    path = os.environ.get("TBR_TOKEN_FILE")
    if not path:
        return None
    with open(path) as handle:
        return handle.read().strip() or None


def server_class(run_dir, serve, host, port, token):
    """TensorBoard's ``server_class``: its app (behind :func:`guard` with a
    token) on a 0600 Unix socket or on TCP ``host:port``; ``<run dir>/endpoint``
    written once it listens."""
    from tensorboard import program, version
    from werkzeug import serving

    class QuietHandler(serving.WSGIRequestHandler):
        """No line per request: the log would grow with every page view."""

        def log_request(self, *args, **kwargs):
            pass

    def listen(wsgi_app):
        """The werkzeug server, our endpoint line and TensorBoard's URL."""
        if serve == "unix":
            path = os.environ.get("TBR_SOCK") or os.path.join(run_dir, "tb.sock")
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            # connect() needs write permission: 0600 keeps other users out.
            old = os.umask(0o177)
            try:
                server = serving.make_server("unix://" + path, 0, wsgi_app, threaded=True, request_handler=QuietHandler)
            finally:
                os.umask(old)
            # TensorBoard wants a URL with an integer port.
            return server, "unix " + path, "http://127.0.0.1:0/"
        try:
            server = serving.make_server(host, port, wsgi_app, threaded=True, request_handler=QuietHandler)
        except OSError as error:
            raise program.TensorBoardServerException(
                "could not bind to port %d, it was already in use (%s)" % (port, error)
            ) from error
        actual = server.socket.getsockname()[1]
        return server, "tcp %d" % actual, "http://%s:%d/" % (host, actual)

    class Server(program.TensorBoardServer):
        def __init__(self, wsgi_app, flags):
            self._server, self._endpoint, self._url = listen(guard(wsgi_app, token) if token else wsgi_app)

        def serve_forever(self):
            final = os.path.join(run_dir, "endpoint")
            with open(final + ".tmp", "w") as handle:
                handle.write(self._endpoint + "\n")
            os.replace(final + ".tmp", final)
            # The same, for a reader on another machine (a Slurm step's
            # output reaches the login node's log through srun), unless our
            # relay says where instead (TBR_RELAYED).
            if os.environ.get("TBR_RELAYED") != "1":
                sys.stdout.write("tensorboard-remote: endpoint %s\n" % self._endpoint)
                sys.stdout.flush()
            self._server.serve_forever()

        def get_url(self):
            return self._url

        def print_serving_message(self):
            sys.stderr.write("TensorBoard %s serving on %s\n" % (version.VERSION, self._endpoint))
            sys.stderr.flush()

    return Server


def _pipe(source, sink):
    """Copy until EOF, then pass the EOF on."""
    try:
        while True:
            data = source.recv(262144)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _relay_one(client, path):
    import threading

    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _die_with_parent():
    """SIGTERM when our parent (TensorBoard) exits: the step then ends at
    once, as it did with TensorBoard alone (Linux; elsewhere the relay
    notices within a second)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def relay(host, path, run_dir):
    """A Slurm step's TensorBoard runs in a private network namespace (its
    fast loader's data server with it) on a 0600 Unix socket; this relay,
    outside the namespace, is what the login node reaches: TCP on the node's
    address, any free port, each connection piped to the socket (the URL
    token is checked behind it, by :func:`guard`). It ends with TensorBoard
    (its parent: the step's shell exec'd into the launcher)."""
    import threading
    import time

    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:
        return
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    listener.listen(128)
    # Say where only once TensorBoard listens (it writes its endpoint then).
    while not os.path.exists(os.path.join(run_dir, "endpoint")):
        if os.getppid() != parent:
            return
        time.sleep(0.02)
    port = listener.getsockname()[1]
    sys.stdout.write("tensorboard-remote: endpoint tcp %d\n" % port)
    sys.stdout.write("tensorboard-remote: relay serving on tcp %d (%s) for TensorBoard on %s\n" % (port, host, path))
    sys.stdout.flush()
    listener.settimeout(1.0)
    while os.getppid() == parent:
        try:
            client, _ = listener.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        client.settimeout(None)
        threading.Thread(target=_relay_one, args=(client, path), daemon=True).start()


def main(argv):
    if argv[:1] == ["--tbr-relay"]:
        return relay(argv[1], argv[2], os.environ["TBR_DIR"])
    run_dir = os.environ["TBR_DIR"]
    serve = os.environ.get("TBR_SERVE", "unix")
    port = int(os.environ.get("TBR_PORT", "0"))
    host = os.environ.get("TBR_HOST") or "127.0.0.1"
    token = read_token()
    if os.environ.get("TBR_NETNS") == "1":
        loopback_up()
    if os.environ.get("TBR_REMOVE_DIR") == "1":
        # SIGTERM (srun forwards it when the step ends) exits normally, so
        # the private directory is removed.
        for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(number, lambda *_: sys.exit(0))
        atexit.register(shutil.rmtree, run_dir, True)

    # TensorBoard first, then what appeared in 2.5, then the rest: the
    # traceback's last line then names what is missing (tensorboard-remote
    # reads it: no TensorBoard, one older than 2.5, or a dependency of it).
    import tensorboard  # noqa: F401
    from tensorboard import main_lib
    from absl import app
    from tensorboard import default, program

    main_lib.global_init()
    board = program.TensorBoard(
        plugins=default.get_plugins(), server_class=server_class(run_dir, serve, host, port, token)
    )
    app.run(board.main, argv=["tensorboard"] + list(argv), flags_parser=board.configure)


if __name__ == "__main__":
    main(sys.argv[1:])
