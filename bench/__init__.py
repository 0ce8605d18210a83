"""Benchmarks (DESIGN §7): run by hand, print one table; not timed tests."""
