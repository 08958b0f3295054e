"""Helpers every room may use, that use none of them: Django and the standard library only.

- `rows`: the fast-path SQL look-ups (one module, each use cited in docs/benchmarks.md).
- `periodic`: the worker's threads that run every few seconds.
- `client_address`: the client's address, read through the trusted reverse proxies.
- `states`: the one state-machine helper (downloads and servers), with one lock discipline.
"""
