"""The server's durable state behind one interface (`interface.State`, `models.ModelState`), its
SQLite implementation in `sqlite/`, and the in-process fan-out of revisions. Imports the domain only."""
