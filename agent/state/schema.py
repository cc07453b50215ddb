"""Table definitions of the state store (SQLAlchemy Core). Alembic migrations create and upgrade them.

The firm_* tables mirror the firm database (read-only for us); everything else is the agent's own record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from agent.state.types import DecimalText, UTCDateTime

metadata = MetaData()

Row = Mapping[Any, Any]  # a result row by column name (SQLAlchemy's RowMapping) or a plain dict of one
KEY = String(191)  # fits a MySQL utf8mb4 index, and any firm key we have seen

firm_clients = Table(
    "firm_clients", metadata,
    Column("key", KEY, primary_key=True),
    Column("name", Text, nullable=False),
    Column("email", Text),
    Column("phone", Text),
    Column("deleted", Boolean, nullable=False, default=False),
    sqlite_with_rowid=False,
)

firm_payers = Table(
    "firm_payers", metadata,
    Column("key", KEY, primary_key=True),
    Column("name", Text, nullable=False),
    Column("email", Text),
    Column("phone", Text),
    Column("client_key", KEY),
    Column("deleted", Boolean, nullable=False, default=False),
    sqlite_with_rowid=False,
)

firm_matters = Table(
    "firm_matters", metadata,
    Column("key", KEY, primary_key=True),
    Column("number", KEY, nullable=False, index=True),
    Column("name", Text, nullable=False, default=""),
    Column("client_key", KEY, index=True),
    Column("payer_key", KEY),
    Column("status", String(16), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    sqlite_with_rowid=False,
)

firm_statements = Table(
    "firm_statements", metadata,
    Column("key", KEY, primary_key=True),
    Column("number", KEY, nullable=False),
    Column("matter_key", KEY, nullable=False),
    Column("issue_date", Date),
    Column("due_date", Date),
    Column("amount", DecimalText, nullable=False),
    Column("balance", DecimalText, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    # a matter's statements, and the live invoice numbers the search index reads without visiting the rows
    Index("ix_firm_statements_matter", "matter_key", "deleted", "number"),
    sqlite_with_rowid=False,
)

FIRM_TABLES = {
    "clients": firm_clients,
    "payers": firm_payers,
    "matters": firm_matters,
    "statements": firm_statements,
}

checkpoints = Table(
    "checkpoints", metadata,
    Column("entity", String(32), primary_key=True),
    Column("watermark", Text, comment="JSON: {type, value} of the last durably stored row's watermark"),
    Column("last_key", Text),
    Column("rows_synced", Integer, nullable=False, default=0),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("settled", Text, comment="JSON: {type, value} watermark; every row at or before it is final"),
)

quarantine = Table(
    "sync_quarantine", metadata,
    Column("entity", String(32), primary_key=True),
    Column("key", KEY, primary_key=True),
    Column("raw_key", Text, comment="JSON {type, value}: the key as the firm database types it, to re-read it"),
    Column("number", Text, comment="the firm's own number (bill, matter), when the row had one"),
    Column("field", String(32)),
    Column("reason", Text, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    comment="source rows the sync could not use; the rest of their batch was stored, these are re-read each pass",
)

lease = Table(
    "agent_lease", metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", Text, comment="who is active: 'pid N on host'; NULL once released"),
    Column("token", BigInteger, nullable=False, comment="fencing token: +1 on every takeover"),
    Column("acquired_at", UTCDateTime),
    Column("expires_at", UTCDateTime, comment="by the database's clock; renewed by the active agent"),
)

sign_in_codes = Table(  # 0008: one-time console sign-in codes, kept as hashes
    "sign_in_codes", metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("role", String(8), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Column("user_name", String(64), comment="0013: the person the code signs in; NULL on older codes"),
)

users = Table(  # 0013: named staff; a NULL password signs in only through a one-time link
    "users", metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(8), nullable=False, comment="clerk or admin"),
    Column("password_hash", Text, comment="argon2id, never the password"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime),
)

user_sessions = Table(  # 0013: console sessions, kept in the store so they survive a restart until they expire
    "user_sessions", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_name", String(64), ForeignKey("users.name"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

api_tokens = Table(  # 0013: personal API tokens, shown once and kept as hashes
    "api_tokens", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_name", String(64), ForeignKey("users.name"), nullable=False),
    Column("label", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

sign_in_failures = Table(  # 0013: brute-force protection, one row per name ("user:NAME") and per address ("addr:IP")
    "sign_in_failures", metadata,
    Column("key", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", UTCDateTime, nullable=False),
    Column("not_before", UTCDateTime, nullable=False, comment="no attempt is checked before this time"),
)

# ---------------------------------------------------------------------------- matter search (0011, state/search.py)

# One row per matter: the text a clerk searches by. On SQLite, the FTS5 tables search_fts (trigram) and search_words
# (unicode61, whose vocabulary corrects typos) index it as external content, keyed by ``id``; they are virtual
# tables, created by the migration, not here.
search_docs = Table(
    "search_docs", metadata,
    Column("id", Integer, primary_key=True),
    Column("matter_key", KEY, nullable=False, unique=True),
    Column("number", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("client", Text, nullable=False),
    Column("invoices", Text, nullable=False, comment="its statements' numbers, significant part only"),
)

search_state = Table(
    "search_state", metadata,
    Column("id", Integer, primary_key=True),
    Column("behind", String(32), comment="the token of a sync pass that stored rows not yet in the index"),
)

# ------------------------------------------------------------------------ the audit trail (0014, agent/state/audit.py)

# Append-only: rows are only ever inserted. Each carries the hash of the one before it and its own hash over a
# canonical encoding of its fields, so an edited, deleted or reordered entry breaks the chain ("audit verify").
audit_log = Table(
    "audit_log", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False, comment="1, 2, 3...: no gaps"),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(191), nullable=False, index=True, comment="kind:name, as str(Actor)"),
    Column("action", String(64), nullable=False),
    Column("object_kind", String(32), nullable=False),
    Column("object_id", KEY, nullable=False),
    Column("outcome", String(8), nullable=False, comment="ok or failed"),
    Column("error", Text),
    Column("before", Text, comment="JSON of the values before, never secrets"),
    Column("after", Text, comment="JSON of the values after, never secrets"),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # 0018: sealed with an HMAC key kept outside the store (agent.state.anchor); null for entries before keying
    Column("key_id", String(8), comment="the audit key that sealed it; null before keying"),
    Column("mac", String(64), comment="HMAC-SHA256 of key id, seq and hash"),
)
Index("ix_audit_object", audit_log.c.object_kind, audit_log.c.object_id)

# One row (id 1): the newest entry's seq and hash. Locked by every append, so concurrent writers take turns and
# the chain never forks; it also reveals a deleted newest entry.
audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("key_id", String(8), comment="the key the next entry is sealed with (0018)"),
)

component_status = Table(
    "component_status", metadata,
    Column("component", String(64), primary_key=True),
    Column("last_ok_at", UTCDateTime),
    Column("last_error_at", UTCDateTime),
    Column("last_error", Text),
)

# ---------------------------------------------------------------------------- links, payments, postings (0002)

api_replays = Table(  # 0017: the first answer to each Idempotency-Key (agent.state.replays)
    "api_replays", metadata,
    Column("key", String(64), primary_key=True, comment="sha256 of the caller's credential and key"),
    Column("method", String(8), nullable=False),
    Column("path", Text, nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("status", Integer, comment="the first answer's HTTP status; null while it runs"),
    Column("body", Text),
    Column("created_at", UTCDateTime, nullable=False, index=True),
)

links = Table(
    "links", metadata,
    Column("id", String(32), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("provider_ref", String(191)),
    Column("url", Text),
    Column("status", String(24), nullable=False, index=True),
    Column("amount", DecimalText, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("description", Text, nullable=False),
    Column("matter_key", KEY, index=True),
    Column("client_key", KEY),
    Column("payer_name", Text),
    Column("payer_email", Text),
    Column("payer_phone", Text),
    Column("invoice_number", Text),
    Column("due_date", Date),
    Column("message", Text, comment="the firm's own words to the payer for this link (0019)"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime),
    Column("status_reason", Text),
    Column("flagged", Text, comment="Why a person should look at this outstanding link (debt changed)"),
    Column("replaces", String(32)),
    Column("account_kind", String(16), comment="operating or trust, fixed when the link is made"),
    # Set to the debt's key while the link is outstanding and NULL afterwards: the unique index is what makes
    # "one outstanding link per debt" hold across threads and processes.
    Column("outstanding_key", KEY, unique=True),
    Column("idempotency_key", String(64), nullable=False, unique=True),
)

link_items = Table(
    "link_items", metadata,
    Column("link_id", String(32), ForeignKey("links.id"), primary_key=True),
    Column("statement_key", KEY, primary_key=True),
    Column("amount", DecimalText, nullable=False),
    Column("explicit", Boolean, nullable=False, default=False),
    Column("statement_amount", DecimalText, comment="the bill's amount when the link was made (0017)"),
)

provider_cursors = Table(
    "provider_cursors", metadata,
    Column("account", String(64), primary_key=True),
    Column("cursor", Text),
    Column("updated_at", UTCDateTime, nullable=False),
)

provider_events = Table(
    "provider_events", metadata,
    Column("account", String(64), primary_key=True),
    Column("event_id", String(191), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("link_ref", String(191)),
    Column("payment_ref", String(191)),
    Column("amount", DecimalText),
    Column("currency", String(3)),
    Column("raw_status", String(64)),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("error", Text, comment="why an unreadable (parked) event could not be read (0006)"),
)

payments = Table(
    "payments", metadata,
    Column("id", String(32), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("payment_ref", String(191), nullable=False),
    Column("link_id", String(32), ForeignKey("links.id")),
    Column("amount", DecimalText, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(24), nullable=False),
    Column("method", String(16), nullable=False),
    Column("status_at", UTCDateTime, nullable=False, comment="occurred_at of the event that set status"),
    Column("confirmed_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("account_kind", String(16), comment="operating or trust, fixed when the payment is first recorded"),
    UniqueConstraint("account", "payment_ref", name="uq_payments_ref"),
)

postings = Table(
    "postings", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("payment_id", String(32), ForeignKey("payments.id"), index=True,
           comment="the payment posted or reversed; NULL for a payout's fees, deposit or transfer (0012)"),
    Column("reference", String(191), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("statement_key", KEY),
    Column("matter_key", KEY),
    Column("amount", DecimalText, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("next_attempt_at", UTCDateTime),
    Column("note", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("posted_at", UTCDateTime),
    Column("section", String(16), comment="the mapping's write-back section: NULL payments, else trust, fees, "
           "deposits or transfers (0012)"),
    Column("payout_id", String(32), ForeignKey("payouts.id"), index=True,
           comment="the payout a fees, deposits or transfers posting is for (0012)"),
    Column("account", String(64), comment="the merchant account a payout posting concerns (0012)"),
)
Index("ix_postings_state_next", postings.c.state, postings.c.next_attempt_at)

file_drops = Table(
    "file_drops", metadata,
    Column("batch", String(32), primary_key=True),
    Column("filename", Text, nullable=False),
    Column("references", Text, nullable=False, comment="JSON list of posting references in the file"),
    Column("written_at", UTCDateTime, nullable=False),
)

# ---------------------------------------------------------------------------- payouts and refunds (0012)

payouts = Table(
    "payouts", metadata,
    Column("id", String(32), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("account_kind", String(16), nullable=False, comment="operating or trust, when it was read"),
    Column("fees_account", String(64), nullable=False, comment="the operating account that owes its fees"),
    Column("provider", String(32), nullable=False),
    Column("payout_ref", String(191), nullable=False),
    Column("amount", DecimalText, nullable=False, comment="what reaches the firm's bank account"),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False, comment="pending, paid or failed (PayoutStatus)"),
    Column("raw_status", String(32), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("arrival_date", Date),
    Column("bank_reference", Text, nullable=False),
    Column("items_total", DecimalText, nullable=False, comment="the sum of its items: equal to amount when it adds up"),
    Column("fees", DecimalText, nullable=False, comment="fee items, as a positive amount"),
    Column("shortfall", DecimalText, comment="trust payouts: fees taken from client money, to transfer back"),
    Column("breach_cleared_at", UTCDateTime, comment="when a person confirmed the shortfall was transferred back"),
    Column("breach_note", Text),
    Column("synced_at", UTCDateTime, nullable=False),
    UniqueConstraint("account", "payout_ref", name="uq_payouts_ref"),
)

payout_items = Table(
    "payout_items", metadata,
    Column("payout_id", String(32), ForeignKey("payouts.id"), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("kind", String(16), nullable=False, comment="payment, fee, refund, chargeback or adjustment"),
    Column("amount", DecimalText, nullable=False, comment="signed: what it adds to the bank credit"),
    Column("payment_ref", String(191), index=True),
    Column("ref", String(191), nullable=False),
    Column("raw_type", String(64), nullable=False),
)

refunds = Table(
    "refunds", metadata,
    Column("id", String(32), primary_key=True),
    Column("payment_id", String(32), ForeignKey("payments.id"), nullable=False, index=True),
    Column("amount", DecimalText, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", Text, nullable=False, comment="who asked for it, as kind:name (agent.core.model.Actor)"),
    Column("status", String(16), nullable=False, comment="requested, then pending, succeeded or failed"),
    Column("provider_ref", String(191)),
    Column("error", Text),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# ---------------------------------------------------------------------------- Direct Debit (0005, agent/directdebit.py)

mandates = Table(
    "mandates", metadata,
    Column("id", String(32), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("payer_key", KEY, nullable=False, index=True),
    Column("setup_ref", String(191), nullable=False, comment="the provider's setup (billing request) id"),
    Column("provider_ref", String(191), comment="the mandate's id once the payer finished the setup"),
    Column("url", Text),
    Column("status", String(32), nullable=False, comment="the provider's mandate status, exactly"),
    Column("raw_status", String(64), nullable=False),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("plan_id", String(32), comment="the plan this setup was started for (0022)"),
)

collections = Table(
    "collections", metadata,
    Column("id", String(32), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("provider_ref", String(191)),
    Column("mandate_id", String(32), ForeignKey("mandates.id"), nullable=False),
    Column("payer_key", KEY, nullable=False),
    Column("matter_key", KEY, nullable=False, index=True),
    Column("statement_key", KEY, nullable=False, index=True),
    Column("kind", String(8), nullable=False,
           comment="auto (scheduled on the due date), manual (Pay Now) or plan (a payment plan's instalment)"),
    Column("amount", DecimalText, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("charge_date", Date),
    Column("status", String(32), nullable=False, comment="creating, then the provider's payment status exactly"),
    # The statement's key while this is the statement's collection; NULL once recomputed or replaced. The unique
    # index keeps one collection per statement across processes, as links.outstanding_key does for links.
    Column("current_key", KEY, unique=True),
    Column("note", Text),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("account", "provider_ref", name="uq_collections_ref"),
)

# ---------------------------------------------------------------------------- payment plans (0020)

plans = Table(
    "plans", metadata,
    Column("id", String(32), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("mandate_id", String(32), ForeignKey("mandates.id"), nullable=False),
    Column("payer_key", KEY, nullable=False),
    Column("matter_key", KEY, nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("total", DecimalText, nullable=False),
    Column("frequency", String(12), nullable=False),
    Column("status", String(16), nullable=False, comment="awaiting_mandate, active, ended or cancelled"),
    Column("active_key", KEY, unique=True, comment="the matter's key while active: one plan each"),
    Column("note", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

plan_statements = Table(
    "plan_statements", metadata,
    Column("plan_id", String(32), ForeignKey("plans.id"), primary_key=True),
    Column("statement_key", KEY, primary_key=True),
)

# An instalment's money status is its collection's (collections.kind = 'plan') once it is submitted.
plan_instalments = Table(
    "plan_instalments", metadata,
    Column("plan_id", String(32), ForeignKey("plans.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("amount", DecimalText, nullable=False),
    Column("due_on", Date, nullable=False),
    Column("state", String(16), nullable=False, comment="scheduled, submitted or cancelled"),
    Column("collection_id", String(32), ForeignKey("collections.id"), unique=True),
    Column("note", Text),
)

# ---------------------------------------------------------------------------- delivery, reminders (0004)

sends = Table(
    "sends", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("link_id", String(32), ForeignKey("links.id"), nullable=False, index=True),
    Column("channel", String(8), nullable=False, comment="email or sms"),
    Column("recipient", Text, nullable=False),
    Column("purpose", String(32), nullable=False, comment="link (sent by staff) or reminder:<step>"),
    Column("sent_at", UTCDateTime, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("result", Text, nullable=False, comment="'ok' or the error text"),
    Column("provider_message_id", String(191), comment="SMTP Message-ID or the SMS gateway's message id"),
)

# One row per (link, step): the primary key is what makes a reminder step happen at most once, across restarts
# and concurrent runners (agent/reminders.py).
reminders = Table(
    "reminders", metadata,
    Column("link_id", String(32), ForeignKey("links.id"), primary_key=True),
    Column("step", String(32), primary_key=True, comment="after:<days> or expiry:<days>"),
    Column("status", String(16), nullable=False, comment="sending, sent, failed, unknown or skipped"),
    Column("due_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("send_id", Integer),
)

# One row per (plan, instalment, step): the at-most-once rule of ``reminders`` (agent.engine.reminders.Ledger) for
# a plan's emails (agent.engine.plan_reminders); the email's own record is here too, a plan having no link to send.
plan_reminders = Table(
    "plan_reminders", metadata,
    Column("plan_id", String(32), ForeignKey("plans.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("step", String(32), primary_key=True, comment="before (the instalment is coming) or failed"),
    Column("status", String(16), nullable=False, comment="sending, sent, failed, unknown or skipped"),
    Column("due_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("recipient", Text),
    Column("sent_at", UTCDateTime),
    Column("result", Text, comment="'ok' or the error text"),
    Column("message_id", String(191), comment="the SMTP Message-ID"),
)
