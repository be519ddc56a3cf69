"""supervisord event listeners of a fleet, and the files they write.

These modules run inside the fleet's supervisord (`python -m miredoctl.listeners.reaper`,
`... .logstamp`), not in the `miredoctl` command: supervisord starts them from the config that
`miredoctl.render.supervisord_conf` writes. `history` and `timedlog` define the formats of what
the listeners write (`history/NAME.jsonl`, `logs/timed/NAME.log`); the command's `status` and
`logs` read those files back with the same modules, so writer and reader share one definition.
"""
