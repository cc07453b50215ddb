"""Per-merchant-account Send for Payment settings in ``ledgerlink.toml``: message, disclaimer, reminders, expiry.

Changing them is an admin action. The file is edited in place so the admin's comments and layout survive: only
the changed keys of the account's ``[accounts.NAME]`` table are rewritten (or appended). When the account is
written in a shape this editor does not handle (an inline table, a multi-line value), the result would not read
back as intended, and the file is instead rewritten whole from its parsed content - comments are then lost, and
the caller is told. The new file replaces the old one atomically, and the running agent hot-reloads it.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.core.errors import RuleError
from agent.core.model import MerchantAccount


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    raise RuleError(f"cannot write {value!r} to the config file")


def _table(name: str, table: dict[str, Any]) -> list[str]:
    plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
    nested = {k: v for k, v in table.items() if isinstance(v, dict)}
    lines = [f"[{name}]"] if name and (plain or not nested) else []
    lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in plain.items()]
    for key, sub in nested.items():
        lines += ["", *_table(f"{name}.{json.dumps(key)}" if name else json.dumps(key), sub)]
    return lines


def dump_toml(data: dict[str, Any]) -> str:
    """The whole settings file from its parsed content: tables, strings, numbers, booleans and lists of those."""
    return "\n".join(_table("", data)).lstrip("\n") + "\n"


def _edit_in_place(text: str, name: str, changes: dict[str, Any]) -> str:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    header = re.compile(rf"""^\s*\[\s*accounts\s*\.\s*(?:{re.escape(name)}|"{re.escape(name)}"|'{re.escape(name)}')"""
                        r"\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return "".join(lines) + f"\n[accounts.{json.dumps(name)}]\n" + "".join(
            f"{k} = {toml_value(v)}\n" for k, v in changes.items())
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
    for key, value in changes.items():
        entry = f"{key} = {toml_value(value)}\n"
        pattern = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}")\s*=""")
        found = next((i for i in range(start + 1, end) if pattern.match(lines[i])), None)
        if found is not None:
            lines[found] = entry
            continue
        last = max((i for i in range(start, end) if lines[i].strip()), default=start)
        lines.insert(last + 1, entry)
        end += 1
    return "".join(lines)


def set_account(config: Path, name: str, changes: dict[str, Any]) -> tuple[MerchantAccount, bool]:
    """Validate and write one account's changes; returns the account and whether comments were kept."""
    text = config.read_text(encoding="utf-8") if config.exists() else ""
    data = tomllib.loads(text)
    merged = {**data.get("accounts", {}).get(name, {}), **changes}
    try:
        account = MerchantAccount(name=name, **merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RuleError(f"invalid settings for account {name!r}: {problems}") from None
    expected = {**data, "accounts": {**data.get("accounts", {}), name: merged}}
    edited = _edit_in_place(text, name, changes)
    try:
        kept = tomllib.loads(edited) == expected
    except tomllib.TOMLDecodeError:
        kept = False
    if not kept:
        edited = dump_toml(expected)
    tmp = config.with_name(config.name + ".tmp")
    tmp.write_text(edited, encoding="utf-8")
    os.replace(tmp, config)
    return account, kept
