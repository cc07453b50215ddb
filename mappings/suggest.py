"""The mapping assistant: recognise a shipped mapping by the tables and columns it reads, or draft one.

The firm's schema arrives as a ``Catalog`` (read by ``connectors.database.introspect``): tables, column names and
kinds, primary and foreign keys, a few distinct values of short text columns. Recognition needs no fingerprint
file of its own: a shipped mapping fits a database when every table it reads, and every column it names there, is
present (for an entity read by a query, every table the query reads from). Otherwise a draft is written by name
and type, each proposal on a line that carries a ``# guess:`` comment; ``parse_mapping`` refuses a mapping while
any such comment is left, so ``mapping check`` walks the admin through every guess, by line, before the agent may
run on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from agent.core.errors import ConfigurationError
from mappings.format import MappingFile, parse_mapping

__all__ = ["Catalog", "Column", "Draft", "Match", "Table", "draft", "recognise", "shipped_mappings", "with_source"]

Kind = Literal["integer", "decimal", "float", "text", "date", "datetime", "bool", "other"]
GUESS = "# guess:"


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = True
    has_default: bool = False
    samples: tuple[str, ...] = ()  # a few distinct values of a short text column (statuses), for status_values


@dataclass(frozen=True)
class Table:
    name: str  # as a mapping names it: schema-qualified when the database has schemas beyond the default
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[tuple[str, str], ...] = ()  # (column, referred table) for single-column foreign keys

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)

    def refers_to(self, table: str) -> str | None:
        return next((col for col, target in self.foreign_keys if target.lower() == table.lower()), None)


@dataclass(frozen=True)
class Catalog:
    dialect: str  # sqlite, postgresql, mysql, mssql, odbc ...
    tables: tuple[Table, ...]

    def table(self, name: str) -> Table | None:
        wanted = name.lower()
        exact = next((t for t in self.tables if t.name.lower() == wanted), None)
        # a mapping for dbo.Bills fits a catalog that lists Bills (and the other way round)
        return exact or next((t for t in self.tables if t.name.lower().split(".")[-1] == wanted.split(".")[-1]),
                             None)


# ------------------------------------------------------------------------------------------- recognition


@dataclass(frozen=True)
class Match:
    """A shipped mapping whose tables and columns are all in the database."""

    name: str  # the mapping's own name
    path: Path
    tables: int
    columns: int
    text: str  # the shipped file, comments and all


def shipped_mappings() -> list[tuple[Path, str]]:
    """The mappings that ship in this package (examples and verified systems), as (path, text)."""
    folder = resources.files("mappings")
    return sorted((Path(str(f)), f.read_text(encoding="utf-8")) for f in folder.iterdir()
                  if f.name.endswith(".yaml"))


_QUERY_TABLES = re.compile(r"\b(?:from|join)\s+([A-Za-z_][\w.]*)", re.I)


def _names_read(mapping: MappingFile) -> dict[str, set[str]]:
    """Table -> the columns a mapping reads or writes there by name (entities given as a table only)."""
    out: dict[str, set[str]] = {}
    for em in mapping.entities.values():
        if em.table is None:  # a query: the tables it reads from must be there (its columns are its own)
            for name in _QUERY_TABLES.findall(em.query or ""):
                out.setdefault(name, set())
            continue
        names = {em.key, *em.columns.values()}
        names |= {c for c in (em.watermark.column if em.watermark else None, em.deleted_column) if c}
        out.setdefault(em.table, set()).update(names)
    if mapping.requests is not None:
        rq = mapping.requests
        out.setdefault(rq.table, set()).update({rq.key, rq.status_column, *rq.columns.values(),
                                                *rq.write_back.values()})
    return out


def recognise(catalog: Catalog, shipped: Iterable[tuple[Path, str]] | None = None) -> list[Match]:
    """Shipped mappings that fit the database, the one reading most columns first."""
    found = []
    for path, text in shipped_mappings() if shipped is None else shipped:
        try:
            mapping = parse_mapping(text, path)
        except ConfigurationError:
            continue
        wanted = _names_read(mapping)
        if len(wanted) < 2:  # one table proves nothing: every database has a table of something
            continue
        fits = all((t := catalog.table(name)) is not None and all(t.column(c) for c in cols)
                   for name, cols in wanted.items())
        if fits:
            found.append(Match(mapping.name or path.stem, path, len(wanted), sum(map(len, wanted.values())), text))
    return sorted(found, key=lambda m: (-m.columns, m.name))


def with_source(text: str, source: Sequence[str]) -> str:
    """A mapping's text with its top-level ``source:`` block replaced by ``source`` lines (comments kept)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^source\s*:", line)), None)
    if start is None:
        raise ValueError("the mapping has no top-level source block")
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "\t"))):
        end += 1
    return "\n".join([*lines[:start], *source, *lines[end:]]) + "\n"


