// Evidence gathering: what the kernel and the daemon say about one network and one VM, read as the
// daemon (it has the privileges, the runner and the state). Reads only; every read that fails is
// recorded as such, never guessed around. The judging is in the pure *-hops.ts modules.
import { readFileSync, statSync } from 'node:fs';
import type { Contact } from '../contact.ts';
import type { BucketState } from '../security/rate-limit.ts';
import { desiredState } from '../controller/desired.ts';
import { observeHostLinksNamed } from '../controller/observe.ts';
import type { NetworkStatus } from '../controller/reconciler.ts';
import type { DhcpStatus } from '../dhcp/dhcp-servers.ts';
import { dhcpPaths } from '../dhcp/dnsmasq-config.ts';
import { messageOf } from '../errors.ts';
import { INNER_LINK, NFT_TABLE } from '../model/names.ts';
import type { Network, Vm } from '../model/schema.ts';
import { requireAddon } from '../netns/addon.ts';
import { parseLinks, type LinkState } from '../netns/iproute.ts';
import { namespaceLinks } from '../netns/links.ts';
import { parseTable, type TableFamily } from '../netns/nft.ts';
import { netnsPath, type Runner } from '../netns/run.ts';
import type { DhcpEvidence, ListenerEvidence, NetworkEvidence, TableEvidence, VmEvidence } from './evidence.ts';
import { parseAgeingSeconds, parseCounters, parseFdb, parseNeighbours } from './parse.ts';

/** What doctor needs from the daemon (src/daemon/admin-side.ts builds it). */
export interface DoctorDeps {
  runner: Runner;
  /** The running configuration's keys doctor reads. */
  config(): {
    namespace_prefix: string;
    listen_port: number;
    dhcp_dir: string;
    rate_limit_per_second: number;
    rate_limit_burst: number;
  };
  statusOf(network: string): NetworkStatus | undefined;
  dhcpStatusOf(network: string): DhcpStatus | undefined;
  /** The listening socket the daemon holds for the network; undefined when it does not serve it. */
  listenerFd(network: string): number | undefined;
  /** The VM's requests (counters brought up to date first). */
  contactOf(vmId: string): Contact | undefined;
  /** A caller's bucket in the rate limiter, read now (nothing taken): `off` without a limit, undefined without a bucket. */
  rateLimitOf?(network: string, source: string): BucketState | 'off' | undefined;
  startedAt: number;
}

