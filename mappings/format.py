"""Mapping files: the firm's own schema mapped onto Ledgerlink's model, declaratively.

A mapping maps columns and binds parameters; it is deliberately not a programming language. Loading reports
every mistake at once, each with file, line, key path and what would be valid, so an IT admin fixes a file in
one pass. ``ledgerlink mapping schema`` exports the JSON Schema for editors (mappings/schema.json).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from agent.core.errors import ConfigurationError
from mappings.sqlparams import param_names

MAPPING_VERSION = 1

# Our fields per entity: the ones a mapping must map, then the optional ones.
EntityName = Literal["clients", "payers", "matters", "statements"]
ENTITY_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "clients": ({"name"}, {"email", "phone"}),
    "payers": ({"name"}, {"email", "phone", "client_key"}),
    "matters": ({"number"}, {"name", "client_key", "payer_key", "status"}),
    "statements": (
        {"number", "matter_key", "amount", "balance"},
        {"issue_date", "due_date", "currency", "status"},
    ),
}

# Parameters a postings statement may bind, with what each holds. Documented in mappings/README.md.
POSTING_PARAMS: dict[str, str] = {
    "reference": "unique reference of this posting (provider payment id + statement); the idempotency key",
    "payment_id": "the provider's payment id",
    "provider": "provider name: sandbox, gocardless, stripe",
    "kind": "'payment' or 'reversal'; a payout's postings: 'fees', 'deposits' or 'transfers'",
    "amount": "Decimal amount, negative for a reversal",
    "amount_abs": "Decimal amount without sign",
    "amount_minor": "integer minor units (pence), negative for a reversal",
    "amount_text": "amount as decimal text, for drivers that mangle Decimal",
    "currency": "ISO currency code",
    "statement_key": "the statement's key in the firm database",
    "statement_number": "the statement's number",
    "matter_key": "the matter's key",
    "matter_number": "the matter's number",
    "client_key": "the client's key (may be NULL)",
    "paid_at": "timestamp the provider confirmed the payment (UTC, naive)",
    "paid_on": "date the provider confirmed the payment (UTC)",
    "paid_at_local": "the same moment in the mapping's timezone (naive), as the firm's books date it",
    "paid_on_local": "the payment's date in the mapping's timezone",
    "posting_uuid": "a UUID for this posting, dashed (the same in every statement of its transaction)",
    "posting_uuid_hex": "the same UUID as 32 hex digits, for a CHAR(32) or BINARY(16) id",
    "method": "bank, card or direct_debit",
    "description": "the link's description",
    "payer_name": "who paid, as the link names them (may be NULL)",
    "link_id": "Ledgerlink's link id",
    "account": "the merchant account's name (trust, fees, deposits, transfers: the account it concerns)",
    "account_kind": "operating or trust",
    "payout_id": "the provider's payout id (fees, deposits, transfers; NULL for payments)",
    "bank_reference": "what the bank statement shows for the payout (deposits)",
    "from_account": "transfers: the operating account the money comes from",
    "section": "the write-back section: NULL for payments, else trust, fees, deposits or transfers",
}

_PARAM_NAME = re.compile(r"^[A-Za-z_]\w*$")
_IDENT = re.compile(r"^[A-Za-z_][\w$#]*(\.[A-Za-z_][\w$#]*){0,2}$")
_INLINE_PASSWORD = re.compile(r"://[^/@:]+:[^/@]+@|(?i:(?:^|;)\s*(?:pwd|password)\s*=)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """Where the firm database is and which connector plugin reads it."""

    connector: str = Field("sqlalchemy", description="Connector plugin name (entry point in ledgerlink.connectors).")
    url: str | None = Field(None, description="SQLAlchemy URL without a password, e.g. postgresql+psycopg://u@h/db.")
    connection_string: str | None = Field(None, description="ODBC connection string or DSN=name, no password.")
    password_secret: str | None = Field(None, description="Name of the keyring secret that holds the password.")
    options: dict[str, Any] = Field(default_factory=dict, description="Connector-specific options.")

    @field_validator("url", "connection_string")
    @classmethod
    def _no_password(cls, text: str | None) -> str | None:
        if text and _INLINE_PASSWORD.search(text):
            raise ValueError(
                "the password is written in the mapping file; remove it, store it with "
                "'ledgerlink secrets set NAME' and name it in password_secret"
            )
        return text

    @model_validator(mode="after")
    def _where(self) -> SourceConfig:
        if not (self.url or self.connection_string):
            raise ValueError("give either url (SQLAlchemy) or connection_string (ODBC)")
        return self


class Watermark(_Strict):
    column: str = Field(description="Column that grows whenever a row changes (updated_at, rowversion).")
    timezone: str | None = Field(
        None, description="Zone of naive timestamps in this column; the firm's timezone when omitted."
    )
    lookback_seconds: int = Field(
        5, ge=0, description="Re-read this far behind the checkpoint, for transactions that commit late."
    )


class EntityMapping(_Strict):
    """One entity: a table with a column map, or a SELECT (joins allowed) whose result columns are mapped."""

    table: str | None = Field(None, description="Table (or schema.table) to read.")
    query: str | None = Field(None, description="A SELECT to read instead of a table; its columns are mapped.")
    key: str = Field(description="Primary-key column (unique, never changes).")
    watermark: Watermark | None = Field(None, description="Incremental sync column; full reads when omitted.")
    columns: dict[str, str] = Field(description="Our field -> the firm's column.")
    status_values: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Our status -> the firm's values, e.g. {closed: [C, ARCHIVED]}; unmapped values are 'open'.",
    )
    deleted_column: str | None = Field(None, description="Soft-delete flag column; true means deleted.")
    money: Literal["decimal", "minor_units"] = Field(
        "decimal", description="How amounts are stored: decimal numbers, or integer minor units (pence)."
    )
    currency: str | None = Field(None, description="Fixed currency when no currency column is mapped.")

    @model_validator(mode="after")
    def _source(self) -> EntityMapping:
        if bool(self.table) == bool(self.query):
            raise ValueError("give exactly one of table or query")
        if self.table and not _IDENT.match(self.table):
            raise ValueError(f"table {self.table!r} is not a plain [schema.]table name; use query for anything else")
        if self.query and not re.match(r"^\s*(select|with)\b", self.query, re.I):
            raise ValueError("query must be a single SELECT (or WITH ... SELECT)")
        if self.query and param_names(self.query):
            raise ValueError("query must not have :parameters; the agent adds its own paging")
        return self


READY_DESCRIPTION = (
    "Optional SELECT run first in the posting's transaction: its first column true (or non-zero) means the firm "
    "database can take the write now; false or no row means not now (an optional second column says why). "
    "The posting then waits as 'retrying' with that reason, without using up its attempts."
)


def _single_select(sql: str | None, what: str) -> str | None:
    if sql is not None and not re.match(r"^\s*(select|with)\b", sql, re.I):
        raise ValueError(f"{what} must be a single SELECT (or WITH ... SELECT)")
    return sql


class SqlWrite(_Strict):
    """Ordered SQL statements, run in one transaction after the existence check finds no row."""

    kind: Literal["sql"]
    ready: str | None = Field(None, description=READY_DESCRIPTION)
    exists: str = Field(description="SELECT that returns a row when :reference is already posted.")
    statements: list[str] = Field(min_length=1, description="INSERT/UPDATE statements with :params.")

    @field_validator("ready")
    @classmethod
    def _ready_select(cls, sql: str | None) -> str | None:
        return _single_select(sql, "ready")

    @property
    def writes(self) -> list[str]:
        """The statements run once the existence check found nothing (the connectors' one write-back path)."""
        return self.statements


class ProcedureWrite(_Strict):
    """A stored procedure that posts one payment; the existence check still runs first in the same transaction."""

    kind: Literal["procedure"]
    ready: str | None = Field(None, description=READY_DESCRIPTION)
    exists: str
    call: str = Field(description="e.g. '{CALL post_payment(:reference, :statement_key, :amount)}'.")

    @field_validator("ready")
    @classmethod
    def _ready_select(cls, sql: str | None) -> str | None:
        return _single_select(sql, "ready")

    @property
    def writes(self) -> list[str]:
        return [self.call]


# A write-back section the SQL connectors run: ready (optional), exists, then its writes, in one transaction.
SqlWriteBack = SqlWrite | ProcedureWrite


WriteBack = Annotated[SqlWrite | ProcedureWrite, Field(discriminator="kind")]
# The write-back sections after payments, each written by the same outbox with the same exactly-once rules.
SECTIONS: dict[str, str] = {
    "trust": "payments into a trust (client) account: a deposit on account to the matter's client ledger",
    "fees": "a payout's provider fees, an expense of the operating (office) side",
    "deposits": "one bank deposit per payout, for the bank reconciliation",
    "transfers": "optional: a transfer request from operating to trust for fees taken from client money",
}


class _Sections(_Strict):
    trust: WriteBack | None = Field(None, description=SECTIONS["trust"])
    fees: WriteBack | None = Field(None, description=SECTIONS["fees"])
    deposits: WriteBack | None = Field(None, description=SECTIONS["deposits"])
    transfers: WriteBack | None = Field(None, description=SECTIONS["transfers"])


class SqlPostings(SqlWrite, _Sections):
    """Payments as SQL statements, with the optional money sections (trust, fees, deposits, transfers)."""


class ProcedurePostings(ProcedureWrite, _Sections):
    """Payments through a stored procedure, with the optional money sections."""


def write_back(postings: SqlPostings | ProcedurePostings, section: str | None) -> SqlWriteBack:
    """The statements a posting of ``section`` is written with (None: a payment's own, the top level)."""
    if section is None:
        return postings
    found: SqlWrite | ProcedureWrite | None = getattr(postings, section, None) if section in SECTIONS else None
    if found is None:
        raise ConfigurationError(f"the mapping has no postings.{section} section; add one (see mappings/README.md)")
    return found


class FileColumn(_Strict):
    name: str = Field(description="Header (CSV) or field name (fixed layout).")
    param: str = Field(description="Which posting parameter fills it.")
    width: int | None = Field(None, ge=1, description="Fixed-layout width; required for format: fixed.")


IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")
BIC = re.compile(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?")


class StatementAccount(_Strict):
    """The account a statement file (OFX, camt.053) is of: the provider's clearing account in the firm's books."""

    account_id: str = Field(min_length=1, max_length=34,
                            description="IBAN, or the account number the accounting software knows it by.")
    currency: str = Field(pattern="^[A-Z]{3}$", description="ISO 4217 code; postings in another currency fail.")
    bank_id: str | None = Field(None, max_length=11, description="BIC (camt.053) or bank/sort code (OFX BANKID).")
    account_name: str | None = Field(None, max_length=70)

    @property
    def iban(self) -> bool:
        return IBAN.fullmatch(self.account_id) is not None


class FilePostings(_Strict):
    """One file per batch, written atomically into the folder the matter system imports: a CSV or fixed-width
    layout of the mapping's columns, or a bank statement (OFX 2.2, ISO 20022 camt.053) of ``statement``."""

    kind: Literal["file"]
    folder: str
    format: Literal["csv", "fixed", "ofx", "camt.053"] = "csv"
    filename: str = Field("ledgerlink-{batch}.csv", description="Must contain {batch}.")
    columns: list[FileColumn] = Field([], description="CSV and fixed layouts only: the file's columns.")
    statement: StatementAccount | None = Field(None, description="OFX and camt.053 only: whose statement it is.")

    @model_validator(mode="after")
    def _layout(self) -> FilePostings:
        if "{batch}" not in self.filename:
            raise ValueError("filename must contain {batch} so every batch gets its own file")
        if self.format in ("ofx", "camt.053"):
            if self.statement is None:
                raise ValueError(f"format {self.format} needs a statement: account_id and currency of the account "
                                 "the statement is of")
            if self.columns:
                raise ValueError(f"format {self.format} has its own fields: remove columns")
            bank = self.statement.bank_id
            if self.format == "camt.053" and bank is not None and not BIC.fullmatch(bank):
                raise ValueError(f"statement.bank_id {bank!r} is not a BIC (8 or 11 letters and digits, e.g. "
                                 "NWBKGB2L); camt.053 names the bank by its BIC")
            return self
        if not self.columns:
            raise ValueError(f"format {self.format} needs columns: the file's header and which parameter fills each")
        if self.statement is not None:
            raise ValueError("statement is for the ofx and camt.053 formats only")
        if self.format == "fixed" and any(c.width is None for c in self.columns):
            raise ValueError("every column needs a width when format is fixed")
        return self


class RequestTable(_Strict):
    """A table in the firm database where the matter software asks for links; the agent writes results back."""

    table: str = Field(description="Table (or schema.table) holding the requests.")
    key: str = Field(description="Primary-key column.")
    columns: dict[Literal["matter", "amount", "description", "account"], str] = Field(
        description="Request fields -> columns; matter is required, the rest default like the CLI's."
    )
    status_column: str = Field(description="Column the matter software sets to pending_value for a new request.")
    pending_value: str = "NEW"
    done_value: str = "LINKED"
    failed_value: str = "FAILED"
    write_back: dict[Literal["url", "link_id", "error", "link_status"], str] = Field(
        default_factory=dict, description="Result fields -> columns the agent fills in."
    )

    @model_validator(mode="after")
    def _shape(self) -> RequestTable:
        for name in (self.table, self.key, self.status_column, *self.columns.values(), *self.write_back.values()):
            if not _IDENT.match(name):
                raise ValueError(f"{name!r} is not a plain identifier")
        if "matter" not in self.columns:
            raise ValueError("columns must map 'matter' (the matter number or key)")
        return self


AUDIT_SECTION = "audit"  # the write-back "section" a checkpoint's insert runs as
AUDIT_FIELDS: dict[str, str] = {
    "seq": "the audit entry the checkpoint reaches (an integer column)",
    "hash": "that entry's hash, 64 hex digits (VARCHAR(64))",
    "at": "when the checkpoint was signed, as text such as 2026-12-07T10:00:00Z (VARCHAR(20))",
    "signer": "the agent's checkpoint public key, 64 hex digits (VARCHAR(64))",
    "sig": "the Ed25519 signature, 128 hex digits (VARCHAR(128))",
}


class AuditTable(_Strict):
    """A table in the firm's own database that receives a copy of each signed audit checkpoint: a place the
    holder of the agent's state store cannot rewrite alone (agent.state.anchor)."""

    table: str = Field(description="Table (or schema.table) the checkpoints are inserted into; no UNIQUE needed.")
    columns: dict[Literal["seq", "hash", "at", "signer", "sig"], str] = Field(
        default_factory=dict, description="Checkpoint field -> column, where the column is named otherwise.")

    @model_validator(mode="after")
    def _shape(self) -> AuditTable:
        for name in (self.table, *self.columns.values()):
            if not _IDENT.match(name):
                raise ValueError(f"{name!r} is not a plain identifier")
        return self

    def column(self, field: str) -> str:
        return next((column for name, column in self.columns.items() if name == field), field)

    @property
    def write(self) -> SqlWrite:
        """The insert, with the existence check on (seq, hash) that makes writing one checkpoint again a no-op:
        it runs through the connectors' one write-back path, like a posting."""
        cols = [self.column(f) for f in AUDIT_FIELDS]
        return SqlWrite(kind="sql", exists=f"SELECT 1 FROM {self.table} WHERE {cols[0]} = :seq AND {cols[1]} = :hash",
                        statements=[f"INSERT INTO {self.table} ({', '.join(cols)}) "
                                    f"VALUES ({', '.join(':' + f for f in AUDIT_FIELDS)})"])

    @property
    def newest(self) -> str:
        """The rows of the highest seq, in AUDIT_FIELDS order (no LIMIT: the same text runs on every dialect)."""
        cols = [self.column(f) for f in AUDIT_FIELDS]
        return (f"SELECT {', '.join(cols)} FROM {self.table} "
                f"WHERE {cols[0]} = (SELECT MAX({cols[0]}) FROM {self.table})")


Postings = Annotated[SqlPostings | ProcedurePostings | FilePostings, Field(discriminator="kind")]


class MappingFile(_Strict):
    """A whole mapping file."""

    version: Literal[1] = Field(description="Mapping format version.")
    name: str = Field("firm", description="A label for logs and the console.")
    source: SourceConfig
    currency: str = Field("GBP", min_length=3, max_length=3, description="Default currency.")
    timezone: str = Field("Europe/London", description="IANA zone of naive timestamps in the firm database.")
    entities: dict[EntityName, EntityMapping]
    postings: Postings | None = Field(None, description="How payments are written back (see mappings/README.md).")
    requests: RequestTable | None = Field(None, description="Optional request table the matter software writes.")
    audit: AuditTable | None = Field(None, description="Optional table that receives each signed audit checkpoint.")
    params: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict,
        description="Named constants the postings statements bind as :name, e.g. {bank_account_id: 7}.",
    )

    @model_validator(mode="after")
    def _complete(self) -> MappingFile:
        missing = {"matters", "statements"} - set(self.entities)
        if missing:
            raise ValueError(f"entities must include {', '.join(sorted(missing))}")
        return self


def json_schema(options: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The mapping file's JSON Schema; ``options``: each connector's name and the JSON Schema of its
    ``source.options`` (its Options model), applied by ``source.connector`` so an editor flags a mistyped key."""
    schema = MappingFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Ledgerlink mapping file"
    default = SourceConfig.model_fields["connector"].default
    rules = []
    for name, model in sorted((options or {}).items()):
        named = {"properties": {"connector": {"const": name}}, "required": ["connector"]}
        chosen = {"anyOf": [named, {"not": {"required": ["connector"]}}]} if name == default else named
        rules.append({"if": chosen, "then": {"properties": {"options": model}}})
    if rules:
        schema["$defs"]["SourceConfig"]["allOf"] = rules
    return schema


# --------------------------------------------------------------------------------------------------- loading


def _line_index(node: yaml.Node, path: tuple[Any, ...] = (),
                index: dict[tuple[Any, ...], int] | None = None) -> dict[tuple[Any, ...], int]:
    """Key path -> 1-based line, from PyYAML's node tree, so validation errors can point into the file."""
    index = {} if index is None else index
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            _line_index(value_node, child, index)
            index[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), index)
    return index


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return 1


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


class MappingErrors(ConfigurationError):
    """All the mistakes in one mapping file, each as 'file:line: key.path: message'."""

    def __init__(self, path: Path, problems: list[tuple[int, str, str]]) -> None:
        self.path = path
        self.problems = sorted(problems)
        lines = [f"{path}:{line}: {where}: {msg}" for line, where, msg in self.problems]
        super().__init__(f"{len(lines)} problem(s) in mapping {path}:\n" + "\n".join(lines))


def _pydantic_message(err: ErrorDetails) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "unknown key; check the spelling against mappings/README.md"
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] == "literal_error":
        return f"{msg} (got {err.get('input')!r})"
    return msg


