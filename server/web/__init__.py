"""The clinic's web app for `smearscope serve` (see docs/web.md)."""

from __future__ import annotations

from server.web.app import create_app

__all__ = ["create_app"]
