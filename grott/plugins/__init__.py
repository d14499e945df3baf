"""
grott's plugin package: Twisted dropins that register grott plugins.

Any directory called C{grott/plugins} on C{sys.path} joins this package, so
an installed distribution can add a plugin by shipping a module in its own
C{grott/plugins/} (without an C{__init__.py}); see README.md, "Plugins and
outputs".  Only dropin modules belong here.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__ = []
