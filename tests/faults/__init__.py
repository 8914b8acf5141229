"""Fault tests: a private system whose servers and workers the tests kill and restart."""
