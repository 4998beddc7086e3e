// A real DHCP client for guest namespaces: busybox udhcpc, with an event script that configures only
// the guest's own namespace (address, MTU, routes) and records what the server handed out. It never
// touches /etc/resolv.conf or anything else shared with the host.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sh, type Guest } from './sandbox.ts';

/** The event script (also copied into the system test's container). */
export const UDHCPC_SCRIPT = new URL('guest/udhcpc.sh', import.meta.url).pathname;

export type Lease = Record<string, string>;

/**
 * busybox udhcpc's command line for one exchange (-q: get a lease, configure, exit) with `script`
 * as its event script, asking for every option the tests check.
 */
export function udhcpcArgv(leaseFile: string, script: string): string[] {
  const options = ['mtu', 'staticroutes', 'ntpsrv', 'domain', 'dns', 'router', 'msstaticroutes' /* 249, older Windows */];
  return [
    'env',
    `IMDSTEST_LEASE_FILE=${leaseFile}`,
    ...['busybox', 'udhcpc', '-i', 'eth0', '-f', '-q', '-n', '-t', '8', '-T', '1', '-A', '1', '-s', script],
    ...options.flatMap((o) => ['-O', o]),
  ];
}

/** The lease file the event script wrote, as KEY -> value. */
export function parseLease(text: string): Lease {
  const lease: Lease = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) lease[line.slice(0, i)] = line.slice(i + 1);
  }
  return lease;
}

/** Runs one DHCP exchange in the guest and returns the options it got. */
export async function udhcpc(guest: Guest, dir: string): Promise<Lease> {
  const leaseFile = join(dir, `lease-${guest.name}`);
  writeFileSync(leaseFile, '');
  await sh(['nsenter', `--net=/run/netns/${guest.netns}`, '--', ...udhcpcArgv(leaseFile, UDHCPC_SCRIPT)], { timeoutMs: 30_000 });
  return parseLease(readFileSync(leaseFile, 'utf8'));
}
