// The native data plane (`data_plane: native`, docs/architecture.md): the addon's loop thread owns
// the networks' listening sockets and answers complete GET/HEAD requests from a table of
// precomputed responses (native-table.ts); every other connection comes back here with the bytes
// read (`onHandover`) for node:http and the Fastify app. This side publishes the table — a VM's
// entries are replaced whole, before the admin call that changed it returns — shares the rate
// limiter with the JS guard, and drains the loop's counters into Stats and the per-VM contact times.
import { formatIpv4, parseIpv4 } from '../model/ipv4.ts';
import { requireAddon } from '../netns/addon.ts';
import type { MetadataIndex, VmEntry } from '../store/metadata-index.ts';
import type { Stats } from '../stats.ts';
import type * as NativeAddon from 'imds-netns';
import { CONTENT_TYPE, NOT_FOUND, type Answer } from './guest-api.ts';
import { DISABLED, TOO_MANY, type CallerLimiter } from './guest-guard.ts';
import { sharedText, TYPE_CODE, vmTable, type TableResponse } from './native-table.ts';
import { NATIVE_LOG, type RequestLog } from './request-log.ts';
import { EC2_VERSIONS } from '../documents/ec2.ts';

type Addon = typeof NativeAddon;

/** native/dp.h DP_STATUS, DP_BUCKETS: the layout of dpDrain's per-network rows. */
const STATUSES = [200, 400, 401, 403, 404, 405, 408, 429] as const;
const BUCKETS = 11;
/** After the statuses and buckets: sum, count, unknown callers, then the refusals (native/dp.h DP_REJECT_*). */
const NET_ROW = 1 + STATUSES.length + BUCKETS + 3 + 2;
const VM_ROW = 6;
const NO_SEED = 255;
const FLAG_DISABLED = 1;
const FLAG_HANDOVER = 2;
/** A route code naming a shared response (native/dp.h DP_ROUTE_SHARED). */
const SHARED = 0x8000;

export interface NativePlaneOptions {
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
  requestTimeoutMs: number;
  /** 0: no rate limit. */
  ratePerSecond: number;
  rateBurst: number;
}

export class NativePlane {
  private readonly addon: Addon;
  private readonly slots = new Map<string, number>();
  private readonly networkOfSlot: string[] = [''];
  /** What the addon holds: network -> ip -> the entry it was built from. */
  private readonly published = new Map<string, Map<string, VmEntry>>();
  private readonly keys = new Map<string, number>();
  private readonly vmOfKey: { id: string; network: string }[] = [];
  private readonly routeIds = new Map<string, number>();
  private readonly blobs = new WeakMap<Buffer, NativeAddon.DpBlob>();
  /** Shared responses registered with the addon: by their bytes, then status and type. */
  private readonly sharedResponses = new WeakMap<Buffer, Map<string, number>>();
  private running = false;
  private logTimer: NodeJS.Timeout | undefined;

  constructor(addon: Addon = requireAddon()) {
    this.addon = addon;
  }

  /** Starts the loop; `onHandover` gets each connection it does not answer (network, fd, bytes read). */
  start(options: NativePlaneOptions, onHandover: (network: string | undefined, fd: number, bytes: Buffer) => void): void {
    this.addon.dpRateLimit(options.ratePerSecond, options.rateBurst, 100_000);
    this.addon.dpSetGlobal([
      this.response({
        status: 200,
        type: CONTENT_TYPE.text,
        segments: [{ bytes: sharedText([...EC2_VERSIONS, 'latest'].join('\n')), shared: true }],
        seedAt: undefined,
      }),
      this.answer(NOT_FOUND),
      this.answer(DISABLED),
      this.answer(TOO_MANY),
    ]);
    this.addon.dpStart(options, (slot, fd, bytes) => onHandover(this.networkOfSlot[slot], fd, bytes));
    this.running = true;
  }

  /** The loop serves `fd` (a listening socket in the network's namespace) as `network`. */
  listen(network: string, fd: number): void {
    this.addon.dpListen(this.slot(network), fd);
  }

  /**
   * The loop stops accepting for `network` and closes the socket when `closeFd`; its connections
   * close now, or with `drain` those owed an answer get it first (then `connections()` counts them).
   */
  unlisten(network: string, closeFd: boolean, drain = false): void {
    const slot = this.slots.get(network);
    if (slot !== undefined && this.running) this.addon.dpUnlisten(slot, closeFd, drain);
  }

