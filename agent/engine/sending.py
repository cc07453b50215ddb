"""Sending a link to the payer by email (SMTP) or text (an SMS gateway plugin), and recording every send; and
emailing a payer a notice that is not a link (a payment plan's instalment, agent.engine.plan_reminders).

Every attempt, good or bad, becomes a row in ``sends`` (when, link, recipient, channel, result, the provider's
message id) so staff can answer "did the client get it?"; a notice's attempt is its audit entry and its sender's
own row (``plan_reminders``). A failure carries ``definite``: True when nothing can
have reached the payer (connection refused, the server said no), False when it is unknown (the connection dropped
after the message was handed over). Smart reminders retry only definite failures, so a payer is never sent the
same reminder twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import smtplib
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import Any, Literal, Protocol

import httpx
from sqlalchemy import Connection, select

from agent.core.errors import LedgerlinkError, NotSetUp, RuleError
from agent.core.model import Actor, MerchantAccount, Money, render_message
from agent.core.scrub import scrub
from agent.engine.links import Link, LinkEngine, LinkRequest
from agent.home.secrets import Secrets
from agent.home.settings import Settings, SmsSettings, SmtpSettings
from agent.state import StateStore, audit
from agent.state.schema import firm_clients, firm_matters, firm_payers, links, sends
from agent.state.store import utcnow
from connectors.providers.contract import LinkStatus

log = logging.getLogger("ledgerlink.delivery")

Channel = Literal["email", "sms"]
CHANNELS: tuple[Channel, ...] = ("email", "sms")


class DeliveryFailed(Exception):
    """A send that did not (or may not) reach the payer; ``definite`` says nothing was delivered for sure."""

    def __init__(self, message: str, *, definite: bool) -> None:
        super().__init__(message)
        self.definite = definite


@dataclass(frozen=True)
class SendRecord:
    """One row of ``sends``, as returned to the CLI and the local API."""

    id: int
    link_id: str
    channel: str
    recipient: str
    purpose: str
    sent_at: dt.datetime
    ok: bool
    result: str
    provider_message_id: str | None
    definite: bool = True  # for a failure: nothing can have been delivered, so a retry is safe


# ------------------------------------------------------------------------------------------- texts


def _values(link: Link, settings: Settings) -> dict[str, str]:
    expires = link.expires_at.astimezone(settings.zone)
    return dict(
        amount=str(Money(amount=link.amount, currency=link.currency)), description=link.description,
        name=link.payer_name or "", invoice=link.invoice_number or "", url=link.url or "",
        service=settings.service_name, expires=f"{expires:%d %B %Y}",
    )


def email_text(link: Link, account: MerchantAccount, settings: Settings, *, reminder: bool = False) -> tuple[str, str]:
    """Subject and body: the account's default message, the link, amount, description and the disclaimer footer."""
    values = _values(link, settings)
    subject = f"{'Reminder: ' if reminder else ''}payment request from {settings.service_name}: {values['amount']}"
    lines = [f"Dear {link.payer_name}," if link.payer_name else "Hello,", ""]
    if reminder:
        lines += ["This is a reminder that the payment below is still outstanding.", ""]
    # a link's own message (a bulk file's Custom Message) is the firm's words as written; else the account's template
    lines += [link.message or render_message(account.default_message, values), "", f"Pay securely here: {link.url}",
              "",
              f"Amount:      {values['amount']}", f"For:         {link.description}"]
    if link.invoice_number:
        lines.append(f"Invoice:     {link.invoice_number}")
    lines += [f"Link valid:  until {values['expires']}; it can be used once.", ""]
    if account.disclaimer:
        lines += ["-- ", account.disclaimer]
    return subject, "\n".join(lines).rstrip() + "\n"


def sms_text(link: Link, settings: Settings, *, reminder: bool = False) -> str:
    """Short enough for one or two SMS segments: who, how much, the link."""
    values = _values(link, settings)
    description = link.description if len(link.description) <= 40 else link.description[:39] + "…"
    return (f"{'Reminder - ' if reminder else ''}{settings.service_name}: please pay {values['amount']} "
            f"for {description}: {link.url}")


# ------------------------------------------------------------------------------------------- email


