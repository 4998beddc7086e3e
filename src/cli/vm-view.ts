// How the CLI shows VMs: the admin API's view of a VM, the `vm list` table and `vm show` fields.
import { fields, table } from './output.ts';

/** One of a VM's recent requests as the admin API gives it (GET /v1/vms/{id}). */
export interface RecentRequestView {
  at: string;
  method?: string;
  path?: string;
  status: number;
  requests: number;
  by: 'node' | 'native';
}

export interface VmView {
  id: string;
  network: string;
  ip: string;
  mac: string;
  hostname: string;
  name?: string;
  user_data_bytes: number;
  user_data_b64?: string;
  password_set: boolean;
  origin: string;
  contact?: { requests: number; first_seen: string; last_seen: string; last_status: number; recent?: RecentRequestView[] };
  [key: string]: unknown;
}

/** The VM's contact as `vm show` prints it: first and last request, last status, count; `last_seen: never` before any. */
function contactFields(v: VmView): Record<string, string | number> {
  const c = v.contact;
  if (c === undefined) return { last_seen: 'never' };
  return { first_seen: c.first_seen, last_seen: c.last_seen, last_status: c.last_status, requests: c.requests };
}

/** One recent request as a line: `2026-12-04T15:01:02.123Z  GET /openstack  200`, or the native loop's summary. */
export function recentLine(r: RecentRequestView): string {
  if (r.by === 'native') {
    const n = r.requests === 1 ? '1 request' : `${r.requests} requests`;
    return `${r.at}  ${n} answered by the native loop, the last ${r.status} (it records no paths)`;
  }
  return `${r.at}  ${r.method ?? '?'} ${r.path ?? '?'}  ${r.status}`;
}

/** `recent requests:` and its lines (newest first), after the fields; nothing when there are none. */
function recentText(v: VmView): string {
  const recent = v.contact?.recent ?? [];
  if (recent.length === 0) return '';
  return `recent requests (newest first, since the daemon started):\n${recent.map((r) => `  ${recentLine(r)}\n`).join('')}`;
}

/** The `vm list` table; `-o wide` adds the display name, zone, flavor and origin. */
export function vmsTable(rows: readonly VmView[], wide: boolean): string {
  return table(
    rows,
    {
      ID: (v) => v.id,
      NETWORK: (v) => v.network,
      IP: (v) => v.ip,
      MAC: (v) => v.mac,
      HOSTNAME: (v) => v.hostname,
      USER_DATA: (v) => (v.user_data_bytes > 0 ? `${v.user_data_bytes} B` : '-'),
      PASSWORD: (v) => (v.password_set ? 'set' : '-'),
      LAST_SEEN: (v) => v.contact?.last_seen,
      LAST_STATUS: (v) => v.contact?.last_status,
      REQUESTS: (v) => v.contact?.requests ?? 0,
    },
    wide,
    {
      NAME: (v) => v.name,
      AZ: (v) => v['availability_zone'] as string | undefined,
      INSTANCE_TYPE: (v) => v['instance_type'] as string | undefined,
      ORIGIN: (v) => v.origin,
    },
  );
}

/** `vm show` for people: every field but the user data's bytes, with when the VM last asked. */
export function vmFields(v: VmView): string {
  const { user_data_b64: _b64, contact: _contact, ...rest } = v;
  return `${fields({ ...rest, ...contactFields(v) })}${recentText(v)}`;
}

/** How a command's VM argument is described in its help. */
export const VM_REF = 'the VM: its id (UUID), host name, display name, address or MAC; NET/REF within one network';