  /** Connections the loop holds. */
  connections(): number {
    return this.running ? this.addon.dpInfo().connections : 0;
  }

  /** Stops the loop: every listening socket and connection it holds is closed. */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.addon.dpStop();
    clearInterval(this.logTimer);
    this.flushLog();
  }

  /**
   * The loop's answers in the request log (request-log.ts), as the JS paths log theirs: the loop
   * records every answer while debug lines or the access log want them, else only those to callers
   * that are no VM, and they are written here every 50 ms.
   */
  logRequests(requests: RequestLog): void {
    this.requests = requests;
    this.logTimer = setInterval(() => this.flushLog(), 50).unref();
  }

  private requests: RequestLog | undefined;

  private flushLog(): void {
    const requests = this.requests;
    if (requests === undefined) return;
    const mode = requests.nativeMode();
    this.addon.dpLogRequests(mode);
    if (mode === NATIVE_LOG.off) return;
    const { records, dropped } = this.addon.dpDrainLog();
    for (const r of records) {
      const vm = r.key < 0 ? undefined : this.vmOfKey[r.key];
      const network = this.networkOfSlot[r.slot] ?? '';
      const src = formatIpv4(r.ip);
      requests.completed(
        { at: r.at, network, vm: vm?.id, src, method: r.method, path: r.path, status: r.status, bytes: r.bytes, ms: r.ms },
        'native',
      );
    }
    requests.access?.lost(dropped);
  }

  /** The per-caller limiter the loop uses, for the requests node:http answers; `peek` reads a bucket (doctor). */
  limiter(): CallerLimiter & { peek(network: string, source: string): { tokens: number; refused: number } | undefined } {
    return {
      take: (network, source) => {
        const ip = source === undefined ? undefined : parseIpv4(source);
        return ip === undefined ? 0 : this.addon.dpRateTake(this.slot(network), ip);
      },
      peek: (network, source) => {
        const ip = parseIpv4(source);
        return ip === undefined ? undefined : this.addon.dpRatePeek(this.slot(network), ip);
      },
    };
  }

  /**
   * Publishes what changed in `index`: VMs whose entry is not the one published are rebuilt and
   * swapped in whole; VMs (and networks) gone are removed. Entries the index kept are not touched.
   * With `networks`, only those are compared (a change to one VM costs its network, not the host).
   */
  sync(index: MetadataIndex, networks?: ReadonlySet<string>): void {
    for (const network of networks ?? new Set([...this.published.keys(), ...index.networks.keys()])) this.syncNetwork(index, network);
  }

  private syncNetwork(index: MetadataIndex, network: string): void {
    const now = index.networks.get(network)?.byIp;
    let entries = this.published.get(network);
    for (const ip of entries?.keys() ?? []) {
      if (now?.has(ip) === true) continue;
      this.addon.dpRemoveVm(this.slot(network), parseIpv4(ip) as number);
      entries?.delete(ip);
    }
    if (now === undefined) {
      this.published.delete(network);
      return;
    }
    if (entries === undefined) this.published.set(network, (entries = new Map<string, VmEntry>()));
    for (const [ip, vm] of now) {
      if (entries.get(ip) === vm) continue;
      this.publish(network, ip, vm);
      entries.set(ip, vm);
    }
  }

  /** Adds what the loop counted since the last drain to `stats` (and its contact book). */
  drain(stats: Stats): void {
    const { nets, vms } = this.addon.dpDrain();
    for (let i = 0; i + NET_ROW <= nets.length; i += NET_ROW) {
      const network = this.networkOfSlot[nets[i] as number];
      if (network === undefined) continue;
      const row = nets.slice(i + 1, i + NET_ROW);
      stats.addRequests(
        network,
        STATUSES.map((s, k) => [s, row[k] as number]),
        row.slice(STATUSES.length, STATUSES.length + BUCKETS),
        row[STATUSES.length + BUCKETS] as number,
        row[STATUSES.length + BUCKETS + 1] as number,
      );
      const [unknown = 0, rateLimited = 0, disabled = 0] = row.slice(STATUSES.length + BUCKETS + 2);
      stats.unknownCallers(network, unknown);
      if (rateLimited > 0) stats.rejected(network, 'rate_limited', rateLimited);
      if (disabled > 0) stats.rejected(network, 'endpoint_disabled', disabled);
    }
    for (let i = 0; i + VM_ROW <= vms.length; i += VM_ROW) {
      const vm = this.vmOfKey[vms[i] as number];
      if (vm === undefined) continue;
      const [requests, noToken, first, last, status] = vms.slice(i + 1, i + VM_ROW) as [number, number, number, number, number];
      if (noToken > 0) stats.noToken(vm.network, vm.id, noToken);
      if (requests > 0) stats.contacts.merge(vm.id, { requests, firstSeen: first, lastSeen: last, lastStatus: status });
    }
  }

  info(): ReturnType<Addon['dpInfo']> {
    return this.addon.dpInfo();
  }

  private slot(network: string): number {
    let slot = this.slots.get(network);
    if (slot === undefined) {
      slot = this.networkOfSlot.push(network) - 1;
      this.slots.set(network, slot);
    }
    return slot;
  }

  /** The VM's number for the loop's counters (a VM that moves network gets a new one). */
  private keyOf(vmId: string, network: string): number {
    const name = `${network}/${vmId}`;
    let key = this.keys.get(name);
    if (key === undefined) {
      key = this.vmOfKey.push({ id: vmId, network }) - 1;
      this.keys.set(name, key);
    }
    return key;
  }

  private routeId(key: string): number {
    let id = this.routeIds.get(key);
    if (id === undefined) this.routeIds.set(key, (id = this.addon.dpRoute(key)));
    return id;
  }

  private publish(network: string, ip: string, vm: VmEntry): void {
    const table = vmTable(vm);
    // Each response is the VM's own (code: its index + 1) or shared by many VMs (0x8000 | id).
    const own: NativeAddon.DpResponse[] = [];
    const codes = table.responses.map((r) => {
      const shared = this.sharedCode(r);
      if (shared !== undefined) return shared;
      return own.push(this.response(r));
    });
    const pairs = new Uint32Array(table.routes.size * 2);
    let i = 0;
    for (const [key, at] of table.routes) {
      pairs[i++] = this.routeId(key);
      pairs[i++] = codes[at] as number;
    }
    const flags = (vm.access.endpointEnabled ? 0 : FLAG_DISABLED) | (vm.access.tokensRequired ? FLAG_HANDOVER : 0);
    this.addon.dpSetVm(this.slot(network), parseIpv4(ip) as number, this.keyOf(vm.facts.uuid, network), flags, own, pairs);
  }

  /** The route code of a response many VMs give alike (one shared segment, no seed), registered once; else undefined. */
  private sharedCode(r: TableResponse): number | undefined {
    const [only, ...more] = r.segments;
    if (only === undefined || !only.shared || more.length > 0 || r.seedAt !== undefined) return undefined;
    let byKind = this.sharedResponses.get(only.bytes);
    if (byKind === undefined) this.sharedResponses.set(only.bytes, (byKind = new Map<string, number>()));
    const kind = `${r.status} ${r.type}`;
    let id = byKind.get(kind);
    if (id === undefined) {
      id = this.addon.dpSharedResponse(r.status, TYPE_CODE[r.type] ?? 1, this.blob(only.bytes));
      if (id < 0) return undefined; // the addon keeps no more: this VM keeps its own copy
      byKind.set(kind, id);
    }
    return SHARED | id;
  }

  private blob(bytes: Buffer): NativeAddon.DpBlob {
    let blob = this.blobs.get(bytes);
    if (blob === undefined) this.blobs.set(bytes, (blob = this.addon.dpBlob(bytes)));
    return blob;
  }

  private answer(a: Answer): NativeAddon.DpResponse {
    return this.response({ status: a.status, type: a.type, segments: [{ bytes: a.body, shared: true }], seedAt: undefined });
  }

  private response(r: TableResponse): NativeAddon.DpResponse {
    const segments = r.segments.map(({ bytes, shared }) => (shared ? this.blob(bytes) : bytes));
    return [r.status, TYPE_CODE[r.type] ?? 1, r.seedAt ?? NO_SEED, ...segments];
  }
}
