"""TLS for a ``rediss://`` broker (pure: reads only the URL; the files are checked by
:func:`check_tls_files`).

A broker URL carries its TLS settings in its query, the way Celery documents them:
``ssl_cert_reqs`` (``required``, ``optional`` or ``none``; Celery's ``CERT_REQUIRED`` …
spellings too), ``ssl_ca_certs`` (the CA bundle that signed the server's certificate),
``ssl_certfile`` and ``ssl_keyfile`` (a client certificate). Every connection of a run
uses them alike: the redis-py clients of the orchestrator, the slots and the farm
(:meth:`stmpo_celery.broker.BrokerUrl.client`) and Celery's broker and result backend
(:func:`stmpo_celery.broker.make_app`), which are handed them as ``broker_use_ssl`` and
``redis_backend_use_ssl`` — kombu would otherwise connect a ``rediss://`` URL without
checking the server's certificate at all. With no ``ssl_cert_reqs`` the certificate is
required, as redis-py and every browser do.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from typing import Any

from ..errors import BadInput

#: the spellings of ``ssl_cert_reqs`` Celery documents, to what redis-py takes
_CERT_REQS = {"required": "required", "cert_required": "required",
              "optional": "optional", "cert_optional": "optional",
              "none": "none", "cert_none": "none"}
_SSL_CONSTANTS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
                  "none": ssl.CERT_NONE}
FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
OPTIONS = ("ssl_cert_reqs", *FILE_OPTIONS)


def _query(url: str) -> dict[str, str]:
    pairs = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True)
    return {k.lower(): v for k, v in pairs if k.lower() in OPTIONS}


def tls_settings(url: str) -> dict[str, str] | None:
    """``ssl_cert_reqs`` (redis-py's spelling) and the files a ``rediss://`` URL names;
    None for a URL without TLS. Raises :class:`BadInput` (its message continues "broker
    URL …") for TLS options on a URL without TLS, or an unknown ``ssl_cert_reqs``."""
    scheme = urllib.parse.urlsplit(url).scheme
    given = _query(url)
    if scheme != "rediss":
        if given:
            name = next(iter(given))
            raise BadInput(f"has ?{name}= but no TLS: use rediss:// for a Redis that "
                           "speaks TLS, or leave the ssl_ options out")
        return None
    reqs = given.get("ssl_cert_reqs", "required")
    if reqs.lower() not in _CERT_REQS:
        raise BadInput(f"has ?ssl_cert_reqs={reqs}: use required, optional or none")
    out = {"ssl_cert_reqs": _CERT_REQS[reqs.lower()]}
    out.update({k: v for k, v in given.items() if k in FILE_OPTIONS})
    return out


def check_tls_files(url: str) -> None:
    """Every file the URL's TLS options name can be read (said before anything starts,
    not as a handshake failure from every slot)."""
    settings = tls_settings(url) or {}
    for name in FILE_OPTIONS:
        path = settings.get(name)
        if path is None:
            continue
        if not path or not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise BadInput(f"has ?{name}={path}, which is not a file this user can read: "
                           "give the path of the PEM file")


def redis_kwargs(url: str) -> dict[str, Any]:
    """What redis-py's ``Redis(...)`` takes for the URL's TLS (empty without TLS)."""
    settings = tls_settings(url)
    return {} if settings is None else {"ssl": True, **settings}


def celery_ssl(url: str) -> dict[str, object] | None:
    """``broker_use_ssl`` / ``redis_backend_use_ssl`` for the URL (None without TLS)."""
    settings = tls_settings(url)
    if settings is None:
        return None
    return {**settings, "ssl_cert_reqs": _SSL_CONSTANTS[settings["ssl_cert_reqs"]]}


def without_tls_query(url: str) -> str:
    """The URL without its TLS options (Celery is handed them as settings instead)."""
    parts = urllib.parse.urlsplit(url)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = urllib.parse.urlencode([(k, v) for k, v in pairs if k.lower() not in OPTIONS])
    return urllib.parse.urlunsplit(parts._replace(query=query))
