"""The exceptions swinref raises for bad input.

Every error a user can cause is a `SwinrefError`: its message names the problem and the fix. The CLI turns it
into a message on stderr and exit code 2; library callers can catch it (it is also a ValueError, so code that
already guards against ValueError keeps working).
"""


class SwinrefError(ValueError):
    """Base class: a bad input (a name, a size, a file, an array, a flag) with a message that says how to fix it."""


class ConfigError(SwinrefError):
    """An unknown configuration name, or an invalid combination of configuration fields."""


class InputError(SwinrefError):
    """An input array or image that the model cannot take (wrong rank, channels, dtype or size)."""


class CheckpointError(SwinrefError):
    """A checkpoint file that cannot be read or does not fit the model: missing, unexpected or mis-shaped keys."""


class UnsafePickleError(CheckpointError):
    """A pickle that asks for a global outside the allow-list; refused before anything in it runs."""


class DeviceError(SwinrefError):
    """A device (GPU) was asked for that is not usable here; the message names what is missing."""


class OutputError(SwinrefError):
    """An output that cannot be written: missing or read-only directory, an existing output without force, no room."""


class ResourceError(SwinrefError):
    """A request that needs more memory or disk than there is (or than the budget allows); refused before any
    allocation, with the forecast and the largest size that fits."""
