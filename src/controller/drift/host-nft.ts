// nftables events in the hypervisor namespace: what matters is the bridge table of a network
// (family bridge, named like its namespace) and that table's guest set.
import { GUEST_SET } from '../../netns/nft.ts';
import type { DesiredNetwork } from '../desired.ts';
import { NFPROTO_BRIDGE } from './nft-events.ts';
import type { NftRules } from './nft-source.ts';

export function hostNftRules(networks: () => readonly DesiredNetwork[]): NftRules {
  let memo: { list: readonly DesiredNetwork[]; byTable: Map<string, string> } | undefined;
  const networkOf = (family: number, table: string | undefined): string | undefined => {
    if (family !== NFPROTO_BRIDGE || table === undefined) return undefined;
    const list = networks();
    if (memo?.list !== list) memo = { list, byTable: new Map(list.map((d) => [d.bridgeTable.name, d.id])) };
    return memo.byTable.get(table);
  };
  return {
    structural: (e) => {
      const network = networkOf(e.family, e.table);
      return network === undefined || e.table === undefined ? undefined : { kind: 'bridge-table-changed', network, table: e.table };
    },
    guestSet: (e) => {
      const network = networkOf(e.family, e.table);
      return network === undefined || e.set !== GUEST_SET ? undefined : { network, place: 'bridge' };
    },
  };
}
