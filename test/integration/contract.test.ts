// The service contract, as root with the real daemon: `imds reload` answers with the daemon's
// verdict (systemd's ExecReload), a DHCP server that cannot run makes its network degraded
// everywhere an operator looks, and `imds restart` (no systemd) hands the listening sockets to a
// new daemon with no failed guest request.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { MAIN, sh, useSandbox, type Guest, type Sandbox } from '../helpers/sandbox.ts';
import { exitOf, lineOn, until } from '../helpers/wait.ts';

const VM = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';

/**
 * A guest-side poller: a GET on a new connection every INTERVAL ms for MS ms, each cut off after
 * TIMEOUT ms (10 s); prints `first` at its first good answer and its counts at the end.
 */
const POLLER = `
const http = require('http');
const [interval, ms, timeout = 10000] = process.argv.slice(1).map(Number);
let ok = 0, failed = 0; const errors = [];
const until = Date.now() + ms;
function once() {
  if (Date.now() > until) { console.log(JSON.stringify({ ok, failed, errors: errors.slice(0, 10) })); return; }
  const started = Date.now();
  // A failure says when it began (wall clock), whether the connection was made and what came back.
  let connected = false, bytes = 0;
  const fail = (what) => { failed++; errors.push({ what, started, ms: Date.now() - started, connected, bytes }); };
  const req = http.get({ host: '169.254.169.254', path: '/openstack/latest/meta_data.json', agent: false, timeout }, (res) => {
    let body = ''; res.on('data', (c) => { bytes += c.length; body += c; });
    res.on('end', () => {
      if (res.statusCode === 200 && body.includes(${JSON.stringify(VM)})) { if (ok++ === 0) console.log('first'); } else fail(res.statusCode);
      setTimeout(once, Math.max(0, interval - (Date.now() - started)));
    });
  });
  req.on('socket', (s) => s.once('connect', () => (connected = true)));
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => { fail(e.code || e.message); setTimeout(once, interval); });
}
once();
`;

type PollCounts = { ok: number; failed: number; errors: unknown[] };

