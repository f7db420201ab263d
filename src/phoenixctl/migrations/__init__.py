"""The state store's schema migrations (Alembic revisions in `versions/`), run by
`phoenixctl.state_schema` without an alembic.ini: on first use, or by `phoenix state upgrade`."""
