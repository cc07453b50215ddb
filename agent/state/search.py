"""Matter search over the mirror, the one the CLI, the API and the console use: any part of a matter number,
matter name, client name or statement (invoice) number, typo-tolerant, fast on a big firm.

On SQLite (the default state store) it reads an index beside the mirror: ``search_docs`` holds one row per matter
(its number, name, client's name and the significant part of its statements' numbers); the FTS5 table
``search_fts`` indexes that text with the trigram tokenizer (any run of 3 characters or more, so a partial number
finds its matter; a statement-number match is then checked against the statements) and ``search_words``
with unicode61, whose vocabulary (``search_vocab``) corrects a name typed one edit wrong: a letter missing, extra or
wrong, or two swapped. ``SearchIndex`` keeps it in step with the sync. Any other store answers the same searches
with LIKE over the mirror: correct and slower, with no typo correction.
"""

from __future__ import annotations

import unicodedata
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    bindparam,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
)

from agent.core.model import Matter
from agent.state.mirror import matter_from_row
from agent.state.schema import FIRM_TABLES, firm_clients, firm_matters, firm_statements, search_docs, search_state
from agent.state.store import StateStore

GRAM = 3  # the trigram tokenizer matches runs of at least this many characters
# What a statement number is indexed without: its leading letters, separators and zeros ("INV-0012345" is indexed
# as "12345"). A million numbers sharing "INV-00" would make the index several times bigger and slower to build
# and to search, for trigrams that tell no two statements apart. SQLite's ltrim(upper(number), LEAD) and
# significant() below strip the same characters.
LEAD = "ABCDEFGHIJKLMNOPQRSTUVWXYZ-/_#. 0"
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
TYPO_MIN = 4  # a shorter word has too many neighbours one edit away to guess which was meant
LETTERS = "abcdefghijklmnopqrstuvwxyz"
CHUNK = 500  # keys per IN list
CAP = 50_000  # rows a pass remembers before it stops counting and rebuilds the whole index instead
# FTS5's in-memory hash while a rebuild writes the whole index, and its default put back afterwards: flushing fewer,
# bigger segments merges and writes less of the index again. 1M statements, the full sync's search index: 1 MB
# 2.58 s and 137 MB peak RSS, 4 MB 2.33 s and 142 MB, 16 MB 2.04 s and 164 MB (bench/README.md): 4 MB keeps a
# sync under the 150 MB memory target.
BUILD_HASH, HASH = 4 << 20, 1 << 20
# FTS5's default automerge, put back after a rebuild that merged nothing until its one 'optimize': 10M statements,
# the trigram build 22.3 -> 18.6 s and one segment left for every search to read (1M: 1.1 -> 1.2 s)
AUTOMERGE = 4

fts = table("search_fts", column("rowid"))
words = table("search_words", column("rowid"))
_INDEXED = {"search_fts": "number, name, client, invoices", "search_words": "name, client"}


@dataclass(frozen=True)
class MatterRow:
    matter: Matter
    client_name: str | None


# ------------------------------------------------------------------------------------------------ searching


def search_matters(conn: Connection, text_: str, limit: int = 50) -> list[MatterRow]:
    """Matters (not deleted; closed ones too) where every word typed is part of the number, the name, the client's
    name or a statement's number. An exact matter number comes first, then number order; nothing typed lists the
    first matters. On SQLite a search that finds nothing is tried once more with the name words corrected."""
    typed = text_.split()
    if conn.dialect.name != "sqlite":
        found = like_search(conn, typed, limit)
    else:
        found = _fts_search(conn, typed, limit) or _typo_search(conn, typed, limit)
    return _ranked(conn, text_.strip(), found, limit)


def _matters(conn: Connection, query: Select[Any], **params: Any) -> list[MatterRow]:
    return [MatterRow(matter_from_row(r), r["client_name"]) for r in conn.execute(query, params).mappings()]


def _base() -> Select[Any]:
    m, c = firm_matters, firm_clients
    return select(m, c.c.name.label("client_name")).where(m.c.deleted.is_(False))


