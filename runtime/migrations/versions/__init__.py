"""Revisions of the store's schema, oldest first: 0001 the schema of the first release, 0002 the
decisions' live key, 0003 the audit seals."""
