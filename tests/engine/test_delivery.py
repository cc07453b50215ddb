"""Delivery by email through a real SMTP server on localhost and by SMS through a local Twilio-shaped gateway;
every send recorded."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from delivery_support import Gateway, Mailbox, mail_home, mail_runtime
from tests_support import STAFF

from agent.cli.main import main
from agent.core.errors import ConfigurationError, RuleError
from agent.engine.links import LinkRequest
from agent.runtime import Runtime

MATTER = "M-2026-0010"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Path, Mailbox, Gateway]]:
    with mail_home(tmp_path / "home") as found:
        yield found


@pytest.fixture
def rt(servers: tuple[Path, Mailbox, Gateway]) -> Iterator[Runtime]:
    with mail_runtime(servers[0]) as runtime:
        yield runtime


def quick(rt: Runtime, **extra: Any) -> str:
    request: dict[str, Any] = {"amount": Decimal("1250.50"), "name": "Ada Lovelace", "email": "ada@example.com",
               "invoice": "INV-77", "description": "Conveyancing fees", **extra}
    return rt.links.create(STAFF, LinkRequest(**request)).id


def test_email_through_real_smtp_server(rt: Runtime, servers: tuple[Path, Mailbox, Gateway]) -> None:
    _, box, _ = servers
    link = rt.links.get(quick(rt))
    record = rt.sender.send(STAFF, link.id, "email")
    assert record.ok and record.result == "ok" and record.recipient == "ada@example.com"
    assert box.logins == [("relay-user", "s3cret-relay")]  # the password came from the keyring
    assert box.envelopes == [("billing@demo-legal.example", ["ada@example.com"])]
    msg = box.messages[0]
    assert msg["To"] == "Ada Lovelace <ada@example.com>"
    assert msg["Subject"] == "payment request from Demo Legal LLP: GBP 1,250.50"
    assert msg["Message-ID"] == record.provider_message_id
    body = msg.get_content()
    assert link.url and link.url in body
    assert "Please use the secure link below to pay GBP 1,250.50 for Conveyancing fees." in body  # default message
    assert "Invoice:     INV-77" in body
    assert body.rstrip().endswith("Demo Legal LLP is authorised and regulated by the Solicitors Regulation "
                                  "Authority (demo).")  # the account's disclaimer is the footer
    assert [(s.channel, s.recipient, s.ok, s.purpose) for s in rt.sender.history(link.id)] == [
        ("email", "ada@example.com", True, "link")]


def test_smtp_refusal_is_recorded_as_a_definite_failure(rt: Runtime, servers: tuple[Path, Mailbox, Gateway]) -> None:
    servers[1].refuse = True
    record = rt.sender.send(STAFF, quick(rt), "email")
    assert not record.ok and record.definite and "550" in record.result
    assert rt.sender.history(record.link_id)[0].result == record.result


def test_unreachable_smtp_server_is_recorded(rt: Runtime) -> None:
    rt.settings.smtp.port = 1  # nothing listens there
    record = rt.sender.send(STAFF, quick(rt), "email")
    assert not record.ok and record.definite and "Connection" in record.result
    assert len(rt.sender.history(record.link_id)) == 1


def test_sms_to_matter_payer_phone(rt: Runtime, servers: tuple[Path, Mailbox, Gateway]) -> None:
    _, _, gateway = servers
    link = rt.links.create(STAFF, LinkRequest(matter=MATTER))
    record = rt.sender.send(STAFF, link.id, "sms")
    assert record.ok and record.recipient.startswith("+447700900")
    assert record.provider_message_id is not None and record.provider_message_id.startswith("SM")
    request = gateway.requests[0]
    assert request["path"] == "/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
    assert request["auth"] == "Basic " + base64.b64encode(b"AC0123456789abcdef:tok-123").decode()
    form = request["form"]
    assert form["From"] == "+447700900999" and form["To"] == record.recipient
    assert link.url in form["Body"] and f"GBP {link.amount:,}" in form["Body"] and len(form["Body"]) < 160


def test_sms_gateway_error_is_recorded_as_failed(rt: Runtime, servers: tuple[Path, Mailbox, Gateway]) -> None:
    servers[2].bad_numbers.add("+15005550001")
    record = rt.sender.send(STAFF, quick(rt), "sms", to="+1 500 555 0001")
    assert not record.ok and record.definite
    assert record.result == ("SMS gateway refused: HTTP 400 (code 21211): The 'To' number +15005550001 is not a "
                             "valid phone number.")
    with sqlite3.connect(rt.settings.home / "state.db") as conn:
        assert conn.execute("SELECT channel, recipient, ok, result FROM sends").fetchall() == [
            ("sms", "+15005550001", 0, record.result)]


def test_refusals_send_and_record_nothing(rt: Runtime, servers: tuple[Path, Mailbox, Gateway]) -> None:
    link_id = quick(rt)
    with pytest.raises(RuleError, match="no phone number"):
        rt.sender.send(STAFF, link_id, "sms")  # a quick link has no matter, so no payer phone
    rt.links.cancel(STAFF, link_id)
    with pytest.raises(RuleError, match="cancelled"):
        rt.sender.send(STAFF, link_id, "email")
    rt.settings.smtp.from_address = None
    with pytest.raises(ConfigurationError, match="from_address"):
        rt.sender.send(STAFF, quick(rt, invoice="INV-78"), "email")
    assert rt.sender.history(link_id) == [] and servers[1].messages == [] and servers[2].requests == []


def test_cli_links_send(rt: Runtime, servers: tuple[Path, Mailbox, Gateway], capsys: pytest.CaptureFixture[str]
                        ) -> None:
    home, box, gateway = servers
    link_id = quick(rt)
    rt.close()
    assert main(["--home", str(home), "links", "send", link_id, "--email", "--to", "accounts@client.example"]) == 0
    assert box.envelopes[0][1] == ["accounts@client.example"]
    assert main(["--home", str(home), "links", "send", link_id, "--sms", "--to", "07700 900123"]) == 0
    assert gateway.requests[0]["form"]["To"] == "07700900123"
    capsys.readouterr()
    assert main(["--home", str(home), "links", "sends", link_id]) == 0
    out = capsys.readouterr().out
    assert "email link             accounts@client.example" in out and "sms   link             07700900123" in out