_m, _c, _d = firm_matters, firm_clients, search_docs
_JOINED = _d.join(_m, _m.c.key == _d.c.matter_key).outerjoin(_c, _c.c.key == _m.c.client_key)
# Built once: the common searches only bind their words (SQLAlchemy's cache then skips the compile as well).
_EXACT = _base().select_from(_m.outerjoin(_c, _c.c.key == _m.c.client_key)).where(_m.c.number == bindparam("typed"))
_STRICT = (_base().select_from(fts.join(_JOINED, _d.c.id == fts.c.rowid)).where(text("search_fts MATCH :q"))
           .order_by(fts.c.rowid).limit(bindparam("limit")))  # rowid order is number order as built: an early stop


def _ranked(conn: Connection, typed: str, found: list[MatterRow], limit: int) -> list[MatterRow]:
    """The exact number first (looked up on its own: a broad match may not reach it), the rest by number."""
    exact = _matters(conn, _EXACT, typed=typed) if typed else []
    seen = {r.matter.key for r in exact}
    rest = sorted((r for r in found if r.matter.key not in seen),
                  key=lambda r: (r.matter.number.lower() != typed.lower(), r.matter.number))
    return (exact + rest)[:limit]


def _phrase(word: str) -> str:
    """One FTS5 string: the word exactly (quotes doubled), so nothing in it reads as query syntax."""
    return '"' + word.replace('"', '""') + '"'


def significant(number: str) -> str:
    """A statement number as the index holds it: as SQLite's ltrim(upper(number), LEAD) leaves it."""
    return number.translate(_ASCII_UPPER).lstrip(LEAD)


# Built once (a search built them anew for each word: a third of a number search's time went to SQLAlchemy).
_TEXT = _d.c.number + " | " + _d.c.name + " | " + _d.c.client
_LIVE = (firm_statements.c.matter_key == _d.c.matter_key, firm_statements.c.deleted.is_(False))


def _in_text(word: str) -> ColumnElement[bool]:
    """The word in the matter's number, name or client's name, or in one of its live statements' numbers (LIKE:
    exact, ASCII case folded); it checks what the index only narrowed down."""
    return or_(_TEXT.contains(word, autoescape=True),
               exists().where(*_LIVE, firm_statements.c.number.contains(word, autoescape=True)))


def _short_words(typed: Iterable[str]) -> list[ColumnElement[bool]]:
    """Words too short for the trigram index, as a filter on the text."""
    return [_in_text(w) for w in typed if len(w) < GRAM]


def _strict(typed: list[str]) -> tuple[str, list[ColumnElement[bool]]]:
    """The MATCH for the words of 3 characters or more and the filters that make it exact. A word is found in the
    number, name or client columns as typed; a word with a digit may instead be part of a statement number, which
    the index holds by its significant part, so such a match is then checked against the statements. Such a word
    is looked up by that part in every column (it is part of the word, so nothing the word matches is missed; the
    check keeps the answer exact): as typed, ``M-0012345`` made FTS5 read the trigram lists of ``M-0`` and ``-00``,
    which hold every matter, to find one."""
    groups, checks = [], []
    for word in (w for w in typed if len(w) >= GRAM):
        group = "{number name client} : " + _phrase(word)
        if any(ch.isdigit() for ch in word) and len(significant(word)) >= GRAM:
            group = _phrase(significant(word))
            checks.append(_in_text(word))
        groups.append(group)
    return " AND ".join(groups), checks


def _matching(index: str, match: str) -> Select[Any]:
    return select(literal_column("rowid")).select_from(table(index)).where(text(f"{index} MATCH :{index}_q")
                                                                          .bindparams(**{f"{index}_q": match}))


def _fts_search(conn: Connection, typed: list[str], limit: int) -> list[MatterRow]:
    match, checks = _strict(typed)
    checks += _short_words(typed)
    if not match:  # nothing to look up: walk the matters in number order
        return _matters(conn, _base().select_from(_JOINED).where(*checks).order_by(_m.c.number).limit(limit))
    return _matters(conn, _STRICT.where(*checks) if checks else _STRICT, q=match, limit=limit)


def fold(word: str) -> str:
    """A word as unicode61 (remove_diacritics 2) stores it: lower case, accents off."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def edits(word: str) -> set[str]:
    """Every string one edit from ``word``: a letter deleted, two neighbours swapped, one replaced or inserted."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    out = {a + b[1:] for a, b in splits if b}
    out |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    out |= {a + ch + b[1:] for a, b in splits if b for ch in LETTERS}
    out |= {a + ch + b for a, b in splits for ch in LETTERS}
    return out - {word}


