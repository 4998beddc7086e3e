// A real DHCP client for guest namespaces: busybox udhcpc, with an event script that configures only
// the guest's own namespace (address, MTU, routes) and records what the server handed out. It never
// touches /etc/resolv.conf or anything else shared with the host.
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sh, type Guest } from './sandbox.ts';

const SCRIPT = `#!/bin/sh
# udhcpc event script for imds tests: touches only the namespace it runs in.
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
      ip route replace default via "\${router%% *}" dev "$interface"
    fi
    ;;
esac
exit 0
`;

export type Lease = Record<string, string>;

/** Runs one DHCP exchange in the guest (udhcpc -q: get a lease, configure, exit) and returns the options it got. */
export async function udhcpc(guest: Guest, dir: string): Promise<Lease> {
  const script = join(dir, 'udhcpc.script');
  writeFileSync(script, SCRIPT);
  chmodSync(script, 0o755);
  const leaseFile = join(dir, `lease-${guest.name}`);
  writeFileSync(leaseFile, '');
  await sh(
    [
      'nsenter',
      `--net=/run/netns/${guest.netns}`,
      '--',
      'env',
      `IMDSTEST_LEASE_FILE=${leaseFile}`,
      'busybox',
      'udhcpc',
      '-i',
      'eth0',
      '-f',
      '-q',
      '-n',
      '-t',
      '8',
      '-T',
      '1',
      '-A',
      '1',
      '-s',
      script,
      '-O',
      'mtu',
      '-O',
      'staticroutes',
      '-O',
      'ntpsrv',
      '-O',
      'domain',
      '-O',
      'dns',
      '-O',
      'router',
      '-O',
      'msstaticroutes', // option 249, Microsoft's classless static routes (older Windows)
    ],
    { timeoutMs: 30_000 },
  );
  const lease: Lease = {};
  for (const line of readFileSync(leaseFile, 'utf8').split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) lease[line.slice(0, i)] = line.slice(i + 1);
  }
  return lease;
}
