"""A real store (SQLite on a temp dir, a database on the session's PostgreSQL), without HTTP."""
