"""One Alembic revision per file, oldest first; each is frozen once released (it describes
the tables as they were then, never by importing today's)."""