# ------------------------------------------------------------------------------------------- drafting

# Words a table's name is made of, per entity (singular; plurals and prefixes are stripped before comparing).
TABLE_WORDS: dict[str, tuple[str, ...]] = {
    "clients": ("client", "customer", "contact", "party"),
    "payers": ("payer", "debtor", "billing_contact", "bill_to"),
    "matters": ("matter", "case", "case_file", "file", "job", "project", "engagement"),
    "statements": ("bill", "invoice", "statement", "fee_note"),
    "postings": ("receipt", "payment", "remittance", "cash_receipt"),
}
# Column names per field, most specific first; {t} is the entity's table word (bill_no, invoice_number ...).
FIELD_WORDS: dict[str, tuple[str, ...]] = {
    "number": ("{t}_no", "{t}_number", "{t}_num", "{t}_ref", "{t}_code", "number", "no", "ref", "reference",
               "code", "file_no", "display_number"),
    "name": ("name", "full_name", "display_name", "{t}_name", "company", "company_name", "title", "description"),
    "title": ("title", "name", "description", "{t}_name", "subject"),
    "email": ("email", "email_address", "e_mail", "addr_email", "mail"),
    "phone": ("phone", "telephone", "tel", "mobile", "phone_number", "addr_phone"),
    "amount": ("total", "amount", "total_amount", "gross", "total_pence", "total_cents", "amount_pence",
               "invoice_total", "{t}_total", "value"),
    "balance": ("balance", "balance_due", "outstanding", "amount_due", "due_amount", "remaining", "balance_pence",
                "balance_cents", "open_amount", "unpaid"),
    "issue_date": ("issued_on", "issue_date", "{t}_date", "issued", "issued_at", "date", "date_posted",
                   "posted_on", "created_on"),
    "due_date": ("due_on", "due_date", "date_due", "due"),
    "currency": ("currency", "currency_code", "ccy", "iso_currency"),
    "status": ("status", "state", "{t}_status", "stage"),
    "watermark": ("updated_at", "modified_at", "last_modified", "last_updated", "modified", "updated",
                  "changed_at", "date_modified", "rowversion", "row_version"),
    "deleted": ("deleted", "is_deleted", "deleted_flag"),
}
# The firm's status words we recognise, per our status (single letters are the common initials).
STATUS_WORDS: dict[str, set[str]] = {
    "open": {"open", "o", "a", "active", "current", "live", "outstanding", "unpaid", "posted", "sent", "due",
             "in progress"},
    "closed": {"closed", "c", "archived", "inactive", "complete", "completed", "finished"},
    "paid": {"paid", "p", "settled", "closed", "c"},
    "void": {"void", "v", "voided", "cancelled", "canceled", "written off", "x", "deleted"},
}
OUR_STATUSES = {"matters": ("open", "closed"), "statements": ("open", "paid", "void")}
MINOR_HINT = re.compile(r"(pence|cents|minor|_p$|_c$)", re.I)
REFERENCE = re.compile(r"(^|_)(ref|reference|external_ref|ext_ref|idempotency_key|transaction_ref)$", re.I)


def _words(name: str) -> list[str]:
    """A table name as the words it is made of, singular: dbo.CaseFiles -> ['case', 'file']."""
    last = name.split(".")[-1]
    last = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", last).lower()
    words = [w for w in re.split(r"[^a-z0-9]+", last) if w and w not in ("tbl", "t", "dbo")]
    return [re.sub(r"(ies)$", "y", w) if w.endswith("ies") else
            re.sub(r"(sses|xes|ches|shes)$", lambda m: m.group(0)[:-2], w) if re.search(r"(sses|xes|ches|shes)$", w)
            else w[:-1] if w.endswith("s") and not w.endswith("ss") else w for w in words]


def _table_score(table: Table, entity: str) -> int:
    words = _words(table.name)
    joined = "_".join(words)
    score = 0
    for rank, word in enumerate(TABLE_WORDS[entity]):
        if joined == word:
            score = max(score, 100 - rank)
        elif word in words or joined.endswith("_" + word):
            score = max(score, 60 - rank)
    return score


