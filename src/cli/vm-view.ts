// How the CLI shows VMs: the admin API's view of a VM, the `vm list` table and `vm show` fields.
import { fields, table } from './output.ts';

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
  contact?: { requests: number; first_seen: string; last_seen: string; last_status: number };
  [key: string]: unknown;
}

/** When the VM last asked for metadata: "2026-12-02T18:00:00.000Z (200), 28 requests since 2026-…", or "never". */
export function lastSeen(v: VmView): string {
  const c = v.contact;
  return c === undefined
    ? 'never (since the daemon started)'
    : `${c.last_seen} (${c.last_status}), ${c.requests} requests since ${c.first_seen}`;
}

/** The `vm list` table; `-o wide` adds the display name, zone, flavor, origin and request count. */
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
      LAST_SEEN: (v) => (v.contact === undefined ? '-' : `${v.contact.last_seen} ${v.contact.last_status}`),
    },
    wide,
    {
      NAME: (v) => v.name,
      AZ: (v) => v['availability_zone'] as string | undefined,
      INSTANCE_TYPE: (v) => v['instance_type'] as string | undefined,
      REQUESTS: (v) => v.contact?.requests,
      ORIGIN: (v) => v.origin,
    },
  );
}

/** `vm show` for people: every field but the user data's bytes, with when the VM last asked. */
export function vmFields(v: VmView): string {
  const { user_data_b64: _b64, contact: _contact, ...rest } = v;
  return fields({ ...rest, last_seen: lastSeen(v) });
}
