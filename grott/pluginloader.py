"""
Finding plugins and choosing which run.

Three sources, in this order: installed packages (Twisted dropins in
L{grott.plugins}, which is where the built-in outputs are registered),
Python files in the plugins directory, and config.yaml, which enables,
disables and configures them by name.

What runs is opt-in, as tahoe-lafs does with its storage plugins: a
built-in output runs when its C{outputs:} section is present, any other
plugin only when C{plugins.enabled} names it (or says C{all}).  Finding a
plugin is not consent to run it: a stray C{*.py} in the plugins directory,
or a package installed for something else, must not start receiving every
record (and whatever credentials its settings hold).

A broken plugin is somebody else's bug, so it never stops grott: a file
that fails to import or an object that does not verify against its
interface is logged with the reason and skipped.  A name in config.yaml
that matches nothing is the user's typo, and that is a L{ConfigError}.
"""

import dataclasses
import importlib.util
import os
import re
import sys

from twisted.logger import LogLevel
from twisted.plugin import getCache
from twisted.python.modules import getModule
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from grott.config import ConfigError, OutputsConfig
from grott.interfaces import (
    IBlockingPlugin,
    IConfigurablePlugin,
    IGrottPlugin,
    IGrottPluginService,
    ISpoolSink,
)
from grott.logs import Logger

__all__ = [
    "BUILTIN_OUTPUTS", "Found", "Loaded", "find_files", "find_installed", "given", "load", "select",
]

log = Logger()

#: Names reserved for the outputs configured under C{outputs:} (C{spool}
#: configures them all and is not an output).
BUILTIN_OUTPUTS = tuple(f.name for f in dataclasses.fields(OutputsConfig) if f.name != "spool")

#: What a plugins-directory file may define: plugins, sinks, factories.
_KINDS = (IGrottPlugin, ISpoolSink, IConfigurablePlugin)

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True)
class Found:
    """
    A discovered plugin, or plugin factory, not yet chosen.
    """

    name: str
    obj: object
    origin: str
    builtin: bool = False

    @property
    def configurable(self):
        return IConfigurablePlugin.providedBy(self.obj)


@dataclasses.dataclass(frozen=True)
class Loaded:
    """
    A plugin that will run.
    """

    name: str
    plugin: object
    origin: str
    #: A L{grott.spool.SpooledOutput} in front of an L{ISpoolSink}.
    spooled: bool = False

    @property
    def blocking(self):
        return IBlockingPlugin.providedBy(self.plugin)

    @property
    def hooks(self):
        return IGrottPluginService.providedBy(self.plugin)


def _problem(obj):
    """
    Why C{obj} cannot be used as a plugin or plugin factory, or None.
    """
    if IConfigurablePlugin.providedBy(obj):
        interfaces = [IConfigurablePlugin]
    elif ISpoolSink.providedBy(obj) and not IGrottPlugin.providedBy(obj):
        interfaces = [ISpoolSink]
        if IGrottPluginService.providedBy(obj):
            interfaces.append(IGrottPluginService)
    else:
        interfaces = [IBlockingPlugin if IBlockingPlugin.providedBy(obj) else IGrottPlugin]
        if IGrottPluginService.providedBy(obj):
            interfaces.append(IGrottPluginService)
    try:
        for interface in interfaces:
            verifyObject(interface, obj)
    except Invalid as e:
        return " ".join(str(e).split())
    name = obj.name
    if not isinstance(name, str) or not _NAME.match(name):
        return f"its name {name!r} is not a non-empty string of letters, digits, _, - and ."
    return None


def _is_plugin(obj):
    """
    A plugin the host can run: an L{IGrottPlugin}, or an L{ISpoolSink} it
    puts behind a spool.
    """
    return IGrottPlugin.providedBy(obj) or ISpoolSink.providedBy(obj)


def _candidate(obj, origin):
    problem = _problem(obj)
    if problem is not None:
        log.error("plugin {object!r} from {origin} is not a usable plugin and is skipped: "
                  "{problem}", object=obj, origin=origin, problem=problem)
        return None
    builtin = obj.name in BUILTIN_OUTPUTS and getattr(obj, "__module__", "").startswith(
        "grott.outputs.")
    return Found(obj.name, obj, origin, builtin)


