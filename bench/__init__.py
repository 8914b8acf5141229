"""Load-speed bench: a large CSV end to end through the real worker, against a plain COPY of the same file.

Run with `make bench` or `python -m bench --help`; see bench/README.md.
"""
