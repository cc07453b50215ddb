"""Per-account Send for Payment settings on the CLI: list, and set in ledgerlink.toml keeping the admin's comments."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.home.accounts import set_account
from agent.runtime import Runtime


def test_list(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(home), "accounts", "list", "--json"]) == 0
    data = {a["name"]: a for a in json.loads(capsys.readouterr().out)}
    assert data["operating"]["default"] and data["operating"]["reminder_days"] == [3, 7, 14]
    assert data["trust"]["expiry_days"] == 14 and data["operating"]["disclaimer"].startswith("Demo Legal LLP")
    assert main(["--home", str(home), "accounts", "list"]) == 0
    assert "reminders        3, 7, 14 day(s) after sending, 1 day(s) before expiry" in capsys.readouterr().out


def test_set_rewrites_only_the_account_and_keeps_comments(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = home / "ledgerlink.toml"
    before = config.read_text()
    assert main(["--home", str(home), "accounts", "set", "trust", "--default-message", "Pay {amount} “now”",
                 "--disclaimer", "Client account: regulated by the SRA", "--reminders", "2,5",
                 "--remind-before-expiry", "0", "--expiry-days", "21"]) == 0
    assert "comments were not kept" not in capsys.readouterr().out
    after = config.read_text()
    assert "# Ledgerlink agent settings." in after and "# secrets_backend" in after  # comments survive
    assert after.startswith(before.split("[accounts.trust]")[0])  # everything before the table is untouched
    account = Runtime.for_home(home).settings.account("trust")
    assert (account.default_message, account.disclaimer, account.reminder_days, account.remind_before_expiry_days,
            account.expiry_days) == ("Pay {amount} “now”", "Client account: regulated by the SRA", [2, 5], 0, 21)
    assert tomllib.loads(after)["accounts"]["operating"] == tomllib.loads(before)["accounts"]["operating"]


def test_set_refuses_bad_values_and_unknown_accounts(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = home / "ledgerlink.toml"
    before = config.read_text()
    assert main(["--home", str(home), "accounts", "set", "trust", "--expiry-days", "0"]) == 2
    assert "invalid settings for account 'trust': expiry_days" in capsys.readouterr().err
    # reminder days are days after sending, within a link's life: from the command line or edited in the file
    assert main(["--home", str(home), "accounts", "set", "trust", "--reminders", "100000"]) == 2
    assert "reminder_days must be days after sending, each 1 to 90: 100000" in capsys.readouterr().err
    config.write_text(before.replace("[accounts.trust]", "[accounts.trust]\nreminder_days = [-1, 0]", 1))
    assert main(["--home", str(home), "accounts", "list"]) == 2
    assert "reminder_days must be days after sending, each 1 to 90: -1, 0 cannot be" in capsys.readouterr().err
    config.write_text(before)
    assert main(["--home", str(home), "accounts", "set", "nope", "--expiry-days", "5"]) == 2
    assert main(["--home", str(home), "accounts", "set", "trust"]) == 2
    assert config.read_text() == before


def test_unusual_layout_is_rewritten_whole(tmp_path: Path) -> None:
    config = tmp_path / "ledgerlink.toml"
    config.write_text('# note\naccounts = { operating = { provider = "sandbox", expiry_days = 7 } }\n')
    account, kept = set_account(config, "operating", {"expiry_days": 9})
    assert account.expiry_days == 9 and not kept
    assert tomllib.loads(config.read_text())["accounts"]["operating"] == {"provider": "sandbox", "expiry_days": 9}
