"""The only code that runs SQL: the pool, the group-commit writer, and named queries."""