def find_installed(package):
    """
    Plugins and plugin factories registered as dropins in C{package}.

    This is L{twisted.plugin.getPlugins}'s own loop over L{getCache}, written
    out so that a dropin module which fails to import, or a plugin in it
    which fails to load, is reported by name rather than as a bare
    traceback.
    """
    found = []
    cache = getCache(package)
    for key, dropin in sorted(cache.items()):
        for cached in dropin.plugins:
            obj = _adapt(cached, dropin.moduleName)
            if obj is not None:
                candidate = _candidate(obj, f"installed package {dropin.moduleName}")
                if candidate is not None:
                    found.append(candidate)
    for module in getModule(package.__name__).iterModules():
        if module.name.rsplit(".", 1)[-1] not in cache:
            log.error("installed plugin module {module} ({path}) failed to import (traceback "
                      "above); its plugins are skipped", module=module.name,
                      path=module.filePath.path)
    return found


def _adapt(cached, module):
    for interface in (IGrottPlugin, IConfigurablePlugin, ISpoolSink):
        try:
            obj = interface(cached, None)
        except Exception:  # noqa: BLE001 - a plugin's bug must not stop grott
            log.failure("installed plugin {name} in {module} failed to load and is skipped",
                        name=cached.name, module=module, level=LogLevel.error)
            return None
        if obj is not None:
            return obj
    return None


def find_files(directory):
    """
    Module-level plugin objects in the C{*.py} files of C{directory}.

    Files are imported in name order, each as its own module; files whose
    name starts with C{_} or C{.} are helpers and not scanned.
    """
    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        log.debug("no plugins directory at {path}", path=path)
        return []
    found = []
    for filename in sorted(os.listdir(path)):
        if not filename.endswith(".py") or filename.startswith(("_", ".")):
            continue
        module = _import_file(os.path.join(path, filename))
        if module is not None:
            found.extend(_scan(module, os.path.join(path, filename)))
    return found


def _import_file(filename):
    stem = os.path.splitext(os.path.basename(filename))[0]
    name = "grott_plugin_file_" + re.sub(r"\W", "_", stem)
    spec = importlib.util.spec_from_file_location(name, filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit):  # noqa: BLE001 - report any broken file, go on
        del sys.modules[name]
        log.failure("plugin file {path} failed to import and is skipped", path=filename,
                    level=LogLevel.error)
        return None
    return module


def _scan(module, filename):
    found, seen, instances_of = [], set(), set()
    classes = []
    for attr, value in list(vars(module).items()):
        if isinstance(value, type):
            if any(i.implementedBy(value) for i in _KINDS):
                classes.append((attr, value))
            if not any(i.providedBy(value) for i in _KINDS):
                continue
        elif not any(i.providedBy(value) for i in _KINDS):
            continue
        instances_of.add(type(value))
        if id(value) in seen:
            continue
        seen.add(id(value))
        candidate = _candidate(value, f"file {filename} ({attr})")
        if candidate is not None:
            found.append(candidate)
    forgotten = False
    for attr, cls in classes:
        if not any(issubclass(t, cls) for t in instances_of) and cls.__module__ == module.__name__:
            forgotten = True
            log.warn(  # noqa: G010 (twisted.logger has no warning())
                "plugin file {path}: class {cls} implements a plugin interface but no "
                "instance of it is defined at module level (add e.g. "
                "plugin = {cls}())", path=filename, cls=attr)
    if not instances_of and not forgotten:
        # Helpers are named _*.py; anything else here is meant as a plugin.
        log.error("plugin file {path} provides no plugin: no module-level object provides "
                  "IGrottPlugin or IConfigurablePlugin (declare it with @implementer; "
                  "name helper files _*.py)", path=filename)
    return found


