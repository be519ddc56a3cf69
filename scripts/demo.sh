#!/bin/bash
# The main job on its embedded default: the lab network in namespaces, the default fleet
# (instances/) under miredoctl and supervisord, qualification, and pings through the tunnels.
# Called by `make demo` after the Debian packages and .venv are in place. The demo lives in
# the lab package (teredolab), which `miredoctl demo` runs the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m teredolab demo