Problem = tuple[tuple[Any, ...], str]  # (key path, message)
# Our statuses per entity that has one; status_values may map only these.
STATUSES: dict[str, set[str]] = {"matters": {"open", "closed"}, "statements": {"open", "paid", "void"}}


def _dict_at(data: dict[Any, Any], key: str) -> dict[Any, Any]:
    """The value under ``key`` when it is a mapping, else empty: validation reports a wrong shape on its own."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _field_problems(entity: str, em: dict[Any, Any]) -> list[Problem]:
    """Mapped fields this entity does not have, and required ones left unmapped."""
    required, optional = ENTITY_FIELDS[entity]
    valid = ", ".join(sorted(required | optional))
    columns = _dict_at(em, "columns")
    problems: list[Problem] = [
        (("entities", entity, "columns", ours), f"{entity} has no field {ours!r}; valid fields: {valid}")
        for ours in columns if ours not in required | optional]
    problems += [(("entities", entity, "columns"), f"required field {ours!r} is not mapped; add '{ours}: <column>'")
                 for ours in sorted(required - set(columns))]
    return problems


def _status_problems(entity: str, em: dict[Any, Any]) -> list[Problem]:
    statuses = STATUSES.get(entity, set())
    valid = ", ".join(sorted(statuses)) or "none (this entity has no status)"
    return [(("entities", entity, "status_values", status), f"unknown status {status!r}; valid: {valid}")
            for status in _dict_at(em, "status_values") if status not in statuses]


def _entity_problems(data: dict[Any, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for entity, em in _dict_at(data, "entities").items():
        if entity in ENTITY_FIELDS and isinstance(em, dict):
            problems += _field_problems(entity, em) + _status_problems(entity, em)
    return problems


def _constant_problems(constants: dict[Any, Any]) -> list[Problem]:
    """The mapping's own ``params``: plain names, none shadowing one of ours."""
    problems: list[Problem] = []
    for name in constants:
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            problems.append((("params", name), f"{name!r} is not a parameter name (letters, digits, _)"))
        elif name in POSTING_PARAMS:
            problems.append((("params", name), f":{name} is one of Ledgerlink's own parameters; choose another name"))
    return problems


