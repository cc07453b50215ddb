"""The connector contract kit on all six combinations: SQLAlchemy and pyodbc + unixODBC, each on SQLite,
PostgreSQL and MariaDB. Under CI=true a missing server or ODBC driver fails instead of skipping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import odbc_connector, require

from connectors.database.sql import SQLAlchemyConnector
from connectors.testkit.connector import ConnectorContract, Firm
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
