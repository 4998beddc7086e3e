// The metrics themselves (standard names, build info, network up, rejections by network), a VM's
// series forgotten with the VM (Stats and the inventory's onVmsGone), `metrics_listen` parsed and
// validated, and the TCP listener's small surface.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseConfig } from '../../src/config.ts';
import { isImdsError } from '../../src/errors.ts';
import { createLogger } from '../../src/log.ts';
import { Metrics } from '../../src/metrics.ts';
import { formatListenAddress, parseListenAddress } from '../../src/model/listen-address.ts';
import { networkSchema, vmSchema } from '../../src/model/schema.ts';
import { MetricsListener } from '../../src/server/metrics-listener.ts';
import { Stats } from '../../src/stats.ts';
import { Inventory, type VmPlace } from '../../src/store/inventory.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';
import { VERSION } from '../../src/version.ts';

const log = createLogger({ level: 'silent' });

const DECLARED = [
  { network: 'net1', state: 'serving' },
  { network: 'net2', state: 'serving' },
];

function metricsOf(
  stats: Stats,
  states: { network: string; state: string }[] = DECLARED,
  dhcp: { network: string; up: boolean; restarts: number }[] = [],
): Metrics {
  return new Metrics({ stats, vmCount: () => 2, networkStates: () => states, dhcpServers: () => dhcp, build: { dataPlane: 'node' } });
}

describe('metrics', () => {
  it('uses the standard process_ and nodejs_ names, says what is running, and which networks are up', async () => {
    const text = await metricsOf(new Stats(), [
      { network: 'net1', state: 'serving' },
      { network: 'net2', state: 'degraded' },
      { network: 'net3', state: 'pending' },
    ]).render();
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'process_start_time_seconds',
      'nodejs_heap_size_used_bytes',
    ])
      assert.match(text, new RegExp(`^${name} `, 'm'), name);
    assert.match(text, /^# TYPE nodejs_eventloop_lag_seconds gauge$/m);
    assert.doesNotMatch(text, /imds_(process|nodejs)_/);
    assert.doesNotMatch(text, /^nodejs_active_(handles|requests|resources)_total/m, 'gauges named like counters are left out');
    assert.match(
      text,
      new RegExp(`^imds_build_info\\{version="${VERSION}",node_version="${process.versions.node}",data_plane="node"\\} 1$`, 'm'),
    );
    assert.match(text, /^imds_network_up\{network="net1"\} 1$/m);
    assert.match(text, /^imds_network_up\{network="net2"\} 0$/m);
    assert.match(text, /^imds_network_up\{network="net3"\} 0$/m);
  });

  it('counts rejections by network and reason', async () => {
    const stats = new Stats();
    stats.rejected('net1', 'rate_limited', 3);
    stats.rejected('net2', 'rate_limited');
    stats.rejected('net1', 'token_invalid');
    const text = await metricsOf(stats).render();
    assert.match(text, /^imds_rejected_requests_total\{network="net1",reason="rate_limited"\} 3$/m);
    assert.match(text, /^imds_rejected_requests_total\{network="net2",reason="rate_limited"\} 1$/m);
    assert.match(text, /^imds_rejected_requests_total\{network="net1",reason="token_invalid"\} 1$/m);
  });

  it("forgets a gone VM's no-token series, after draining what the native loop still holds for it", async () => {
    const stats = new Stats();
    let pending = 0;
    stats.addSource(() => {
      if (pending > 0) stats.noToken('net1', 'vm-a', pending);
      pending = 0;
    });
    stats.noToken('net1', 'vm-a');
    stats.noToken('net1', 'vm-b');
    stats.noToken('net2', 'vm-a');
    const metrics = metricsOf(stats);
    await metrics.render();
    pending = 2; // counted by the loop, not drained yet
    stats.forgetVms([{ id: 'vm-a', network: 'net1' }], () => false);
    const text = await metrics.render();
    assert.doesNotMatch(text, /imds_metadata_no_token_total\{network="net1",vm="vm-a"\}/);
    assert.match(text, /^imds_metadata_no_token_total\{network="net1",vm="vm-b"\} 1$/m);
    assert.match(text, /^imds_metadata_no_token_total\{network="net2",vm="vm-a"\} 1$/m, 'the same VM on another network is another series');
    stats.forgetVms([{ id: 'vm-b', network: 'net1' }], () => false);
    assert.equal(stats.noTokens.has('net1'), false, 'an empty network goes too');
  });

  it("drops a deleted network's series (requests, rejections, repairs, DHCP, up …), after draining the native loop", async () => {
    const stats = new Stats();
    let pending = 0;
    stats.addSource(() => {
      if (pending > 0) stats.addRequests('net2', [[200, pending]], [], 0, pending);
      pending = 0;
    });
    const declared = [...DECLARED];
    const dhcp = [
      { network: 'net1', up: true, restarts: 0 },
      { network: 'net2', up: true, restarts: 2 },
    ];
    const metrics = metricsOf(stats, declared, dhcp);
    for (const network of ['net1', 'net2']) {
      stats.observeRequest(network, 200, 0.001);
      stats.rejected(network, 'rate_limited');
      stats.unknownCallers(network);
      stats.spoofed(network, 1);
      stats.repaired(network, 'nft_table');
      stats.repairFailed(network);
      stats.reconcileFailed(network);
      stats.noToken(network, 'vm-a');
    }
    const series = [
      'imds_requests_total',
      'imds_request_duration_seconds_count',
      'imds_rejected_requests_total',
      'imds_unknown_caller_requests_total',
      'imds_spoofed_packets_total',
      'imds_repairs_total',
      'imds_repairs_failed_total',
      'imds_reconcile_errors_total',
      'imds_metadata_no_token_total',
      'imds_dhcp_server_up',
      'imds_dhcp_server_restarts_total',
      'imds_network_up',
    ];
    const withNet2 = (text: string): string[] => series.filter((name) => new RegExp(`^${name}\\{network="net2"`, 'm').test(text));
    assert.deepEqual(withNet2(await metrics.render()), series, 'every network-level series has net2 while it is declared');
    // net2 is deleted; its DHCP server is still stopping, and the loop answered a request for it before its socket closed.
    declared.splice(1, 1);
    pending = 1;
    const text = await metrics.render();
    assert.deepEqual(withNet2(text), [], 'none is left once it is gone');
    assert.equal(stats.requests.has('net2'), false, 'what the loop held for it was drained first, and dropped with it');
    assert.match(text, /^imds_requests_total\{network="net1",status="200"\} 1$/m, 'the other network keeps its series');
    assert.match(text, /^imds_repairs_total\{network="net1",kind="nft_table"\} 1$/m);
    assert.match(text, /^imds_dhcp_server_restarts_total\{network="net1"\} 0$/m);
  });
});

