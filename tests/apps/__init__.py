"""Small apps the tests run in real processes (the README's web examples, verbatim)."""
