"""The sandbox's hosted pay page: a local threaded server where a payer pays a link or authorises a mandate."""

from __future__ import annotations

import datetime as dt
import html
import json
import sqlite3
import threading
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from connectors.providers.contract import (
    LinkNotFound,
    LinkStatus,
    MandateStatus,
    PaymentMethod,
    ProviderError,
)
from connectors.providers.sandbox.world import (
    _db,
    _expire,
    _now,
    pay,
    set_mandate,
)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;
line-height:1.5}}
dl{{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}} dd{{margin:0}}
button{{font-size:1rem;padding:.6rem 1.2rem;margin:.3rem .3rem 0 0}}
table{{border-collapse:collapse;margin:.5rem 0}} caption{{text-align:left;font-weight:600}}
th,td{{padding:.2rem .8rem .2rem 0;text-align:left}} .num{{text-align:right}}
.note{{color:#444;font-size:.9rem}}</style>
</head><body><main>
<h1>{title}</h1>
{body}
</main></body></html>"""


def _page(title: str, body: str) -> bytes:
    return _PAGE.format(title=html.escape(title), body=body).encode()


def _details(link: sqlite3.Row, amount: str, paid: bool = False) -> str:
    """What the payer is paying: the firm, the matter and invoice numbers, the amount, the description and the
    account's disclaimer, each as the engine sent it (LinkSpec); no key of the firm's or the agent's."""
    invoices = [n for n in link["invoice_numbers"].split("\n") if n]
    rows = [
        ("firm", "Paid to", link["firm_name"]),
        ("matter", "Matter", link["matter_number"]),
        ("invoices", "Invoice" if len(invoices) == 1 else "Invoices", ", ".join(invoices)),
        ("amount", "Amount paid" if paid else "Amount", amount),
        ("description", "Description", link["description"]),
    ]
    listed = "".join(f'<dt>{label}</dt><dd id="{ident}">{html.escape(value)}</dd>'
                     for ident, label, value in rows if value)
    disclaimer = link["disclaimer"]
    return f"<dl>{listed}</dl>" + (
        f'<p class="note" id="disclaimer">{html.escape(disclaimer)}</p>' if disclaimer else "")


def _schedule(stored: str) -> str:
    """The payment plan a mandate is set up for (the setup's MandatePayer.schedule): each date and amount and the
    total; empty for a mandate alone."""
    debits = [(dt.date.fromisoformat(d), Decimal(a), c) for d, a, c in json.loads(stored or "[]")]
    if not debits:
        return ""
    currency = debits[0][2]
    total = sum((a for _, a, _ in debits), Decimal(0))
    rows = "".join(f"<tr><td>{n}</td><td>{d:%d %B %Y}</td><td class=\"num\">{html.escape(f'{c} {a}')}</td></tr>"
                   for n, (d, a, c) in enumerate(debits, start=1))
    return (
        '<table id="plan"><caption>Your payment plan</caption>'
        '<thead><tr><th>#</th><th>Date</th><th class="num">Amount</th></tr></thead>'
        f'<tbody>{rows}</tbody><tfoot><tr><th colspan="2" scope="row">Total</th>'
        f'<th class="num" id="plan-total">{html.escape(f"{currency} {total}")}</th></tr></tfoot></table>'
        '<p class="note">Each payment is taken by Direct Debit on its date. If the Direct Debit is set up too close '
        "to the first date to give notice, the dates move later, keeping their spacing.</p>"
    )


class SandboxPayServer:
    """The payer's side of the sandbox: GET/POST ``/pay/<ref>`` and ``/health`` on a local threaded server."""

    def __init__(self, home: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.home = Path(home)
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        assert isinstance(host, str), "an AF_INET server's address is text"
        return f"http://{host}:{port}"

    def start(self) -> SandboxPayServer:
        self._thread = threading.Thread(
            # The poll interval is only how soon stop() is noticed; 20 wake-ups a second were an idle agent's CPU.
            target=self._httpd.serve_forever, args=(0.5,), name="sandbox-pay", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def render(self, ref: str) -> tuple[int, bytes]:
        with _db(self.home) as conn:
            _expire(conn, _now())
            row = conn.execute("SELECT * FROM links WHERE ref = ?", (ref,)).fetchone()
        if row is None:
            return HTTPStatus.NOT_FOUND, _page(
                "Payment link not found", "<p>This payment link does not exist.</p>"
            )
        amount = f"{row['currency']} {row['amount']}"
        details = _details(row, amount)
        if row["status"] != LinkStatus.OUTSTANDING:
            status = row["status"].replace("_", " ")
            return HTTPStatus.OK, _page(
                "Payment link closed",
                details
                + (
                    f'<p role="status" id="status">This link can no longer be paid: '
                    f"{html.escape(status)}.</p>"
                ),
            )
        form = (
            f'<form method="post" action="/pay/{html.escape(ref)}">'
            '<p><label for="partial">Partial amount (testing only; leave empty to pay in full)</label><br>'
            '<input id="partial" name="partial" inputmode="decimal" autocomplete="off"></p>'
            '<button type="submit" name="method" value="bank">Pay by bank</button>'
            '<button type="submit" name="method" value="card">Pay by card</button>'
            '</form><p class="note">Sandbox: no real money moves.</p>'
        )
        return HTTPStatus.OK, _page(f"Pay {amount}", details + form)

    def submit(self, ref: str, form: dict[str, list[str]]) -> tuple[int, bytes]:
        method = (form.get("method") or ["bank"])[0]
        partial = (form.get("partial") or [""])[0].strip()
        try:
            amount = Decimal(partial) if partial else None
        except InvalidOperation:
            return HTTPStatus.BAD_REQUEST, _page(
                "Payment not made", '<p role="alert">The partial amount is not a number.</p>'
            )
        if method not in (PaymentMethod.BANK, PaymentMethod.CARD):
            return HTTPStatus.BAD_REQUEST, _page(
                "Payment not made", '<p role="alert">Choose bank or card.</p>'
            )
        try:
            payment_ref = pay(self.home, ref, amount, method=method)
        except LinkNotFound:
            return HTTPStatus.NOT_FOUND, _page(
                "Payment link not found", "<p>This payment link does not exist.</p>"
            )
        except ProviderError as exc:
            _, body = self.render(ref)
            message = f'<p role="alert">Payment not made: {html.escape(str(exc))}</p>'
            return HTTPStatus.CONFLICT, body.replace(b"<main>", b"<main>" + message.encode(), 1)
        return HTTPStatus.OK, self.receipt(ref, payment_ref)

    def receipt(self, ref: str, payment_ref: str) -> bytes:
        """The payer's receipt: what was paid, to whom and for what, and the payment's reference."""
        with _db(self.home) as conn:
            link = conn.execute("SELECT * FROM links WHERE ref = ?", (ref,)).fetchone()
            paid = conn.execute("SELECT amount, currency FROM payments WHERE payment_ref = ?",
                                (payment_ref,)).fetchone()
        amount = f"{paid['currency']} {paid['amount']}"
        to = f" to {link['firm_name']}" if link["firm_name"] else ""
        return _page(
            "Payment received",
            (
                f'<p role="status">Thank you. Your payment was received: <strong id="amount-paid">'
                f"{html.escape(amount)}</strong>{html.escape(to)} (reference"
                f' <span id="payment-ref">{html.escape(payment_ref)}</span>).</p>'
            )
            + _details(link, amount, paid=True),
        )

    def mandate_page(self, ref: str, authorise: bool) -> tuple[int, bytes]:
        """The payer's Direct Debit setup: GET shows it (with the plan it is for, if any), POST authorises it (the
        mandate becomes active)."""
        with _db(self.home) as conn:
            row = conn.execute("SELECT * FROM mandates WHERE ref = ?", (ref,)).fetchone()
        if row is None:
            return HTTPStatus.NOT_FOUND, _page("Mandate not found", "<p>This Direct Debit setup does not exist.</p>")
        if authorise and row["status"] == MandateStatus.PENDING_CUSTOMER_APPROVAL:
            set_mandate(self.home, ref, MandateStatus.ACTIVE)
            return HTTPStatus.OK, _page("Direct Debit set up", '<p role="status">Your Direct Debit is set up.</p>')
        if row["status"] != MandateStatus.PENDING_CUSTOMER_APPROVAL:
            status = html.escape(row["status"].replace("_", " "))
            return HTTPStatus.OK, _page("Direct Debit", f'<p role="status" id="status">This mandate is {status}.</p>')
        plan = _schedule(row["schedule"])
        asked = "to pay this plan" if plan else "from your account"
        form = (
            f'<p>{html.escape(row["payer_name"])}, authorise Direct Debits {asked}.</p>{plan}'
            f'<form method="post" action="/mandate/{html.escape(ref)}"><button type="submit">Set up Direct Debit'
            '</button></form><p class="note">Sandbox: no real mandate is made.</p>'
        )
        return HTTPStatus.OK, _page("Set up a Direct Debit", form)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the agent's own logging reports what matters."""

            def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._send(HTTPStatus.OK, b"ok", "text/plain; charset=utf-8")
                elif self.path.startswith("/pay/"):
                    self._send(*server.render(self.path.removeprefix("/pay/")))
                elif self.path.startswith("/mandate/"):
                    self._send(*server.mandate_page(self.path.removeprefix("/mandate/"), authorise=False))
                else:
                    self._send(HTTPStatus.NOT_FOUND, _page("Not found", "<p>Nothing here.</p>"))

            def do_POST(self) -> None:
                if self.path.startswith("/mandate/"):
                    self._send(*server.mandate_page(self.path.removeprefix("/mandate/"), authorise=True))
                    return
                if not self.path.startswith("/pay/"):
                    self._send(HTTPStatus.NOT_FOUND, _page("Not found", "<p>Nothing here.</p>"))
                    return
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                self._send(*server.submit(self.path.removeprefix("/pay/"), form))

        return Handler
