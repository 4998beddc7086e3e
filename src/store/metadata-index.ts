// The in-memory index every guest request is answered from: (network, source IP) -> the VM's
// precomputed documents. Built when the configuration (later: the store) changes, never on the
// request path.
import { ec2MetaData, type Ec2Dir } from '../documents/ec2.ts';
import { instanceFacts, type Defaults, type InstanceFacts } from '../documents/instance.ts';
import { metaDataFields, renderSeeded, type SeededDocument } from '../documents/meta-data.ts';
import { networkData } from '../documents/network-data.ts';
import { pythonJson } from '../documents/python-json.ts';
import { OPENSTACK_VERSIONS, type OpenStackVersion } from '../documents/versions.ts';
import type { Network, Vm } from '../model/schema.ts';

/** Versions at which meta_data.json gains a field; every other version equals the one before. */
const META_DATA_CHANGES: readonly OpenStackVersion[] = ['2012-08-10', '2013-04-04', '2015-10-15', '2016-06-30', '2020-10-14'];

function metaDataBase(version: OpenStackVersion): OpenStackVersion {
  let base: OpenStackVersion = META_DATA_CHANGES[0] as OpenStackVersion;
  for (const v of META_DATA_CHANGES) if (v <= version) base = v;
  return base;
}

export interface VmEntry {
  readonly facts: InstanceFacts;
  readonly metaData: ReadonlyMap<OpenStackVersion, SeededDocument>;
  readonly userData: Buffer | undefined;
  readonly networkData: Buffer;
  readonly vendorData: Buffer;
  readonly vendorData2: Buffer;
  /** The EC2 meta-data dictionary (newest version; older ones see fewer keys). */
  readonly ec2: Ec2Dir;
}

export interface NetworkEntry {
  readonly network: Network;
  readonly byIp: Map<string, VmEntry>;
}

export function buildVmEntry(vm: Vm, network: Network, defaults: Defaults): VmEntry {
  const facts = instanceFacts(vm, network, defaults);
  const byBase = new Map<OpenStackVersion, SeededDocument>();
  const metaData = new Map<OpenStackVersion, SeededDocument>();
  for (const version of OPENSTACK_VERSIONS) {
    const base = metaDataBase(version);
    let doc = byBase.get(base);
    if (doc === undefined) byBase.set(base, (doc = renderSeeded(metaDataFields(facts, base))));
    metaData.set(version, doc);
  }
  return {
    facts,
    metaData,
    userData: facts.userData,
    networkData: Buffer.from(pythonJson(networkData(facts))),
    vendorData: Buffer.from(pythonJson(facts.vendorData)),
    vendorData2: Buffer.from(pythonJson({ static: facts.vendorData })),
    ec2: ec2MetaData(facts),
  };
}

export class MetadataIndex {
  readonly networks = new Map<string, NetworkEntry>();
  private readonly where = new Map<string, { networkId: string; ip: string }>();

  readonly defaults: Defaults;

  constructor(defaults: Defaults) {
    this.defaults = defaults;
  }

  static build(networks: readonly Network[], vms: readonly Vm[], defaults: Defaults): MetadataIndex {
    const index = new MetadataIndex(defaults);
    for (const net of networks) index.networks.set(net.id, { network: net, byIp: new Map() });
    for (const vm of vms) index.upsertVm(vm);
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
    for (const vmEntry of current?.byIp.values() ?? []) entry.byIp.set(vmEntry.facts.vm.ip, buildVmEntry(vmEntry.facts.vm, network, this.defaults));
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
