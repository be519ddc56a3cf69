"""The I/O shell around the sans-I/O roles: sockets, TUN, netlink, privileges, signals."""
