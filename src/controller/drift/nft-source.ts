// One nftables event socket's stream (the hypervisor namespace's, or a network namespace's), read
// as transactions. Structural events about a network's table are causes at once. Set-element
// events about a network's guest sets are held until their transaction's NFT_MSG_NEWGEN, which
// names the committing process: one of our own `nft` runs (OwnProcesses) and they are ours (a VM
// change, a table we loaded); anyone else's and the sets are compared with the VMs. Events of one
// transaction may arrive over several reads; a transaction whose NEWGEN never comes (lost in an
// overrun) counts as someone else's.
import type { RawMessage } from '../../netns/netlink.ts';
import type { Cause, CauseSink, GuestSetPlace } from './causes.ts';
import type { Clock, Timer } from './clock.ts';
import { parseNftEvent, type NftEvent } from './nft-events.ts';
import type { OwnProcesses } from './own-processes.ts';

/** A guest set of a network. */
export interface GuestSetRef {
  network: string;
  place: GuestSetPlace;
}

/** What matters on one socket. */
export interface NftRules {
  /** The cause a structural event leads to; undefined when it is about nothing of ours. */
  structural(e: Extract<NftEvent, { kind: 'structural' }>): Cause | undefined;
  /** The guest set a set-element event changes; undefined when it is not one of ours. */
  guestSet(e: Extract<NftEvent, { kind: 'set-element' }>): GuestSetRef | undefined;
}

/**
 * How long a transaction by an unknown pid waits for the runner's report of that pid, ms: the
 * report is sent before the command reads its input, but may be read just after the kernel's event.
 */
export const ATTRIBUTION_WAIT_MS = 25;
/** How long set-element events wait for their transaction's NEWGEN before they count as someone else's, ms. */
export const UNCOMMITTED_WAIT_MS = 1000;

export interface NftSourceDeps {
  rules: NftRules;
  emit: CauseSink;
  own: OwnProcesses;
  clock: Clock;
}

export class NftSource {
  private readonly deps: NftSourceDeps;
  /** Guest sets touched by transactions not yet closed, by transaction (res_id). */
  private readonly open = new Map<number, Map<string, GuestSetRef>>();
  private openTimer: Timer | undefined;
  private readonly waiting = new Set<Timer>();

  constructor(deps: NftSourceDeps) {
    this.deps = deps;
  }

  onMessages(msgs: readonly RawMessage[]): void {
    for (const msg of msgs) {
      const e = parseNftEvent(msg);
      if (e === undefined) continue;
      if (e.kind === 'structural') {
        const cause = this.deps.rules.structural(e);
        if (cause !== undefined) this.deps.emit(cause);
      } else if (e.kind === 'set-element') {
        const ref = this.deps.rules.guestSet(e);
        if (ref !== undefined) this.hold(e.transaction, ref);
      } else {
        this.committed(e);
      }
    }
  }

  close(): void {
    if (this.openTimer !== undefined) this.deps.clock.clearTimeout(this.openTimer);
    this.openTimer = undefined;
    for (const t of this.waiting) this.deps.clock.clearTimeout(t);
    this.waiting.clear();
    this.open.clear();
  }

  private hold(transaction: number, ref: GuestSetRef): void {
    let refs = this.open.get(transaction);
    if (refs === undefined) {
      refs = new Map<string, GuestSetRef>();
      this.open.set(transaction, refs);
    }
    refs.set(`${ref.place}|${ref.network}`, ref);
    this.openTimer ??= this.deps.clock.setTimeout(() => {
      this.openTimer = undefined;
      for (const held of this.open.values()) this.foreign(held.values());
      this.open.clear();
    }, UNCOMMITTED_WAIT_MS);
  }

  private committed(e: Extract<NftEvent, { kind: 'generation' }>): void {
    const refs = this.open.get(e.transaction);
    this.open.delete(e.transaction);
    // Transactions before this one whose NEWGEN was lost: nobody's known.
    for (const held of this.open.values()) this.foreign(held.values());
    this.open.clear();
    if (this.openTimer !== undefined) this.deps.clock.clearTimeout(this.openTimer);
    this.openTimer = undefined;
    if (refs === undefined) return;
    const { own, clock } = this.deps;
    const pid = e.pid;
    if (pid === undefined) return this.foreign(refs.values());
    if (own.has(pid)) return;
    const timer = clock.setTimeout(() => {
      this.waiting.delete(timer);
      if (!own.has(pid)) this.foreign(refs.values());
    }, ATTRIBUTION_WAIT_MS);
    this.waiting.add(timer);
  }

  private foreign(refs: Iterable<GuestSetRef>): void {
    for (const ref of refs) this.deps.emit({ kind: 'guest-set-changed', network: ref.network, place: ref.place });
  }
}
