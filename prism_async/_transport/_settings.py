"""The client's connection settings, checked before anything is sent: the API key and the base
URL (https, or plain http on loopback only; never credentials in it)."""

from __future__ import annotations

import ipaddress

from yarl import URL

from .._errors import InvalidRequestError

__all__ = ["check_api_key", "check_base_url"]


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(value: str) -> URL:
    """The API root as a URL without a trailing slash (InvalidRequestError if unfit)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError("base_url", "must be a non-empty http(s) URL")
    url = URL(value.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequestError("base_url", f"must be an absolute http(s) URL; got {value!r}")
    if url.user or url.password:
        raise InvalidRequestError("base_url", "must not carry credentials")
    if url.query_string or url.fragment:
        raise InvalidRequestError("base_url", "must not have a query or fragment")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise InvalidRequestError(
            "base_url",
            f"plain http is only allowed for loopback hosts; use https for {url.host!r}",
        )
    return url.with_path(url.path.rstrip("/"))


def check_api_key(value: object) -> str:
    """The key, stripped (ValueError if missing or malformed; never echoed)."""
    if not isinstance(value, str):
        raise ValueError("api_key must be a string")
    key = value.strip()
    if not key:
        raise ValueError(
            "no API key: pass PrismClient(api_key=...) or set the PRISM_API_KEY "
            "environment variable"
        )
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise ValueError("api_key contains whitespace or control characters")
    return key
