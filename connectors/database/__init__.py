"""Firm-database connectors: the contract (read by keyset, write postings), SQLAlchemy and raw ODBC."""
