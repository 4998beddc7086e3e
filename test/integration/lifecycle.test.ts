// Lifecycle as root: restart adopts without disturbing, SIGHUP adds and removes networks, orphans
// with our prefix are removed and foreign objects are not, `imds down` leaves nothing behind, and
// an invalid configuration builds nothing.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { sh, useSandbox, type Sandbox } from '../helpers/sandbox.ts';

const VM1 = '11111111-2222-4333-8444-555555555501';
const VM2 = '11111111-2222-4333-8444-555555555502';

const NET1 = { id: 'net1', cidr: '203.0.113.0/24', service_ip: '203.0.113.2', gateway: '203.0.113.1' };
const NET2 = { id: 'net2', cidr: '192.0.2.0/24', service_ip: '192.0.2.2' };
const VMS = [
  { id: VM1, network: 'net1', ip: '203.0.113.10', mac: '52:54:00:00:01:01', hostname: 'one' },
  { id: VM2, network: 'net2', ip: '192.0.2.10', mac: '52:54:00:00:02:02', hostname: 'two' },
];

async function uuidOf(sb: Sandbox, guest: Awaited<ReturnType<Sandbox['addGuest']>>): Promise<string | number> {
  const r = await guest.http('/openstack/latest/meta_data.json', { maxTimeS: 3 });
  return r.status === 200 ? (JSON.parse(r.body.toString()) as { uuid: string }).uuid : r.status;
}

async function nftHandle(sb: Sandbox, network: string): Promise<number> {
  const out = await sh(['nsenter', `--net=/run/netns/${sb.nsPrefix}${network}`, 'nft', '-j', 'list', 'table', 'ip', 'imds']);
  const table = (JSON.parse(out.stdout) as { nftables: { table?: { handle: number } }[] }).nftables.find((i) => i.table !== undefined);
  return table?.table?.handle ?? -1;
}

