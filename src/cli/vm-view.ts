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

/** The VM's contact as `vm show` prints it: first and last request, last status, count; `last_seen: never` before any. */
function contactFields(v: VmView): Record<string, string | number> {
  const c = v.contact;
  if (c === undefined) return { last_seen: 'never (since the daemon started)' };
  return { first_seen: c.first_seen, last_seen: c.last_seen, last_status: c.last_status, requests: c.requests };
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
  return fields({ ...rest, ...contactFields(v) });
}

/** How a command's VM argument is described in its help. */
export const VM_REF = 'the VM: its id (UUID), host name, display name, address or MAC; NET/REF within one network';
