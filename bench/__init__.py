"""Side-by-side benchmark of Teredo relays: ours against Debian's miredo, in the same run.

Not a test: it measures, prints ratios (ours / miredo) and writes results to `bench/results/`.
Run it with `python -m bench` (or `make bench`); see `bench/README.md`.
"""
