"""
`python -m grott.tac` prints the path of the installed application file,
grott.tac, for `twistd -ny "$(python -m grott.tac)"`.

pip installs no files outside the package, so the .tac lives inside it
(package data) and this is how to find it without knowing where
site-packages is.
"""

import os
import sys

__all__ = ["path"]


def path():
    """
    Where grott.tac is.
    """
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "grott.tac")


if __name__ == "__main__":  # pragma: no cover (run as a subprocess in the tests)
    sys.stdout.write(path() + "\n")
