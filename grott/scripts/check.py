"""
`grott check --config config.yaml`: is this configuration safe to restart
with?  Like `nginx -t`: prints "PATH: OK" and exits 0, or lists the problems
and exits 1, so `grott check -c new.yaml && systemctl restart grott` never
swaps a running proxy for one that will not start.

Beyond loading the file (types, unknown keys, endpoint strings), it builds
the whole service tree on a MemoryReactor, without starting it or touching
the network, to catch wiring errors (unknown plugin names...), and checks
that the log files it names can be written by the user running the check.
Warnings (a secret too short to mask, a file others can read while it holds
secrets) go to standard error as "PATH: warning: ..." and do not fail it.
"""

import sys

from twisted.internet.testing import MemoryReactor
from twisted.python import usage

from grott.config import ConfigError, load_config
from grott.logs import check_paths
from grott.secrets import secret_warnings


class Options(usage.Options):
    synopsis = "[--config PATH]"
    optParameters = (
        ["config", "c", "config.yaml", "Path to the configuration file to check."],
    )

    def parseArgs(self, path=None):
        if path is not None:
            self["config"] = path


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
    neither ever contains a secret.
    """
    try:
        config = load_config(path)
    except ConfigError as e:
        return [str(e)], []
    problems = [f"{path}: {p}" for p in check_paths(config.log)]
    if build is None:
        from grott.service import makeService as build
    try:
        build(config, MemoryReactor())
    except ConfigError as e:
        problems.append(str(e) if str(e).startswith(f"{path}:") else f"{path}: {e}")
    except Exception as e:  # noqa: BLE001 (any failure to build is the answer)
        problems.append(f"{path}: cannot build the service: {type(e).__name__}: {e}")
    warnings = [f"{path}: warning: {w}" for w in secret_warnings(config, path)]
    return problems, warnings


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