describe('inventory: onVmsGone', () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const net = (id: string, cidr: string) => networkSchema.parse({ id, cidr, service_ip: cidr.replace(/0\/24$/, '2') });
  const vm = (n: number, network = 'net1') =>
    vmSchema.parse({
      id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
      network,
      ip: network === 'net1' ? `198.51.100.${10 + n}` : `203.0.113.${10 + n}`,
      mac: `52:54:00:00:00:${n.toString(16).padStart(2, '0')}`,
      hostname: `vm${n}`,
    });

  it('names every VM that leaves a network: deleted, moved, pruned, or taken with its network', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imds-gone-'));
    dirs.push(dir);
    const gone: VmPlace[][] = [];
    const inv = Inventory.open(SqliteStore.open(dir), { dhcpDomain: 'novalocal' }, { onVmsGone: (g) => gone.push([...g]) });
    inv.createNetwork(net('net1', '198.51.100.0/24'), 'api');
    inv.createNetwork(net('net2', '203.0.113.0/24'), 'api');
    for (const n of [1, 2, 3]) inv.createVm(vm(n), 'api');
    inv.updateVm({ ...vm(1), hostname: 'renamed' });
    assert.equal(gone.length, 0, 'an update in place takes nothing away');
    inv.deleteVm(vm(1).id);
    assert.deepEqual(gone.splice(0), [[{ id: vm(1).id, network: 'net1' }]]);
    inv.updateVm(vm(2, 'net2'));
    assert.deepEqual(gone.splice(0), [[{ id: vm(2).id, network: 'net1' }]], 'moved: gone from its old network');
    inv.applyBatch({ vms: [vm(4), vm(3, 'net2')] }, { origin: 'config' });
    assert.deepEqual(gone.splice(0), [[{ id: vm(3).id, network: 'net1' }]], 'moved by a batch');
    inv.applyBatch({ vms: [vm(3, 'net2')] }, { origin: 'config', pruneOrigin: 'config' });
    assert.deepEqual(gone.splice(0), [[{ id: vm(4).id, network: 'net1' }]], 'pruned by a batch');
    inv.deleteNetwork('net2', true);
    assert.deepEqual(
      gone
        .splice(0)
        .flatMap((g) => g)
        .sort((a, b) => a.id.localeCompare(b.id)),
      [
        { id: vm(2).id, network: 'net2' },
        { id: vm(3).id, network: 'net2' },
      ],
    );
  });
});