def _sql_parameter_problems(postings: dict[Any, Any], known: list[str], valid: str,
                            at: tuple[str, ...] = ("postings",)) -> list[Problem]:
    """Every :name a postings statement binds must be one of ours or a mapping constant."""
    sqls: list[tuple[tuple[Any, ...], Any]] = [((*at, "exists"), postings.get("exists")),
                                               ((*at, "ready"), postings.get("ready"))]
    sqls += [((*at, "statements", i), sql) for i, sql in enumerate(postings.get("statements") or [])]
    sqls.append(((*at, "call"), postings.get("call")))
    return [(loc, f"unknown parameter :{name}; valid: {valid}")
            for loc, sql in sqls for name in (param_names(sql) if isinstance(sql, str) else []) if name not in known]


def _write_problems(postings: dict[Any, Any], known: list[str], valid: str, at: tuple[str, ...],
                    constants: Sequence[str] = ()) -> list[Problem]:
    problems = _sql_parameter_problems(postings, known, valid, at)
    exists = postings.get("exists")
    if isinstance(exists, str) and "reference" not in param_names(exists):
        problems.append(((*at, "exists"),
                         "the existence check must bind :reference (that is what makes it idempotent)"))
    if isinstance(exists, str):
        others = [n for n in dict.fromkeys(param_names(exists)) if n in known and n != "reference"
                  and n not in constants]
        problems += [((*at, "exists"), f":{name} cannot be bound here: the existence check also runs on its own, "
                      "knowing only :reference (and the mapping's params); keep the other parameters for the "
                      "statements") for name in others]
    return problems


