// What a drift source noticed, typed: each source decides whether a kernel event matters to one of
// the networks and says so with one of these; the scheduler merges them per network and has the
// network repaired. The text is for the log only (`noticed`); nothing matches on it.

/** Where a network's guest sets live: its bridge table (hypervisor namespace) or its namespace's table. */
export type GuestSetPlace = 'bridge' | 'inner';

export type Cause =
  /** A link of the network in the hypervisor namespace (bridge, outer veth, uplink) was deleted. */
  | { kind: 'link-deleted'; network: string; link: string }
  /** A link of the network left its bridge (the bridge's AF_BRIDGE delete). */
  | { kind: 'link-left-bridge'; network: string; link: string }
  /** A link of the network changed (state, MTU, master, alias or index). */
  | { kind: 'link-changed'; network: string; link: string }
  /** The network's bridge table changed (anything but set elements). */
  | { kind: 'bridge-table-changed'; network: string; table: string }
  | { kind: 'namespace-link-deleted'; network: string; link: string | undefined }
  | { kind: 'namespace-link-down'; network: string; link: string | undefined }
  | { kind: 'namespace-address-removed'; network: string }
  /** The namespace's `ip imds` table changed (anything but set elements). */
  | { kind: 'namespace-table-changed'; network: string }
  /** The namespace's name is gone, or names another namespace now. */
  | { kind: 'namespace-removed'; network: string }
  | { kind: 'namespace-replaced'; network: string }
  /** An event socket failed: what it missed is unknown. */
  | { kind: 'events-lost'; network: string; events: 'link' | 'nftables'; where: 'host' | 'namespace' }
  /** Elements of one of the network's guest sets changed in a transaction that was not ours. */
  | { kind: 'guest-set-changed'; network: string; place: GuestSetPlace }
  /** Repair was paused (a hand-over that failed): what changed meanwhile is unknown. */
  | { kind: 'repair-resumed'; network: string };

export type CauseSink = (cause: Cause) => void;

/** The cause as the log's `noticed` shows it. */
export function describeCause(c: Cause): string {
  switch (c.kind) {
    case 'link-deleted':
      return `${c.link} deleted`;
    case 'link-left-bridge':
      return `${c.link} left its bridge`;
    case 'link-changed':
      return `${c.link} changed`;
    case 'bridge-table-changed':
      return `bridge table ${c.table} changed`;
    case 'namespace-link-deleted':
      return `${c.link ?? 'a link'} deleted in the namespace`;
    case 'namespace-link-down':
      return `${c.link ?? 'a link'} down in the namespace`;
    case 'namespace-address-removed':
      return 'an address removed in the namespace';
    case 'namespace-table-changed':
      return 'nftables changed in the namespace';
    case 'namespace-removed':
      return 'namespace removed';
    case 'namespace-replaced':
      return 'namespace replaced';
    case 'events-lost':
      return `${c.events} events lost${c.where === 'namespace' ? ' in the namespace' : ''}`;
    case 'guest-set-changed':
      return `set elements changed in ${placeName(c.place)}`;
    case 'repair-resumed':
      return 'repair resumed after a pause';
  }
}

export function placeName(place: GuestSetPlace): string {
  return place === 'bridge' ? 'the bridge table' : 'the namespace table';
}

/** Whether the cause needs a targeted reconcile; guest-set changes need only a comparison of the sets. */
export function needsReconcile(c: Cause): boolean {
  return c.kind !== 'guest-set-changed';
}
