"""
`grott check --config config.yaml`: is this configuration safe to restart
with?  Like `nginx -t`: prints "PATH: OK" and exits 0, or lists every
problem, each naming the file, the key and its line, and exits 1, so
`grott check -c new.yaml && systemctl restart grott` never swaps a running
proxy for one that will not start.

Beyond loading the file (types, unknown and duplicate keys, endpoint
strings) and what start-up checks (register definitions, DTC filter names,
log file directories), it builds the whole service tree on a MemoryReactor,
without starting it or touching the network, to catch wiring errors
(unknown plugin names...).  What building logs as an error about plugins (a
plugin file that fails to import, an object that does not provide the
plugin interface) is a problem too: start-up only logs it, but a check
should not say OK.  Warnings (a secret too short to mask, a file others can
read while it holds secrets, settings for a plugin that is not there) go to
standard error as "PATH: warning: ..." and do not fail it.
"""

import sys

from twisted.internet.testing import MemoryReactor
from twisted.logger import LogLevel, formatEvent

from grott import logs
from grott.config import ConfigError, in_file_order, load_config, without_line
from grott.outputs import jsonl
from grott.scripts import _options
from grott.secrets import Secrets, secret_warnings, secrets_in


class Options(_options.Options):
    synopsis = "[--config PATH]"
    optParameters = (
        ["config", "c", "config.yaml", "Path to the configuration file to check."],
    )

    def parseArgs(self, path=None):
        if path is not None:
            self["config"] = path


class _PluginProblems:
    """
    Collects what the plugin loader logs while the tree is built: errors (a
    plugin file that fails to import, an object that does not provide the
    plugin interface) as problems, warnings (settings for a plugin that is
    not there, a class without an instance) as warnings; each names
    C{plugins} and its line.
    """

    def __init__(self, config):
        self.config = config
        self.found = []
        self.warned = []
        # A plugin's own error text may quote its settings.
        self.secrets = Secrets(secrets_in(config))

    def __call__(self, event):
        if not event.get("log_namespace", "").startswith("grott.pluginloader"):
            return
        level = event.get("log_level", LogLevel.info)
        if level < LogLevel.warn:
            return
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += f": {failure.type.__name__}: {failure.getErrorMessage()}"
        line = self.config.problem("plugins", self.secrets.mask(" ".join(text.split())))
        if level >= LogLevel.error:
            self.found.append(line)
        else:
            self.warned.append(line.replace(": plugins: ", ": warning: plugins: ", 1))


def problems_in(path, build=None):
    """
    Everything wrong with the configuration at C{path}, as lines naming the
    file; an empty list if it is fine.  C{build(config, reactor)} makes the
    service tree (default: L{grott.service.makeService}).
    """
    return check(path, build)[0]


def check(path, build=None):
    """
    (problems, warnings) of the configuration at C{path}: problems stop
    grott from starting; warnings (a weak secret, a file others can read
    while it holds secrets) do not.  Both are lines naming the file, and
    neither ever contains a secret.  Every problem is listed, in file order.
    """
    from grott import service
    try:
        config = load_config(path)
        problems = []
    except ConfigError as e:
        if e.config is None:
            return e.problems, []
        # Go on with what could be read: every problem in one run.
        config, problems = e.config, list(e.problems)
    problems += service.problems(config)
    if config.outputs.jsonl is not None:
        # Not a start-up error: the output retries with every record (a
        # disk mounted late), but a check should not say OK.
        problem = jsonl.path_problem(config.outputs.jsonl.path)
        if problem:
            problems.append(config.problem("outputs.jsonl.path", problem))
    if build is None:
        build = service.makeService
    plugins = _PluginProblems(config)
    logs.publisher.addObserver(plugins)
    try:
        build(config, MemoryReactor())
    except ConfigError as e:
        known = {without_line(p) for p in problems}
        for problem in e.problems:
            line = problem if problem.startswith(f"{path}:") else f"{path}: {problem}"
            if without_line(line) not in known:
                problems.append(line)
    except Exception as e:  # noqa: BLE001 (any failure to build is the answer)
        problems.append(f"{path}: cannot build the service: {type(e).__name__}: {e}")
    finally:
        logs.publisher.removeObserver(plugins)
    warnings = [f"{path}: warning: {w}" for w in secret_warnings(config, path)]
    return in_file_order(problems + plugins.found), warnings + plugins.warned


def main(options, stdout=None, stderr=None, build=None):
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    path = options["config"]
    problems, warnings = check(path, build)
    for warning in warnings:
        stderr.write(warning + "\n")
    if not problems:
        stdout.write(f"{path}: OK\n")
        return 0
    for problem in problems:
        stderr.write(problem + "\n")
    stderr.write(f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}\n")
    return 1
