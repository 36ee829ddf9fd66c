"""Accounts, sessions, CSRF tokens and sign-in rate limiting for the web app.

Passwords are hashed with argon2id (argon2-cffi). A session is a random token in an HttpOnly,
SameSite=Lax cookie; the database keeps only its sha256, so a copied database opens no session.
Every form carries the session's CSRF token; the sign-in form, before any session exists, carries a
token that must match a second cookie (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from runtime.contracts.errors import ConfigError
from server.web.db import Database

ROLES = ("viewer", "reviewer", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 10
_HASHER = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class User:
    name: str
    role: str
    disabled: bool = False

    def can(self, role: str) -> bool:
        """Whether this user holds `role` or a higher one (viewer < reviewer < admin)."""
        return _RANK[self.role] >= _RANK[role]


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    token_sha256: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Accounts:
    """Users and sessions in the server's database."""

    def __init__(self, db: Database, session_hours: float = 12.0) -> None:
        self.db = db
        self.session_s = session_hours * 3600

    # -- users ------------------------------------------------------------------------------------
    def add(self, name: str, password: str, role: str) -> User:
        if not _NAME.match(name or ""):
            raise ConfigError(f"user name {name!r}: use 1-64 characters of A-Z a-z 0-9 _ . @ -")
        if role not in ROLES:
            raise ConfigError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise ConfigError(f"password: at least {MIN_PASSWORD} characters")
        if self.db.query("SELECT 1 FROM users WHERE name = ?", (name,)):
            raise ConfigError(f"user {name!r} already exists")
        self.db.execute("INSERT INTO users (name, password_hash, role, disabled, created_at) VALUES (?, ?, ?, 0, ?)",
                        (name, _HASHER.hash(password), role, time.time()))
        return User(name, role)

    def list(self) -> list[tuple[User, float]]:
        return [(User(n, r, bool(d)), c) for n, r, d, c in
                self.db.query("SELECT name, role, disabled, created_at FROM users ORDER BY name")]

    def disable(self, name: str) -> None:
        """Refuse the user's sign-ins and end its sessions."""
        if not self.db.query("SELECT 1 FROM users WHERE name = ?", (name,)):
            raise ConfigError(f"no user {name!r}")
        self.db.execute_many([("UPDATE users SET disabled = 1 WHERE name = ?", (name,)),
                              ("DELETE FROM sessions WHERE user_name = ?", (name,))])

    def authenticate(self, name: str, password: str) -> User | None:
        rows = self.db.query("SELECT password_hash, role, disabled FROM users WHERE name = ?", (name,))
        stored = rows[0][0] if rows else _DUMMY_HASH
        try:
            _HASHER.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if not rows or rows[0][2]:
            return None
        if _HASHER.check_needs_rehash(stored):
            self.db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (_HASHER.hash(password), name))
        return User(name, rows[0][1])

    # -- sessions ---------------------------------------------------------------------------------
    def open_session(self, user: User) -> tuple[str, Session]:
        """A new session; returns the cookie token and the session."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = time.time()
        self.db.execute_many([
            ("DELETE FROM sessions WHERE expires_at < ?", (now,)),
            ("INSERT INTO sessions (token_sha256, user_name, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
             (_digest(token), user.name, csrf, now, now + self.session_s))])
        return token, Session(user, csrf, _digest(token))

    def session(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        rows = self.db.query(
            "SELECT u.name, u.role, u.disabled, s.csrf, s.expires_at FROM sessions s JOIN users u"
            " ON u.name = s.user_name WHERE s.token_sha256 = ?", (_digest(token),))
        if not rows or rows[0][2] or rows[0][4] < time.time():
            return None
        name, role, _, csrf, _ = rows[0]
        return Session(User(name, role), csrf, _digest(token))

    def close_session(self, session: Session) -> None:
        self.db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (session.token_sha256,))


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


class LoginLimiter:
    """At most `attempts` failed sign-ins per key (user name, client address) within `window_s`."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts, self.window_s = attempts, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] < now - self.window_s:
            q.popleft()
        return q

    def blocked(self, *keys: str) -> float:
        """Seconds until a sign-in may be tried again (0: allowed now)."""
        now = time.monotonic()
        with self._lock:
            waits = [q[0] + self.window_s - now for q in (self._recent(k, now) for k in keys)
                     if len(q) >= self.attempts]
        return max(waits, default=0.0)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
            if len(self._failures) > 10_000:  # forget idle keys so the table cannot grow without bound
                for key in [k for k, q in self._failures.items() if not q]:
                    del self._failures[key]

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