@dataclass
class Draft:
    """A draft mapping being written: YAML lines, and what the admin is told about it."""

    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    guesses: int = 0

    def add(self, indent: int, text: str, guess: str | None = None) -> None:
        line = " " * indent + text
        if guess:
            self.guesses += 1
            line = f"{line:<44} {GUESS} {guess}"
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _column(table: Table, field_name: str, word: str, taken: set[str],
            kinds: tuple[Kind, ...] | None = None) -> Column | None:
    for pattern in FIELD_WORDS[field_name]:
        col = table.column(pattern.format(t=word))
        if col is not None and col.name not in taken and (kinds is None or col.kind in kinds):
            return col
    return None


def _key(table: Table) -> tuple[str, str] | None:
    if len(table.primary_key) == 1:
        return table.primary_key[0], "the table's primary key"
    col = table.column("id") or table.column(f"{_words(table.name)[-1]}_id") or table.column("guid")
    return (col.name, f"no primary key is declared; {col.name} is named like one") if col else None


def _status_values(entity: str, col: Column) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for value in col.samples:
        for ours in OUR_STATUSES[entity]:
            if value.strip().lower() in STATUS_WORDS[ours]:
                out.setdefault(ours, []).append(value)
                break
    return out


def _yaml_scalar(value: str) -> str:
    return value if re.fullmatch(r"[A-Za-z_][\w-]*", value) and value.lower() not in (
        "y", "n", "yes", "no", "on", "off", "true", "false", "null") else '"' + value.replace('"', '\\"') + '"'


@dataclass(frozen=True)
class _Chosen:
    entity: str
    table: Table
    word: str  # the table's own word (bill, invoice ...) for column names like bill_no


def _choose_tables(catalog: Catalog) -> dict[str, _Chosen]:
    chosen: dict[str, _Chosen] = {}
    used: set[str] = set()
    for entity in ("statements", "matters", "clients", "payers", "postings"):
        ranked = sorted(((s, t.name, t) for t in catalog.tables if t.name not in used
                         and (s := _table_score(t, entity)) > 0), key=lambda x: (-x[0], x[1]))
        if ranked:
            table = ranked[0][2]
            used.add(table.name)
            words = _words(table.name)
            word = next((w for w in words if w in TABLE_WORDS[entity]), words[-1] if words else entity)
            chosen[entity] = _Chosen(entity, table, word)
    return chosen


def _link(table: Table, target: _Chosen | None, names: tuple[str, ...]) -> tuple[str, str] | None:
    """The column of ``table`` that refers to ``target``: a declared foreign key, else a column named for it."""
    if target is None:
        return None
    fk = table.refers_to(target.table.name) or table.refers_to(target.table.name.split(".")[-1])
    if fk:
        return fk, f"a foreign key to {target.table.name}"
    for name in (f"{target.word}_id", f"{target.word}_key", f"{target.word}_guid", *names):
        col = table.column(name)
        if col is not None:
            return col.name, f"named like a reference to {target.table.name} (no foreign key is declared)"
    return None


class _Fields:
    """The columns of one table proposed for our fields, each once, with why."""

    def __init__(self, table: Table, word: str, taken: set[str]) -> None:
        self.table, self.word, self.taken = table, word, taken
        self.chosen: list[tuple[str, str, str]] = []  # (our field, column, why)

    def pick(self, ours: str, words: str, kinds: tuple[Kind, ...]) -> Column | None:
        col = _column(self.table, words, self.word, self.taken, kinds)
        if col is not None:
            self.take(ours, col.name, f"{col.kind} column named like {ours}")
        return col

    def take(self, ours: str, column: str, why: str) -> None:
        self.taken.add(column)
        self.chosen.append((ours, column, why))

    def link(self, ours: str, target: _Chosen | None, names: tuple[str, ...], *, required: bool = False) -> None:
        found = _link(self.table, target, names)
        if found and found[0] not in self.taken:
            self.take(ours, *found)
        elif required:
            self.chosen.append((ours, "REPLACE_ME", f"no column refers to the {ours[:-4]}s table: name the one that "
                                "does"))


MONEY: tuple[Kind, ...] = ("integer", "decimal", "float")


