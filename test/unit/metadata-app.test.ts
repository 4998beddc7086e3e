// The metadata app's routes over real loopback sockets tagged as the listeners tag them (no root).
import { TokenKeys } from '../../src/security/tokens.ts';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '../../src/log.ts';
import { networkSchema, vmSchema } from '../../src/model/schema.ts';
import { NETWORK, type TaggedSocket } from '../../src/server/listeners.ts';
import { buildMetadataApp, type MetadataApp } from '../../src/server/metadata-app.ts';
import { MetadataIndex } from '../../src/store/metadata-index.ts';
import { probeHeaderValue, probedVmId } from '../../src/server/guest-api.ts';

const net = networkSchema.parse({ id: 'net1', cidr: '127.0.0.0/8', service_ip: '127.0.0.2' });
const other = networkSchema.parse({ id: 'net2', cidr: '127.0.0.0/8', service_ip: '127.0.0.2' });
const vm = vmSchema.parse({
  id: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
  network: 'net1',
  ip: '127.0.0.1',
  mac: '52:54:00:12:34:56',
  hostname: 'vm1',
  user_data: 'hello',
});

function get(
  port: number,
  path: string,
  method = 'GET',
): Promise<{ status: number; type: string | undefined; body: string; allow: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body, allow: res.headers['allow'] }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('metadata app', () => {
  let app: MetadataApp;
  const servers: Server[] = [];
  const ports: Record<string, number> = {};

  before(async () => {
    const index = MetadataIndex.build([net, other], [vm], { dhcpDomain: 'novalocal' });
    app = await buildMetadataApp({
      index: () => index,
      passwords: { password: () => '', setPasswordOnce: () => true },
      log: createLogger({ level: 'silent' }),
      guard: { tokens: TokenKeys.ephemeral(), limiter: undefined, stats: undefined },
    });
    for (const id of ['net1', 'net2']) {
      const server = createServer(app.handler);
      server.on('connection', (s: TaggedSocket) => (s[NETWORK] = id));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      servers.push(server);
      ports[id] = (server.address() as AddressInfo).port;
    }
  });
  after(async () => {
    for (const s of servers) await new Promise((r) => s.close(r));
    await app.app.close();
  });

  it('serves the caller of its network, with Nova content types', async () => {
    const md = await get(ports['net1'] as number, '/openstack/latest/meta_data.json');
    assert.equal(md.status, 200);
    assert.equal(md.type, 'application/json');
    assert.equal((JSON.parse(md.body) as { uuid: string }).uuid, vm.id);
    const ud = await get(ports['net1'] as number, '/openstack/latest/user_data');
    assert.deepEqual([ud.status, ud.type, ud.body], [200, 'text/plain; charset=UTF-8', 'hello']);
  });

  it('ignores trailing slashes, duplicate slashes and query strings; answers HEAD', async () => {
    assert.equal((await get(ports['net1'] as number, '/openstack/latest/meta_data.json/')).status, 200);
    assert.equal((await get(ports['net1'] as number, '//openstack//latest/user_data?x=1')).status, 200);
    const head = await get(ports['net1'] as number, '/openstack/latest/user_data', 'HEAD');
    assert.deepEqual([head.status, head.body], [200, '']);
  });

  it('answers 404 to the same address on another network, unknown paths and unknown versions', async () => {
    assert.equal((await get(ports['net2'] as number, '/openstack/latest/meta_data.json')).status, 404);
    assert.equal((await get(ports['net1'] as number, '/nope')).status, 404);
    assert.equal((await get(ports['net1'] as number, '/openstack/2019-01-01/meta_data.json')).status, 404);
    assert.equal((await get(ports['net1'] as number, '/openstack/latest/meta_data.json/extra')).status, 404);
  });

  it('refuses methods it has no route for (TRACE, PROPFIND, …) as it refuses the routed ones, never answering them as a GET', async () => {
    const port = ports['net1'] as number;
    for (const method of ['TRACE', 'PROPFIND', 'MKCOL', 'LOCK', 'COPY', 'SEARCH', 'DELETE', 'PATCH']) {
      for (const path of ['/openstack/latest/meta_data.json', '/openstack/latest/user_data', '/latest/meta-data/']) {
        const r = await get(port, path, method);
        assert.deepEqual([r.status, r.allow, r.body], [405, 'GET, HEAD', '405 Method Not Allowed\n'], `${method} ${path}`);
      }
      const pw = await get(port, '/openstack/latest/password', method);
      assert.deepEqual([pw.status, pw.allow], [400, undefined], `${method} on the password: 400, as Nova`);
    }
  });

  it("honours a probe header only with this process's secret (identity never comes from what a guest can send)", () => {
    const genuine = probeHeaderValue(vm.id);
    assert.equal(probedVmId(genuine), vm.id);
    const secret = genuine.slice(0, genuine.indexOf(' '));
    for (const forged of [
      vm.id,
      `x ${vm.id}`,
      ` ${vm.id}`,
      `${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'} ${vm.id}`,
      `${secret}x ${vm.id}`,
      secret,
    ]) {
      assert.equal(probedVmId(forged), undefined, forged);
    }
    assert.equal(probedVmId(undefined), undefined);
    assert.equal(probedVmId([genuine, genuine]), undefined, 'a repeated header is refused');
  });
});
