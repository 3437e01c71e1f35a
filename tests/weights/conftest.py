"""Shared fixtures of the weight tests: a local HTTP server standing in for the publishers."""

import functools
import http.server
import threading

import pytest


class Server:
    """An http.server on 127.0.0.1 serving a folder; ``lie`` files announce more bytes than they send."""

    def __init__(self, root):
        self.requests = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                if self.path.endswith(".lie"):
                    body = b"x" * 100
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    root, home = tmp_path / "www", tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("VGG_HOME", str(home))
    with Server(root) as server:
        yield root, home, server

