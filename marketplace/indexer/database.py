"""Opening the server's database (read model and login nonces): SQLite by default, or PostgreSQL.

``postgresql://`` (and Heroku-style ``postgres://``) URLs use psycopg 3, which the ``postgres``
extra installs (``pip install 'agentmarket[postgres]'``); any other SQLAlchemy URL is used as given.
"""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from marketplace.errors import AgentmarketError

#: The extra that installs the PostgreSQL driver.
POSTGRES_EXTRA = "agentmarket[postgres]"
#: Bare PostgreSQL URL schemes, and the driver they mean here (psycopg 3).
_BARE_POSTGRES = {"postgresql", "postgres"}
_POSTGRES_DRIVER = "postgresql+psycopg"


def database_url(url: str) -> URL:
    """``url`` parsed, with a bare ``postgresql://`` or ``postgres://`` scheme meaning psycopg 3.

    Raises :class:`AgentmarketError` if ``url`` is not a SQLAlchemy URL.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        scheme = url.split(":", 1)[0] if ":" in url else ""
        raise AgentmarketError(
            f"the database URL ({scheme or 'no scheme'}:…) is not a SQLAlchemy URL; "
            "use e.g. sqlite:///path/index.sqlite3 or postgresql://user@host:5432/dbname"
        ) from None
    if parsed.drivername in _BARE_POSTGRES:
        parsed = parsed.set(drivername=_POSTGRES_DRIVER)
    return parsed


def open_database(url: str) -> Engine:
    """An engine on the database at ``url``, checked by connecting once.

    Raises :class:`AgentmarketError` (one line; the password is never shown) when the URL is not a
    SQLAlchemy URL, names an unknown engine, needs a driver that is not installed (for PostgreSQL:
    the ``postgres`` extra), or the database cannot be reached.
    """
    parsed = database_url(url)
    shown = parsed.render_as_string(hide_password=True)
    postgres = parsed.get_backend_name() == "postgresql"
    try:
        engine = create_engine(parsed, pool_pre_ping=postgres)
    except NoSuchModuleError:
        raise AgentmarketError(
            f"unknown database kind {parsed.drivername!r} in {shown}; use sqlite:///… or postgresql://…"
        ) from None
    except ImportError as exc:
        if parsed.drivername == _POSTGRES_DRIVER:
            hint = f"the PostgreSQL driver (psycopg), which is not installed: pip install '{POSTGRES_EXTRA}'"
        else:
            hint = f"the driver {exc.name or parsed.drivername!r}, which is not installed: install it"
            if postgres:
                hint += f", or use postgresql://… (psycopg 3: pip install '{POSTGRES_EXTRA}')"
        raise AgentmarketError(f"{shown} needs {hint}") from None
    except (ArgumentError, TypeError, ValueError) as exc:
        raise AgentmarketError(f"bad database URL {shown}: {exc}") from None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise AgentmarketError(f"cannot open the database at {shown}: {reason}") from None
    return engine
