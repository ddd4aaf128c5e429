"""nginx with libnginx-mod-rtmp as the yardstick: started from a generated config.

One process does all the work (``master_process off``), so the CPU and RSS read from
/proc belong to the relay and nothing else; ``daemon off`` keeps it our child so it
dies with the benchmark. Debian's nginx reads /etc/nginx/nginx.conf and logs to
/var/log/nginx by default: ``-p``, ``-c`` and ``-e`` point everything at a temp dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULE_CANDIDATES = (
    Path("/usr/lib/nginx/modules/ngx_rtmp_module.so"),
    Path("/usr/share/nginx/modules/ngx_rtmp_module.so"),
)

CONFIG = """\
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log {loglevel};
{user}
events {{
    worker_connections 4096;
}}

rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application consult {{
            live on;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_module() -> Path:
    """The module's path from dpkg, or the usual Debian locations."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "libnginx-mod-rtmp"], capture_output=True, text=True, check=True
        ).stdout
        for line in listing.splitlines():
            if line.endswith("ngx_rtmp_module.so"):
                return Path(line)
    except (OSError, subprocess.CalledProcessError):
        pass
    for path in MODULE_CANDIDATES:
        if path.exists():
            return path
    raise FileNotFoundError("ngx_rtmp_module.so not found: apt-get install libnginx-mod-rtmp")


class NginxRtmp:
    """A private nginx-rtmp on 127.0.0.1; use as a context manager."""

    def __init__(self, port: int | None = None, log_level: str = "warn") -> None:
        self.port = port or free_port()
        self.log_level = log_level
        self.root = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/consult/{name}"

    def start(self, timeout: float = 10.0) -> NginxRtmp:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        # As root, nginx would switch its (only) process to "nobody"; "user root" keeps
        # it able to write the temp dir. Ignored (with a warning) when not root.
        user = "user root;" if os.geteuid() == 0 else ""
        conf = self.root / "nginx.conf"
        conf.write_text(
            CONFIG.format(
                module=find_module(),
                root=self.root,
                port=self.port,
                user=user,
                loglevel=self.log_level,
            )
        )
        self.proc = subprocess.Popen(
            [nginx, "-p", str(self.root), "-c", str(conf), "-e", str(self.root / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        text = ""
        if self.proc is not None and self.proc.stderr is not None and self.proc.poll() is not None:
            text += self.proc.stderr.read().decode(errors="replace")
        path = self.root / "error.log"
        if path.exists():
            text += path.read_text(errors="replace")
        return text

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # QUIT is nginx's graceful stop; without a master process TERM is immediate.
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> NginxRtmp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    # Manual check: python -m bench.nginx_rtmp -> prints the URL and serves until ^C.
    with NginxRtmp() as server:
        print(server.url("stream"), "pid", server.pid, file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            server.proc.wait()  # type: ignore[union-attr]