# The vocabulary read once per store (engine) and version of the index: search_vocab counts each term's documents as it
# is read (an IN list of a word's ~700 edits cost ~30 ms, the whole vocabulary ~250 ms), while a set answers in
# microseconds. The version is FTS5's structure record (search_words_data row 10), which every committed change
# to the index rewrites (its cookie counts them); reading it is one B-tree look-up.
_VOCABULARY: weakref.WeakKeyDictionary[Engine, tuple[bytes, frozenset[str]]] = weakref.WeakKeyDictionary()
_STRUCTURE = text("SELECT block FROM search_words_data WHERE id = 10")


def vocabulary(conn: Connection) -> frozenset[str]:
    """Every word the name index holds (folded), as of this transaction."""
    version = conn.execute(_STRUCTURE).scalar() or b""
    held = _VOCABULARY.get(conn.engine)
    if held is None or held[0] != version:
        held = version, frozenset(conn.execute(text("SELECT term FROM search_vocab")).scalars())
        _VOCABULARY[conn.engine] = held
    return held[1]


def corrections(conn: Connection, word: str) -> list[str]:
    """The index's words one edit from ``word`` (already folded)."""
    return sorted(edits(word) & vocabulary(conn))


def _typo_search(conn: Connection, typed: list[str], limit: int) -> list[MatterRow]:
    """Each name word of 4 letters or more may be the start of a name or one edit from a whole one."""
    m, c, d = firm_matters, firm_clients, search_docs
    named = [w for w in typed if len(w) >= TYPO_MIN and fold(w).isalpha()]
    if not named:
        return []
    fixes = {w: corrections(conn, fold(w)) for w in named}
    groups = [" OR ".join([_phrase(fold(w)) + "*", *map(_phrase, fixes[w])]) for w in named]
    match = text("search_words MATCH :q").bindparams(q=" AND ".join(f"({g})" for g in groups))
    rest = [w for w in typed if w not in fixes]
    strict, checks = _strict(rest)
    where: list[Any] = [match, *checks, *_short_words(rest)]
    if strict:
        where.append(d.c.id.in_(_matching("search_fts", strict)))
    joined = d.join(m, m.c.key == d.c.matter_key).outerjoin(c, c.c.key == m.c.client_key)
    return _matters(conn, _base().select_from(words.join(joined, d.c.id == words.c.rowid)).where(*where)
                    .order_by(words.c.rowid).limit(limit))


def like_search(conn: Connection, typed: list[str], limit: int) -> list[MatterRow]:
    """Any store: every word part of the number, name, client's name or a live statement's number (LIKE)."""
    m, c, s = firm_matters, firm_clients, firm_statements
    query = _base().select_from(m.outerjoin(c, c.c.key == m.c.client_key))
    for word in (w.lower() for w in typed):
        invoice = exists().where(s.c.matter_key == m.c.key, s.c.deleted.is_(False),
                                 func.lower(s.c.number).contains(word, autoescape=True))
        query = query.where(or_(*(func.lower(col).contains(word, autoescape=True)
                                  for col in (m.c.number, m.c.name, c.c.name)), invoice))
    return _matters(conn, query.order_by(m.c.number).limit(limit))


# ------------------------------------------------------------------------------------------------ keeping it in step