def _postings_problems(postings: dict[Any, Any], constants: dict[Any, Any]) -> list[Problem]:
    known = list(dict.fromkeys([*POSTING_PARAMS, *(n for n in constants if isinstance(n, str))]))
    valid = ", ".join(f":{p}" for p in known)
    names = [n for n in constants if isinstance(n, str)]
    problems = _write_problems(postings, known, valid, ("postings",), names)
    for section in SECTIONS:
        if isinstance(postings.get(section), dict):
            problems += _write_problems(postings[section], known, valid, ("postings", section), names)
    problems += [(("postings", "columns", i, "param"), f"unknown parameter {col.get('param')!r}; valid: {valid}")
                 for i, col in enumerate(postings.get("columns") or [])
                 if isinstance(col, dict) and col.get("param") not in known]
    return problems


def _trust_problems(data: dict[Any, Any], trust_accounts: Sequence[str]) -> list[Problem]:
    """A mapping that writes payments back must write a trust account's payments through postings.trust, or
    client money would be posted as an office receipt: refuse the mapping, not the money. (A mapping with no
    postings section writes nothing back at all.)"""
    postings = data.get("postings")
    if not trust_accounts or not isinstance(postings, dict) or isinstance(postings.get("trust"), dict):
        return []
    names = ", ".join(repr(n) for n in trust_accounts)
    where = ("postings",)
    return [(where, f"account(s) {names} are trust (client) accounts but the mapping has no postings.trust "
                    "section; add 'trust:' under postings with the INSERT that puts a deposit on the matter's "
                    "client ledger (see mappings/README.md, 'Client money')")]


