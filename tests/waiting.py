"""
Waiting on loopback tests: for the event itself where grott offers one (a
Deferred), otherwise a poll of the condition with a deadline that fails the
test with what it was waiting for.  Never a fixed sleep.
"""

from twisted.internet import defer
from twisted.internet.task import deferLater


def until(reactor, condition, what, seconds=10.0, interval=0.01, detail=None):
    """
    A Deferred that fires once C{condition()} is true, checked every
    C{interval} seconds; fails with C{AssertionError} naming C{what} (and
    C{detail()}, when given) after C{seconds}.  C{condition} may be a
    coroutine function, for conditions that ask a server.
    """

    async def holds():
        result = condition()
        if hasattr(result, "__await__"):
            result = await result
        return result

    async def poll():
        deadline = reactor.seconds() + seconds
        while not await holds():
            if reactor.seconds() > deadline:
                more = f"\n{detail()}" if detail is not None else ""
                raise AssertionError(f"timed out after {seconds:g} s waiting for {what}{more}")
            await deferLater(reactor, interval, lambda: None)

    return defer.ensureDeferred(poll())


def plugins_idle(host):
    """
    A Deferred that fires when every plugin of C{host} (a
    L{grott.pluginhost.PluginHost}) has delivered what it was given: its
    C{delivered} counters are final then.
    """
    return defer.gatherResults([runner.when_idle() for runner in host.runners])