def select(found, config, reactor):
    """
    Choose and build the plugins C{config} turns on.

    @return: a list of L{Loaded}, in discovery order.
    @raise ConfigError: for a name in C{plugins.enabled} that matches no
        plugin, or settings in the wrong place for a built-in output.
    """
    settings = config.plugins
    source = config.source
    unique = _unique(found)
    names = {f.name: f for f in unique}
    enabled = settings.enabled
    if enabled != "all":
        for name in enabled:
            if name not in names:
                known = ", ".join(sorted(names)) or "none"
                raise ConfigError(
                    f"{source}: plugins.enabled: no plugin named {name!r} was found "
                    f"(found: {known}; a plugin file that failed to import is reported "
                    f"in the log above)")
            if names[name].builtin:
                raise ConfigError(
                    f"{source}: plugins.enabled: {name!r} is a built-in output: turn it on "
                    f"with an outputs.{name} section")
    for name in settings.settings:
        if name in BUILTIN_OUTPUTS:
            raise ConfigError(f"{source}: plugins.settings.{name}: configure the built-in "
                              f"output under outputs.{name}")
        if name not in names:
            log.warn(  # noqa: G010 (twisted.logger has no warning())
                "plugins.settings has settings for {plugin}, but no such plugin was found",
                plugin=name)
    for name in settings.disabled:
        if name not in names:
            log.warn(  # noqa: G010 (twisted.logger has no warning())
                "plugins.disabled names {plugin}, but no such plugin was found",
                plugin=name)

    loaded = []
    for candidate in unique:
        if candidate.builtin:
            section = getattr(config.outputs, candidate.name)
            on = section is not None and candidate.name not in settings.disabled
        else:
            section = settings.settings.get(candidate.name)
            on = (enabled == "all" or candidate.name in enabled) and \
                candidate.name not in settings.disabled
        if not on:
            if candidate.builtin:
                log.info("output {plugin} is off (no outputs.{plugin} section)",
                         plugin=candidate.name)
            else:
                log.info("plugin {plugin} ({origin}) found but not enabled: add it to "
                         "plugins.enabled to run it", plugin=candidate.name,
                         origin=candidate.origin)
            continue
        plugin = _build(candidate, section, reactor)
        if plugin is not None:
            loaded.append(Loaded(candidate.name, plugin, candidate.origin))
    return loaded


def _unique(found):
    by_name, unique = {}, []
    for candidate in found:
        first = by_name.get(candidate.name)
        if first is None:
            by_name[candidate.name] = candidate
            unique.append(candidate)
        elif first.obj is not candidate.obj:
            log.error("plugin name {plugin} from {origin} is already taken by {first}; "
                      "skipped", plugin=candidate.name, origin=candidate.origin,
                      first=first.origin)
    return unique


def _build(candidate, section, reactor):
    if not candidate.configurable:
        if section is not None:
            log.warn(  # noqa: G010 (twisted.logger has no warning())
                "plugin {plugin} takes no settings; plugins.settings.{plugin} is ignored",
                plugin=candidate.name)
        return candidate.obj
    try:
        plugin = candidate.obj.makePlugin({} if section is None else section, reactor)
    except Exception as e:  # noqa: BLE001 - a plugin's bug must not stop grott
        log.failure("plugin {plugin} ({origin}) could not be set up and is skipped: {error}",
                    plugin=candidate.name, origin=candidate.origin, error=str(e),
                    level=LogLevel.error)
        return None
    problem = _problem(plugin) if _is_plugin(plugin) else \
        "it does not provide IGrottPlugin (or ISpoolSink)"
    if problem is None and plugin.name != candidate.name:
        problem = f"it is named {plugin.name!r}, not {candidate.name!r}"
    if problem is not None:
        log.error("plugin {plugin} ({origin}) made an unusable plugin, skipped: {problem}",
                  plugin=candidate.name, origin=candidate.origin, problem=problem)
        return None
    return plugin


def given(plugins):
    """
    L{Loaded} entries for plugin objects handed over directly; they are
    checked like discovered ones.
    """
    loaded = []
    for candidate in _unique(filter(None, (_candidate(p, "given") for p in plugins))):
        if candidate.configurable:
            log.error("{plugin} is a plugin factory, not a plugin; skipped",
                      plugin=candidate.name)
        else:
            loaded.append(Loaded(candidate.name, candidate.obj, candidate.origin))
    return loaded


def load(config, reactor, package=None):
    """
    Find every plugin and build those C{config} turns on.
    """
    if package is None:
        import grott.plugins as package
    found = find_installed(package) + find_files(config.plugins.directory)
    return select(found, config, reactor)
