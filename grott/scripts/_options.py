"""
What every `grott` command's options share: `--version` is grott's.
"""

import sys

from twisted.python import usage

__all__ = ["Options", "version"]


def version():
    """
    grott's own version, as installed (the distribution's metadata).
    """
    from importlib import metadata
    try:
        return metadata.version("grott")
    except metadata.PackageNotFoundError:  # run from a clone without installing
        return "unknown (not installed)"


class Options(usage.Options):
    """
    L{usage.Options} whose C{--version} names grott, not only Twisted.
    """

    def opt_version(self):
        """
        Display grott's version (and Twisted's) and exit.
        """
        from twisted import copyright
        sys.stdout.write(f"grott {version()} (Twisted {copyright.version})\n")
        sys.exit(0)
