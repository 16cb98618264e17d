"""The wait engine behind :mod:`prism_async.polling`: one, many, as completed."""
