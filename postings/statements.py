"""Postings as a bank statement file, for matter and accounting software that imports statements but gives no SQL
write access: OFX 2.2 (Open Financial Exchange, XML) and ISO 20022 camt.053.001.08 (bank-to-customer statement).

The statement is of the provider's clearing account as the firm sees it: a payment is a credit, a refund or a
reversal a debit, the provider's fees a debit and a payout to the firm's bank a debit (the money leaves the
provider's balance for the bank). Each entry carries what importers match on: our posting reference as the
transaction's unique id (OFX ``FITID``; camt ``AcctSvcrRef`` and ``EndToEndId``), the invoice number as the
creditor reference (OFX ``REFNUM``; camt ``RmtInf/Strd/CdtrRefInf/Ref``) and in the free text, and the payer's name.
A batch file's balances are the movement of that file (opening 0.00), not the account's balance, which the agent
does not know; the README says so.

Element order and required elements follow OFX 2.2 (OFX Banking specification, section 11.4) and the ISO 20022
camt.053.001.08 schema; the tests read every file back with ofxtools and validate it against the official XSD.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree as ET

from agent.core.errors import DataError
from mappings.format import StatementAccount

OFX_HEADER = ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
              '<?OFX OFXHEADER="200" VERSION="220" SECURITY="NONE" OLDFILEUID="NONE" NEWFILEUID="NONE"?>\n')
CAMT_NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
# Which way each posting kind moves the clearing account; a transfer request is an instruction, not a movement.
OUTGOING = {"fees", "deposits"}


@dataclass(frozen=True)
class Entry:
    """One statement line, as the posting's parameters give it."""

    reference: str
    kind: str
    amount: Decimal  # signed: + credit to the clearing account, - debit
    currency: str
    booked: dt.date
    invoice: str | None
    matter: str | None
    payer: str | None
    description: str | None

    @property
    def text(self) -> str:
        """The free text an importer shows and a clerk searches: invoice, matter, description, our reference."""
        parts = [self.invoice and f"Invoice {self.invoice}", self.matter and f"Matter {self.matter}",
                 self.description, f"Ref {self.reference}"]
        return " / ".join(p for p in parts if p)


def entry(params: Mapping[str, Any], account: StatementAccount) -> Entry:
    """The statement entry of one posting; DataError names what cannot go in a statement."""
    kind = params["kind"]
    if kind == "transfers":
        raise DataError("a client-money transfer request is an instruction, not a statement entry: "
                        "leave the transfers section out of a statement-file mapping")
    if params["currency"] != account.currency:
        raise DataError(f"currency {params['currency']}: this statement file is for the {account.currency} account "
                        f"{account.account_id}")
    amount: Decimal = params["amount"]
    return Entry(reference=params["reference"], kind=kind, amount=-amount if kind in OUTGOING else amount,
                 currency=params["currency"], booked=params["paid_on_local"], invoice=params["statement_number"],
                 matter=params["matter_number"], payer=params["payer_name"], description=params["description"])


def _money(amount: Decimal) -> str:
    return format(abs(amount).quantize(Decimal("0.01")), "f")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = text
    return child


def _path(parent: ET.Element, tags: str, text: str) -> ET.Element:
    """``a/b/c`` made as nested elements under ``parent``, the last holding ``text``."""
    node = parent
    for tag in tags.split("/"):
        node = _sub(node, tag)
    node.text = text
    return node


# ---------------------------------------------------------------------------------------------------------- OFX

def _ofx_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S.000[0:GMT]")


def render_ofx(entries: Sequence[Entry], account: StatementAccount, batch: str, now: dt.datetime) -> bytes:
    root = ET.Element("OFX")
    sonrs = _sub(_sub(root, "SIGNONMSGSRSV1"), "SONRS")
    status = _sub(sonrs, "STATUS")
    _sub(status, "CODE", "0")
    _sub(status, "SEVERITY", "INFO")
    _sub(sonrs, "DTSERVER", _ofx_time(now))
    _sub(sonrs, "LANGUAGE", "ENG")
    trnrs = _sub(_sub(root, "BANKMSGSRSV1"), "STMTTRNRS")
    _sub(trnrs, "TRNUID", batch)
    status = _sub(trnrs, "STATUS")
    _sub(status, "CODE", "0")
    _sub(status, "SEVERITY", "INFO")
    stmtrs = _sub(trnrs, "STMTRS")
    _sub(stmtrs, "CURDEF", account.currency)
    acct = _sub(stmtrs, "BANKACCTFROM")
    _sub(acct, "BANKID", account.bank_id or "0")
    _sub(acct, "ACCTID", account.account_id)
    _sub(acct, "ACCTTYPE", "CHECKING")
    tranlist = _sub(stmtrs, "BANKTRANLIST")
    days = [e.booked for e in entries] or [now.date()]
    _sub(tranlist, "DTSTART", min(days).strftime("%Y%m%d"))
    _sub(tranlist, "DTEND", max(days).strftime("%Y%m%d"))
    for e in entries:
        trn = _sub(tranlist, "STMTTRN")
        _sub(trn, "TRNTYPE", "FEE" if e.kind == "fees" else "CREDIT" if e.amount >= 0 else "DEBIT")
        _sub(trn, "DTPOSTED", e.booked.strftime("%Y%m%d"))
        _sub(trn, "TRNAMT", ("-" if e.amount < 0 else "") + _money(e.amount))
        _sub(trn, "FITID", e.reference[:255])
        if e.invoice and len(e.invoice) <= 32:  # REFNUM is at most 32 characters; the memo always has it
            _sub(trn, "REFNUM", e.invoice)
        if e.payer:
            _sub(trn, "NAME", e.payer[:32])
        _sub(trn, "MEMO", e.text[:255])
    bal = _sub(stmtrs, "LEDGERBAL")
    _sub(bal, "BALAMT", format(sum((e.amount for e in entries), Decimal("0.00")), "f"))
    _sub(bal, "DTASOF", _ofx_time(now))
    return (OFX_HEADER + ET.tostring(root, encoding="unicode") + "\n").encode()


