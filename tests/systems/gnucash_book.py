"""Make or judge a GnuCash SQLite book with GnuCash's own Python bindings (Debian's python3-gnucash).

Run under Debian's /usr/bin/python3, where the bindings live, never imported by the suite:

    python3 gnucash_book.py make BOOK     a book: Bank, Accounts Receivable, Fees; two customers, a job, three
                                          posted invoices (INV-1 100.00 on the job, INV-2 250.00 on the customer,
                                          INV-3 60.00 on the job)
    python3 gnucash_book.py judge BOOK    JSON: each invoice's lot balance (pence) and IsPaid, as GnuCash says,
                                          and whether every transaction in the invoices' lots balances

A new SQLite store is made with SESSION_NEW_STORE, ended, and opened again before anything is added: on 4.13 the
edits to a store that was only begun are not written (the bindings' own simple_sqlite_create.py fails so).
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from gnucash import Account, GncNumeric, Session, SessionOpenMode, Split
from gnucash import gnucash_core_c as c
from gnucash.gnucash_business import Customer, Entry, Invoice, Job


def pence(amount: int) -> GncNumeric:
    return GncNumeric(amount, 100)


def make(path: str) -> None:
    uri = f"sqlite3://{path}"
    Session(uri, SessionOpenMode.SESSION_NEW_STORE).end()
    session = Session(uri, SessionOpenMode.SESSION_NORMAL_OPEN)
    book = session.book
    gbp = book.get_table().lookup("CURRENCY", "GBP")
    root = book.get_root_account()

    def account(name: str, kind: int, parent: Account = root) -> Account:
        made = Account(book)
        made.BeginEdit()
        made.SetName(name)
        made.SetType(kind)
        made.SetCommodity(gbp)
        parent.append_child(made)
        made.CommitEdit()
        return made

    assets = account("Assets", c.ACCT_TYPE_ASSET)
    account("Bank", c.ACCT_TYPE_BANK, assets)
    receivable = account("Accounts Receivable", c.ACCT_TYPE_RECEIVABLE, assets)
    fees = account("Fees", c.ACCT_TYPE_INCOME)
    ada = Customer(book, "C001", gbp, "Ada Lovelace")
    ada.GetAddr().SetEmail("ada@example.com")
    Customer(book, "C002", gbp, "Siobhán Ó Súilleabháin").GetAddr().SetEmail("siobhan@example.com")
    job = Job(book, "J001", ada, "Conveyancing: 14 Elm Row")
    for number, owner, amount in (("INV-1", job, 10000), ("INV-2", ada, 25000), ("INV-3", job, 6000)):
        invoice = Invoice(book, number, gbp, owner)
        entry = Entry(book, invoice, dt.datetime(2026, 11, 1))
        entry.SetQuantity(GncNumeric(1))
        entry.SetInvPrice(pence(amount))
        entry.SetInvAccount(fees)
        entry.SetDescription("Professional fees")
        invoice.PostToAccount(receivable, dt.datetime(2026, 11, 2), dt.datetime(2026, 12, 2), "posted", True, False)
    session.end()


def judge(path: str) -> None:
    session = Session(f"sqlite3://{path}", SessionOpenMode.SESSION_READ_ONLY)
    book = session.book
    out: dict[str, object] = {}
    for number in ("INV-1", "INV-2", "INV-3"):
        invoice = book.InvoiceLookupByID(number)
        lot = invoice.GetPostedLot()
        balance = lot.get_balance()
        splits = [Split(instance=s) for s in lot.get_split_list()]
        out[number] = {
            "balance_pence": balance.num() * 100 // balance.denom(),
            "paid": bool(invoice.IsPaid()),
            "splits": len(splits),
            "balanced": all(s.GetParent().IsBalanced() for s in splits),
            "payments": sorted(s.GetParent().GetNum() for s in splits if s.GetParent().GetTxnType() == "P"),
        }
    session.end()
    print(json.dumps(out))


if __name__ == "__main__":
    {"make": make, "judge": judge}[sys.argv[1]](sys.argv[2])
