"""Phoenix: phoenix servers from one declarative phoenix.yaml (see docs/ARCHITECTURE.md)."""
