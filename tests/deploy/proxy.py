"""Debian's nginx, run in the foreground with deploy/nginx/lastedocation.conf in front of a
studio on loopback: the shipped file with only its addresses changed (and TLS switched on
with a throwaway certificate), inside a minimal main configuration that keeps nginx's
logs, pid and temporary files in a test folder."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Self

from tests.deploy.files import NGINX_CONF
from tests.server import free_port

MAIN_CONF = """\
daemon off;
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # what each request did: its status, and whether it reached the studio at all
    log_format probe '$status $request_method $request_uri upstream=$upstream_addr '
                     'sent_upstream=$upstream_bytes_sent';
    access_log {dir}/access.log probe;
    {extra}
    include {dir}/lastedocation.conf;
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    assert found, "nginx is not installed: `make browser` installs Debian's nginx"
    return found


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"{NGINX_CONF.name} no longer has {old!r}: update tests/deploy/proxy.py"
    return text.replace(old, new)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "fullchain.pem", folder / "privkey.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class Nginx:
    """nginx on two free loopback ports (HTTP and HTTPS) in front of `upstream_port`."""

    def __init__(self, folder: Path, upstream_port: int, *, extra: str = "") -> None:
        self.dir = folder
        self.port, self.tls_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tls_url = f"https://127.0.0.1:{self.tls_port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.cert, key = self_signed_certificate(folder)
        site = NGINX_CONF.read_text(encoding="utf-8")
        site = _replace(site, "server studio:8000;", f"server 127.0.0.1:{upstream_port};")
        site = _replace(site, "    listen 80;", f"    listen 127.0.0.1:{self.port};")
        site = _replace(
            site, "# listen 443 ssl http2;", f"listen 127.0.0.1:{self.tls_port} ssl http2;"
        )
        site = _replace(
            site,
            "# ssl_certificate /etc/nginx/certs/fullchain.pem;",
            f"ssl_certificate {self.cert};",
        )
        site = _replace(
            site,
            "# ssl_certificate_key /etc/nginx/certs/privkey.pem;",
            f"ssl_certificate_key {key};",
        )
        (folder / "lastedocation.conf").write_text(site, encoding="utf-8")
        # as root, nginx's workers would become `nobody`, who cannot enter the test folder
        user = "user root;" if os.geteuid() == 0 else ""
        main = MAIN_CONF.format(dir=folder, user=user, extra=extra)
        (folder / "nginx.conf").write_text(main, encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def start(self) -> Self:
        command = [nginx_binary(), "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")]
        checked = subprocess.run(
            [*command, "-t", "-e", str(self.dir / "error.log")], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stderr
        with (self.dir / "nginx.out").open("ab") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                [*command, "-e", str(self.dir / "error.log")], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nginx did not start: " + self.errors())

    def errors(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def access_log(self) -> list[str]:
        return (self.dir / "access.log").read_text(encoding="utf-8").splitlines()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # nginx: fast shutdown
            self.process.wait(timeout=30)