describe('lifecycle', () => {
  const current = useSandbox({ before, after, afterEach });

  it('refuses an invalid configuration before touching the kernel', async () => {
    const sb = current();
    const bad = sb.writeConfig(
      sb.config({
        networks: [NET1, { ...NET2, id: 'net1' }],
        vms: [{ ...VMS[0], ip: '198.51.100.10' }],
      }),
      'bad.yaml',
    );
    const out = await sb.cli(['serve', '--config', bad], { allowFailure: true });
    assert.equal(out.code, 2);
    assert.match(out.stderr, /CONFIG_INVALID/);
    assert.match(out.stderr, /bad\.yaml:\d+: networks\[1\]\.id: duplicate network id "net1"/);
    assert.match(out.stderr, /vms\[0\]\.ip: 198\.51\.100\.10 is outside network "net1" \(203\.0\.113\.0\/24\)/);
    assert.deepEqual(await sb.namespaces(), [sb.hv], 'no namespace was created');
    assert.deepEqual(Object.keys(await sb.hvLinks()), ['lo'], 'no link was created');
  });

  it('adopts on restart without recreating anything, and serves the guest again after it', async () => {
    const sb = current();
    const cfg = sb.writeConfig(sb.config({ networks: [NET1], vms: VMS.slice(0, 1) }, 'restart'));
    const first = await sb.startDaemon(cfg);
    const g1 = await sb.addGuest('one', {
      bridge: 'imdsb-net1',
      ip: '203.0.113.10',
      prefix: 24,
      mac: '52:54:00:00:01:01',
      metadataVia: '203.0.113.2',
    });
    assert.equal(await uuidOf(sb, g1), VM1);
    const before1 = await sb.hvLinks();
    const handle1 = await nftHandle(sb, 'net1');

    assert.equal(await first.stop('SIGTERM'), 0);
    assert.ok((await sb.namespaces()).includes(`${sb.nsPrefix}net1`), 'SIGTERM leaves the namespace in place');

    const second = await sb.startDaemon(cfg);
    assert.equal(await uuidOf(sb, g1), VM1);
    const after1 = await sb.hvLinks();
    assert.equal(after1['imdsb-net1']?.ifindex, before1['imdsb-net1']?.ifindex, 'bridge adopted, not recreated');
    assert.equal(after1['imdsv-net1']?.ifindex, before1['imdsv-net1']?.ifindex, 'veth adopted, not recreated');
    assert.equal(await nftHandle(sb, 'net1'), handle1, 'nft table adopted, not replaced');
    assert.equal(second.logs.filter((l) => l['msg'] === 'network converged').length, 0, 'the restart applied no step');
    assert.equal(await second.stop(), 0);
    await sb.removeGuest(g1); // net1 outlives the daemon: the next test's guest takes this one's MAC and address
  });

  it('adds and removes networks on SIGHUP, and rejects an invalid reload', async () => {
    const sb = current();
    // seed_mode authoritative: the file owns the records it declared, so dropping one removes it.
    const cfg = (extra: Record<string, unknown>) => sb.config({ seed_mode: 'authoritative', ...extra }, 'hup');
    const path = sb.writeConfig(cfg({ networks: [NET1], vms: VMS.slice(0, 1) }));
    const daemon = await sb.startDaemon(path);
    const g1 = await sb.addGuest('hup1', {
      bridge: 'imdsb-net1',
      ip: '203.0.113.10',
      prefix: 24,
      mac: '52:54:00:00:01:01',
      metadataVia: '203.0.113.2',
    });

    // Each reload is awaited by its own log line (after the signal); a daemon that died on the
    // SIGHUP fails the wait (and the test, through the sandbox).
    let mark = daemon.logs.length;
    sb.writeConfig(cfg({ networks: [NET1, NET2], vms: VMS }));
    daemon.signal('SIGHUP');
    const added = await daemon.waitForAfter(mark, (l) => l['msg'] === 'reloaded');
    assert.deepEqual(added['removed'], [], JSON.stringify(added));
    const g2 = await sb.addGuest('hup2', {
      bridge: 'imdsb-net2',
      ip: '192.0.2.10',
      prefix: 24,
      mac: '52:54:00:00:02:02',
      metadataVia: '192.0.2.2',
    });
    assert.equal(await uuidOf(sb, g2), VM2);
    assert.equal(await uuidOf(sb, g1), VM1);

    mark = daemon.logs.length;
    sb.writeConfig(cfg({ networks: [NET1, NET2], vms: [{ ...VMS[1], ip: 'not-an-ip' }] }));
    daemon.signal('SIGHUP');
    const rejected = await daemon.waitForAfter(mark, (l) => typeof l['msg'] === 'string' && l['msg'].startsWith('reload rejected'));
    assert.match(String(rejected['err']), /vms\[0\]\.ip/);
    assert.deepEqual(
      daemon.logs.slice(mark).filter((l) => l['msg'] === 'reloaded'),
      [],
      'the invalid configuration was not applied',
    );
    assert.equal(await uuidOf(sb, g2), VM2, 'still serving the previous configuration');
    assert.equal(await uuidOf(sb, g1), VM1, 'still serving the previous configuration');

    mark = daemon.logs.length;
    sb.writeConfig(cfg({ networks: [NET2], vms: VMS.slice(1) }));
    daemon.signal('SIGHUP');
    const removed = await daemon.waitForAfter(mark, (l) => l['msg'] === 'reloaded');
    assert.deepEqual(removed['removed'], ['net1'], JSON.stringify(removed));
    assert.ok(!(await sb.namespaces()).includes(`${sb.nsPrefix}net1`), 'net1 namespace removed');
    const links = await sb.hvLinks();
    assert.equal(links['imdsb-net1'], undefined, 'net1 bridge removed');
    assert.equal(links['imdsv-net1'], undefined, 'net1 veth removed');
    assert.equal(await uuidOf(sb, g2), VM2, 'net2 untouched');
    assert.ok(daemon.alive, 'alive after three reloads');
    assert.equal(await daemon.stop(), 0);
  });

  it('removes orphans that carry the imds marks, leaves foreign objects, and uses an existing bridge as it is', async () => {
    const sb = current();
    // An orphan namespace with our prefix, an orphan owned link, and foreign objects.
    await sh(['ip', 'netns', 'add', `${sb.nsPrefix}ghost`]);
    await sb.hvRun(['ip', 'link', 'add', 'imdsb-ghost', 'type', 'bridge']);
    await sb.hvRun(['ip', 'link', 'set', 'imdsb-ghost', 'alias', 'imds:ghost:bridge']);
    await sb.hvRun(['ip', 'link', 'add', 'imdsb-foreign', 'type', 'bridge']); // imds-like name, no owner mark
    await sb.hvRun(['ip', 'link', 'add', 'extbr0', 'type', 'bridge']);
    await sb.hvRun(['ip', 'link', 'set', 'extbr0', 'up']);
    const path = sb.writeConfig(sb.config({ networks: [{ ...NET2, bridge: 'extbr0' }], vms: VMS.slice(1) }, 'orphans'));
    const daemon = await sb.startDaemon(path);
    assert.ok(!(await sb.namespaces()).includes(`${sb.nsPrefix}ghost`), 'orphan namespace removed');
    let links = await sb.hvLinks();
    assert.equal(links['imdsb-ghost'], undefined, 'orphan owned bridge removed');
    assert.ok(links['imdsb-foreign'], 'a link without the owner mark is never removed');
    assert.equal(links['extbr0']?.ifalias, undefined, 'the operator bridge is used, not claimed');
    assert.equal(links['imdsv-net2']?.master, 'extbr0');
    const g = await sb.addGuest('ext', {
      bridge: 'extbr0',
      ip: '192.0.2.10',
      prefix: 24,
      mac: '52:54:00:00:02:02',
      metadataVia: '192.0.2.2',
    });
    assert.equal(await uuidOf(sb, g), VM2);

    assert.equal(await daemon.stop(), 0);
    const down = await sb.cli(['down', '--config', path]);
    assert.match(down.stdout, /removed: net2/);
    links = await sb.hvLinks();
    assert.ok(links['extbr0'], 'down keeps the operator bridge');
    assert.ok(links['imdsb-foreign'], 'down keeps foreign links');
    await sb.hvRun(['ip', 'link', 'del', 'imdsb-foreign']);
  });

  it('tears everything down with `imds down`, and refuses while the daemon runs', async () => {
    const sb = current();
    const path = sb.writeConfig(sb.config({ networks: [NET1, NET2], vms: VMS }, 'down'));
    const daemon = await sb.startDaemon(path);
    const refused = await sb.cli(['down', '--config', path], { allowFailure: true });
    assert.equal(refused.code, 3);
    assert.match(refused.stderr, /DAEMON_RUNNING/);
    assert.equal(await daemon.stop(), 0);

    const out = await sb.cli(['down', '--config', path, '--json']);
    const result = JSON.parse(out.stdout) as { removed: string[] };
    assert.deepEqual(result.removed.sort(), ['net1', 'net2']);
    const owned = (await sb.namespaces()).filter((n) => n.startsWith(sb.nsPrefix));
    assert.deepEqual(owned, [], 'no namespace left');
    const links = await sb.hvLinks();
    const marked = Object.entries(links).filter(([, l]) => (l.ifalias ?? '').startsWith('imds:'));
    assert.deepEqual(marked, [], 'no owned link left');
    assert.equal(Object.keys(links).filter((n) => n.startsWith('imds')).length, 0);
    const procs = await sh(['pgrep', '-f', `serve --config ${path}`], { allowFailure: true });
    assert.equal(procs.stdout.trim(), '', 'no daemon process left');
    const again = await sb.cli(['down', '--config', path]);
    assert.equal(again.stdout.trim(), 'nothing to remove', 'down is idempotent');
  });
});
