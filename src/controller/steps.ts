// The steps of a plan (plan.ts) and what they build or repair: the planner's vocabulary, shared by
// the one-network diff (plan-network.ts), the host-level planning (plan.ts), apply and the drift
// report.

/** What a step builds or repairs (the kinds of the repairs metric). */
export type StepTarget = 'namespace' | 'host_links' | 'namespace_links' | 'nft_table' | 'bridge_table';

export type Step =
  | { kind: 'netns-add'; target: 'namespace'; network: string; netns: string; why: string }
  | { kind: 'netns-del'; target: 'namespace'; network: string; netns: string; why: string }
  /** `ip -batch -` in the hypervisor namespace (netns undefined) or `ip -n NETNS -batch -`. */
  | {
      kind: 'ip';
      /** host_links with netns undefined, namespace_links inside. */
      target: 'host_links' | 'namespace_links';
      network: string;
      netns: string | undefined;
      lines: string[];
      why: string;
      /** Its failure does not stop the plan (a link that may vanish on its own meanwhile). */
      bestEffort?: boolean;
      /** It creates the network's bridge (ports that were on a deleted one are to be put back). */
      createsBridge?: boolean;
    }
  /** `nft -f -` in the network's namespace, or in the hypervisor namespace when netns is undefined. */
  | { kind: 'nft'; target: 'nft_table' | 'bridge_table'; network: string; netns: string | undefined; script: string; why: string };

export interface NetworkPlan {
  network: string;
  steps: Step[];
  /** Nothing of this network existed before: on failure, remove what the plan created. */
  fresh: boolean;
  /** Steps that undo a failed fresh network (ignore their own failures). */
  rollback: Step[];
  /** Set when the network cannot be built as declared; it then has no steps. */
  conflict: string | undefined;
}

export interface Plan {
  /** Objects to remove first: networks no longer declared and stale owned links. */
  removals: NetworkPlan[];
  networks: NetworkPlan[];
  /** The bridge table all networks share, (re)built when it does not match (none or one step). */
  host: Step[];
}

/** `ip -batch -` in the hypervisor namespace. */
export function hostIp(network: string, lines: string[], why: string): Extract<Step, { kind: 'ip' }> {
  return { kind: 'ip', target: 'host_links', network, netns: undefined, lines, why };
}
