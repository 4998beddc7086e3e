// The whole registry as the daemon last read it: every network, VM (with its host) and password under
// the layout's root, the registered hosts (and which are alive), the layout version and the shared
// token key. Built from a range and kept current by watch events; a document that does not decode
// counts as absent (the same state a fresh range would give) and is reported through `onBadDocument`.
import type { Network } from '../model/schema.ts';
import type { KeyValue, WatchEvent } from './etcd-api.ts';
import {
  decodeHost,
  decodeLayout,
  decodeNetwork,
  decodePassword,
  decodeTokenKey,
  decodeVm,
  parseKey,
  type Decoded,
  type HostRecord,
  type PlacedVm,
  type RegistryKeys,
} from './layout.ts';

export interface RegistryState {
  networks: Map<string, Network>;
  vms: Map<string, PlacedVm>;
  passwords: Map<string, string>;
  tokenKey: Buffer | undefined;
  /** Hosts registered by their daemons (`hosts/<id>`), by host_id. */
  hosts: Map<string, HostRecord>;
  /** Hosts whose daemon holds its leased `alive/<id>` key. */
  alive: Map<string, HostRecord>;
  /** The `layout` key: undefined when absent, else its decoded version (or why it does not decode). */
  layout: Decoded<number> | undefined;
  /** Mod revision of each key held (a repeated or older event is ignored). */
  modRevisions: Map<string, number>;
}

export type BadDocument = (key: string, reason: string) => void;

export function emptyState(): RegistryState {
  return {
    networks: new Map(),
    vms: new Map(),
    passwords: new Map(),
    tokenKey: undefined,
    hosts: new Map(),
    alive: new Map(),
    layout: undefined,
    modRevisions: new Map(),
  };
}

function remove(state: RegistryState, key: string, keys: RegistryKeys): void {
  const parsed = parseKey(keys, key);
  if (parsed === undefined) return;
  if (parsed.kind === 'network') state.networks.delete(parsed.id);
  else if (parsed.kind === 'vm') state.vms.delete(parsed.id);
  else if (parsed.kind === 'password') state.passwords.delete(parsed.id);
  else if (parsed.kind === 'token-key') state.tokenKey = undefined;
  else if (parsed.kind === 'host') state.hosts.delete(parsed.id);
  else if (parsed.kind === 'alive') state.alive.delete(parsed.id);
  else state.layout = undefined;
}

function put<T>(state: RegistryState, kv: KeyValue, decoded: Decoded<T>, set: (value: T) => void, keys: RegistryKeys, bad: BadDocument) {
  if (decoded.ok) set(decoded.value);
  else {
    remove(state, kv.key, keys);
    bad(kv.key, decoded.reason);
  }
}

/** Applies one key's value; false when the event is not newer than what the state holds (a repeat). */
export function applyPut(state: RegistryState, kv: KeyValue, keys: RegistryKeys, bad: BadDocument): boolean {
  const held = state.modRevisions.get(kv.key);
  if (held !== undefined && held >= kv.modRevision) return false;
  const parsed = parseKey(keys, kv.key);
  if (parsed === undefined) return false;
  state.modRevisions.set(kv.key, kv.modRevision);
  if (parsed.kind === 'network') put(state, kv, decodeNetwork(parsed.id, kv.value), (n) => state.networks.set(parsed.id, n), keys, bad);
  else if (parsed.kind === 'vm') put(state, kv, decodeVm(parsed.id, kv.value), (v) => state.vms.set(parsed.id, v), keys, bad);
  else if (parsed.kind === 'password') put(state, kv, decodePassword(kv.value), (p) => state.passwords.set(parsed.id, p), keys, bad);
  else if (parsed.kind === 'token-key') put(state, kv, decodeTokenKey(kv.value), (k) => (state.tokenKey = k), keys, bad);
  else if (parsed.kind === 'host') put(state, kv, decodeHost(parsed.id, kv.value), (h) => state.hosts.set(parsed.id, h), keys, bad);
  else if (parsed.kind === 'alive') put(state, kv, decodeHost(parsed.id, kv.value), (h) => state.alive.set(parsed.id, h), keys, bad);
  // A layout that does not decode is kept as such: the sync refuses it rather than take it for absent.
  else state.layout = decodeLayout(kv.value);
  return true;
}

/** Applies a deletion; false when the key was not held or the event is older than what is. */
export function applyDelete(state: RegistryState, key: string, modRevision: number, keys: RegistryKeys): boolean {
  const held = state.modRevisions.get(key);
  if (held === undefined || held >= modRevision) return false;
  state.modRevisions.delete(key);
  remove(state, key, keys);
  return true;
}

/** Applies watch events in order; true when any changed the state. */
export function applyEvents(state: RegistryState, events: readonly WatchEvent[], keys: RegistryKeys, bad: BadDocument): boolean {
  let changed = false;
  for (const e of events) {
    const did = e.type === 'put' ? applyPut(state, e.kv, keys, bad) : applyDelete(state, e.key, e.modRevision, keys);
    changed ||= did;
  }
  return changed;
}

/** The state of a full range. */
export function stateOf(kvs: readonly KeyValue[], keys: RegistryKeys, bad: BadDocument): RegistryState {
  const state = emptyState();
  for (const kv of kvs) applyPut(state, kv, keys, bad);
  return state;
}
