// Guests that find 169.254.169.254 the way real ones do, as root in a throwaway hypervisor: a real
// DHCP client (busybox udhcpc) against the daemon's dnsmasq, guests whose only route is a default
// route via a router that does not serve metadata (the bridge steers them), and an uplink on which
// no ARP answer for 169.254.169.254 ever appears.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { armGet, exitOf, guestCounter, lineOn, until } from '../helpers/wait.ts';
import { udhcpc } from '../helpers/dhcp-client.ts';
import { sh, useSandbox, type DaemonProcess, type Guest, type Sandbox } from '../helpers/sandbox.ts';

const VM1 = '0b6d7f3e-1c1a-4f6b-9b1e-0d2c3b4a5f61';
const VM2 = '0b6d7f3e-1c1a-4f6b-9b1e-0d2c3b4a5f62';
const VM3 = '0b6d7f3e-1c1a-4f6b-9b1e-0d2c3b4a5f63';
const VM5 = '0b6d7f3e-1c1a-4f6b-9b1e-0d2c3b4a5f65';
const NET = {
  id: 'dh',
  cidr: '198.51.100.0/24',
  service_ip: '198.51.100.2',
  gateway: '198.51.100.1',
  uplink: 'upl0',
  dhcp: true,
  mtu: 1400,
  dns: ['198.51.100.53'],
  ntp: ['198.51.100.123'],
  domain: 'example.test',
};
const BRIDGE = 'imdsb-dh';

interface NetworkShow {
  state: string;
  dhcp_server?: { state: string; pid?: number; restarts: number };
}

