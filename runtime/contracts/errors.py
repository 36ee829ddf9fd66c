"""Exception types shared by the whole project.

Every error a user can cause (bad file, bad config, bad model) derives from SmearscopeError;
the CLI prints its message as one line instead of a traceback.
"""

from __future__ import annotations


class SmearscopeError(Exception):
    """Base class for errors the user can act on."""


class ImageError(SmearscopeError):
    """An image file or frame cannot be used (missing, corrupt, wrong channels, too small)."""


class ModelError(SmearscopeError):
    """A model file or its card is missing or unusable."""


class ModelIntegrityError(ModelError):
    """A model file's sha256 does not match the one recorded in its card."""


class ConfigError(SmearscopeError):
    """A configuration file or value is invalid; the message names the key."""


class DataError(SmearscopeError):
    """A dataset folder or table is missing or malformed."""


class SchemaError(SmearscopeError):
    """A message does not validate against its JSON Schema."""


class SkipCapture(SmearscopeError):
    """Raised by a camera source or quality gate to skip this capture without stopping the device."""
