"""Shared fixtures. Every test gets its own MEMBENCH_HOME so nothing touches the user's
cache or any tracked file; the demo dataset is generated once per session (small)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def isolated_session_home(tmp_path_factory):
    """The same isolation for module- and session-scoped fixtures, which run before any
    test's own (the browser test's smoke run wrote into the user's ~/.cache/membench)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMBENCH_HOME", str(tmp_path_factory.mktemp("membench-session-home")))
        mp.setenv("MEMBENCH_OFFLINE", "1")
        yield


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("membench-home")
    monkeypatch.setenv("MEMBENCH_HOME", str(home))
    # Tests never reach the internet: missing weights are "offline" at once (the download
    # tests serve files on 127.0.0.1 and lift this themselves).
    monkeypatch.setenv("MEMBENCH_OFFLINE", "1")
    # Image-decoding settings live in the environment (for DataLoader workers) and CLI
    # options set them in-process: registered here so that every test starts and ends
    # without them.
    for var in ("MEMBENCH_EXIF_ORIENTATION", "MEMBENCH_MAX_IMAGE_PIXELS"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    return home


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A small demo dataset (80 images, 5 splits) in the LaMem layout."""
    from membench.data.demo import generate

    return generate(tmp_path_factory.mktemp("demo") / "demo", n_images=80, n_splits=5, seed=0)


@pytest.fixture
def run_cli(capsys):
    """Run `membench ARGS` in-process; returns (exit code, stdout, stderr)."""
    from membench.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def tiny_plugin():
    """Register tests/tiny_plugin.py (models tiny-cnn and tiny-chain) for one test."""
    import tiny_plugin as module
    from membench import plugins, registry

    pm = plugins.load()
    pm.register(module, name="tests.tiny_plugin")
    registry.clear_cache()
    yield module
    pm.unregister(module)
    registry.clear_cache()


@pytest.fixture
def one_thread():
    """One intra-op thread: per-image ops and speed ratios are steadier on two busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _Files:
    """What the loopback server serves: {path: bytes}; the requests it saw."""

    files: dict[str, bytes] = {}
    requests: list[str] = []
    commit = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def server(monkeypatch):
    """An HTTP server on 127.0.0.1 serving `handler.files` ({path: bytes}), with downloads
    allowed (MEMBENCH_OFFLINE lifted) for the test. HEAD answers as the Hugging Face Hub
    does (X-Repo-Commit, ETag, size); a missing path is 404 (EntryNotFound). Yields (base
    URL, handler)."""
    import hashlib
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def _head(self):
            path = self.path.split("?")[0]
            _Files.requests.append(f"{self.command} {path}")
            data = _Files.files.get(path)
            self.send_response(200 if data is not None else 404)
            if data is None:
                self.send_header("X-Error-Code", "EntryNotFound")
            else:
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", _Files.commit)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            return data

        def do_HEAD(self):  # noqa: N802 (http.server's name)
            self._head()

        def do_GET(self):  # noqa: N802
            data = self._head()
            if data is not None:
                self.wfile.write(data)

        def log_message(self, *args):
            pass

    monkeypatch.delenv("MEMBENCH_OFFLINE", raising=False)
    _Files.files, _Files.requests = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Files
    httpd.shutdown()
    httpd.server_close()
