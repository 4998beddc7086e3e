// Writes of the admin API and CLI when a registry is configured: each change is one etcd transaction
// guarded by compares, so two controllers never overwrite each other silently. An add is
// create-only (ALREADY_EXISTS when the key exists); a change reads the record and writes it only if
// its mod revision is still the one read (REGISTRY_CONFLICT otherwise); the password is a
// create-only key. A VM is checked against its network and the other VMs as the registry holds them
// (the model's rules). When the change concerns this host, the call returns once the sync applied it.
// Over 350 lines on purpose: one method per write kind, each with its own compares beside it (the
// checks themselves are in write-checks.ts); split by kind, the guards would be read in five files.
import { ImdsError, isImdsError, messageOf } from '../errors.ts';
import type { Network, Vm } from '../model/schema.ts';
import { checkHost, checkKnownHost, checkNetwork, checkVm } from './write-checks.ts';
import type { Compare, EtcdApi, KeyValue, Op, TxnResult } from './etcd-api.ts';
import {
  decodeNetwork,
  decodeVm,
  encodeLayout,
  encodeNetwork,
  encodeTokenKey,
  encodeVm,
  type PlacedVm,
  type RegistryKeys,
} from './layout.ts';
import { chunkImport, planRegistryImport, type RegistryImport } from './import-plan.ts';
import { chunkWrites, writeChunks, type ChunkEtcd, type KeyWrite } from './chunked-write.ts';
import { stateOf, type RegistryState } from './registry-state.ts';
import type { BatchResult } from '../store/batch-plan.ts';

/** What a writer needs of the sync: the registry as read, and waiting for a revision to be applied. */
export interface SyncView {
  readonly state: Readonly<RegistryState>;
  /** Set when the registry's layout is not one this imds knows: every write is refused with it. */
  readonly layoutProblem?: string | undefined;
  waitForRevision(revision: number, timeoutMs: number): Promise<boolean>;
}

export interface WriteResult {
  revision: number;
  /** The sync applied the write before the call returned (false: it timed out; the write stands). */
  applied: boolean;
  /** The change concerns this host (its VMs or their networks). */
  thisHost: boolean;
}

export interface RegistryWriterOptions {
  etcd: () => Promise<EtcdApi>;
  keys: RegistryKeys;
  sync: SyncView;
  hostId: string;
  /** How long a write waits for this host's sync to apply it. Default 5 s. */
  applyTimeoutMs?: number;
  /** etcd's --max-txn-ops: an import larger than this is written in several transactions. Default 128. */
  maxTxnOps?: number;
}

/** A write that places a VM: `allowUnknownHost` lets it name a host that never registered (docs/registry.md, "Hosts"). */
export interface PlaceOptions {
  allowUnknownHost?: boolean | undefined;
}

export class RegistryWriter {
  private readonly o: RegistryWriterOptions;

  constructor(options: RegistryWriterOptions) {
    this.o = options;
  }

  get hostId(): string {
    return this.o.hostId;
  }

  // -- networks -------------------------------------------------------------------------------

  async createNetwork(network: Network): Promise<WriteResult> {
    checkNetwork(this.o.sync.state, network);
    const key = this.o.keys.network(network.id);
    const result = await this.txn([{ key, absent: true }], [{ put: key, value: encodeNetwork(network) }, this.layoutOp()]);
    if (!result.succeeded) throw new ImdsError('ALREADY_EXISTS', `network "${network.id}" already exists in the registry`, { field: 'id' });
    return this.done(result, false);
  }

  /** Reads the network, applies `change`, writes it back if nobody changed it meanwhile. */
  async updateNetwork(
    id: string,
    change: (current: Network) => Network,
    ifModRevision?: number,
  ): Promise<WriteResult & { network: Network }> {
    const { kv, value } = await this.readNetwork(id, 'id', ifModRevision);
    const next = change(value);
    if (next.id !== id) throw new ImdsError('VALIDATION_FAILED', 'id: a network id cannot change', { field: 'id' });
    checkNetwork(this.o.sync.state, next);
    const result = await this.txn([{ key: kv.key, modRevision: kv.modRevision }], [{ put: kv.key, value: encodeNetwork(next) }]);
    if (!result.succeeded) throw conflict(`network "${id}"`);
    return { ...(await this.done(result, this.servesNetwork(id))), network: next };
  }