/** Starts the poller in `guest`; resolves once it has had its first good answer, with its counts to come. */
async function startPoller(guest: Guest, args: string[]): Promise<{ counts: Promise<PollCounts> }> {
  const child = spawn('ip', ['netns', 'exec', guest.netns, process.execPath, '-e', POLLER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => void (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
  const ended = exitOf(child, 'the guest poller', 60_000);
  ended.catch(() => undefined);
  try {
    await lineOn(child.stdout, "the poller's first answer", (l) => l === 'first', 10_000);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${stderr}`, { cause: err });
  }
  const counts = ended.then((code) => {
    if (code !== 0) throw new Error(`the guest poller exited ${code}:\n${stdout}${stderr}`);
    return JSON.parse(stdout.trim().split('\n').pop() as string) as PollCounts;
  });
  counts.catch(() => undefined); // awaited by the test
  return { counts };
}

describe('the service contract', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  const imds = (instance: string, args: string[], options: { allowFailure?: boolean } = {}) =>
    sh([process.execPath, MAIN, '--admin-socket', sb.adminSocket(instance), ...args], options);
  const net = { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' };
  const vm = { id: VM, network: 'net1', ip: '198.51.100.10', mac: '52:54:00:00:00:0a', hostname: 'alpha' };
  /** The VM's guest on the network's bridge. */
  const vmGuest = { bridge: 'imdsb-net1', ip: vm.ip, prefix: 24, mac: vm.mac, metadataVia: net.service_ip };

  before(() => {
    sb = current();
  });

  it('`imds reload` answers with the verdict: exit 2 and the reason for a broken file (nothing changed), 0 for a good one', async () => {
    const config = sb.config({ log_level: 'info', networks: [net] }, 'reload');
    const path = sb.writeConfig(config, 'reload.yaml');
    const d = await sb.startDaemon(path);
    assert.match((await imds('reload', ['reload'])).stdout, /^configuration reloaded$/m);
    writeFileSync(path, 'networks: [ {id: net1, cidr: 198.51.100.0/33} ]\n'); // and nothing else: state_dir gone too
    const refused = await imds('reload', ['reload'], { allowFailure: true });
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /^imds: CONFIG_INVALID: reload rejected: configuration invalid; keeping the running one/);
    assert.ok(d.alive, 'the daemon lives on');
    const status = JSON.parse((await imds('reload', ['status', '--json'])).stdout) as { networks: { id: string; state: string }[] };
    assert.deepEqual(
      status.networks.map((n) => [n.id, n.state]),
      [['net1', 'serving']],
      'the running configuration is kept',
    );
    sb.writeConfig({ ...config, networks: [net, { id: 'net2', cidr: '203.0.113.0/24', service_ip: '203.0.113.2' }] }, 'reload.yaml');
    assert.equal((await imds('reload', ['reload'])).code, 0);
    const after = JSON.parse((await imds('reload', ['status', '--json'])).stdout) as { networks: { id: string }[] };
    assert.deepEqual(
      after.networks.map((n) => n.id),
      ['net1', 'net2'],
      'a good file is applied when the command returns',
    );
    assert.equal(await d.stop(), 0);
  });

  it('a DHCP server that cannot run makes its network degraded: status exits 1, health 503, metrics, the log line with its error', async () => {
    // A PATH without dnsmasq: every start fails at once, as a dnsmasq the unit forbids to bind would.
    const bin = join(sb.dir, 'bin-no-dnsmasq');
    mkdirSync(bin);
    for (const dir of ['/usr/sbin', '/usr/bin']) {
      for (const name of readdirSync(dir))
        if (name !== 'dnsmasq' && !existsSync(join(bin, name))) symlinkSync(join(dir, name), join(bin, name), 'file');
    }
    const path = sb.writeConfig(sb.config({ log_level: 'info', networks: [{ ...net, dhcp: true }], vms: [vm] }, 'dhcp'), 'dhcp.yaml');
    const d = await sb.startDaemon(path, { env: { PATH: bin } });
    const line = await d.waitFor((l) => l['msg'] === 'dnsmasq died; restarting', 20_000);
    assert.match(String(line['err']), /not found/, JSON.stringify(line));
    const status = await imds('dhcp', ['status'], { allowFailure: true });
    assert.equal(status.code, 1, `status exits 1 with a degraded network:\n${status.stdout}`);
    assert.match(status.stdout, /net1\s.*degraded/);
    const shown = JSON.parse((await imds('dhcp', ['network', 'show', 'net1', '--json'])).stdout) as { state: string; reason: string };
    assert.equal(shown.state, 'degraded');
    assert.match(shown.reason, /^DHCP server (restarting|running): .*not found/);
    const health = await sh([
      'curl',
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '--unix-socket',
      sb.adminSocket('dhcp'),
      'http://imds/v1/health',
    ]);
    assert.equal(health.stdout, '503');
    assert.equal(sb.metric('imds_dhcp_server_up', { network: 'net1' }, 'dhcp'), 0);
    assert.equal(sb.metric('imds_networks', { state: 'degraded' }, 'dhcp'), 1);
    // Supervised with backoff: it keeps trying (0.5 s, 1 s, …).
    await until(
      'a restart of the DHCP server',
      () => (sb.metric('imds_dhcp_server_restarts_total', { network: 'net1' }, 'dhcp') >= 1 ? true : undefined),
      10_000,
    );
    assert.equal(await d.stop(), 0);
  });

  it('`imds restart` without systemd hands the sockets to a new daemon: a guest asking every 20 ms sees no failure', async () => {
    const path = sb.writeConfig(sb.config({ log_level: 'info', networks: [net], vms: [vm] }, 'handover'), 'handover.yaml');
    const d = await sb.startDaemon(path);
    const guest = await sb.addGuest('h', vmGuest);
    assert.equal((await guest.http('/openstack/latest/meta_data.json')).status, 200);
    const poller = await startPoller(guest, ['20', '6000']); // serving, as seen from the guest, before the restart
    void d.expectExit(60_000); // the old daemon stops by itself once its successor is ready
    const restarted = JSON.parse((await imds('handover', ['restart', '--json'])).stdout) as { successor: number };
    // Not a child of the test: watched, so that its crash or a stop other than a clean one fails it.
    const successor = await sb.successorOf(d, restarted.successor);
    const exit = await d.expectExit(30_000);
    assert.deepEqual([exit.code, exit.signal], [0, null], 'the old daemon stopped cleanly');
    const counts = await poller.counts;
    process.stdout.write(`# measured: guest requests across \`imds restart\`: ${counts.ok} answered, ${counts.failed} failed\n`);
    assert.equal(counts.failed, 0, `failed requests across the hand-over: ${JSON.stringify(counts)}`);
    assert.ok(counts.ok > 100, `the poller ran across it: ${JSON.stringify(counts)}`);
    // The successor serves, holds the pid file and the admin socket, and adopted the socket.
    const pidFile = readFileSync(join(sb.dir, 'handover', 'state', 'imds.pid'), 'utf8').trim();
    assert.equal(Number(pidFile), restarted.successor);
    const status = JSON.parse((await imds('handover', ['status', '--json'])).stdout) as { daemon: { pid: number } };
    assert.equal(status.daemon.pid, restarted.successor);
    const ready = d.logs.filter((l) => l['msg'] === 'ready');
    assert.equal(ready.length, 2, 'two daemons got ready, one after the other');
    assert.deepEqual(ready[1]?.['sockets'], { adopted: 1, opened: 0 }, 'the successor adopted the socket (no gap)');
    assert.equal(await successor.stop(), 0, 'the successor stops cleanly: exit 0, its stop logged, nothing on stderr');
    await sb.removeGuest(guest); // the network outlives the daemon: the next test's guest takes this one's MAC and address
  });
  it('a hand-over whose new daemon fails leaves the old one serving: `imds restart` exits 1 with the reason; guests, admin, healing go on', async () => {
    const path = sb.writeConfig(sb.config({ log_level: 'info', networks: [net], vms: [vm] }, 'failover'), 'failover.yaml');
    const d = await sb.startDaemon(path, { env: { IMDS_FAULT_SUCCESSOR_FAILS: '1' } });
    const guest = await sb.addGuest('f', vmGuest);
    // A 3 s cut-off (answers take milliseconds) and 6 s of polling: after a stuck request, the ones
    // after it show whether serving came back.
    const poller = await startPoller(guest, ['20', '6000', '3000']);
    const window = { restart_started: Date.now(), restart_ended: 0 };
    const restart = await imds('failover', ['restart'], { allowFailure: true });
    window.restart_ended = Date.now();
    assert.equal(restart.code, 1, restart.stderr);
    assert.match(restart.stderr, /^imds: COMMAND_FAILED: hand-over failed: it exited before it was ready/m);
    const counts = await poller.counts;
    // On failure: when each failed request began against the restart's window, and the daemon's own account.
    const account = () => JSON.stringify({ counts, window, daemon: d.logs.map((l) => ({ time: l['time'], msg: l['msg'] })) });
    assert.equal(counts.failed, 0, `failed requests across the failed hand-over: ${account()}`);
    // The old daemon takes admin calls again.
    const status = JSON.parse((await imds('failover', ['status', '--json'])).stdout) as { daemon: { pid: number } };
    assert.equal(status.daemon.pid, d.pid);
    assert.ok(d.logs.some((l) => l['msg'] === 'hand-over failed: the new daemon did not get ready; serving on'));
    // Self-healing was paused for the hand-over and is back: a veth deleted by hand is repaired.
    const mark = d.logs.length;
    await sb.hvRun(['ip', 'link', 'del', 'imdsv-net1']);
    await d.waitForAfter(mark, (l) => l['msg'] === 'repaired kernel drift', 20_000);
    assert.equal((await guest.http('/openstack/latest/meta_data.json')).status, 200);
    assert.equal(await d.stop(), 0);
  });
});
