"""Errors of the installer tools.

Every failure the tools expect is an :class:`InstallerError` whose message
is one line an installer can act on; the command line prints it and exits
with :attr:`InstallerError.exit_status` (2 for usage, 1 for failures).
Messages never contain secrets from the site configuration.
"""


class InstallerError(Exception):
    """A failure the installer can act on; ``str(err)`` is the one-line message."""

    exit_status = 1


class UsageError(InstallerError):
    """The command line or a file given on it is unusable as such."""

    exit_status = 2


class BuildError(InstallerError):
    """The bundle could not be built (mpy-cross missing, a file does not compile)."""


class BundleError(InstallerError):
    """A bundle is missing, incomplete, or does not match its manifest."""


class SiteConfigError(UsageError):
    """The site configuration file does not parse or lacks required keys."""


class PortError(InstallerError):
    """The serial port does not exist or cannot be opened."""


class BoardError(InstallerError):
    """The board does not answer, or answered something unexpected."""


class VerifyError(InstallerError):
    """Files read back from the board do not match what was flashed."""


class ProbeError(InstallerError):
    """The RS-485 bus could not be scanned."""


class ProfileError(UsageError):
    """A sensor profile file does not parse or its map is invalid."""
