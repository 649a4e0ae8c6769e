"""SQLite implementation of the state (stdlib sqlite3), one module per table group."""
