// nftables events in the hypervisor namespace: what matters is the bridge table all networks share
// (family bridge, bridgeTableName) and the networks' guest sets in it. A structural change of the
// shared table is one repair, not one per network: it is the cause of the first declared network
// (by id), whose targeted reconcile rebuilds the table for all of them.
import type { DesiredNetwork } from '../desired.ts';
import { NFPROTO_BRIDGE } from './nft-events.ts';
import type { NftRules } from './nft-source.ts';

export function hostNftRules(networks: () => readonly DesiredNetwork[]): NftRules {
  let memo:
    { list: readonly DesiredNetwork[]; table: string | undefined; anchor: string | undefined; bySet: Map<string, string> } | undefined;
  const current = () => {
    const list = networks();
    if (memo?.list !== list) {
      const sorted = [...list].sort((a, b) => a.id.localeCompare(b.id));
      memo = { list, table: sorted[0]?.bridgeTable, anchor: sorted[0]?.id, bySet: new Map(list.map((d) => [d.bridgeSet, d.id])) };
    }
    return memo;
  };
  const ours = (family: number, table: string | undefined) => {
    const m = current();
    return family === NFPROTO_BRIDGE && table !== undefined && table === m.table ? m : undefined;
  };
  return {
    structural: (e) => {
      const m = ours(e.family, e.table);
      return m?.anchor === undefined || e.table === undefined
        ? undefined
        : { kind: 'bridge-table-changed', network: m.anchor, table: e.table };
    },
    guestSet: (e) => {
      const network = e.set === undefined ? undefined : ours(e.family, e.table)?.bySet.get(e.set);
      return network === undefined ? undefined : { network, place: 'bridge' };
    },
  };
}