def _statement_fields(d: Draft, f: _Fields, chosen: dict[str, _Chosen]) -> None:
    f.pick("number", "number", ("text", "integer"))
    f.link("matter_key", chosen.get("matters"), ("matter_id", "case_id", "job_id", "file_id"), required=True)
    money = [m for m in (f.pick("amount", "amount", MONEY), f.pick("balance", "balance", MONEY)) if m is not None]
    for ours in ("amount", "balance"):
        if ours not in {mapped for mapped, _, _ in f.chosen}:
            f.chosen.append((ours, "REPLACE_ME", f"no column named like {ours}: name the {ours} column"))
    f.pick("issue_date", "issue_date", ("date", "datetime", "text"))
    f.pick("due_date", "due_date", ("date", "datetime", "text"))
    f.pick("currency", "currency", ("text",))
    if money and all(m.kind == "integer" for m in money):
        why = ("integer columns named for minor units" if all(MINOR_HINT.search(m.name) for m in money)
               else "the amount columns are integers: whole pence? if they hold pounds, use decimal")
        d.add(4, "money: minor_units", why)
    elif any(m.kind == "float" for m in money):
        d.notes.append(f"statements: {', '.join(m.name for m in money if m.kind == 'float')} hold floating-point "
                       "numbers; Ledgerlink reads them only where they are exact to the penny")


def _status(d: Draft, entity: str, status: Column) -> None:
    values = _status_values(entity, status)
    seen = ", ".join(status.samples) or "none sampled"
    if values:
        inline = ", ".join(f"{k}: [{', '.join(map(_yaml_scalar, v))}]" for k, v in values.items())
        d.add(4, f"status_values: {{{inline}}}", f"{status.name} holds {seen}; values not listed count as open")
    else:
        d.notes.append(f"{entity}: {status.name} holds {seen}; map them with status_values "
                       f"({', '.join(OUR_STATUSES[entity])}); values not listed count as open")


def _entity(d: Draft, chosen: dict[str, _Chosen], entity: str) -> None:
    c = chosen[entity]
    t = c.table
    d.add(2, f"{entity}:")
    d.add(4, f"table: {t.name}", f"named like {entity}")
    key = _key(t)
    if key is None:
        d.add(4, "key: REPLACE_ME", "no primary key or id column found: name the column that identifies a row")
    else:
        d.add(4, f"key: {key[0]}", key[1])
    f = _Fields(t, c.word, {key[0]} if key else set())
    wm = _column(t, "watermark", c.word, f.taken, ("datetime", "integer", "text", "other"))
    if wm is not None:
        d.add(4, f"watermark: {{column: {wm.name}}}", f"{wm.kind} column named like a change time")
        f.taken.add(wm.name)
    else:
        d.notes.append(f"{entity}: no column like updated_at in {t.name}; every sync reads the whole table")
    deleted = _column(t, "deleted", c.word, f.taken, ("bool", "integer"))
    if deleted is not None:
        d.add(4, f"deleted_column: {deleted.name}", "a flag named like a soft delete")
        f.taken.add(deleted.name)
    if entity in ("clients", "payers"):
        for ours in ("name", "email", "phone"):
            f.pick(ours, ours, ("text",))
        if entity == "payers":
            f.link("client_key", chosen.get("clients"), ("client_id", "customer_id"))
    elif entity == "matters":
        f.pick("number", "number", ("text", "integer"))
        f.pick("name", "title", ("text",))
        f.link("client_key", chosen.get("clients"), ("client_id", "customer_id", "owner_guid"))
        f.link("payer_key", chosen.get("payers"), ("payer_id",))
    else:
        _statement_fields(d, f, chosen)
    status = f.pick("status", "status", ("text", "integer")) if entity in OUR_STATUSES else None
    d.add(4, "columns:")
    for ours, col, why in f.chosen:
        d.add(6, f"{ours}: {col}", why)
    if status is not None:
        _status(d, entity, status)


# Posting parameters a receipts table's column is filled from, by the column's name.
PARAM_BY_NAME: tuple[tuple[str, str], ...] = (
    (r"(^|_)(currency|ccy)$", "currency"),
    (r"(^|_)(method|payment_method|type)$", "method"),
    (r"(^|_)(description|note|notes|memo|narrative)$", "description"),
    (r"(^|_)(payer|payer_name|paid_by|received_from)$", "payer_name"),
    (r"(^|_)provider$", "provider"),
    (r"(^|_)(payment_id|provider_id|transaction_id)$", "payment_id"),
)