@contextmanager
def _relay(smtp: SmtpSettings, secrets: Secrets) -> Iterator[smtplib.SMTP]:
    """A connection to the firm's relay, TLS and login done as configured; closed politely afterwards."""
    password = secrets.get(smtp.password_secret) if smtp.password_secret else None
    context = ssl.create_default_context()
    if smtp.security == "tls":
        client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    try:
        if smtp.security == "starttls":
            client.starttls(context=context)
        if smtp.user:
            client.login(smtp.user, password or "")
        yield client
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()  # the message was already accepted (or refused); quitting is courtesy


def check_relay(smtp: SmtpSettings, secrets: Secrets) -> None:
    """Connect, secure and log in as a send would, and send nothing (``ledgerlink doctor``). Raises DeliveryFailed."""
    try:
        with _relay(smtp, secrets) as client:
            client.noop()
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise DeliveryFailed(f"SMTP server refused: {exc.smtp_code} {text}", definite=True) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"SMTP {smtp.host}:{smtp.port}: {type(exc).__name__}: {exc}", definite=True) from None


def send_email(smtp: SmtpSettings, secrets: Secrets, message: EmailMessage) -> str:
    """Hand the message to the relay; returns its Message-ID. Raises DeliveryFailed."""
    handed_over = False
    try:
        with _relay(smtp, secrets) as client:
            handed_over = True  # from here a dropped connection may mean the relay took the message
            client.send_message(message)
    except smtplib.SMTPResponseException as exc:  # the server answered "no": nothing was accepted
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise DeliveryFailed(f"SMTP server refused: {exc.smtp_code} {text}", definite=True) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryFailed(f"SMTP server refused the recipient: {exc.recipients}", definite=True) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"SMTP {smtp.host}:{smtp.port}: {type(exc).__name__}: {exc}",
                             definite=not handed_over) from None
    return str(message["Message-ID"])


def build_email(link: Link, account: MerchantAccount, settings: Settings, to: str, *, reminder: bool) -> EmailMessage:
    subject, body = email_text(link, account, settings, reminder=reminder)
    return compose(settings, to, link.payer_name, subject, body)


def compose(settings: Settings, to: str, name: str | None, subject: str, body: str) -> EmailMessage:
    """An email from the firm (its service name at ``[smtp] from_address``) to one payer."""
    if not settings.smtp.from_address:
        raise NotSetUp("email is not set up: set [smtp] from_address (and host, port, security, user, "
                                 "password_secret) in ledgerlink.toml")
    message = EmailMessage()
    message["From"] = formataddr((settings.service_name, settings.smtp.from_address))
    message["To"] = formataddr((name or "", to))
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=settings.smtp.from_address.rpartition("@")[2] or None)
    message.set_content(body)
    return message


# ------------------------------------------------------------------------------------------- SMS


class SmsGateway(Protocol):
    """An SMS gateway plugin: send one text, return the gateway's message id, raise DeliveryFailed."""

    def send(self, to: str, body: str) -> str: ...


class TwilioGateway:
    """Twilio's Messages API (or anything in its shape): a form POST with basic auth, JSON back."""

    def __init__(self, sms: SmsSettings, token: str) -> None:
        if not sms.account or not sms.from_number:
            raise NotSetUp("SMS is not set up: set [sms] account, from_number and token_secret")
        self.sms = sms
        self.token = token

    def send(self, to: str, body: str) -> str:
        path = f"/2010-04-01/Accounts/{self.sms.account}/Messages.json"
        try:
            with httpx.Client(base_url=self.sms.url.rstrip("/"), auth=(str(self.sms.account), self.token),
                              timeout=self.sms.timeout) as client:
                response = client.post(path, data={"To": to, "From": str(self.sms.from_number), "Body": body})
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise DeliveryFailed(f"SMS gateway unreachable: {exc}", definite=True) from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"SMS gateway: {type(exc).__name__}: {exc}", definite=False) from None
        data = _json(response)
        if response.is_error:
            detail = data.get("message") or response.text[:200]
            code = f" (code {data['code']})" if data.get("code") else ""
            # 4xx: the gateway refused the request; 5xx: it may or may not have queued the text
            raise DeliveryFailed(f"SMS gateway refused: HTTP {response.status_code}{code}: {detail}",
                                 definite=response.status_code < 500)
        return str(data.get("sid") or "")


