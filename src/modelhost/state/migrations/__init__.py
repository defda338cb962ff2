"""The state store's schema, versioned with Alembic (``migrate.upgrade`` runs at start)."""
