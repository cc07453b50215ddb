"""Issue 19: ``ledgerlink users add|list|disable|reset``, personal ``api token --user`` and ``login-link --user``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.core.model import Actor
from agent.runtime import Runtime
from agent.state import users

PASSWORD = "a long enough password"
users_actor = Actor("user", "admin")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    return home


def run(home: Path, capsys: pytest.CaptureFixture[str], *args: str, stdin: str | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    if stdin is not None and monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    code = main(["--home", str(home), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_add_list_disable_reset(home: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(home, capsys, "users", "add", "jo", "--role", "clerk", "--password-stdin",
               stdin=PASSWORD + "\n", monkeypatch=monkeypatch)[:2] == (0, "added clerk 'jo'\n")
    typed = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(typed))
    assert run(home, capsys, "users", "add", "Sam", "--role", "admin")[0] == 0
    code, out, _ = run(home, capsys, "users", "list", "--json")
    listed = {u["name"]: u for u in json.loads(out)}
    assert code == 0 and set(listed) == {"admin", "jo", "sam"}  # "admin": the first admin of a new home
    assert (listed["jo"]["role"], listed["jo"]["password"], listed["admin"]["password"]) == ("clerk", True, False)
    rt = Runtime.for_home(home)
    assert users.check_password(rt.store, "sam", PASSWORD) is not None  # read at the prompt, hashed

    _, token = users.new_token(rt.store, users_actor, "jo", "matter software")
    assert run(home, capsys, "users", "disable", "jo")[:2] == (
        0, "disabled 'jo': signed out everywhere, 1 API token(s) revoked for good\n")
    assert "disabled" in run(home, capsys, "users", "list")[1]
    assert users.check_password(rt.store, "jo", PASSWORD) is None
    code, out, _ = run(home, capsys, "users", "reset", "jo", "--unlock-only")
    assert code == 0 and "1 API token(s) revoked when they were disabled stay revoked" in out
    assert users.holder(rt.store, token) is None and users.check_password(rt.store, "jo", PASSWORD) is not None
    assert run(home, capsys, "users", "disable", "jo")[0] == 0
    assert run(home, capsys, "users", "reset", "jo", "--password-stdin", stdin="another long password\n",
               monkeypatch=monkeypatch)[0] == 0
    assert users.check_password(rt.store, "jo", "another long password") is not None
    rt.close()


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("users", "add", "jo", "--role", "clerk", "--password-stdin"), "short\n", "at least 10 characters"),
    (("users", "add", "admin", "--role", "admin", "--no-password"), None, "'admin' already exists"),
    (("users", "disable", "admin"), None, "'admin' is the only active admin"),
    (("users", "reset", "ghost", "--unlock-only"), None, "no user 'ghost'"),
    (("api", "token"), None, "name the person the token is for"),
    (("api", "token", "--user", "ghost"), None, "no user 'ghost'"),
    (("api", "token", "--revoke", "99"), None, "no active API token 99"),
    (("api", "login-link", "--user", "ghost"), None, "no user 'ghost'"),
])
def test_a_mistake_is_one_line_and_exit_2(home: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...],
                                          stdin: str | None, message: str) -> None:
    assert run(home, capsys, "users", "list")[0] == 0  # the first admin exists
    code, out, err = run(home, capsys, *args, stdin=stdin, monkeypatch=monkeypatch)
    assert (code, out) == (2, "")
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_typed_passwords_must_match(home: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    typed = iter([PASSWORD, PASSWORD + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(typed))
    code, _, err = run(home, capsys, "users", "add", "jo", "--role", "clerk")
    assert code == 2 and "the two passwords differ" in err


def test_personal_tokens_are_shown_once_listed_without_value_and_revoked(
        home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(home, capsys, "users", "add", "jo", "--role", "clerk", "--no-password")[0] == 0
    code, out, err = run(home, capsys, "api", "token", "--user", "jo", "--label", "matter software")
    token = out.strip()
    assert code == 0 and len(token) >= 43 and "API token 1 of 'jo'" in err and "not shown again" in err
    rt = Runtime.for_home(home)
    holder = users.holder(rt.store, token)
    assert holder is not None and (holder.name, holder.role) == ("jo", "clerk")
    code, out, _ = run(home, capsys, "api", "token", "--list", "--json")
    assert [(t["id"], t["user_name"], t["label"]) for t in json.loads(out)] == [(1, "jo", "matter software")]
    assert token not in out and users.token_hash(token) not in out
    assert run(home, capsys, "api", "token", "--revoke", "1")[1] == "revoked API token 1 of 'jo'\n"
    assert users.holder(rt.store, token) is None
    rt.close()


def test_login_link_signs_in_the_only_admin_or_the_named_person(home: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(home, capsys, "api", "login-link")  # a newcomer's first command: the first admin is made
    assert code == 0 and "/console/login#code=" in out
    rt = Runtime.for_home(home)
    assert [u.name for u in users.listed(rt.store)] == ["admin"]
    assert run(home, capsys, "users", "add", "sam", "--role", "admin", "--no-password")[0] == 0
    code, _, err = run(home, capsys, "api", "login-link")
    assert code == 2 and "name the admin to sign in with --user (admin, sam" in err
    code, out, _ = run(home, capsys, "api", "login-link", "--user", "sam")
    assert code == 0 and "#code=" in out
    rt.close()