def _posting_param(col: Column, chosen: dict[str, _Chosen], table: Table) -> tuple[str, str] | None:
    """The parameter a receipts column is bound to, and why; None when nothing we know fills it."""
    if REFERENCE.search(col.name):
        return "reference", "named like a reference: Ledgerlink's unique posting reference (its idempotency key)"
    for entity, param in (("statements", "statement_key"), ("matters", "matter_key"), ("clients", "client_key")):
        link = _link(table, chosen.get(entity), ())
        if link is not None and link[0] == col.name:
            return param, link[1]
    name = col.name.lower()
    if re.search(r"(amount|total|value|sum)", name):
        if col.kind == "integer":
            return "amount_minor", "an integer amount: the payment in pence"
        return ("amount_text", "a text amount") if col.kind == "text" else ("amount", "a decimal amount")
    if re.search(r"(_at$|time|date|_on$|^received|^paid)", name):
        if col.kind == "date" or name.endswith(("_on", "date")):
            return "paid_on_local", "a date: the day the payment was confirmed, in the firm's timezone"
        return "paid_at_local", "a time: when the payment was confirmed, in the firm's timezone"
    for pattern, param in PARAM_BY_NAME:
        if re.search(pattern, name):
            return param, f"named like {param}"
    return None


def _postings(d: Draft, chosen: dict[str, _Chosen]) -> None:
    c = chosen.get("postings")
    why_not = "no table named like receipts or payments"
    if c is not None:
        t = c.table
        pk = t.primary_key[0] if len(t.primary_key) == 1 else None
        binds: list[tuple[str, str, str]] = []
        unfilled: list[str] = []
        for col in t.columns:
            if col.name == pk and col.kind == "integer":
                continue  # generated by the database
            bound = _posting_param(col, chosen, t)
            if bound is not None and bound[0] not in {b[1] for b in binds}:
                binds.append((col.name, *bound))
            elif not col.nullable and not col.has_default:
                unfilled.append(col.name)
        params = {b[1] for b in binds}
        if "reference" in params and "statement_key" in params and params & {"amount", "amount_minor", "amount_text"}:
            d.add(0, "postings:")
            d.add(2, "kind: sql")
            ref = next(b[0] for b in binds if b[1] == "reference")
            d.add(2, f"exists: SELECT 1 FROM {t.name} WHERE {ref} = :reference",
                  f"{t.name}.{ref} holds our reference, so a payment already written is found")
            d.add(2, "statements:")
            d.lines += [f"    # {t.name}.{col} <- :{param}: {why}" for col, param, why in binds]
            if unfilled:
                d.add(4, f"# {', '.join(unfilled)} must be given a value: add them to the INSERT")
            d.add(4, f"- INSERT INTO {t.name} ({', '.join(b[0] for b in binds)}) "
                  f"VALUES ({', '.join(':' + b[1] for b in binds)})",
                  "one receipt per posting; does your system move the bill's balance itself? if not, add an UPDATE")
            return
        why_not = (f"{t.name} has no column for our reference, the statement and the amount "
                   f"(found: {', '.join(f'{b[0]} <- {b[1]}' for b in binds) or 'nothing we can fill'})")
    d.notes.append(f"postings: {why_not}; write the postings section by hand (mappings/README.md, 'postings'), "
                   "or use kind: file for a statement file your software imports")


def draft(catalog: Catalog, source: Sequence[str], *, name: str, currency: str = "GBP") -> Draft:
    """A draft mapping for ``catalog``: every proposal on a line marked ``# guess:``, notes for what is missing."""
    d = Draft()
    d.add(0, f"# A draft mapping written by 'ledgerlink mapping suggest' from the {catalog.dialect} database's own")
    d.add(0, "# catalog. Each line marked '# guess' is a proposal: check it against your database, correct it if")
    d.add(0, "# it is wrong, then delete the '# guess' comment. 'ledgerlink mapping check FILE' lists those left.")
    d.add(0, "version: 1")
    d.add(0, f"name: {_yaml_scalar(name)}")
    d.lines += list(source)
    d.add(0, f"currency: {currency}", "the currency of statements that have no currency column")
    d.add(0, "timezone: UTC", "the zone your database's timestamps without a zone are in")
    chosen = _choose_tables(catalog)
    missing = [e for e in ("matters", "statements") if e not in chosen]
    if missing:
        raise ConfigurationError(
            f"no table in the database is named like {' or '.join(missing)} (looked for "
            + "; ".join(f"{e}: {', '.join(TABLE_WORDS[e])}" for e in missing)
            + "); write the mapping from mappings/README.md, or check that the URL names the firm's database")
    d.add(0, "entities:")
    for entity in ("clients", "payers", "matters", "statements"):
        if entity in chosen:
            _entity(d, chosen, entity)
    _postings(d, chosen)
    return d
