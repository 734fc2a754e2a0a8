"""A real nginx on loopback serving a directory, for the HTTP tests and benchmarks.

    with Nginx(root) as server:
        server.url("data.bin")  # http://127.0.0.1:PORT/data.bin

nginx runs in the foreground (``daemon off``) as a child process with a config written to a
private prefix directory; stopping it kills the child. The binary comes from the system
(``scripts/system-deps.sh`` installs Debian's nginx-light).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

__all__ = ["Nginx", "free_port", "nginx_binary", "terminate"]

_CONF = """\
{user}
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    types {{ }}
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port}{tls};
        root {root};
        location / {{ }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Stop a server process: SIGTERM, then SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx serving ``root`` on ``127.0.0.1:port`` while the context is open."""

    def __init__(self, root: str | os.PathLike[str], *, workers: int = 1,
                 tls: tuple[str, str] | None = None) -> None:
        self.root = Path(root).resolve()
        self.workers = workers
        self.tls = tls
        """(certificate, key) PEM files: serve HTTPS instead of HTTP."""
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._prefix: str | None = None

    def url(self, name: str = "") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/{quote(name)}"

    def start(self) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed; run scripts/system-deps.sh --bench "
                               "(or apt-get install nginx-light)")
        self._prefix = tempfile.mkdtemp(prefix="lsio-nginx-")
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.mkdir(os.path.join(self._prefix, sub))
        for _attempt in range(5):
            self.port = free_port()
            conf = os.path.join(self._prefix, "nginx.conf")
            with open(conf, "w") as f:
                f.write(_CONF.format(
                    user="user root;" if os.geteuid() == 0 else "",
                    workers=self.workers, prefix=self._prefix, port=self.port,
                    root=self.root, tls=(
                        f" ssl;\n        ssl_certificate {self.tls[0]};\n"
                        f"        ssl_certificate_key {self.tls[1]}" if self.tls else "")))
            self._proc = subprocess.Popen(
                [binary, "-p", self._prefix, "-c", conf, "-e", f"{self._prefix}/error.log"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self._wait_ready():
                return self
            self.stop(keep_prefix=True)
        raise RuntimeError(f"nginx did not start: {self._log()}")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False  # exited: port taken, or a config error
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def _log(self) -> str:
        try:
            with open(f"{self._prefix}/error.log") as f:
                return f.read()[-2000:]
        except OSError:
            return "(no error log)"

    def stop(self, *, keep_prefix: bool = False) -> None:
        if self._proc is not None:
            terminate(self._proc)
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None
        if self._prefix and not keep_prefix:
            shutil.rmtree(self._prefix, ignore_errors=True)
            self._prefix = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
