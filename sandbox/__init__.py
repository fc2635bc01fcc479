"""mailer's own fake of the provider's send API (docs/provider.md), with faults injected on request.

Not part of the service: mounted in-process by the embedded default, served by tests, or run standalone
(`python -m mailer sandbox`) for benchmarks. Per-request work is O(1): counts per id in a dict and a
bounded journal, never full histories.
"""
