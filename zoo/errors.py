"""The one error hierarchy of odzoo.

Every error odzoo raises on purpose derives from :class:`ZooError` and from the builtin that best
describes it, so callers may catch either (``except FileNotFoundError`` keeps working).
Messages name what was wrong and what to do about it.
"""
from __future__ import annotations


class ZooError(Exception):
    """Base class of every odzoo error."""


class RegistryError(ZooError, ValueError):
    """A registry file is malformed: names the file, the entry and the field."""


class UnknownModelError(ZooError, LookupError):
    """A name or alias that no registry knows."""

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return str(self.args[0]) if self.args else ""


class DownloadError(ZooError, ConnectionError):
    """A file could not be fetched: names the URL, the digest, the destination and a manual command."""


class OfflineError(DownloadError):
    """ODZOO_OFFLINE forbids the network and the cache cannot serve the request."""


class IntegrityError(ZooError, ValueError):
    """Downloaded or cached bytes do not match the expected digest or manifest."""


class DamagedArchiveError(IntegrityError):
    """An archive that fails its own checks (codec CRC or length, truncated tar, unreadable
    checkpoint): damaged in transfer or storage, not hostile; fetching it again may help."""


class UnsafeArchiveError(ZooError, ValueError):
    """An archive member would escape the destination, is a device, or exceeds the limits."""


class CacheError(ZooError, OSError):
    """The cache folder cannot be used (permissions, lock, corrupt entry that cannot be repaired)."""


class NotCachedError(ZooError, FileNotFoundError):
    """A model that is not in the cache (and may not be downloaded)."""


class ConfigError(ZooError, ValueError):
    """A pipeline.config that cannot be parsed or lacks a required field."""


class CheckpointMismatchError(ZooError, ValueError):
    """A strict restore found unmatched checkpoint keys, unassigned variables or shape mismatches."""


class UnsupportedModelError(ZooError, NotImplementedError):
    """The model's architecture has no implementation for the requested backend."""


class InputError(ZooError, ValueError):
    """An image or batch that detect() cannot use: wrong rank, channels, dtype, empty, NaN, unreadable."""


class DeviceError(ZooError, RuntimeError):
    """A requested device (gpu:N, tpu) or distribution setup that is not available here."""


class DatasetError(ZooError, ValueError):
    """A COCO-format dataset or results file that cannot be used."""


class SettingsError(ZooError, ValueError):
    """An ``ODZOO_*`` environment variable holds a value odzoo cannot use."""


class ArgumentError(ZooError, ValueError):
    """An argument of the wrong type or outside its range: names the argument, the value and what is allowed."""
