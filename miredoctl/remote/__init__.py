"""A fleet across hosts: `hosts.yaml` (Ansible's inventory), the per-host agent, and the
controller that reaches the hosts through ansible-core.

Nothing here imports ansible: the controller runs ansible-core's programs as subprocesses
(`orchestrate.py` says why), so a single-host fleet never needs the `remote` extra.
"""
