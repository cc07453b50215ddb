"""Settings precedence, and secrets: keyring or environment, never in logs, errors, check output or state."""

from __future__ import annotations

import logging
import secrets as pysecrets
import stat
from pathlib import Path

import pymysql
import pytest

from agent.cli.main import main
from agent.core.errors import ConfigurationError
from agent.core.scrub import ScrubFilter
from agent.home.demo import init_home
from agent.home.secrets import Secrets, env_name
from agent.home.settings import load_settings
from connectors.testkit.databases import TempDatabase


def test_environment_over_file_over_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ledgerlink.toml").write_text(
        'service_name = "From File"\nfirm_timezone = "Europe/Dublin"\n'
        '[accounts.operating]\nprovider = "sandbox"\n[accounts.trust]\nprovider = "sandbox"\nexpiry_days = 14\n'
    )
    settings = load_settings(tmp_path)
    assert (settings.service_name, settings.firm_timezone, settings.over_balance) == ("From File", "Europe/Dublin",
                                                                                      "refuse")
    monkeypatch.setenv("LEDGERLINK_SERVICE_NAME", "From Env")
    monkeypatch.setenv("LEDGERLINK_ACCOUNTS__TRUST__CURRENCY", "EUR")
    settings = load_settings(tmp_path)
    assert settings.service_name == "From Env"
    assert settings.firm_timezone == "Europe/Dublin"
    trust = settings.account("trust")
    assert (trust.currency, trust.expiry_days) == ("EUR", 14)  # merged, not replaced


def test_bad_settings_name_every_key(tmp_path: Path) -> None:
    (tmp_path / "ledgerlink.toml").write_text('firm_timezone = "Mars/Base"\nover_balance = "maybe"\n')
    with pytest.raises(ConfigurationError) as err:
        load_settings(tmp_path)
    assert "firm_timezone" in str(err.value) and "over_balance" in str(err.value)


def test_file_backend_for_headless_servers(tmp_path: Path) -> None:
    store = Secrets(tmp_path, "file")
    store.set("gocardless-operating", "live_abc")
    assert Secrets(tmp_path, "file").get("gocardless-operating") == "live_abc"
    folder = tmp_path / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "keyring.cfg").stat().st_mode) == 0o600


def test_environment_fallback_and_env_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env_name("firm-db"), "from-env")
    assert env_name("firm-db") == "LEDGERLINK_SECRET_FIRM_DB"
    assert Secrets(tmp_path, "env").get("firm-db") == "from-env"
    assert Secrets(tmp_path, "file").get("firm-db") == "from-env"
    with pytest.raises(ConfigurationError, match="ledgerlink secrets set other"):
        Secrets(tmp_path, "env").get("other")


def test_credentials_must_be_references(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="secret:NAME"):
        Secrets(tmp_path, "file").resolve("sk_live_literal")


def test_scrub_filter_removes_revealed_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    value = "tok-" + pysecrets.token_hex(8)
    store = Secrets(tmp_path, "file")
    store.set("api", value)
    store.get("api")
    logger = logging.getLogger("ledgerlink.test")
    logger.addFilter(ScrubFilter())
    with caplog.at_level(logging.INFO, logger="ledgerlink.test"):
        logger.info("connecting with %s", value)
    assert value not in caplog.text and "***" in caplog.text


def test_secret_never_reaches_check_output_logs_or_state(maria_db: TempDatabase, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A real MariaDB user with a password kept in the keyring: check and sync work, the value leaks nowhere."""
    password = "Pw-" + pysecrets.token_hex(10)
    user = "ll_" + pysecrets.token_hex(4)
    server = maria_db.server
    assert server is not None
    admin = pymysql.connect(host=server.host, port=server.port, user=server.user, password=server.password,
                            database=maria_db.name, autocommit=True)
    with admin.cursor() as cur:
        cur.execute("CREATE TABLE matters (id INT PRIMARY KEY, no VARCHAR(20), updated_at DATETIME(6))")
        cur.execute("CREATE TABLE bills (id INT PRIMARY KEY, no VARCHAR(20), matter INT, amount DECIMAL(12,2),"
                    " balance DECIMAL(12,2), updated_at DATETIME(6))")
        cur.execute("INSERT INTO matters VALUES (1, 'M-1', NOW(6))")
        cur.execute("INSERT INTO bills VALUES (1, 'B-1', 1, 10.00, 10.00, NOW(6))")
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT ALL ON `{maria_db.name}`.* TO '{user}'@'%'")
    home = tmp_path / "home"
    init_home(home)
    (home / "mapping.yaml").write_text(f"""
version: 1
source: {{url: "mysql+pymysql://{user}@{server.host}:{server.port}/{maria_db.name}", password_secret: firm-db}}
entities:
  matters: {{table: matters, key: id, watermark: {{column: updated_at}}, columns: {{number: no}}}}
  statements:
    table: bills
    key: id
    columns: {{number: no, matter_key: matter, amount: amount, balance: balance}}
""")
    Secrets(home, "auto").set("firm-db", password)
    with caplog.at_level(logging.DEBUG):
        assert main(["--home", str(home), "-v", "check"]) == 0
        assert main(["--home", str(home), "-v", "sync"]) == 0
        Secrets(home, "auto").set("firm-db", password + "-wrong")
        assert main(["--home", str(home), "check"]) == 2  # access denied is a configuration error
    out = capsys.readouterr()
    assert "statements" in out.out and "1 rows" in out.out
    for text in (out.out, out.err, caplog.text, (home / "state.db").read_bytes().decode("latin-1"),
                 (home / "mapping.yaml").read_text(), (home / "ledgerlink.toml").read_text()):
        assert password not in text
    with admin.cursor() as cur:
        cur.execute(f"DROP USER '{user}'@'%'")
    admin.close()