def _semantic_problems(data: dict[Any, Any]) -> list[Problem]:
    """Checks across keys (fields per entity, SQL parameters), on the raw data so they run even when other
    parts of the file are invalid: every problem is reported in one pass."""
    constants = _dict_at(data, "params")
    problems = _entity_problems(data) + _constant_problems(constants)
    postings = data.get("postings")
    if isinstance(postings, dict):
        problems += _postings_problems(postings, constants)
    return problems


class _Loader(yaml.SafeLoader):
    """YAML 1.2-style booleans: only true/false. Column names such as ``no``, ``on`` or ``y`` stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


# A real mapping is a few kilobytes with a handful of anchors; these caps refuse a "billion laughs" file (a few
# hundred bytes of nested aliases expanding to gigabytes) before anything expands it.
MAX_MAPPING_BYTES = 1_000_000
MAX_ALIASES = 100
MAX_DEPTH = 50
MAX_NODES = 100_000


def _check_shape(text: str, path: Path) -> None:
    """Count aliases and nesting on the event stream, which never expands an alias; refuse past the budget."""
    aliases = depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        line = event.start_mark.line + 1 if event.start_mark else 1
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise MappingErrors(path, [(line, "(yaml)", f"more than {MAX_ALIASES} aliases (*name); a mapping "
                                            "needs few, so this file is refused rather than expanded")])
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise MappingErrors(path, [(line, "(yaml)", f"nested more than {MAX_DEPTH} levels deep")])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes the document has once every alias is expanded, counted in linear time (each node once)."""
    if id(node) not in sizes:
        sizes[id(node)] = 0  # a recursive alias counts as nothing more; the loader itself refuses it
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        sizes[id(node)] = min(1 + sum(_expanded_size(child, sizes) for child in children), MAX_NODES + 1)
    return sizes[id(node)]


