"""The HTTP edge: one typed outgoing request, one send path, retries, response translation,
connection slots, API URLs and file streams. The only place that imports aiohttp for API calls.
"""
