// Pure helpers around iproute2's JSON output (`ip -j -d link show`, `ip -j addr show`).

export interface LinkState {
  name: string;
  index: number;
  /** linkinfo kind: "bridge", "veth", … ; undefined for plain devices (eth0, lo). */
  kind: string | undefined;
  master: string | undefined;
  up: boolean;
  mtu: number;
  alias: string | undefined;
  mac: string | undefined;
  /** IPv4 addresses as `A.B.C.D/N`. */
  addresses: string[];
}

interface IpLinkJson {
  ifindex?: number;
  ifname?: string;
  flags?: string[];
  mtu?: number;
  master?: string;
  ifalias?: string;
  address?: string;
  linkinfo?: { info_kind?: string };
  addr_info?: { family?: string; local?: string; prefixlen?: number }[];
}

/** Parses `ip -j [-d] link show` or `ip -j [-d] addr show` output. */
export function parseLinks(json: string): Map<string, LinkState> {
  const out = new Map<string, LinkState>();
  const text = json.trim();
  if (text === '') return out;
  const rows = JSON.parse(text) as IpLinkJson[];
  for (const row of rows) {
    if (row.ifname === undefined || row.ifindex === undefined) continue;
    out.set(row.ifname, {
      name: row.ifname,
      index: row.ifindex,
      kind: row.linkinfo?.info_kind,
      master: row.master,
      up: (row.flags ?? []).includes('UP'),
      mtu: row.mtu ?? 0,
      alias: row.ifalias === '' ? undefined : row.ifalias,
      mac: row.address,
      addresses: (row.addr_info ?? [])
        .filter((a) => a.family === 'inet' && a.local !== undefined)
        .map((a) => `${a.local}/${a.prefixlen ?? 32}`),
    });
  }
  return out;
}
