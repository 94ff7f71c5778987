"""The HTTP API over a live server: catalog and indexer, SIWE login, content, publishing, paid model calls,
limits, crashes."""
