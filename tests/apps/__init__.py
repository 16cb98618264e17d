"""Small apps the tests run in real processes (README examples verbatim, and test helpers)."""
