#!/bin/bash
# Install the Debian packages the project needs, without letting package
# scripts start daemons (Debian's miredo would otherwise try to reach a Teredo
# server on the internet with its default config).
set -euo pipefail
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
fi
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
fi
# openssh-server is only here for the multi-host tests, which run their own sshd per namespace
# host with a private config: the machine's own sshd must neither start nor be enabled.
# policy-rc.d stops the start; Debian's ssh.service, ssh.socket and /etc/init.d/ssh also refuse to
# run while /etc/ssh/sshd_not_to_be_run exists, which covers a later boot of an enabled unit.
for p in "${missing[@]}"; do
    if [ "$p" = openssh-server ] && [ ! -e /usr/sbin/sshd ]; then
        mkdir -p /etc/ssh
        touch /etc/ssh/sshd_not_to_be_run
        fresh_sshd=1
    fi
done
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# openssh-server's postinst enables ssh.service (links in /etc/systemd/system) whatever
# policy-rc.d says; undo that when this run installed it
if [ -n "${fresh_sshd:-}" ]; then
    rm -f /etc/systemd/system/multi-user.target.wants/ssh.service \
          /etc/systemd/system/sockets.target.wants/ssh.socket /etc/systemd/system/sshd.service
fi