describe('metrics_listen', () => {
  it('parses <IPv4>:<port> and [<IPv6>]:<port>, and says what is wrong otherwise', () => {
    assert.deepEqual(parseListenAddress('127.0.0.1:9178'), { ok: true, address: { host: '127.0.0.1', port: 9178 } });
    assert.deepEqual(parseListenAddress('[::1]:9178'), { ok: true, address: { host: '::1', port: 9178 } });
    assert.equal(formatListenAddress({ host: '::1', port: 9178 }), '[::1]:9178');
    const reason = (text: string): string => {
      const r = parseListenAddress(text);
      assert.ok(!r.ok, text);
      return r.reason;
    };
    assert.match(reason('9178'), /must be <IPv4 address>:<port> or \[<IPv6 address>\]:<port>/);
    assert.match(reason('::1:9178'), /must be/);
    assert.match(reason('localhost:9178'), /"localhost" is not an IPv4 address/);
    assert.match(reason('127.0.0.256:9178'), /not an IPv4 address/);
    assert.match(reason('[fe80::zz]:9178'), /not an IPv6 address/);
    assert.match(reason('127.0.0.1:0'), /port 0 is not in 1\.\.65535/);
    assert.match(reason('127.0.0.1:65536'), /port 65536 is not in 1\.\.65535/);
  });

  it('is optional, and a bad value fails the configuration naming the field and line', () => {
    assert.equal(parseConfig('log_level: info\n', 'imds.yaml').metrics_listen, undefined);
    assert.equal(parseConfig('metrics_listen: 127.0.0.1:9178\n', 'imds.yaml').metrics_listen, '127.0.0.1:9178');
    try {
      parseConfig('log_level: info\nmetrics_listen: "localhost:9178"\n', 'imds.yaml');
      assert.fail('accepted');
    } catch (err) {
      assert.ok(isImdsError(err, 'CONFIG_INVALID'), String(err));
      assert.equal(err.field, 'metrics_listen');
      assert.match(err.message, /imds\.yaml:2: metrics_listen: invalid address "localhost:9178": "localhost" is not an IPv4 address/);
    }
  });
});

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(port: number, path: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A free port on 127.0.0.1 (taken and given back). */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

describe('the metrics listener', () => {
  it('serves /metrics and / only; a render that fails answers 500 and the next one serves', async () => {
    const port = await freePort();
    let fail = false;
    const source = {
      contentType: 'text/plain; version=0.0.4; charset=utf-8',
      render: () => (fail ? Promise.reject(new Error('boom')) : Promise.resolve('m 1\n')),
    };
    const listener = new MetricsListener({ host: '127.0.0.1', port }, source, log);
    await listener.listen();
    try {
      const ok = await call(port, '/metrics');
      assert.deepEqual([ok.status, ok.headers['content-type'], ok.body], [200, source.contentType, 'm 1\n']);
      assert.equal((await call(port, '/metrics?name[]=x')).status, 200);
      const head = await call(port, '/metrics', 'HEAD');
      assert.deepEqual([head.status, head.body, head.headers['content-length']], [200, '', '4']);
      const index = await call(port, '/');
      assert.equal(index.status, 200);
      assert.match(index.body, /<a href="\/metrics">/);
      assert.equal((await call(port, '/v1/networks')).status, 404);
      assert.equal((await call(port, '/metrics/')).status, 404);
      const post = await call(port, '/metrics', 'POST');
      assert.deepEqual([post.status, post.headers['allow']], [405, 'GET, HEAD']);
      fail = true;
      assert.equal((await call(port, '/metrics')).status, 500);
      fail = false;
      assert.equal((await call(port, '/metrics')).status, 200);
    } finally {
      await listener.close();
    }
    await assert.rejects(call(port, '/metrics'), /ECONNREFUSED/, 'closed');
  });

  it('fails with METRICS_LISTEN_FAILED on a taken port, and can listen again after close', async () => {
    const port = await freePort();
    const source = { contentType: 'text/plain', render: () => Promise.resolve('') };
    const first = new MetricsListener({ host: '127.0.0.1', port }, source, log);
    await first.listen();
    const second = new MetricsListener({ host: '127.0.0.1', port }, source, log);
    await assert.rejects(second.listen(), (err) => {
      assert.ok(isImdsError(err, 'METRICS_LISTEN_FAILED'), String(err));
      assert.equal(err.field, 'metrics_listen');
      assert.match(err.message, new RegExp(`^metrics_listen: cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
      return true;
    });
    await first.close();
    await second.listen();
    assert.equal((await call(port, '/metrics')).status, 200);
    await second.close();
  });

  it('after a failed hand-over, listens again once the port is free, and gives up without throwing', async () => {
    const port = await freePort();
    const source = { contentType: 'text/plain', render: () => Promise.resolve('') };
    const holder = createServer((s) => s.destroy()).listen(port, '127.0.0.1'); // a successor still exiting
    await new Promise((resolve) => holder.once('listening', resolve));
    const listener = new MetricsListener({ host: '127.0.0.1', port }, source, log);
    await listener.relisten(300); // held throughout: logged, not thrown
    await assert.rejects(call(port, '/metrics'), /ECONNRESET|socket hang up/, 'still the holder');
    setTimeout(() => holder.close(), 300);
    await listener.relisten(10_000);
    assert.equal((await call(port, '/metrics')).status, 200);
    await listener.close();
  });
});
