// The in-memory index every guest request is answered from: (network, source IP) -> the VM's
// precomputed documents. Built when the configuration (later: the store) changes, never on the
// request path.
import { ec2MetaData, type Ec2Dir } from '../documents/ec2.ts';
import { instanceFacts, type Defaults, type InstanceFacts } from '../documents/instance.ts';
import { metaDataFields, randomSeed } from '../documents/meta-data.ts';
import { networkData } from '../documents/network-data.ts';
import { pythonJson } from '../documents/python-json.ts';
import type { OpenStackVersion } from '../documents/versions.ts';
import type { Network, Vm } from '../model/schema.ts';

/** Versions at which meta_data.json gains a field; every other version equals the one before. */
const META_DATA_CHANGES: readonly OpenStackVersion[] = ['2012-08-10', '2013-04-04', '2015-10-15', '2016-06-30', '2020-10-14'];

/** Index in META_DATA_CHANGES of the version whose meta_data.json `version` has. */
function metaDataBase(version: OpenStackVersion): number {
  let base = 0;
  META_DATA_CHANGES.forEach((v, i) => {
    if (v <= version) base = i;
  });
  return base;
}

/**
 * Byte strings many VMs share (the end of meta_data.json after the random seed, vendor data), kept
 * once. Keys are the text; a network's VMs mostly share one project id and one vendor data.
 */
const shared = new Map<string, Buffer>();
function intern(text: string): Buffer {
  let buf = shared.get(text);
  if (buf === undefined) {
    if (shared.size > 100_000) shared.clear();
    shared.set(text, (buf = Buffer.from(text)));
  }
  return buf;
}

const SEED_OPEN = Buffer.from(', "random_seed": "');
const CLOSE = Buffer.from('}');

/**
 * One VM's precomputed answers. meta_data.json is kept as the bytes every version shares (the
 * fields before random_seed) plus, per version, a shared tail; network_data.json and the EC2
 * dictionary are derived from the facts when asked (once or twice per boot), which keeps the
 * index at a few kB per VM.
 */
/** How the VM may use the service (IMDSv2 options, as EC2 names them). */
export interface VmAccess {
  tokensRequired: boolean;
  endpointEnabled: boolean;
  hopLimit: number;
}

export const DEFAULT_ACCESS: VmAccess = Object.freeze({ tokensRequired: false, endpointEnabled: true, hopLimit: 1 });

export class VmEntry {
  readonly facts: InstanceFacts;
  readonly access: VmAccess;
  readonly userData: Buffer | undefined;
  private readonly metaHead: Buffer;
  /** Per META_DATA_CHANGES entry: the tail after the seed (undefined: that version has no seed). */
  private readonly metaTails: readonly (Buffer | undefined)[];
  private readonly vendor: Buffer;
  private readonly vendor2: Buffer;

  constructor(facts: InstanceFacts, access: VmAccess = DEFAULT_ACCESS) {
    this.facts = facts;
    this.access = access;
    this.userData = facts.userData;
    const newest = metaDataFields(facts, META_DATA_CHANGES[META_DATA_CHANGES.length - 1] as OpenStackVersion);
    const seedAt = newest.findIndex(([k]) => k === 'random_seed');
    this.metaHead = Buffer.from(
      `{${newest
        .slice(0, seedAt)
        .map(([k, v]) => `${pythonJson(k)}: ${pythonJson(v)}`)
        .join(', ')}`,
    );
    this.metaTails = META_DATA_CHANGES.map((base) => {
      const fields = metaDataFields(facts, base);
      const at = fields.findIndex(([k]) => k === 'random_seed');
      if (at === -1) return undefined;
      return intern(
        `"${fields
          .slice(at + 1)
          .map(([k, v]) => `, ${pythonJson(k)}: ${pythonJson(v)}`)
          .join('')}}`,
      );
    });
    this.vendor = intern(pythonJson(facts.vendorData));
    this.vendor2 = intern(pythonJson({ static: facts.vendorData }));
  }

  /**
   * meta_data.json at `version` as the bytes around its random seed: `[before, after]` (the seed goes
   * between), or `[whole]` when the version has no seed. The same Buffers every call (the tail is
   * shared by VMs), for the native data plane's table.
   */
  metaDataTemplate(version: OpenStackVersion): { segments: Buffer[]; seedAt: number | undefined } {
    const tail = this.metaTails[metaDataBase(version)];
    if (tail === undefined) return { segments: [this.metaHead, CLOSE], seedAt: undefined };
    return { segments: [this.metaHead, SEED_OPEN, tail], seedAt: 2 };
  }