def _json(response: httpx.Response) -> Mapping[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


GATEWAYS: dict[str, Callable[[SmsSettings, Secrets], SmsGateway]] = {
    "twilio": lambda sms, secrets: TwilioGateway(sms, secrets.get(sms.token_secret) if sms.token_secret else ""),
}


def sms_gateway(settings: Settings, secrets: Secrets) -> SmsGateway:
    return GATEWAYS[settings.sms.gateway](settings.sms, secrets)


def normalise_phone(text: str) -> str:
    """Spaces, dashes, dots and brackets out; the gateway validates the number itself."""
    return re.sub(r"[\s\-().]", "", text)


# ------------------------------------------------------------------------------------------- sending


def payer_phone(conn: Connection, link_id: str) -> str | None:
    """The link's own phone, else the matter payer's, else the client's, from the mirror."""
    row = conn.execute(select(links.c.payer_phone, links.c.matter_key, links.c.client_key)
                       .where(links.c.id == link_id)).one()
    if row.payer_phone:
        return str(row.payer_phone)
    if row.matter_key:
        phone = conn.execute(select(firm_payers.c.phone).join(
            firm_matters, firm_matters.c.payer_key == firm_payers.c.key).where(
            firm_matters.c.key == row.matter_key)).scalar()
        if phone:
            return str(phone)
    if row.client_key:
        phone = conn.execute(select(firm_clients.c.phone).where(firm_clients.c.key == row.client_key)).scalar()
        if phone:
            return str(phone)
    return None


def _try(attempt: Callable[[], str]) -> tuple[str | None, bool, str, bool]:
    """(message id, ok, result, definite) of one hand-over to the relay or gateway."""
    try:
        return attempt(), True, "ok", True
    except DeliveryFailed as exc:
        return None, False, scrub(str(exc)), exc.definite


@dataclass(frozen=True)
class Notice:
    """An email to a payer that is not a link: to whom (None: no address known), and what it says."""

    to: str | None
    name: str | None
    subject: str
    body: str


@dataclass(frozen=True)
class Delivery:
    """How a notice went; ``definite`` as for a SendRecord."""

    recipient: str
    sent_at: dt.datetime
    ok: bool
    result: str
    message_id: str | None
    definite: bool


class Sender:
    """Delivery of links by email and SMS, and of notices by email, every attempt recorded; built by the
    composition root."""

    def __init__(self, settings: Settings, store: StateStore, secrets: Secrets, links: LinkEngine) -> None:
        self.settings = settings
        self.store = store
        self.secrets = secrets
        self.links = links

    def send(self, actor: Actor, link_id: str, channel: Channel, *, to: str | None = None,
             purpose: str = "link") -> SendRecord:
        """Send an outstanding link by email or SMS and record the attempt; the record says whether it went.

        Refused (RuleError, no send recorded) when the link is not outstanding or there is nobody to send to; a
        NotSetUp (a ConfigurationError) when email or SMS is not set up. ``purpose`` is ``link`` or ``reminder:<step>``.
        Audited as link.email or link.sms: the send row and its entry in one transaction, a refusal too.
        """
        with audit.attempt(self.store, actor, f"link.{channel}", "link", link_id) as act:
            return self._send(link_id, channel, to, purpose, act)

    def _send(self, link_id: str, channel: Channel, to: str | None, purpose: str, act: audit.Attempt) -> SendRecord:
        if channel not in CHANNELS:
            raise RuleError(f"unknown channel {channel!r}; use email or sms")
        link = self.links.get(link_id)
        if link.status != LinkStatus.OUTSTANDING.value or not link.url:
            raise RuleError(f"link {link_id} is {link.status}; only outstanding links are sent")
        account = self.settings.account(link.account)
        reminder = purpose.startswith("reminder")
        if channel == "email":
            recipient = to or link.payer_email
            if not recipient or "@" not in recipient:
                raise RuleError(f"link {link_id} has no email address to send to")
            message = build_email(link, account, self.settings, recipient, reminder=reminder)
            attempt: Callable[[], str] = lambda: send_email(self.settings.smtp, self.secrets, message)  # noqa: E731
        else:
            with self.store.read() as conn:
                phone = to or payer_phone(conn, link_id)
            if not phone:
                raise RuleError(f"link {link_id}: the payer has no phone number in the matter system; "
                                "give one with --to")
            recipient = normalise_phone(phone)
            gateway = sms_gateway(self.settings, self.secrets)
            body = sms_text(link, self.settings, reminder=reminder)
            attempt = lambda: gateway.send(recipient, body)  # noqa: E731
        sent_at = utcnow()
        message_id, ok, result, definite = _try(attempt)
        with self.store.begin() as conn:
            send_id = conn.execute(sends.insert().values(
                link_id=link_id, channel=channel, recipient=recipient, purpose=purpose, sent_at=sent_at, ok=ok,
                result=result, provider_message_id=message_id)).inserted_primary_key
            act.record(conn, after={"purpose": purpose, "recipient": recipient, "message_id": message_id},
                       outcome="ok" if ok else "failed", error=None if ok else result)
        assert send_id is not None  # an autoincrement key is always returned by an INSERT
        (log.info if ok else log.warning)("link %s %s by %s to %s: %s", link_id, purpose, channel, recipient, result)
        return SendRecord(id=int(send_id[0]), link_id=link_id, channel=channel, recipient=recipient, purpose=purpose,
                          sent_at=sent_at, ok=ok, result=result, provider_message_id=message_id, definite=definite)

    def notify(self, actor: Actor, object_kind: str, object_id: str, notice: Notice, *, purpose: str,
               details: Mapping[str, Any] | None = None) -> Delivery:
        """Email a payer about something that is not a link (a plan's instalment); the delivery says whether it went.

        Refused (RuleError) when there is no address; a NotSetUp when email is not set up. Audited as
        ``<object_kind>.email`` on the object, as a link's send is: recipient, message id and ``details``, a
        failure or refusal too."""
        with audit.attempt(self.store, actor, f"{object_kind}.email", object_kind, object_id) as act:
            if not notice.to or "@" not in notice.to:
                raise RuleError(f"{object_kind} {object_id}: the payer has no email address in the matter system")
            message = compose(self.settings, notice.to, notice.name, notice.subject, notice.body)
            sent_at = utcnow()
            message_id, ok, result, definite = _try(lambda: send_email(self.settings.smtp, self.secrets, message))
            with self.store.begin() as conn:
                act.record(conn, after={"purpose": purpose, "recipient": notice.to, "message_id": message_id,
                                        **(details or {})}, outcome="ok" if ok else "failed",
                           error=None if ok else result)
        (log.info if ok else log.warning)("%s %s %s by email to %s: %s", object_kind, object_id, purpose, notice.to,
                                          result)
        return Delivery(notice.to, sent_at, ok, result, message_id, definite)

    def history(self, link_id: str) -> list[SendRecord]:
        """The send history of one link, oldest first."""
        with self.store.read() as conn:
            rows = conn.execute(select(sends).where(sends.c.link_id == link_id).order_by(sends.c.id)).mappings().all()
        return [SendRecord(**dict(r)) for r in rows]

    def missing(self, channel: Channel) -> list[str]:
        """The settings an administrator must still set before anything can go by ``channel``."""
        if channel == "email":
            return [] if self.settings.smtp.from_address else ["[smtp] from_address"]
        sms = self.settings.sms
        return [f"[sms] {name}" for name in ("account", "from_number", "token_secret") if not getattr(sms, name)]

    def require_email(self) -> None:
        """Refuse before any work when email is not set up at all."""
        if self.missing("email"):
            raise NotSetUp("email is not set up: set [smtp] from_address (and host, port, security) first")

    def send_all(self, actor: Actor, requests: Iterable[tuple[str, LinkRequest]], *,
                 source: str = "bulk") -> list[BulkSend]:
        """Send All: create (or find again) each row's link and email it, each row on its own.

        A row whose link cannot be made, or whose email is refused or fails, says so: nothing is reported as sent
        that the mail server did not take. Each link and email has its own entry; the run as a whole one bulk.send
        entry for ``source`` (the file's name), with the rows sent and not.
        """
        with audit.attempt(self.store, actor, "bulk.send", "bulk", source) as act:
            self.require_email()
            results = []
            for label, request in requests:
                link: Link | None = None
                try:
                    link = self.links.create(actor, request)
                    record = self.send(actor, link.id, "email")
                except LedgerlinkError as exc:
                    results.append(BulkSend(label, link, None, scrub(str(exc))))
                    continue
                results.append(BulkSend(label, link, record, None if record.ok else record.result))
            summary = {"rows": len(results), "sent": [r.link.id for r in results if r.sent and r.link],
                       "not_sent": {r.label: r.error for r in results if not r.sent}}
            with self.store.begin() as conn:
                act.record(conn, after=summary, outcome="ok" if not summary["not_sent"] else "partial")
        return results


@dataclass(frozen=True)
class BulkSend:
    """One row of a Send All: the link made for it (if any), the send record (if it was tried), and why not."""

    label: str
    link: Link | None
    record: SendRecord | None
    error: str | None

    @property
    def sent(self) -> bool:
        return self.record is not None and self.record.ok