def _docs(keys: list[str] | None = None) -> Select[Any]:
    """Each matter's search text as search_docs holds it (SQLite's group_concat), for ``keys`` or every matter."""
    m, c = firm_matters, firm_clients
    s = firm_statements.alias("s")
    significant_ = func.ltrim(func.upper(s.c.number), LEAD)
    numbers = (select(s.c.matter_key, func.group_concat(significant_, " ").label("numbers"))
               .where(s.c.deleted.is_(False)))
    if keys is not None:  # (matter_key, deleted, number) is indexed: either way, one walk of that index
        numbers = numbers.where(s.c.matter_key.in_(keys))
    numbers = numbers.group_by(s.c.matter_key)
    inv = numbers.subquery("inv")
    query = (select(m.c.key, m.c.number, m.c.name, func.coalesce(c.c.name, ""), func.coalesce(inv.c.numbers, ""))
             .select_from(m.outerjoin(c, c.c.key == m.c.client_key).outerjoin(inv, inv.c.matter_key == m.c.key)))
    return query if keys is None else query.where(m.c.key.in_(keys))


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Equal search text; the statement numbers in any order (group_concat's order follows the plan)."""
    return a[:-1] == b[:-1] and sorted(a[-1].split(" ")) == sorted(b[-1].split(" "))


DOC_COLUMNS = ("matter_key", "number", "name", "client", "invoices")


def rebuild(conn: Connection) -> None:
    """The whole index from the mirror in a few statements, rows in matter-number order (the order searches
    return them in without sorting)."""
    conn.execute(search_docs.delete())
    conn.execute(search_docs.insert().from_select(DOC_COLUMNS, _docs().order_by(firm_matters.c.number)))
    for index in _INDEXED:
        _setting(conn, index, "hashsize", BUILD_HASH)
        _setting(conn, index, "automerge", 0)  # segments merged once, at the end, not level by level as they come
        conn.exec_driver_sql(f"INSERT INTO {index}({index}) VALUES ('rebuild')")
        conn.exec_driver_sql(f"INSERT INTO {index}({index}) VALUES ('optimize')")  # one segment for every search
        _setting(conn, index, "hashsize", HASH)
        _setting(conn, index, "automerge", AUTOMERGE)


def _setting(conn: Connection, index: str, name: str, value: int) -> None:
    """An FTS5 configuration option (kept in the index's own %_config table)."""
    conn.exec_driver_sql(f"INSERT INTO {index}({index}, rank) VALUES ('{name}', {value})")


def _chunks(keys: Iterable[str]) -> Iterator[list[str]]:
    ordered = sorted(keys)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start:start + CHUNK]


def _fts_rows(conn: Connection, keys: list[str], delete: bool) -> None:
    """Add the search_docs rows of ``keys`` to both FTS indexes, or take them out (external content: FTS5's
    'delete' command needs the values it indexed, so it runs before search_docs changes)."""
    for index, cols in _INDEXED.items():
        command = f"{index}, rowid, {cols}) SELECT 'delete', " if delete else f"rowid, {cols}) SELECT "
        conn.execute(text(f"INSERT INTO {index}({command}id, {cols} FROM search_docs WHERE matter_key IN :keys")
                     .bindparams(bindparam("keys", expanding=True)), {"keys": keys})


def refresh(conn: Connection, keys: Iterable[str]) -> int:
    """Rewrite the search text of these matters where it changed; returns how many changed."""
    d = search_docs.c
    changed_count = 0
    for chunk in _chunks(keys):
        fresh = {r[0]: tuple(r[1:]) for r in conn.execute(_docs(chunk))}
        held = {r[0]: tuple(r[1:]) for r in conn.execute(
            select(d.matter_key, d.number, d.name, d.client, d.invoices).where(d.matter_key.in_(chunk)))}
        changed = [k for k, v in fresh.items() if k in held and not _same(held[k], v)]
        added = [k for k in fresh if k not in held]
        if changed:
            _fts_rows(conn, changed, delete=True)
            conn.execute(search_docs.update().where(d.matter_key == bindparam("k")).values(
                number=bindparam("n"), name=bindparam("a"), client=bindparam("c"), invoices=bindparam("i")),
                [dict(zip(("k", "n", "a", "c", "i"), (k, *fresh[k]), strict=True)) for k in changed])
        if added:
            conn.execute(search_docs.insert(), [dict(zip(DOC_COLUMNS, (k, *fresh[k]), strict=True)) for k in added])
        if changed or added:
            _fts_rows(conn, changed + added, delete=False)
        changed_count += len(changed) + len(added)
    return changed_count


def _client_matters(conn: Connection, clients: set[str]) -> set[str]:
    m = firm_matters.c
    return {k for chunk in _chunks(clients) for k in conn.execute(select(m.key).where(m.client_key.in_(chunk)))
            .scalars()}


