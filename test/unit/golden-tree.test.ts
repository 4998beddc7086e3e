// Golden files of the whole guest-visible tree for two VMs: every OpenStack version's listing and
// files, every EC2 version crawled the way cloud-init crawls it. The goldens are our fixtures,
// checked by hand against metadata-api.md; regenerate with IMDS_UPDATE_GOLDEN=1 after a deliberate change
// (only then is a golden file written: a missing one fails).
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { EC2_VERSIONS } from '../../src/documents/ec2.ts';
import { OPENSTACK_VERSIONS } from '../../src/documents/versions.ts';
import { networkSchema, vmSchema } from '../../src/model/schema.ts';
import { LoopbackApp } from '../helpers/loopback-app.ts';

const FULL = {
  network: networkSchema.parse({
    id: 'full',
    cidr: '127.0.0.0/8',
    service_ip: '127.0.0.2',
    gateway: '127.0.0.254',
    mtu: 1450,
    dns: ['192.0.2.53', '192.0.2.54'],
    vendor_data: { 'cloud-init': '#cloud-config\nruncmd: [[touch, /vendor]]\n', site: 'east' },
  }),
  vm: vmSchema.parse({
    id: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
    network: 'full',
    ip: '127.0.0.1',
    mac: '52:54:00:12:34:56',
    hostname: 'web-01',
    name: 'Web server 01',
    user_data: '#cloud-config\nhostname: web-01\n',
    public_keys: {
      deploy: 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ deploy@build',
      ops: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOps ops@example',
    },
    meta: { role: 'web', admin_username: 'ops' },
    availability_zone: 'az-east',
    project_id: '8e1f0c2d4b6a49c7a3e5d7f9b1c2e4a6',
    instance_type: 'm1.large',
    image_id: 'c8a2f2f0-7e5e-4b8e-9a51-3c9f1f1e2d4b',
    public_ipv4: '203.0.113.77',
    security_groups: ['default', 'web'],
    vendor_data: { site: 'east-2', vm: true },
  }),
};
const BARE = {
  network: networkSchema.parse({ id: 'bare', cidr: '127.0.0.0/8', service_ip: '127.0.0.2', dhcp: true }),
  vm: vmSchema.parse({
    id: '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d',
    network: 'bare',
    ip: '127.0.0.1',
    mac: '52:54:00:00:00:0c',
    hostname: 'bare',
  }),
};

type Tree = Record<string, { status: number; type: string | undefined; body: string }>;

async function crawl(app: LoopbackApp): Promise<Tree> {
  const tree: Tree = {};
  const get = async (path: string): Promise<string> => {
    const r = await app.fetch(path);
    const body = r.body.toString().replace(/"random_seed": "[A-Za-z0-9+/=]{684}"/, '"random_seed": "<684 base64 characters>"');
    tree[path] = { status: r.status, type: r.type, body };
    return r.status === 200 ? body : '';
  };
  await get('/');
  for (const v of (await get('/openstack')).split('\n')) {
    for (const file of (await get(`/openstack/${v}`)).split('\n')) await get(`/openstack/${v}/${file}`);
    await get(`/openstack/${v}/user_data`);
  }
  const walk = async (base: string): Promise<void> => {
    for (const line of (await get(base)).split('\n').filter(Boolean)) {
      if (line.endsWith('/')) await walk(`${base}${line}`);
      else if (/^\d+=/.test(line)) await walk(`${base}${line.split('=')[0]}/`);
      else await get(`${base}${line}`);
    }
  };
  for (const v of [...EC2_VERSIONS, 'latest']) {
    await get(`/${v}`);
    await get(`/${v}/user-data`);
    await walk(`/${v}/meta-data/`);
  }
  return tree;
}

for (const [name, fixture, fast] of [
  ['full', FULL, false],
  ['bare', BARE, false],
  ['full', FULL, true],
  ['bare', BARE, true],
] as const) {
  describe(`golden tree: ${name} (${fast ? 'fast path' : 'Fastify app'})`, () => {
    const app = new LoopbackApp();
    before(() => app.start([fixture.network], [fixture.vm], fixture.network.id, { fast }));
    after(() => app.stop());

    it('matches the golden file', async () => {
      const tree = await crawl(app);
      const file = new URL(`../fixtures/golden/tree-${name}.json`, import.meta.url);
      // The Fastify app's crawl writes the file; the fast path's is always compared with it.
      if (process.env['IMDS_UPDATE_GOLDEN'] === '1' && !fast) writeFileSync(file, `${JSON.stringify(tree, null, 1)}\n`);
      assert.ok(
        existsSync(file),
        `the golden file ${file.pathname} is missing; after checking the tree by hand, write it with: IMDS_UPDATE_GOLDEN=1 node ` +
          `--import tsx --test test/unit/golden-tree.test.ts`,
      );
      assert.deepEqual(tree, JSON.parse(readFileSync(file, 'utf8')));
    });

    it('lists only what loads: every listed entry answers 200', async () => {
      const tree = await crawl(app);
      const listed = Object.entries(tree).filter(([p]) => !p.endsWith('/user_data') && !p.endsWith('/user-data'));
      for (const [path, r] of listed) assert.equal(r.status, 200, `${path} was listed but answers ${r.status}`);
      assert.equal(
        Object.keys(tree).filter((p) => p.startsWith('/openstack/') && p.endsWith('/meta_data.json')).length,
        OPENSTACK_VERSIONS.length + 1,
      );
    });
  });
}
