#!/bin/sh
# udhcpc event script for the tests' guests (the integration suite's and the system test's):
# configures only the namespace it runs in (address, MTU, routes) and records what the server
# handed out in $IMDSTEST_LEASE_FILE. It never touches /etc/resolv.conf or anything shared.
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    env | grep -E '^(ip|mask|router|dns|domain|mtu|staticroutes|msstaticroutes|ntpsrv|lease|serverid|hostname)=' > "$IMDSTEST_LEASE_FILE"
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    ;;
esac
exit 0