def _stale_numbers(conn: Connection, bills: dict[str, set[tuple[str, bool]]]) -> set[str]:
    """The matters whose indexed statement numbers disagree with the stored statements: a number missing, or a
    deleted one still there. A statement paid or re-dated (most of what a sync stores) changes no search text,
    and finding that takes one look at search_docs instead of recomputing the matter's text."""
    stale: set[str] = set()
    for chunk in _chunks(bills):  # driver SQL: rendering a 500-key IN list through SQLAlchemy costs more than the read
        held: dict[str, str] = {k: v for k, v in conn.exec_driver_sql(
            f"SELECT matter_key, invoices FROM search_docs WHERE matter_key IN ({', '.join('?' * len(chunk))})",
            tuple(chunk))}
        for key in chunk:
            numbers = set(held[key].split(" ")) if key in held else set()
            signs = ((significant(n), deleted) for n, deleted in bills[key])
            if key not in held or any(sig and (sig in numbers) == deleted for sig, deleted in signs):
                stale.add(key)
    return stale


def _held(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(search_docs)).scalar_one()


def _column(entity: str, name: str) -> int:
    """Where ``name`` sits in a stored row of ``entity``."""
    return [c.name for c in FIRM_TABLES[entity].columns].index(name)


class SearchIndex:
    """What one syncer owes the search index: the matters, clients and statements its stored batches touched,
    brought into the index in one transaction at the end of a sync() (or of a pass run on its own). Past CAP
    rows, or a quarter of the mirror's matters, it rebuilds the whole index instead (a first full sync): a few
    statements beat thousands of refreshes. Every noted batch also writes this syncer's token into search_state
    in its own transaction, so a pass that finds another's token there (that one stopped before its catch-up)
    rebuilds: the index never silently misses a stored row. (A statement moved to another matter leaves its
    number on the old matter's text until that matter changes or the index is rebuilt.)"""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.matters: set[str] = set()
        self.clients: set[str] = set()
        self.bills: dict[str, set[tuple[str, bool]]] = {}  # matter key -> (statement number, deleted)
        self.noted = 0
        self.everything = False

    def _behind(self, conn: Connection) -> None:
        conn.execute(search_state.update().values(behind=self.token))

    def note(self, conn: Connection, entity: str, rows: Sequence[Sequence[Any]]) -> None:
        """In the transaction that stores a batch of ``entity`` rows (tuples in the mirror table's column order,
        as the sync stores them)."""
        if not rows or conn.dialect.name != "sqlite" or entity not in ("matters", "statements", "clients"):
            return
        self.noted += len(rows)
        if self.noted > CAP:
            self.everything = True
            self.forget()
        elif entity == "statements":
            matter, number, deleted = (_column(entity, name) for name in ("matter_key", "number", "deleted"))
            for r in rows:
                self.bills.setdefault(r[matter], set()).add((r[number], bool(r[deleted])))
        else:
            key = _column(entity, "key")
            (self.clients if entity == "clients" else self.matters).update(r[key] for r in rows)
        self._behind(conn)

    def forget(self) -> None:
        self.matters.clear()
        self.clients.clear()
        self.bills.clear()

    def note_sweep(self, conn: Connection, entity: str, kept: Select[Any]) -> None:
        """Before a sweep marks the statements missing from ``kept`` (their keys) deleted: their matters lose
        those numbers. (A deleted matter is left out when searching; a deleted client keeps its name, as the
        mirror's matters keep pointing at it.)"""
        if entity != "statements" or conn.dialect.name != "sqlite":
            return
        s = firm_statements.c
        gone = select(s.matter_key).where(s.deleted.is_(False), s.key.not_in(kept)).distinct()
        self.matters.update(conn.execute(gone).scalars())
        self._behind(conn)

    def catch_up(self, store: StateStore) -> None:
        """At the end of a pass: bring the index up to what the mirror now holds."""
        if store.engine.dialect.name != "sqlite":
            return
        with store.read() as conn:
            behind = conn.execute(select(search_state.c.behind)).scalar()
        if behind is None and not (self.everything or self.matters or self.clients or self.bills):
            return
        with store.begin() as conn:
            behind = conn.execute(select(search_state.c.behind)).scalar()
            keys = self.matters | _client_matters(conn, self.clients) | _stale_numbers(conn, self.bills)
            if self.everything or behind not in (None, self.token) or (keys and len(keys) > _held(conn) // 4):
                rebuild(conn)
            elif keys:
                refresh(conn, keys)
            conn.execute(search_state.update().values(behind=None))
        self.forget()
        self.noted = 0
        self.everything = False
