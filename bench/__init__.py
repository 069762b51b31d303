"""``make bench``: our codecs and protocols timed beside the JavaScript reference implementations.

See :mod:`bench.runner` for how benchmarks are declared and timed.
"""