function inodeOf(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * The output of a read of a device that may be missing (the bridge, the namespace's link): empty when
 * the device does not exist (its hop says so), an error otherwise (the `reads` hop names it).
 */
async function readDevice(runner: Runner, argv: string[], netns?: string): Promise<string> {
  const r = await runner.run(argv, { allowFailure: true, ...(netns === undefined ? {} : { netns }) });
  if (r.code === 0 || /does not exist|cannot find (bridge )?device/i.test(r.stderr)) return r.stdout;
  throw new Error(`${argv.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
}

async function readTable(runner: Runner, family: TableFamily, name: string, netns?: string): Promise<TableEvidence | undefined> {
  const r = await runner.run(['nft', '-j', 'list', 'table', family, name], {
    allowFailure: true,
    ...(netns === undefined ? {} : { netns }),
  });
  if (r.code !== 0) return undefined;
  return { state: parseTable(r.stdout), counters: parseCounters(r.stdout) };
}

function listenerOf(deps: DoctorDeps, network: string): ListenerEvidence {
  const fd = deps.listenerFd(network);
  if (fd === undefined) return { open: false, fd, socket: undefined, error: undefined };
  try {
    return { open: true, fd, socket: requireAddon().socketInfo(fd), error: undefined };
  } catch (err) {
    return { open: true, fd, socket: undefined, error: messageOf(err) };
  }
}

function dhcpOf(deps: DoctorDeps, network: string): DhcpEvidence {
  const status = deps.dhcpStatusOf(network);
  const paths = dhcpPaths(deps.config().dhcp_dir, network);
  return {
    status,
    processNetnsInode: status?.pid === undefined ? undefined : inodeOf(`/proc/${status.pid}/ns/net`),
    hostsPath: paths.hosts,
    hostsText: readText(paths.hosts),
    leasesText: readText(paths.leases),
  };
}

/** The evidence about `net`; `all` is every declared network (the bridge table is theirs together). */
export async function gatherNetwork(deps: DoctorDeps, net: Network, all: readonly Network[]): Promise<NetworkEvidence> {
  const cfg = deps.config();
  const { runner } = deps;
  const networks = all.some((n) => n.id === net.id) ? all : [...all, net];
  const state = desiredState({ namespacePrefix: cfg.namespace_prefix, listenPort: cfg.listen_port, networks });
  const desired = state.networks.get(net.id);
  if (desired === undefined || state.bridgeTable === undefined) throw new Error(`no desired state for ${net.id}`);
  const errors = new Map<string, string>();
  const read = async <T>(what: string, fn: () => Promise<T>, fallback: T): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      errors.set(what, messageOf(err));
      return fallback;
    }
  };
  const bridge = desired.bridge;
  const names = [bridge, desired.outer, ...(desired.uplink === undefined ? [] : [desired.uplink])];
  const [hostLinks, bridgeAgeingS, fdb, bridgeTable] = await Promise.all([
    read('host links', () => observeHostLinksNamed(runner, names), new Map<string, LinkState>()),
    read(
      'bridge details',
      async () => parseAgeingSeconds(await readDevice(runner, ['ip', '-j', '-d', 'link', 'show', 'dev', bridge])),
      undefined,
    ),
    read('forwarding table', async () => parseFdb(await readDevice(runner, ['bridge', '-j', 'fdb', 'show', 'br', bridge])), []),
    read('bridge table', () => readTable(runner, 'bridge', desired.bridgeTable), undefined),
  ]);
  const netns = desired.netns;
  const namespaceInode = inodeOf(netnsPath(netns));
  const inside = namespaceInode !== undefined;
  const [nsLinks, nsTable, neighbours] = await Promise.all([
    inside
      ? read(
          'namespace links',
          () => namespaceLinks(netns).catch(async () => parseLinks((await runner.run(['ip', '-j', 'addr', 'show'], { netns })).stdout)),
          undefined,
        )
      : undefined,
    inside ? read('namespace table', () => readTable(runner, 'ip', NFT_TABLE, netns), undefined) : undefined,
    inside
      ? read(
          'neighbours',
          async () => parseNeighbours(await readDevice(runner, ['ip', '-j', 'neigh', 'show', 'dev', INNER_LINK], netns)),
          [],
        )
      : [],
  ]);
  return {
    network: net,
    desired,
    desiredBridgeTable: state.bridgeTable,
    listenPort: cfg.listen_port,
    status: deps.statusOf(net.id),
    hostLinks,
    bridgeAgeingS,
    fdb,
    bridgeTable,
    namespaceInode,
    nsLinks,
    nsTable,
    neighbours,
    listener: listenerOf(deps, net.id),
    dhcp: net.dhcp === true ? dhcpOf(deps, net.id) : undefined,
    errors,
  };
}

/** Where the host's forwarding tables have `mac` on a bridge other than `bridge` (a read of every bridge's). */
async function macElsewhere(deps: DoctorDeps, mac: string, bridge: string): Promise<{ port: string; bridge: string } | undefined> {
  const r = await deps.runner.run(['bridge', '-j', 'fdb', 'show'], { allowFailure: true });
  if (r.code !== 0) return undefined; // the network's own read says what failed (the reads hop)
  const e = parseFdb(r.stdout).find((x) => x.mac === mac && x.master !== undefined && x.master !== bridge && x.state !== 'permanent');
  return e === undefined ? undefined : { port: e.port, bridge: e.master as string };
}

/** The VM's own evidence; `ev` its network's, `all` every declared network (to name another bridge's). */
export async function gatherVm(deps: DoctorDeps, vm: Vm, ev: NetworkEvidence, all: readonly Network[]): Promise<VmEvidence> {
  const cfg = deps.config();
  const contact = deps.contactOf(vm.id);
  const bucket = deps.rateLimitOf === undefined ? undefined : (deps.rateLimitOf(vm.network, vm.ip) ?? 'none');
  const bridge = ev.desired.bridge;
  const onItsBridge = ev.fdb.some((e) => e.mac === vm.mac && e.master === bridge);
  const other = onItsBridge ? undefined : await macElsewhere(deps, vm.mac, bridge);
  let elsewhere: VmEvidence['elsewhere'];
  if (other !== undefined) {
    const state = desiredState({ namespacePrefix: cfg.namespace_prefix, listenPort: cfg.listen_port, networks: all });
    const network = [...state.networks.values()].find((d) => d.bridge === other.bridge)?.id;
    elsewhere = { ...other, network, own: bridge };
  }
  return {
    vm,
    contact,
    recent: contact?.recent?.entries() ?? [],
    bucket,
    now: Date.now(),
    rateLimit: { perSecond: cfg.rate_limit_per_second, burst: cfg.rate_limit_burst },
    startedAt: deps.startedAt,
    ...(elsewhere === undefined ? {} : { elsewhere }),
  };
}