# --------------------------------------------------------------------------------------------------- camt.053

def _balance(stmt: ET.Element, code: str, amount: Decimal, currency: str, day: dt.date) -> None:
    bal = _sub(stmt, "Bal")
    _path(bal, "Tp/CdOrPrtry/Cd", code)
    _sub(bal, "Amt", _money(amount), Ccy=currency)
    _sub(bal, "CdtDbtInd", "CRDT" if amount >= 0 else "DBIT")
    _path(bal, "Dt/Dt", day.isoformat())


def _camt_entry(stmt: ET.Element, e: Entry) -> None:
    ntry = _sub(stmt, "Ntry")
    direction = "CRDT" if e.amount >= 0 else "DBIT"
    _sub(ntry, "NtryRef", e.reference[:35])
    _sub(ntry, "Amt", _money(e.amount), Ccy=e.currency)
    _sub(ntry, "CdtDbtInd", direction)
    if e.amount < 0 and e.kind == "reversal":
        _sub(ntry, "RvslInd", "true")
    _path(ntry, "Sts/Cd", "BOOK")
    _path(ntry, "BookgDt/Dt", e.booked.isoformat())
    _path(ntry, "ValDt/Dt", e.booked.isoformat())
    _sub(ntry, "AcctSvcrRef", e.reference[:35])
    # ISO 20022 bank transaction codes: PMNT/RCDT/OTHR a received credit transfer, PMNT/ICDT/OTHR an issued one
    # (refund, payout to the bank), ACMT/MDOP/CHRG a charge (the provider's fees).
    domain, family, sub = (("ACMT", "MDOP", "CHRG") if e.kind == "fees" else
                           ("PMNT", "RCDT", "OTHR") if e.amount >= 0 else ("PMNT", "ICDT", "OTHR"))
    dom = _sub(_sub(ntry, "BkTxCd"), "Domn")
    _sub(dom, "Cd", domain)
    fmly = _sub(dom, "Fmly")
    _sub(fmly, "Cd", family)
    _sub(fmly, "SubFmlyCd", sub)
    tx = _sub(_sub(ntry, "NtryDtls"), "TxDtls")
    refs = _sub(tx, "Refs")
    _sub(refs, "AcctSvcrRef", e.reference[:35])
    _sub(refs, "EndToEndId", e.reference[:35])
    _sub(tx, "Amt", _money(e.amount), Ccy=e.currency)
    _sub(tx, "CdtDbtInd", direction)
    if e.payer:
        _path(tx, "RltdPties/Dbtr/Pty/Nm" if e.amount >= 0 else "RltdPties/Cdtr/Pty/Nm", e.payer[:140])
    rmt = _sub(tx, "RmtInf")
    _sub(rmt, "Ustrd", e.text[:140])
    if e.invoice:
        _path(rmt, "Strd/CdtrRefInf/Ref", e.invoice[:35])


def render_camt053(entries: Sequence[Entry], account: StatementAccount, batch: str, now: dt.datetime) -> bytes:
    ET.register_namespace("", CAMT_NS)
    root = ET.Element(f"{{{CAMT_NS}}}Document")
    message = ET.SubElement(root, "BkToCstmrStmt")
    stamp = now.astimezone(dt.UTC).replace(microsecond=0).isoformat()
    header = _sub(message, "GrpHdr")
    _sub(header, "MsgId", batch[:35])
    _sub(header, "CreDtTm", stamp)
    stmt = _sub(message, "Stmt")
    _sub(stmt, "Id", batch[:35])
    _sub(stmt, "CreDtTm", stamp)
    acct = _sub(stmt, "Acct")
    ident = _sub(acct, "Id")
    if account.iban:
        _sub(ident, "IBAN", account.account_id)
    else:
        _path(ident, "Othr/Id", account.account_id)
    _sub(acct, "Ccy", account.currency)
    if account.account_name:
        _sub(acct, "Nm", account.account_name[:70])
    if account.bank_id:
        _path(acct, "Svcr/FinInstnId/BICFI", account.bank_id)
    day = max((e.booked for e in entries), default=now.date())
    _balance(stmt, "OPBD", Decimal("0.00"), account.currency, min((e.booked for e in entries), default=day))
    _balance(stmt, "CLBD", sum((e.amount for e in entries), Decimal("0.00")), account.currency, day)
    for e in entries:
        _camt_entry(stmt, e)
    # namespaced children: ElementTree puts the default namespace on the root only when every tag carries it
    for node in root.iter():
        if not node.tag.startswith("{"):
            node.tag = f"{{{CAMT_NS}}}{node.tag}"
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n").encode()


RENDERERS = {"ofx": render_ofx, "camt.053": render_camt053}

__all__ = ["RENDERERS", "Entry", "entry", "render_camt053", "render_ofx"]