_GUESS = re.compile(r"(?:^|\s)#\s*guess:\s*(.*)$")


def _guesses(text: str) -> list[tuple[int, str, str]]:
    """The '# guess:' comments a draft from 'ledgerlink mapping suggest' is written with and the admin has not yet
    confirmed: the agent runs on no mapping while one is left."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if match := _GUESS.search(line):
            proposal = line[: match.start()].strip()
            out.append((number, "(draft)", f"unconfirmed guess {proposal!r} ({match.group(1).strip()}); check it "
                        "against your database, correct the line if it is wrong, then delete the '# guess' comment"))
    return out


def parse_mapping(text: str, path: Path, trust_accounts: Sequence[str] = ()) -> MappingFile:
    """Validate mapping text; raise MappingErrors listing every problem with its line. ``trust_accounts`` are
    the settings' trust accounts, whose payments need the postings.trust section."""
    try:
        _check_shape(text, path)
        node = yaml.compose(text, Loader=_Loader)
        if node is not None and _expanded_size(node, {}) > MAX_NODES:
            raise MappingErrors(path, [(1, "(yaml)", f"more than {MAX_NODES} values once its aliases are expanded; "
                                        "write the values out instead of nesting aliases")])
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise MappingErrors(path, [(line, "(yaml)", f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if not isinstance(data, dict) or node is None:
        raise MappingErrors(path, [(1, "(top level)", "a mapping file is a YAML mapping with version, source, ...")])
    lines = _line_index(node)
    if data.get("version") not in (None, MAPPING_VERSION):
        raise MappingErrors(
            path,
            [(_line_for(("version",), lines), "version",
              f"version {data.get('version')!r} is not supported by this agent; it reads version {MAPPING_VERSION}")],
        )
    found = _semantic_problems(data) + _trust_problems(data, trust_accounts)
    problems = [(_line_for(loc, lines), _dotted(loc), msg) for loc, msg in found] + _guesses(text)
    try:
        mapping = MappingFile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p not in ("sql", "procedure", "file"))
            problems.append((_line_for(loc, lines), _dotted(loc), _pydantic_message(err)))
    if problems:
        raise MappingErrors(path, list(dict.fromkeys(problems)))
    return mapping


def load_mapping(path: str | Path, trust_accounts: Sequence[str] = ()) -> MappingFile:
    """Read and validate a mapping file; a file over MAX_MAPPING_BYTES is refused unread."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_MAPPING_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"cannot read mapping {path}: {exc.strerror}") from None
    if len(raw) > MAX_MAPPING_BYTES:
        raise MappingErrors(path, [(1, "(file)", f"larger than {MAX_MAPPING_BYTES:,} bytes; a mapping file is a few "
                                    "kilobytes, so this is not one")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MappingErrors(path, [(line, "(file)", "not UTF-8 text; save the file as UTF-8")]) from None
    return parse_mapping(text, path, trust_accounts)
