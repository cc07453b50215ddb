"""A real SMTP server (aiosmtpd) and a local HTTP server answering like Twilio's Messages API, for the delivery,
reminder and bulk-send tests."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from tests_support import demo_runtime

from agent.home.demo import init_home
from agent.runtime import Runtime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mailbox:
    """What the SMTP server received; ``refuse`` makes it answer 550 to the next message."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    refuse: bool = False

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.refuse:
            return "550 mailbox unavailable"
        assert isinstance(envelope.content, bytes)
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 OK"

    def authenticate(self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
                     ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=data.password == b"s3cret-relay")


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, authenticator=box.authenticate,
                            auth_require_tls=False)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@dataclass
class Gateway:
    """Requests the fake Twilio received; numbers in ``bad_numbers`` get Twilio's 400 error 21211."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    bad_numbers: set[str] = field(default_factory=set)


@contextmanager
def sms_server() -> Iterator[tuple[Gateway, str]]:
    gateway = Gateway()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
            gateway.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "form": form})
            if form.get("To") in gateway.bad_numbers:
                status, body = 400, {"code": 21211, "message": f"The 'To' number {form['To']} is not a valid "
                                     "phone number.", "more_info": "https://www.twilio.com/docs/errors/21211",
                                     "status": 400}
            else:
                status, body = 201, {"sid": f"SM{len(gateway.requests):032d}", "status": "queued", "to": form["To"],
                                     "from": form["From"], "body": form["Body"], "error_code": None}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gateway, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def configure(home: Path, smtp_port: int, sms_url: str | None = None, *, login: bool = False) -> None:
    """Point the home's settings at the local servers."""
    lines = ["", "[smtp]", 'host = "127.0.0.1"', f"port = {smtp_port}", 'security = "none"',
             'from_address = "billing@demo-legal.example"']
    if login:
        lines += ['user = "relay-user"', 'password_secret = "smtp-relay"']
    if sms_url:
        lines += ["", "[sms]", f'url = "{sms_url}"', 'account = "AC0123456789abcdef"', 'token_secret = "sms-token"',
                  'from_number = "+447700900999"']
    with (home / "ledgerlink.toml").open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


@contextmanager
def mail_home(home: Path) -> Iterator[tuple[Path, Mailbox, Gateway]]:
    """A demo home whose settings point at a real SMTP server and the SMS gateway, both running."""
    init_home(home)
    with smtp_server() as (box, port), sms_server() as (gateway, url):
        configure(home, port, url, login=True)
        yield home, box, gateway


@contextmanager
def mail_runtime(home: Path) -> Iterator[Runtime]:
    """demo_runtime on a mail_home, with the relay's and the gateway's secrets in the keyring."""
    with demo_runtime(home) as runtime:
        runtime.secrets.set("smtp-relay", "s3cret-relay")
        runtime.secrets.set("sms-token", "tok-123")
        yield runtime
