"""teredolab: the lab network in namespaces and the guided demo, beside the fleet manager.

Test and demo tooling, not part of what an operator runs in production: `topology` builds the
reference network (Teredo server, relay, NATs, clients, an IPv6-only host), `netns` holds the
namespace helpers it builds with, `demo` walks through the default fleet. The kernel tests and
the benchmark import it; `miredoctl lab ...` and `miredoctl demo` run it as a program
(`python -m teredolab`), because no production module of `miredoctl` or `engine` may import it.
"""
