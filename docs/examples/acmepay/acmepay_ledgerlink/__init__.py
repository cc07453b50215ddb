"""Acme Pay (a fictional bank-payment provider) as a Ledgerlink provider plugin."""

from acmepay_ledgerlink.provider import AcmePayOptions, AcmePayProvider

__all__ = ["AcmePayOptions", "AcmePayProvider"]