  /** meta_data.json at `version`, with a fresh random seed where the version has one. */
  metaData(version: OpenStackVersion): Buffer {
    const tail = this.metaTails[metaDataBase(version)];
    if (tail === undefined) return Buffer.concat([this.metaHead, CLOSE]);
    const seed = randomSeed();
    const out = Buffer.allocUnsafe(this.metaHead.length + SEED_OPEN.length + seed.length + tail.length);
    let at = this.metaHead.copy(out, 0);
    at += SEED_OPEN.copy(out, at);
    at += seed.copy(out, at);
    tail.copy(out, at);
    return out;
  }

  networkData(): Buffer {
    return Buffer.from(pythonJson(networkData(this.facts)));
  }

  vendorData(): Buffer {
    return this.vendor;
  }

  vendorData2(): Buffer {
    return this.vendor2;
  }

  /** The EC2 meta-data dictionary (newest version; older ones see fewer keys). */
  ec2(): Ec2Dir {
    return ec2MetaData(this.facts);
  }
}

export function buildVmEntry(vm: Vm, network: Network, defaults: Defaults): VmEntry {
  const access =
    vm.http_tokens === undefined && vm.http_endpoint === undefined && vm.http_hop_limit === undefined
      ? DEFAULT_ACCESS
      : {
          tokensRequired: vm.http_tokens === 'required',
          endpointEnabled: vm.http_endpoint !== 'disabled',
          hopLimit: vm.http_hop_limit ?? 1,
        };
  return new VmEntry(instanceFacts(vm, network, defaults), access);
}

export interface NetworkEntry {
  readonly network: Network;
  readonly byIp: Map<string, VmEntry>;
}

export class MetadataIndex {
  readonly networks = new Map<string, NetworkEntry>();
  private readonly where = new Map<string, { networkId: string; ip: string }>();

  readonly defaults: Defaults;

  constructor(defaults: Defaults) {
    this.defaults = defaults;
  }

  /**
   * The index of these networks and VMs. A VM whose record, network record and defaults are the
   * objects `previous` built its entry from keeps that entry (the native data plane republishes
   * only what changed).
   */
  static build(networks: readonly Network[], vms: readonly Vm[], defaults: Defaults, previous?: MetadataIndex): MetadataIndex {
    const index = new MetadataIndex(defaults);
    for (const net of networks) index.networks.set(net.id, { network: net, byIp: new Map() });
    for (const vm of vms) {
      const before = previous?.defaults === defaults ? previous.networks.get(vm.network) : undefined;
      const kept = before?.network === index.networks.get(vm.network)?.network ? before?.byIp.get(vm.ip) : undefined;
      if (kept?.facts.vm === vm) {
        index.networks.get(vm.network)?.byIp.set(vm.ip, kept);
        index.where.set(vm.id, { networkId: vm.network, ip: vm.ip });
      } else index.upsertVm(vm);
    }
    return index;
  }

  lookup(networkId: string, ip: string | undefined): VmEntry | undefined {
    if (ip === undefined) return undefined;
    return this.networks.get(networkId)?.byIp.get(ip);
  }

  /** Adds or replaces a network; the documents of its VMs are rebuilt against the new spec. */
  setNetwork(network: Network): void {
    const current = this.networks.get(network.id);
    const entry: NetworkEntry = { network, byIp: new Map() };
    this.networks.set(network.id, entry);
    for (const vmEntry of current?.byIp.values() ?? [])
      entry.byIp.set(vmEntry.facts.vm.ip, buildVmEntry(vmEntry.facts.vm, network, this.defaults));
  }

  removeNetwork(id: string): void {
    const entry = this.networks.get(id);
    if (entry === undefined) return;
    for (const vmEntry of entry.byIp.values()) this.where.delete(vmEntry.facts.uuid);
    this.networks.delete(id);
  }

  /** The VM with this id, if it is on `networkId` (used for the daemon's own probes). */
  lookupById(networkId: string, id: string): VmEntry | undefined {
    const at = this.where.get(id.toLowerCase());
    return at === undefined || at.networkId !== networkId ? undefined : this.networks.get(networkId)?.byIp.get(at.ip);
  }

  upsertVm(vm: Vm): void {
    const entry = this.networks.get(vm.network);
    if (entry === undefined) throw new Error(`index: VM ${vm.id} names unknown network ${vm.network}`);
    const built = buildVmEntry(vm, entry.network, this.defaults);
    this.removeVm(vm.id);
    entry.byIp.set(vm.ip, built);
    this.where.set(vm.id, { networkId: vm.network, ip: vm.ip });
  }

  removeVm(id: string): void {
    const at = this.where.get(id);
    if (at === undefined) return;
    this.networks.get(at.networkId)?.byIp.delete(at.ip);
    this.where.delete(id);
  }

  get vmCount(): number {
    let n = 0;
    for (const entry of this.networks.values()) n += entry.byIp.size;
    return n;
  }
}
