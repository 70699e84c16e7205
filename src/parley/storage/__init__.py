"""Stores: the interface in base.py, SQLite and PostgreSQL beside each other."""
