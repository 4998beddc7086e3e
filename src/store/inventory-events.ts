// What the inventory tells the parts that follow it, and the fan-out the daemon gives it: made
// before the inventory and before its followers, each of which follows it once it is built. So no
// callback points at a part built later, and nothing is assigned to the inventory after it exists.
import type { VmPlace } from './batch-plan.ts';
import type { MetadataIndex } from './metadata-index.ts';

export interface InventoryEvents {
  /** VMs of these networks changed (after the store and the index have the change). */
  onVmsChanged?: (networks: ReadonlySet<string>) => void;
  /**
   * The index changed: called before the change's call returns, with the networks whose spec or
   * VMs changed (undefined: any may have, e.g. after an import).
   */
  onIndexChanged?: (index: MetadataIndex, networks?: ReadonlySet<string>) => void;
  /** VMs gone from a network (deleted, or moved to another one), after the index changed: per-VM state kept elsewhere can go. */
  onVmsGone?: (gone: readonly VmPlace[]) => void;
  /** A guest posted its write-once password (stored): with a registry it is published there too. */
  onPasswordPosted?: (vmId: string, value: string) => void;
}

/** The inventory's events, passed on to every follower in the order they followed. */
export class InventoryChanges implements Required<InventoryEvents> {
  private readonly followers: InventoryEvents[] = [];

  follow(follower: InventoryEvents): void {
    this.followers.push(follower);
  }

  onVmsChanged(networks: ReadonlySet<string>): void {
    for (const f of this.followers) f.onVmsChanged?.(networks);
  }

  onIndexChanged(index: MetadataIndex, networks?: ReadonlySet<string>): void {
    for (const f of this.followers) f.onIndexChanged?.(index, networks);
  }

  onVmsGone(gone: readonly VmPlace[]): void {
    for (const f of this.followers) f.onVmsGone?.(gone);
  }

  onPasswordPosted(vmId: string, value: string): void {
    for (const f of this.followers) f.onPasswordPosted?.(vmId, value);
  }
}