/** Running (a zombie waiting for init to reap it counts as gone). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

describe('DHCP and L2 interception', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let daemon: DaemonProcess;
  let configPath: string;
  let far: string;
  let dhcpDir: string;
  let g1: Guest;

  const show = async (): Promise<NetworkShow> =>
    JSON.parse((await sb.cli(['--admin-socket', sb.adminSocket(), 'network', 'show', 'dh', '--json'])).stdout) as NetworkShow;
  const dnsmasqPid = async (): Promise<number> =>
    until('dnsmasq to run', async () => {
      const s = await show();
      return s.dhcp_server?.state === 'running' ? s.dhcp_server.pid : undefined;
    });

  before(async () => {
    sb = current();
    // The uplink: a veth whose far end stands for the rest of the segment (another hypervisor).
    far = `${sb.base}far`; // a sandbox name: removed with the sandbox, and by sweep.sh once this run is gone
    await sh(['ip', 'netns', 'add', far]);
    await sh(['ip', '-n', sb.hv, 'link', 'add', 'upl0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', far]);
    await sh(['ip', '-n', far, '-batch', '-'], { stdin: 'link set lo up\nlink set eth0 up\naddr add 198.51.100.200/24 dev eth0\n' });
    const config = sb.config({
      networks: [NET],
      vms: [{ id: VM1, network: 'dh', ip: '198.51.100.11', mac: '52:54:00:00:01:11', hostname: 'dhcp-one' }],
    });
    dhcpDir = config['dhcp_dir'] as string;
    configPath = sb.writeConfig(config);
    daemon = await sb.startDaemon(configPath);
  });

  it('a guest running a DHCP client gets its address, MTU and the option-121 routes, then its metadata with no hand-made route', async () => {
    g1 = await sb.addGuest('one', { bridge: BRIDGE, mac: '52:54:00:00:01:11' });
    const lease = await udhcpc(g1, sb.dir);
    assert.equal(lease['ip'], '198.51.100.11');
    assert.equal(lease['mask'], '24');
    assert.equal(lease['mtu'], '1400');
    assert.equal(lease['router'], '198.51.100.1');
    assert.equal(lease['dns'], '198.51.100.53');
    assert.equal(lease['ntpsrv'], '198.51.100.123');
    assert.equal(lease['domain'], 'example.test');
    assert.equal(lease['serverid'], '198.51.100.2');
    assert.equal(lease['lease'], '86400');
    assert.equal(lease['staticroutes'], '169.254.169.254/32 198.51.100.2 0.0.0.0/0 198.51.100.1');
    // Option 249 (what older Windows asks for) carries the same routes.
    assert.equal(lease['msstaticroutes'], '169.254.169.254/32 198.51.100.2 0.0.0.0/0 198.51.100.1');

    const routes = JSON.parse((await g1.exec(['ip', '-j', 'route', 'show'])).stdout) as { dst: string; gateway?: string }[];
    assert.deepEqual(routes.find((r) => r.dst === '169.254.169.254')?.gateway, '198.51.100.2', 'the metadata route came from DHCP');
    assert.deepEqual(routes.find((r) => r.dst === 'default')?.gateway, '198.51.100.1');
    const link = JSON.parse((await g1.exec(['ip', '-j', 'link', 'show', 'eth0'])).stdout) as { mtu: number }[];
    assert.equal(link[0]?.mtu, 1400);

    const md = await g1.http('/openstack/latest/meta_data.json');
    assert.equal(md.status, 200);
    assert.equal((JSON.parse(md.body.toString()) as { uuid: string }).uuid, VM1);
    const nd = JSON.parse((await g1.http('/openstack/latest/network_data.json')).body.toString()) as { networks: { type: string }[] };
    assert.equal(nd.networks[0]?.type, 'ipv4_dhcp');
    // dnsmasq's files: one static host per VM; the leases file records the guest.
    assert.equal(readFileSync(join(dhcpDir, 'dh', 'hosts'), 'utf8'), '52:54:00:00:01:11,198.51.100.11,dhcp-one\n');
    assert.match(readFileSync(join(dhcpDir, 'dh', 'leases'), 'utf8'), /52:54:00:00:01:11 198\.51\.100\.11 dhcp-one/);
  });

  it('a VM added while dnsmasq runs gets its lease, without a restart', async () => {
    const pid = await dnsmasqPid();
    await sb.cli([
      '--admin-socket',
      sb.adminSocket(),
      'vm',
      'add',
      VM2,
      '--network',
      'dh',
      '--ip',
      '198.51.100.12',
      '--mac',
      '52:54:00:00:01:12',
      '--hostname',
      'dhcp-two',
    ]);
    const g2 = await sb.addGuest('two', { bridge: BRIDGE, mac: '52:54:00:00:01:12' });
    const lease = await udhcpc(g2, sb.dir);
    assert.equal(lease['ip'], '198.51.100.12');
    assert.equal(await dnsmasqPid(), pid, 'the same dnsmasq answered');
    assert.equal((JSON.parse((await g2.http('/openstack/latest/meta_data.json')).body.toString()) as { uuid: string }).uuid, VM2);
    // Removed again: its host line goes, and dnsmasq (still the same) no longer offers it.
    await sb.cli(['--admin-socket', sb.adminSocket(), 'vm', 'rm', VM2]);
    await until('the hosts file to lose VM2', () =>
      readFileSync(join(dhcpDir, 'dh', 'hosts'), 'utf8').includes('01:12') ? undefined : true,
    );
    await g2.exec(['ip', 'addr', 'flush', 'dev', 'eth0']);
    const refused = await sh(
      [
        'nsenter',
        `--net=/run/netns/${g2.netns}`,
        '--',
        'busybox',
        'udhcpc',
        '-i',
        'eth0',
        '-f',
        '-q',
        '-n',
        '-t',
        '2',
        '-T',
        '1',
        '-s',
        '/bin/true',
      ],
      { allowFailure: true },
    );
    assert.notEqual(refused.code, 0, 'no lease for a VM that is gone');
    assert.equal(await dnsmasqPid(), pid);
  });

  it('restarts a dnsmasq that dies (supervised), and the guest renews', async () => {
    const pid = await dnsmasqPid();
    process.kill(pid, 'SIGKILL');
    const next = await until('a new dnsmasq', async () => {
      const s = await show();
      return s.dhcp_server?.state === 'running' && s.dhcp_server.pid !== pid ? s : undefined;
    });
    assert.equal(next.dhcp_server?.restarts, 1);
    assert.ok(daemon.logs.some((l) => l['msg'] === 'dnsmasq died; restarting'));
    const lease = await udhcpc(g1, sb.dir);
    assert.equal(lease['ip'], '198.51.100.11');
  });

  it('a guest with only a default route (its router serves no metadata) gets its own metadata from the first request after `vm add` returns', async () => {
    // The router stand-in answers ARP for the gateway address and does nothing else (no forwarding, no port 80).
    await sb.addGuest('rtr', { bridge: BRIDGE, ip: '198.51.100.1', prefix: 24, mac: '52:54:00:00:0f:01' });
    // The guest is up before its VM is registered (a VM that boots early, or retries), and already
    // knows its gateway's MAC.
    const g3 = await sb.addGuest('three', {
      bridge: BRIDGE,
      ip: '198.51.100.13',
      prefix: 24,
      mac: '52:54:00:00:01:13',
      defaultVia: '198.51.100.1',
    });
    const via = (await g3.exec(['ip', 'route', 'get', '169.254.169.254'])).stdout;
    assert.match(via, /via 198\.51\.100\.1 /, 'the guest sends metadata traffic to its gateway');
    await g3.exec(['busybox', 'ping', '-c', '1', '-W', '5', '198.51.100.1']);
    const synRetransBefore = await guestCounter(g3, 'TcpExt.TCPSynRetrans');
    // "Served as soon as the CLI returns": the request leaves the guest the moment `vm add` exits
    // (armed beforehand, no process start in between); it must be answered 200 with the VM's
    // document, and its first SYN must have reached imds (a SYN the router dropped would be
    // retransmitted after 1 s and answered late: that is not "as soon as").
    const armed = await armGet(g3, '/openstack/latest/meta_data.json', 10_000);
    await sb.cli([
      '--admin-socket',
      sb.adminSocket(),
      'vm',
      'add',
      VM3,
      '--network',
      'dh',
      '--ip',
      '198.51.100.13',
      '--mac',
      '52:54:00:00:01:13',
      '--hostname',
      'static-three',
    ]);
    const first = await armed.fire();
    const synRetrans = (await guestCounter(g3, 'TcpExt.TCPSynRetrans')) - synRetransBefore;
    process.stdout.write(
      `# measured: first request after \`vm add\` returned (L2 interception): ` +
        `${JSON.stringify({ status: first.status ?? first.error, connect_ms: first.connect_ms, ms: first.ms, syn_retransmissions: synRetrans })}\n`,
    );
    assert.equal(first.status, 200, `the first request after the CLI returned: ${JSON.stringify(first)}`);
    assert.equal((JSON.parse(first.body as string) as { uuid: string }).uuid, VM3);
    const table = (await sb.hvRun(['nft', 'list', 'table', 'bridge', `${sb.nsPrefix}interception`])).stdout;
    const steered = Number(/@guests_dh ether daddr set [0-9a-f:]+ counter packets (\d+)/.exec(table)?.[1]);
    assert.ok(steered > 0, `the bridge rewrote frames (${steered})\n${table}`);

    // Control: an unregistered guest, same setup, is not steered; the router answers nothing
    // (steered to imds, it would get a 404).
    const gx = await sb.addGuest('stranger', {
      bridge: BRIDGE,
      ip: '198.51.100.99',
      prefix: 24,
      mac: '52:54:00:00:0f:99',
      defaultVia: '198.51.100.1',
    });
    const r = await gx.exec(['curl', '-s', '-m', '2', '-o', '/dev/null', '-w', '%{http_code}', 'http://169.254.169.254/openstack'], {
      allowFailure: true,
    });
    assert.equal(r.stdout, '000', 'nothing answers a guest imds does not know');

    // Last, as it is the strictest: the answer was not merely eventual.
    assert.equal(
      synRetrans,
      0,
      `the first request's SYN was retransmitted ${synRetrans} time(s): the bridge did not steer it yet when \`vm add\` returned ` +
        `(answered after ${first.ms} ms, connected after ${first.connect_ms} ms)`,
    );
  });

  it("one bridge table for every network: adding and removing another network rebuilds it, and this network's interception never stops", async () => {
    const cli = (...args: string[]) => sb.cli(['--admin-socket', sb.adminSocket(), ...args]);
    const table = async () => (await sb.hvRun(['nft', 'list', 'table', 'bridge', `${sb.nsPrefix}interception`])).stdout;
    // Reached only through L2 interception: its one route is a default route via the router stand-in.
    const g5 = await sb.addGuest('five', {
      bridge: BRIDGE,
      ip: '198.51.100.15',
      prefix: 24,
      mac: '52:54:00:00:01:15',
      defaultVia: '198.51.100.1',
    });
    await cli('vm', 'add', VM5, '--network', 'dh', '--ip', '198.51.100.15', '--mac', '52:54:00:00:01:15', '--hostname', 'five');
    const get = async () =>
      (
        await g5.exec(
          ['curl', '-s', '-m', '2', '-o', '/dev/null', '-w', '%{http_code}', 'http://169.254.169.254/openstack/latest/meta_data.json'],
          {
            allowFailure: true,
          },
        )
      ).stdout;
    try {
      assert.equal(await get(), '200');
      let done = false;
      const codes: string[] = [];
      const loop = (async () => {
        while (!done) codes.push(await get());
      })();
      let during: string;
      try {
        await cli('network', 'add', 'x2', '--cidr', '203.0.113.0/24', '--service-ip', '203.0.113.2');
        during = await table();
        await cli('network', 'rm', 'x2');
        const n = codes.length;
        await until('two more requests after the removal', () => (codes.length >= n + 2 ? true : undefined));
      } finally {
        done = true;
        await loop;
      }
      assert.match(during, /set guests_dh \{/);
      assert.match(during, /set guests_x2 \{/);
      assert.match(during, /52:54:00:00:01:15 \. 198\.51\.100\.15/, "this network's pairs were loaded with the rebuilt table");
      const after = await table();
      assert.doesNotMatch(after, /guests_x2/, 'the removed network left nothing in it');
      assert.match(after, /52:54:00:00:01:15 \. 198\.51\.100\.15/);
      assert.equal(
        (await sb.hvRun(['nft', 'list', 'tables', 'bridge'])).stdout.trim(),
        `table bridge ${sb.nsPrefix}interception`,
        'one table',
      );
      assert.ok(codes.length >= 3, `requests made meanwhile: ${codes.length}`);
      assert.deepEqual(
        codes.filter((c) => c !== '200'),
        [],
        `every request meanwhile answered 200 (${codes.length})`,
      );

      // An upgrade from an imds that kept one bridge table per network: the new daemon loads the
      // shared table and deletes the old one in one transaction.
      const mac = /link\/ether (\S+)/.exec(
        (await sb.hvRun(['ip', '-n', `${sb.nsPrefix}dh`, 'link', 'show', 'imds0'])).stdout,
      )?.[1] as string;
      assert.equal(await daemon.stop('SIGTERM'), 0);
      const legacy = `${sb.nsPrefix}dh`;
      await sb.hvRun(['nft', '-f', '-'], {
        stdin: [
          `delete table bridge ${sb.nsPrefix}interception`,
          `table bridge ${legacy} {`,
          '  set guests { type ether_addr . ipv4_addr; elements = { 52:54:00:00:01:15 . 198.51.100.15 } }',
          '  chain prerouting {',
          '    type filter hook prerouting priority dstnat; policy accept;',
          `    ip daddr 169.254.169.254 tcp dport 80 ether saddr . ip saddr @guests ether daddr set ${mac} counter comment "imds:0123456789abcdef"`,
          '  }',
          '}',
          '',
        ].join('\n'),
      });
      daemon = await sb.startDaemon(configPath);
      assert.equal(
        (await sb.hvRun(['nft', 'list', 'tables', 'bridge'])).stdout.trim(),
        `table bridge ${sb.nsPrefix}interception`,
        'the old table is gone',
      );
      assert.match(await table(), /52:54:00:00:01:15 \. 198\.51\.100\.15/);
      assert.equal(await get(), '200', 'served through the shared table');
    } finally {
      await cli('vm', 'rm', VM5);
      await sb.removeGuest(g5);
    }
  });

  it('no ARP reply for 169.254.169.254 appears on the uplink, and local ARP requests for it do not leave', async () => {
    const pcap = join(sb.dir, 'uplink.pcap');
    const dump = spawn('nsenter', [`--net=/run/netns/${sb.hv}`, '--', 'tcpdump', '-i', 'upl0', '-n', '-U', '-w', pcap, 'arp'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const captured = async (): Promise<string> => (await sh(['tcpdump', '-r', pcap, '-n'], { allowFailure: true })).stdout;
    try {
      await lineOn(dump.stderr, 'tcpdump to listen on upl0', (l) => l.includes('listening on'), 20_000);
      // From beyond the uplink: who has 169.254.169.254? (nobody here may say)
      await sh(['ip', '-n', far, 'route', 'add', '169.254.169.254/32', 'dev', 'eth0']);
      const farTry = await sh(
        ['ip', 'netns', 'exec', far, 'curl', '-s', '-m', '2', '-o', '/dev/null', '-w', '%{http_code}', 'http://169.254.169.254/'],
        { allowFailure: true },
      );
      assert.equal(farTry.stdout, '000', "the far side cannot reach this hypervisor's metadata");
      // A local guest asks on the link: imds answers it, and the question stays on this host.
      const g4 = await sb.addGuest('four', { bridge: BRIDGE, ip: '198.51.100.14', prefix: 24, mac: '52:54:00:00:01:14' });
      await g4.exec(['ip', 'route', 'add', '169.254.169.254/32', 'dev', 'eth0']);
      await g4.exec(['curl', '-s', '-m', '2', '-o', '/dev/null', 'http://169.254.169.254/'], { allowFailure: true });
      const neigh = (await g4.exec(['ip', 'neigh', 'show', '169.254.169.254'])).stdout;
      assert.match(neigh, /lladdr 02:/, `the local guest learned imds0's MAC: ${neigh}`);
      // A marker from the far side, sent after all of the above: once the capture holds it, it
      // holds everything that crossed upl0 before it.
      await sh(['ip', 'netns', 'exec', far, 'busybox', 'ping', '-c', '1', '-W', '1', '198.51.100.201'], { allowFailure: true });
      await until('the marker ARP request in the capture', async () =>
        (await captured()).includes('who-has 198.51.100.201 tell 198.51.100.200') ? true : undefined,
      );
    } finally {
      dump.kill('SIGINT');
      await exitOf(dump, 'tcpdump', 10_000).catch(() => dump.kill('SIGKILL'));
    }
    const text = await captured();
    assert.match(text, /Request who-has 169\.254\.169\.254 tell 198\.51\.100\.200/, `the capture saw the far side ask\n${text}`);
    assert.doesNotMatch(text, /Reply 169\.254\.169\.254 is-at/, `no answer for the metadata address left\n${text}`);
    assert.doesNotMatch(text, /who-has 169\.254\.169\.254 tell 198\.51\.100\.14/, `the local request did not leave\n${text}`);
    const farNeigh = (await sh(['ip', '-n', far, 'neigh', 'show', '169.254.169.254'])).stdout;
    assert.doesNotMatch(farNeigh, /lladdr/, `the far side learned no MAC for it: ${farNeigh}`);
  });

  it('turning DHCP off stops dnsmasq and removes its files; turning it on starts one', async () => {
    const pid = await dnsmasqPid();
    await sb.cli(['--admin-socket', sb.adminSocket(), 'network', 'set', 'dh', '--clear', 'dhcp']);
    assert.equal((await show()).dhcp_server, undefined);
    assert.ok(!alive(pid), 'dnsmasq stopped');
    assert.ok(!existsSync(join(dhcpDir, 'dh')), 'its files are gone');
    await sb.cli(['--admin-socket', sb.adminSocket(), 'network', 'set', 'dh', '--dhcp']);
    assert.notEqual(await dnsmasqPid(), pid);
    assert.equal(
      readFileSync(join(dhcpDir, 'dh', 'hosts'), 'utf8'),
      '52:54:00:00:01:11,198.51.100.11,dhcp-one\n52:54:00:00:01:13,198.51.100.13,static-three\n',
    );
  });

  it('stopping the daemon stops dnsmasq; a restart starts it again with the leases kept', async () => {
    const pid = await dnsmasqPid();
    assert.equal((await udhcpc(g1, sb.dir))['ip'], '198.51.100.11');
    assert.equal(await daemon.stop('SIGTERM'), 0);
    assert.ok(!alive(pid), 'dnsmasq stopped with the daemon');
    assert.match(readFileSync(join(dhcpDir, 'dh', 'leases'), 'utf8'), /198\.51\.100\.11/);
    daemon = await sb.startDaemon(configPath);
    assert.notEqual(await dnsmasqPid(), pid);
    const lease = await udhcpc(g1, sb.dir);
    assert.equal(lease['ip'], '198.51.100.11');
  });

  it('`imds down` stops a dnsmasq left by a killed daemon (by pid) and leaves no process, table or file behind', async () => {
    const pid = await dnsmasqPid();
    await daemon.stop('SIGKILL');
    assert.ok(alive(pid), 'a killed daemon leaves its dnsmasq running');
    const out = await sb.cli(['down', '--config', configPath, '--json']);
    const result = JSON.parse(out.stdout) as { removed: string[]; stopped: number[] };
    assert.deepEqual(result.stopped, [pid]);
    assert.deepEqual(result.removed, ['dh']);
    assert.ok(!alive(pid), 'dnsmasq is gone');
    assert.ok(!existsSync(dhcpDir), 'dhcp_dir is gone');
    assert.deepEqual(
      (await sb.namespaces()).filter((n) => n.startsWith(sb.nsPrefix)),
      [],
    );
    const tables = (await sb.hvRun(['nft', 'list', 'tables', 'bridge'])).stdout;
    assert.equal(tables.trim(), '', `no bridge table left: ${tables}`);
    const procs = (await sh(['pgrep', '-f', '--', `--pid-file=${join(dhcpDir, 'dh')}`], { allowFailure: true })).stdout;
    assert.equal(procs.trim(), '');
  });
});
