#!/bin/sh
# udhcpc event script for the system test's guest: configures only the guest's own namespace
# (address, routes) and records what the server handed out in $IMDSTEST_LEASE_FILE.
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    env | grep -E '^(ip|mask|router|dns|domain|mtu|staticroutes|msstaticroutes|lease|serverid|hostname)=' > "$IMDSTEST_LEASE_FILE"
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    ;;
esac
exit 0
