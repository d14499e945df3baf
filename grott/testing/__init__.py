"""
Stand-ins for the other ends of grott's connections: simulated dataloggers
and a fake Growatt cloud.

They ship with grott (behind C{grott simulate} and C{grott fake-cloud}) so
users can try grott without hardware, and grott's own end-to-end tests and
benchmarks run against them; they are kept apart from the relay core so the
core never depends on them.
"""
