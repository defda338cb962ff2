"""Several servers on one PostgreSQL state store: who runs the controller (leader.py) and how
the others learn its routes (routes.py)."""
