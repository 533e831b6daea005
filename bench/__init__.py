"""Throughput benchmarks for btcpulse's models (``make bench`` runs :mod:`bench.run`)."""
