"""Postings: confirmed payments written back into the firm's matter system exactly once (Manage Postings)."""
