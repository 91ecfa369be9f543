"""Use cases. Each takes a SQLAlchemy session (and what else it needs) as arguments."""
