// Metrics an operator can scrape, as root with the real daemon: `metrics_listen` serves Prometheus
// text over TCP in the daemon's own namespace (the sandbox's hypervisor namespace stands in for the
// host), `promtool check metrics` accepts the scrape, the standard process_/nodejs_ names, build
// info, per-network up (0 while a DHCP server cannot run, 1 once it can), rejections by network, a
// VM's series gone with the VM; the listener across reload, hand-over and stop; and the shipped alert
// rules checked by promtool (their own tests included).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { MAIN, ROOT, sh, useSandbox, type DaemonProcess, type Sandbox } from '../helpers/sandbox.ts';
import { until } from '../helpers/wait.ts';

const VM1 = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const VM2 = '2b4e28ba-2fa1-11d2-883f-0016d3cca427';
const VM3 = '3b4e28ba-2fa1-11d2-883f-0016d3cca427';
const PORT = 9178;
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

interface Response {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Sum of the samples of `name` whose labels include every `key="value"` of `labels`; undefined when there is none. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const lines = text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .filter((l) => want.every((w) => l.slice(0, l.lastIndexOf(' ')).includes(w)));
  return lines.length === 0 ? undefined : lines.reduce((n, l) => n + Number(l.split(' ').pop()), 0);
}

describe('metrics over TCP (metrics_listen)', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let daemon: DaemonProcess;
  let bin: string;
  let cfgPath: string;
  let config: Record<string, unknown>;
  const imds = (args: string[], options: { allowFailure?: boolean } = {}, instance = 'main') =>
    sh([process.execPath, MAIN, '--admin-socket', sb.adminSocket(instance), ...args], options);

  /** An HTTP request from the hypervisor namespace (where the daemon runs). */
  async function http(url: string, method = 'GET'): Promise<Response> {
    const argv = ['curl', '-sS', '--max-time', '10', '-i', ...(method === 'HEAD' ? ['-I'] : ['-X', method]), url];
    const out = (await sb.hvRun(argv)).stdout;
    const split = out.indexOf('\r\n\r\n');
    const [statusLine = '', ...headerLines] = out.slice(0, split).split('\r\n');
    const headers = Object.fromEntries(
      headerLines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()] as const),
    );
    return { status: Number(statusLine.split(' ')[1]), headers, body: out.slice(split + 4) };
  }
  const scrape = async (port = PORT): Promise<string> => {
    const r = await http(`http://127.0.0.1:${port}/metrics`);
    assert.equal(r.status, 200, r.body);
    return r.body;
  };

  before(async () => {
    sb = current();
    // A PATH without dnsmasq: net2's DHCP server cannot start until the test puts it back.
    bin = join(sb.dir, 'bin');
    mkdirSync(bin);
    for (const dir of ['/usr/sbin', '/usr/bin']) {
      for (const name of readdirSync(dir))
        if (name !== 'dnsmasq' && !existsSync(join(bin, name))) symlinkSync(join(dir, name), join(bin, name), 'file');
    }
    config = sb.config({
      log_level: 'info',
      metrics_listen: `127.0.0.1:${PORT}`,
      networks: [
        { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' },
        { id: 'net2', cidr: '203.0.113.0/24', service_ip: '203.0.113.2', dhcp: true },
      ],
      vms: [
        { id: VM1, network: 'net1', ip: '198.51.100.10', mac: '52:54:00:00:00:0a', hostname: 'one' },
        { id: VM2, network: 'net1', ip: '198.51.100.11', mac: '52:54:00:00:00:0b', hostname: 'two', http_endpoint: 'disabled' },
        { id: VM3, network: 'net1', ip: '198.51.100.12', mac: '52:54:00:00:00:0c', hostname: 'three' },
      ],
    });
    cfgPath = sb.writeConfig(config);
    daemon = await sb.startDaemon(cfgPath, { env: { PATH: bin } });
  });

  it("serves Prometheus text over TCP in the daemon's namespace, which `promtool check metrics` accepts", async () => {
    const r = await http(`http://127.0.0.1:${PORT}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'] ?? '', /^text\/plain; version=0\.0\.4/);
    assert.ok(r.body.split('\n').length > 100, `a full scrape:\n${r.body}`);
    const lint = await sh(['promtool', 'check', 'metrics'], { stdin: r.body, allowFailure: true });
    assert.equal(lint.code, 0, `promtool check metrics:\n${lint.stdout}${lint.stderr}`);
    assert.equal(`${lint.stdout}${lint.stderr}`.trim(), '', 'promtool has nothing to say');

    const plane = process.env['IMDS_TEST_DATA_PLANE'] ?? 'native';
    assert.match(
      r.body,
      new RegExp(`^imds_build_info\\{version="${VERSION}",node_version="\\d+\\.\\d+\\.\\d+",data_plane="${plane}"\\} 1$`, 'm'),
    );
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'process_open_fds'])
      assert.match(r.body, new RegExp(`^${name} \\d`, 'm'), name);
    for (const name of ['nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_version_info', 'nodejs_gc_duration_seconds'])
      assert.match(r.body, new RegExp(`^# TYPE ${name} `, 'm'), name);
    assert.doesNotMatch(r.body, /^(# (HELP|TYPE) )?imds_(process|nodejs)_/m, 'no imds_-prefixed process or runtime metrics');
    assert.equal(sample(r.body, 'imds_vms'), 3);

    // The daemon's own namespace, nowhere else: listening in the hypervisor namespace, not in a network's.
    const hv = (await sb.hvRun(['ss', '-Hltn', `sport = :${PORT}`])).stdout;
    assert.match(hv, new RegExp(`127\\.0\\.0\\.1:${PORT}\\b`));
    const inside = (await sh(['nsenter', `--net=/run/netns/${sb.nsPrefix}net1`, 'ss', '-Hltn', `sport = :${PORT}`])).stdout;
    assert.equal(inside.trim(), '', 'nothing listens on the metrics port in a network namespace');
    // The admin socket serves the same names.
    assert.match(sb.metrics(), /^imds_build_info\{/m);
  });

  it('answers only /metrics and /: 404 elsewhere, 405 for other methods, HEAD without a body', async () => {
    const index = await http(`http://127.0.0.1:${PORT}/`);
    assert.equal(index.status, 200);
    assert.match(index.body, /<a href="\/metrics">/);
    assert.equal((await http(`http://127.0.0.1:${PORT}/v1/networks`)).status, 404, 'no admin API over TCP');
    assert.equal((await http(`http://127.0.0.1:${PORT}/metrics/x`)).status, 404);
    const post = await http(`http://127.0.0.1:${PORT}/metrics`, 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers['allow'], 'GET, HEAD');
    const head = await http(`http://127.0.0.1:${PORT}/metrics?x=1`, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.ok(daemon.alive);
  });

  it('imds_network_up: 1 for a serving network, 0 while its DHCP server cannot run, 1 again once it can', async () => {
    const text = await until(
      'net2 down with a failed DHCP server restarted',
      async () => {
        const t = await scrape();
        return (sample(t, 'imds_dhcp_server_restarts_total', { network: 'net2' }) ?? 0) >= 1 ? t : undefined;
      },
      20_000,
    );
    assert.equal(sample(text, 'imds_network_up', { network: 'net1' }), 1);
    assert.equal(sample(text, 'imds_network_up', { network: 'net2' }), 0);
    assert.equal(sample(text, 'imds_dhcp_server_up', { network: 'net2' }), 0);
    assert.equal(sample(text, 'imds_dhcp_server_up', { network: 'net1' }), undefined, 'no DHCP server on net1');
    symlinkSync('/usr/sbin/dnsmasq', join(bin, 'dnsmasq'));
    const healed = await until(
      'net2 up once dnsmasq can run',
      async () => {
        const t = await scrape();
        return sample(t, 'imds_network_up', { network: 'net2' }) === 1 ? t : undefined;
      },
      60_000,
      250,
    );
    assert.equal(sample(healed, 'imds_dhcp_server_up', { network: 'net2' }), 1);
    assert.equal(sample(healed, 'imds_network_up', { network: 'net1' }), 1);
  });

  it("rejections carry their network; a VM's no-token series goes with `vm rm`, the others stay", async () => {
    const g1 = await sb.addGuest('one', {
      bridge: 'imdsb-net1',
      ip: '198.51.100.10',
      mac: '52:54:00:00:00:0a',
      metadataVia: '198.51.100.2',
    });
    const g2 = await sb.addGuest('two', {
      bridge: 'imdsb-net1',
      ip: '198.51.100.11',
      mac: '52:54:00:00:00:0b',
      metadataVia: '198.51.100.2',
    });
    const g3 = await sb.addGuest('three', {
      bridge: 'imdsb-net1',
      ip: '198.51.100.12',
      mac: '52:54:00:00:00:0c',
      metadataVia: '198.51.100.2',
    });
    assert.equal((await g1.http('/openstack/latest/meta_data.json')).status, 200);
    assert.equal((await g3.http('/latest/meta-data/instance-id')).status, 200);
    assert.equal((await g1.http('/latest/meta-data/', { headers: ['x-aws-ec2-metadata-token: junk'] })).status, 401);
    assert.equal((await g2.http('/openstack/latest/meta_data.json')).status, 403, 'endpoint disabled');
    const before = await scrape();
    assert.equal(sample(before, 'imds_metadata_no_token_total', { network: 'net1', vm: VM1 }), 1);
    assert.equal(sample(before, 'imds_metadata_no_token_total', { network: 'net1', vm: VM3 }), 1);
    assert.equal(sample(before, 'imds_rejected_requests_total', { network: 'net1', reason: 'token_invalid' }), 1);
    assert.equal(sample(before, 'imds_rejected_requests_total', { network: 'net1', reason: 'endpoint_disabled' }), 1);
    const rejected = before.split('\n').filter((l) => l.startsWith('imds_rejected_requests_total'));
    assert.ok(rejected.length >= 2);
    for (const line of rejected) assert.match(line, /^imds_rejected_requests_total\{network="net1",reason="[a-z_]+"\} \d+$/);

    // Counted, and not yet scraped, when the VM goes: gone with it all the same.
    assert.equal((await g1.http('/openstack/latest/meta_data.json')).status, 200);
    await imds(['vm', 'rm', VM1]);
    const afterRm = await scrape();
    assert.equal(sample(afterRm, 'imds_metadata_no_token_total', { vm: VM1 }), undefined, `VM1's series is gone:\n${afterRm}`);
    assert.equal(sample(afterRm, 'imds_metadata_no_token_total', { network: 'net1', vm: VM3 }), 1, "VM3's stays");
    assert.equal((await g1.http('/openstack/latest/meta_data.json')).status, 404, 'VM1 is no VM any more');
    assert.equal(sample(await scrape(), 'imds_metadata_no_token_total', { vm: VM1 }), undefined, 'and does not come back');
  });

  it("a deleted network's series go with it: requests, durations, rejections, unknown callers, repairs, DHCP, up", async () => {
    const VM4 = '4b4e28ba-2fa1-11d2-883f-0016d3cca427';
    await imds(['network', 'add', 'net3', '--cidr', '192.0.2.0/24', '--service-ip', '192.0.2.2', '--dhcp']);
    await imds(['vm', 'add', VM4, '--network', 'net3', '--ip', '192.0.2.10', '--mac', '52:54:00:00:00:3a', '--hostname', 'four']);
    const g4 = await sb.addGuest('four', { bridge: 'imdsb-net3', ip: '192.0.2.10', mac: '52:54:00:00:00:3a', metadataVia: '192.0.2.2' });
    const stranger = await sb.addGuest('x3', {
      bridge: 'imdsb-net3',
      ip: '192.0.2.99',
      mac: '52:54:00:00:00:3f',
      metadataVia: '192.0.2.2',
    });
    assert.equal((await g4.http('/openstack/latest/meta_data.json')).status, 200);
    assert.equal((await g4.http('/latest/meta-data/', { headers: ['x-aws-ec2-metadata-token: junk'] })).status, 401);
    assert.equal((await stranger.http('/openstack/latest/meta_data.json')).status, 404);
    // Damage the drift watch repairs: a repair counted for net3.
    await sb.hvRun(['ip', 'link', 'del', 'imdsv-net3']);
    const NET3 = { network: 'net3' };
    const series = [
      'imds_requests_total',
      'imds_request_duration_seconds_count',
      'imds_rejected_requests_total',
      'imds_metadata_no_token_total',
      'imds_unknown_caller_requests_total',
      'imds_repairs_total',
      'imds_network_up',
      'imds_dhcp_server_up',
      'imds_dhcp_server_restarts_total',
    ];
    const present = (text: string): string[] => series.filter((name) => sample(text, name, NET3) !== undefined);
    await until(
      "every network-level series of net3, its DHCP server up and the veth's repair counted",
      async () => {
        const t = await scrape();
        return present(t).length === series.length && sample(t, 'imds_dhcp_server_up', NET3) === 1 ? t : undefined;
      },
      30_000,
      250,
    ).catch(async (err: unknown) => {
      assert.fail(`${String(err)}; present: ${present(await scrape()).join(', ')}`);
    });
    // Counted by the data plane and not yet scraped when the network goes: gone with it all the same.
    assert.equal((await g4.http('/openstack/latest/meta_data.json')).status, 200);
    await imds(['network', 'rm', 'net3', '--force']);
    const after = await scrape();
    const left = after.split('\n').filter((l) => l.includes('network="net3"'));
    assert.deepEqual(left, [], 'no series of net3 is left once it is deleted');
    assert.equal(sample(after, 'imds_network_up', { network: 'net1' }), 1, 'the other networks keep theirs');
    assert.ok((sample(after, 'imds_requests_total', { network: 'net1' }) ?? 0) > 0);
    await sb.removeGuest(g4);
    await sb.removeGuest(stranger);
    assert.deepEqual(
      (await scrape()).split('\n').filter((l) => l.includes('network="net3"')),
      [],
      'and they do not come back',
    );
  });

  it('metrics_listen takes effect at start only: a reload that changes it is refused, naming it', async () => {
    sb.writeConfig({ ...config, metrics_listen: `127.0.0.1:${PORT + 10}` });
    const refused = await imds(['reload'], { allowFailure: true });
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /take effect only at start; restart the daemon: metrics_listen/);
    sb.writeConfig(config);
    assert.equal((await imds(['reload'])).code, 0);
    await scrape();
  });

  it('a taken address stops a second daemon at start with METRICS_LISTEN_FAILED; stopping the daemon closes the port', async () => {
    const other = sb.writeConfig(
      { ...sb.config({ log_level: 'info', metrics_listen: `127.0.0.1:${PORT}` }, 'busy'), namespace_prefix: `${sb.base}m-` },
      'busy.yaml',
    );
    const second = await sb.startDaemon(other, { waitReady: false, expectExit: true });
    const exit = await second.expectExit(60_000);
    assert.equal(exit.code, 1, second.tail());
    assert.match(second.tail(), /METRICS_LISTEN_FAILED: metrics_listen: cannot listen on 127\.0\.0\.1:9178: .*EADDRINUSE/);
    await scrape(); // the first one serves on
    assert.equal(await daemon.stop(), 0);
    const refused = await sb.hvRun(['curl', '-sS', '--max-time', '5', `http://127.0.0.1:${PORT}/metrics`], { allowFailure: true });
    assert.equal(refused.code, 7, `connection refused once the daemon stopped: ${refused.stderr}`);
  });

  it('`imds restart` hands the port to the new daemon; a failed hand-over leaves the old one serving it', async () => {
    const port = PORT + 1;
    const net = { id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' };
    const path = sb.writeConfig(
      sb.config({ log_level: 'info', metrics_listen: `127.0.0.1:${port}`, networks: [net] }, 'handover'),
      'h.yaml',
    );
    const d = await sb.startDaemon(path);
    void d.expectExit(60_000);
    const restarted = JSON.parse((await imds(['restart', '--json'], {}, 'handover')).stdout) as { successor: number };
    const successor = await sb.successorOf(d, restarted.successor);
    assert.equal((await d.expectExit(30_000)).code, 0);
    assert.equal(d.logs.filter((l) => l['msg'] === 'serving metrics over TCP').length, 2, 'both daemons listened, one after the other');
    assert.match(await scrape(port), /^imds_build_info\{/m);
    assert.equal(await successor.stop(), 0, 'the successor stops cleanly');

    const failing = sb.writeConfig(
      sb.config({ log_level: 'info', metrics_listen: `127.0.0.1:${port}`, networks: [net] }, 'failover'),
      'f.yaml',
    );
    const f = await sb.startDaemon(failing, { env: { IMDS_FAULT_SUCCESSOR_FAILS: '1' } });
    const restart = await imds(['restart'], { allowFailure: true }, 'failover');
    assert.equal(restart.code, 1, restart.stderr);
    assert.match(await scrape(port), /^imds_build_info\{/m, 'the old daemon listens again');
    assert.equal(await f.stop(), 0);
  });
});

describe('shipped alert rules', () => {
  it('`promtool check rules` accepts docs/monitoring/alerts.yml and `promtool test rules` passes its tests', async () => {
    const check = await sh(['promtool', 'check', 'rules', join(ROOT, 'docs/monitoring/alerts.yml')], { allowFailure: true });
    assert.equal(check.code, 0, `${check.stdout}${check.stderr}`);
    assert.match(check.stdout, /SUCCESS: \d+ rules found/);
    const test = await sh(['promtool', 'test', 'rules', join(ROOT, 'docs/monitoring/alerts.test.yml')], { allowFailure: true });
    assert.equal(test.code, 0, `${test.stdout}${test.stderr}`);
    assert.match(test.stdout, /SUCCESS/);
  });
});
