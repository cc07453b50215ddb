"""The connector contract kit on all six combinations: SQLAlchemy and pyodbc + unixODBC, each on SQLite,
PostgreSQL and MariaDB; and on a database described to the kit rather than shipped with it. Under CI=true a
missing server or ODBC driver fails instead of skipping."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import odbc_connector, require

from connectors.database.sql import SQLAlchemyConnector
from connectors.testkit.connector import ConnectorContract, Dialect, Firm
from connectors.testkit.databases import mariadb_server, postgres_server, temp_database, unavailable


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        require(unavailable(postgres_server()))
    elif request.param == "mariadb":
        require(unavailable(mariadb_server()))
    return str(request.param)


class TestSQLAlchemy(ConnectorContract):
    @pytest.fixture
    def firm(self, kind: str, tmp_path: Path) -> Iterator[Firm]:
        with temp_database(kind, tmp_path) as db:
            firm = Firm(db, SQLAlchemyConnector, via_odbc=False)
            yield firm
            firm.engine.dispose()


class TestODBC(ConnectorContract):
    @pytest.fixture
    def firm(self, kind: str, tmp_path: Path) -> Iterator[Firm]:
        connector = odbc_connector(kind)
        with temp_database(kind, tmp_path) as db:
            firm = Firm(db, connector, via_odbc=True)
            yield firm
            firm.engine.dispose()


# A firm schema the shipped descriptions do not cover, described as a third party would describe theirs: PostgreSQL
# with naive watermarks (timestamp without time zone, holding UTC), as many matter systems declare them.
NAIVE_POSTGRESQL = Dialect("postgresql, naive timestamps", "TIMESTAMP(6)", "NUMERIC(12,2)", "SERIAL PRIMARY KEY",
                           "naive", hold="SELECT pg_sleep({seconds})")


class TestDescribedDialect(ConnectorContract):
    @pytest.fixture
    def firm(self, postgres_ok: None, tmp_path: Path) -> Iterator[Firm]:
        with temp_database("postgresql", tmp_path) as db:
            firm = Firm(db, SQLAlchemyConnector, via_odbc=False, dialect=NAIVE_POSTGRESQL)
            yield firm
            firm.engine.dispose()


def test_a_database_the_kit_does_not_know_must_be_described(tmp_path: Path) -> None:
    refused = pytest.raises(ValueError, match=r"no shipped description of a 'firebird' database: pass .*Dialect")
    with temp_database("sqlite", tmp_path) as db, refused:
        Firm(dataclasses.replace(db, kind="firebird"), SQLAlchemyConnector, via_odbc=False)