  /**
   * Deletes a network; with `force` its VMs and their passwords too, the network last, in one
   * transaction when they fit `max_txn_ops`, in several (undone on a refusal) otherwise. The network
   * goes only if no VM was written since the VMs were read (one might be on it): when one was, it is
   * read and tried again, three times at most. Returns the VMs deleted.
   */
  async deleteNetwork(id: string, force: boolean, ifModRevision?: number): Promise<WriteResult & { vms: string[] }> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.deleteNetworkOnce(id, force, ifModRevision);
      } catch (err) {
        const details = isImdsError(err, 'REGISTRY_CONFLICT') ? (err.details as { key?: string; prefix?: boolean }) : undefined;
        const vmWritten = details?.prefix === true && details.key === this.o.keys.vm('');
        if (!vmWritten || attempt === 3) throw err;
      }
    }
  }

  private async deleteNetworkOnce(id: string, force: boolean, ifModRevision: number | undefined): Promise<WriteResult & { vms: string[] }> {
    const { kv } = await this.readNetwork(id, 'id', ifModRevision);
    const api = await this.api();
    const range = await this.call(() => api.rangePrefix(this.o.keys.root));
    const kvs = new Map(range.kvs.map((v) => [v.key, v]));
    const onIt = range.kvs.flatMap((v) => {
      if (!v.key.startsWith(this.o.keys.vm(''))) return [];
      const d = decodeVm(v.key.slice(this.o.keys.vm('').length), v.value);
      return d.ok && d.value.vm.network === id ? [{ kv: v, id: d.value.vm.id }] : [];
    });
    if (onIt.length > 0 && !force)
      throw new ImdsError(
        'NETWORK_NOT_EMPTY',
        `network "${id}" still has ${onIt.length} VM(s) in the registry; remove them first or use --force`,
        {
          details: { vms: onIt.length },
        },
      );
    const writes: KeyWrite[] = onIt.flatMap((v) => {
      const password = this.o.keys.password(v.id);
      return [
        { key: v.kv.key, op: { delete: v.kv.key }, before: v.kv },
        { key: password, op: { delete: password }, before: kvs.get(password) },
      ];
    });
    writes.push({
      key: kv.key,
      op: { delete: kv.key },
      before: kv,
      also: { key: this.o.keys.vm(''), prefix: true, unchangedSince: range.revision },
    });
    const txns = chunkWrites(writes, this.o.maxTxnOps ?? 128);
    const revision = await writeChunks(this.chunkEtcd(), txns, `network rm "${id}"`);
    return { ...(await this.done({ succeeded: true, revision }, this.servesNetwork(id))), vms: onIt.map((v) => v.id) };
  }

  // -- VMs ------------------------------------------------------------------------------------

  async createVm(vm: Vm, host: string, options: PlaceOptions = {}): Promise<WriteResult> {
    checkHost(host);
    await this.requireKnownHost(host, options);
    const net = await this.readNetwork(vm.network, 'network');
    checkVm(this.o.sync.state, vm, net.value);
    const key = this.o.keys.vm(vm.id);
    const result = await this.txn(
      [
        { key, absent: true },
        { key: net.kv.key, modRevision: net.kv.modRevision },
      ],
      [{ put: key, value: encodeVm({ vm, host }) }],
    );
    if (!result.succeeded) {
      if ((await this.get(key)) !== undefined)
        throw new ImdsError('ALREADY_EXISTS', `VM ${vm.id} already exists in the registry`, { field: 'id' });
      throw conflict(`network "${vm.network}"`);
    }
    return this.done(result, host === this.o.hostId);
  }

  /**
   * Reads the VM, applies `change` (which may move it to another host), writes it if nobody changed it
   * meanwhile; with `ifModRevision`, only if the record is still at that revision (a controller's read).
   */
  async updateVm(
    id: string,
    change: (current: PlacedVm) => PlacedVm,
    ifModRevision?: number,
    options: PlaceOptions = {},
  ): Promise<WriteResult & PlacedVm> {
    const { kv, value } = await this.readVm(id, ifModRevision);
    const next = change(value);
    if (next.vm.id !== value.vm.id) throw new ImdsError('VALIDATION_FAILED', 'id: a VM id cannot change', { field: 'id' });
    checkHost(next.host);
    // Only a move is checked: a VM already placed on a host not yet registered can still be changed.
    if (next.host !== value.host) await this.requireKnownHost(next.host, options);
    const net = await this.readNetwork(next.vm.network, 'network');
    checkVm(this.o.sync.state, next.vm, net.value);
    const result = await this.txn(
      [
        { key: kv.key, modRevision: kv.modRevision },
        { key: net.kv.key, modRevision: net.kv.modRevision },
      ],
      [{ put: kv.key, value: encodeVm(next) }],
    );
    if (!result.succeeded) throw conflict(`VM ${value.vm.id}`);
    return { ...(await this.done(result, value.host === this.o.hostId || next.host === this.o.hostId)), ...next };
  }

  /** `imds vm migrate VM --to HOST`: the VM's host changes, in one write (the password key moves with it: it is per VM, not per host). */
  migrateVm(id: string, host: string, ifModRevision?: number, options: PlaceOptions = {}): Promise<WriteResult & PlacedVm> {
    return this.updateVm(id, (current) => ({ ...current, host }), ifModRevision, options);
  }

  async deleteVm(id: string, ifModRevision?: number): Promise<WriteResult & { id: string }> {
    const { kv, value } = await this.readVm(id, ifModRevision);
    const result = await this.txn(
      [{ key: kv.key, modRevision: kv.modRevision }],
      [{ delete: kv.key }, { delete: this.o.keys.password(value.vm.id) }],
    );
    if (!result.succeeded) throw conflict(`VM ${value.vm.id}`);
    return { ...(await this.done(result, value.host === this.o.hostId)), id: value.vm.id };
  }

  /** The write-once password: create-only on its key (ALREADY_EXISTS when set), unless `replace`. */
  async setPassword(id: string, value: string, replace: boolean): Promise<WriteResult> {
    const vm = await this.readVm(id);
    const key = this.o.keys.password(vm.value.vm.id);
    const current = replace ? await this.get(key) : undefined;
    const guard: Compare = current === undefined ? { key, absent: true } : { key, modRevision: current.modRevision };
    const result = await this.txn([{ key: vm.kv.key, modRevision: vm.kv.modRevision }, guard], [{ put: key, value }]);
    if (!result.succeeded) {
      if (!replace && (await this.get(key)) !== undefined)
        throw new ImdsError('ALREADY_EXISTS', `VM ${vm.value.vm.id} already has a password; clear it first, or replace it (--force)`, {
          field: 'password',
        });
      throw conflict(`VM ${vm.value.vm.id} or its password`);
    }
    return this.done(result, vm.value.host === this.o.hostId);
  }

  /** Removes the VM's password key so its guest may post a new one; nothing to do when it has none. */
  async clearPassword(id: string): Promise<WriteResult> {
    const vm = await this.readVm(id);
    const key = this.o.keys.password(vm.value.vm.id);
    const current = await this.get(key);
    const thisHost = vm.value.host === this.o.hostId;
    if (current === undefined) return { revision: vm.kv.modRevision, applied: true, thisHost };
    const result = await this.txn(
      [
        { key: vm.kv.key, modRevision: vm.kv.modRevision },
        { key, modRevision: current.modRevision },
      ],
      [{ delete: key }],
    );
    if (!result.succeeded) throw conflict(`VM ${vm.value.vm.id} or its password`);
    return this.done(result, thisHost);
  }

  /**
   * `imds vm import`: validated against the whole registry read at one revision, then written in
   * guarded transactions (one when it fits etcd's --max-txn-ops; otherwise several, undone on failure).
   * A dry run reads and validates only.
   */
  async importBatch(
    batch: RegistryImport,
    options: { dryRun: boolean; prune?: 'vms' | 'all' | undefined } & PlaceOptions,
  ): Promise<WriteResult & { result: BatchResult; transactions: number }> {
    const api = await this.api();
    const range = await this.call(() => api.rangePrefix(this.o.keys.root));
    const kvs = new Map(range.kvs.map((kv) => [kv.key, kv]));
    const state = stateOf(range.kvs, this.o.keys, () => undefined);
    batch.vms.forEach(({ vm, host }, i) => {
      if (host !== undefined && host !== state.vms.get(vm.id)?.host)
        checkKnownHost(state, host, this.o.hostId, options.allowUnknownHost === true, `vms[${i}].host`);
    });
    const plan = planRegistryImport(state, kvs, this.o.keys, batch, { defaultHost: this.o.hostId, prune: options.prune });
    const thisHost = plan.hosts.has(this.o.hostId);
    if (options.dryRun || plan.writes.length === 0)
      return { revision: range.revision, applied: true, thisHost, result: plan.result, transactions: 0 };
    const txns = chunkImport(plan, this.o.keys, this.o.maxTxnOps ?? 128);
    const revision = await writeChunks(this.chunkEtcd(), txns, 'import');
    return { ...(await this.done({ succeeded: true, revision }, thisHost)), result: plan.result, transactions: txns.length };
  }

  /** Replaces the registry's IMDSv2 token key (`imds token rotate`): every host adopts it from its watch. */
  async replaceTokenKey(key: Buffer): Promise<WriteResult> {
    return this.done(await this.txn([], [{ put: this.o.keys.tokenKey, value: encodeTokenKey(key) }]), true);
  }

  /** Publishes this host's IMDSv2 token key when the registry has none (create-only: the first host's wins). */
  async publishTokenKey(key: Buffer): Promise<boolean> {
    const result = await this.txn(
      [{ key: this.o.keys.tokenKey, absent: true }],
      [{ put: this.o.keys.tokenKey, value: encodeTokenKey(key) }],
    );
    return result.succeeded;
  }

  // -- helpers --------------------------------------------------------------------------------

  private api(): Promise<EtcdApi> {
    return this.call(() => this.o.etcd());
  }

  /** An etcd call; a failure that is not ours becomes REGISTRY_UNAVAILABLE. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (isImdsError(err)) throw err;
      throw new ImdsError('REGISTRY_UNAVAILABLE', `the registry cannot be reached, nothing was written: ${messageOf(err)}`, { cause: err });
    }
  }

  private chunkEtcd(): ChunkEtcd {
    return { txn: (c, o) => this.txn(c, o), get: (k) => this.get(k) };
  }

  private async txn(compares: readonly Compare[], ops: readonly Op[]): Promise<TxnResult> {
    const problem = this.o.sync.layoutProblem;
    if (problem !== undefined) throw new ImdsError('REGISTRY_UNAVAILABLE', `nothing was written: ${problem}`);
    const api = await this.api();
    return this.call(() => api.txn(compares, ops));
  }

  private async get(key: string): Promise<KeyValue | undefined> {
    const api = await this.api();
    return this.call(() => api.get(key));
  }

  /** The layout marker, written with the first network (a put of the same value is harmless). */
  private layoutOp(): Op {
    return { put: this.o.keys.layout, value: encodeLayout() };
  }

  /** With `ifModRevision` (a controller's read), REGISTRY_CONFLICT unless the record is still at that revision. */
  private async readNetwork(id: string, field = 'id', ifModRevision?: number): Promise<{ kv: KeyValue; value: Network }> {
    const kv = await this.get(this.o.keys.network(id));
    if (kv === undefined)
      throw new ImdsError(field === 'id' ? 'NOT_FOUND' : 'VALIDATION_FAILED', `no network "${id}" in the registry`, { field });
    const decoded = decodeNetwork(id, kv.value);
    if (!decoded.ok)
      throw new ImdsError('VALIDATION_FAILED', `network "${id}" in the registry does not validate: ${decoded.reason}`, { field });
    if (ifModRevision !== undefined && kv.modRevision !== ifModRevision) throw conflict(`network "${id}"`);
    return { kv, value: decoded.value };
  }

  private async readVm(id: string, ifModRevision?: number): Promise<{ kv: KeyValue; value: PlacedVm }> {
    const lower = id.toLowerCase();
    const kv = await this.get(this.o.keys.vm(lower));
    if (kv === undefined) throw new ImdsError('NOT_FOUND', `no VM ${id} in the registry`, { field: 'id' });
    const decoded = decodeVm(lower, kv.value);
    if (!decoded.ok)
      throw new ImdsError('VALIDATION_FAILED', `VM ${id} in the registry does not validate: ${decoded.reason}`, { field: 'id' });
    if (ifModRevision !== undefined && kv.modRevision !== ifModRevision) throw conflict(`VM ${decoded.value.vm.id}`);
    return { kv, value: decoded.value };
  }

  /** The host registered (in the registry as read; else read again: its daemon may have just started), or allowed. */
  private async requireKnownHost(host: string, options: PlaceOptions): Promise<void> {
    const state = this.o.sync.state;
    const allow = options.allowUnknownHost === true;
    if (allow || host === this.o.hostId || state.hosts.has(host)) return;
    if ((await this.get(this.o.keys.host(host))) !== undefined) return;
    checkKnownHost(state, host, this.o.hostId, allow);
  }

  private servesNetwork(id: string): boolean {
    for (const { vm, host } of this.o.sync.state.vms.values()) if (host === this.o.hostId && vm.network === id) return true;
    return false;
  }

  /**
   * Waits for the sync to apply the write, whichever host it concerns: this daemon then reads its own
   * writes (the next write is checked against them) and, when the change is this host's, serves it.
   */
  private async done(result: TxnResult, concernsThisHost: boolean): Promise<WriteResult> {
    const applied = await this.o.sync.waitForRevision(result.revision, this.o.applyTimeoutMs ?? 5000);
    return { revision: result.revision, applied, thisHost: concernsThisHost };
  }
}

function conflict(what: string): ImdsError {
  return new ImdsError(
    'REGISTRY_CONFLICT',
    `${what} changed in the registry since it was read; nothing was written: read it again and retry`,
  );
}
