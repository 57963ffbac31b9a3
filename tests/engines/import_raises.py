"""A source module that fails as it is imported, saying what it should not."""

from tests.engines.broken_sources import SECRET

raise RuntimeError(f"cannot reach {SECRET}")
