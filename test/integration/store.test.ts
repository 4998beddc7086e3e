// Store safety end to end, as root, against the real daemon: a backup taken while it serves (and
// writes), restore with the daemon stopped, the copy taken before a schema migration, export and
// import round trips (also into a second, empty daemon), `vm show --json` fed back, prune and dry
// run, and the password set by the operator and read by the guest.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { parse, stringify } from 'yaml';
import { SCHEMA_VERSION } from '../../src/store/sqlite-store.ts';
import { MAIN, Sandbox, sh, useSandbox, type DaemonProcess, type Guest } from '../helpers/sandbox.ts';

const VM1 = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const PASSWORD = 'c2VjcmV0LXBhc3N3b3JkLWZvci10ZXN0';
const bulkId = (i: number): string => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
const mode = (path: string): number => statSync(path).mode & 0o777;

/** The VMs and password rows in a store file (opened read-only: the file must be one whole database). */
function storeContents(file: string): { vms: string[]; passwords: Map<string, string>; integrity: string } {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return {
      vms: (db.prepare('SELECT id FROM vms').pluck().all() as string[]).sort(),
      passwords: new Map(
        (db.prepare('SELECT vm, value FROM passwords').all() as { vm: string; value: string }[]).map((r) => [r.vm, r.value]),
      ),
      integrity: db.prepare('PRAGMA integrity_check').pluck().get() as string,
    };
  } finally {
    db.close();
  }
}

describe('store: backup, restore, migration copy, export and import', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let cfgPath: string;
  let daemon: DaemonProcess;
  let guest: Guest;
  const imds = (args: string[], options: { allowFailure?: boolean; stdin?: string; socket?: string } = {}) =>
    sh([process.execPath, MAIN, '--admin-socket', options.socket ?? sb.adminSocket(), ...args], options);
  const json = async <T>(args: string[], socket?: string): Promise<T> =>
    JSON.parse((await imds([...args, '--json'], socket === undefined ? {} : { socket })).stdout) as T;
  const vmIds = async (): Promise<string[]> => (await json<{ id: string }[]>(['vm', 'list'])).map((v) => v.id).sort();
  const file = (name: string): string => join(sb.dir, name);

  before(async () => {
    sb = current();
    cfgPath = sb.writeConfig(sb.config({ log_level: 'debug' }));
    daemon = await sb.startDaemon(cfgPath);
    await imds(['network', 'add', 'net1', '--cidr', '198.51.100.0/24', '--service-ip', '198.51.100.2']);
    await imds(['network', 'add', 'net2', '--cidr', '203.0.113.0/24', '--service-ip', '203.0.113.2']);
    guest = await sb.addGuest('one', { bridge: 'imdsb-net1', ip: '198.51.100.10', mac: '52:54:00:12:34:56', metadataVia: '198.51.100.2' });
    await imds(
      ['vm', 'add', VM1, '--network', 'net1', '--ip', '198.51.100.10', '--mac', '52:54:00:12:34:56', '--hostname', 'one'].concat([
        '--user-data',
        '#cloud-config\nhostname: one\n',
        '--root-device',
        '/dev/sda',
        '--meta',
        'role=web',
      ]),
    );
    await imds([
      'vm',
      'add',
      bulkId(900),
      '--network',
      'net2',
      '--ip',
      '203.0.113.50',
      '--mac',
      '52:54:00:00:09:00',
      '--hostname',
      'other',
    ]);
  });

  it('shows root_device_name in `vm show` and the admin API', async () => {
    assert.equal((await json<{ root_device_name?: string }>(['vm', 'show', VM1])).root_device_name, '/dev/sda');
    assert.match((await imds(['vm', 'show', VM1])).stdout, /^root_device_name:\s+\/dev\/sda$/m);
  });

  it('sets the password the guest reads, refuses a second one unless forced, and never logs it', async () => {
    const set = await imds(['vm', 'password', 'set', VM1], { stdin: `${PASSWORD}\n` });
    assert.equal(set.stdout, 'password set\n');
    const read = await guest.http('/openstack/latest/password');
    assert.deepEqual([read.status, read.body.toString()], [200, PASSWORD]);
    const posted = await guest.http('/openstack/latest/password', { method: 'POST', data: 'from-the-guest' });
    assert.equal(posted.status, 409, 'the password is set: the guest cannot post another');
    const again = await imds(['vm', 'password', 'set', VM1], { stdin: 'other\n', allowFailure: true });
    assert.equal(again.code, 5);
    assert.match(again.stderr, /^imds: ALREADY_EXISTS: VM .* already has a password/);
    const empty = await imds(['vm', 'password', 'set', VM1, '--force'], { stdin: '\n', allowFailure: true });
    assert.equal(empty.code, 2);
    writeFileSync(file('pw'), `replaced-${PASSWORD}\n`);
    await imds(['vm', 'password', 'set', VM1, '--from-file', file('pw'), '--force']);
    assert.equal((await guest.http('/openstack/latest/password')).body.toString(), `replaced-${PASSWORD}`);
    await imds(['vm', 'password', 'clear', VM1]);
    assert.equal((await guest.http('/openstack/latest/password')).body.toString(), '');
    await imds(['vm', 'password', 'set', VM1], { stdin: PASSWORD });
    assert.equal((await imds(['vm', 'password', VM1])).stdout, `${PASSWORD}\n`);
    const logged = JSON.stringify(daemon.logs);
    assert.ok(!logged.includes(PASSWORD), 'the password is in no log line');
  });

  it('takes a backup while the daemon serves and writes; it opens and holds the VMs', async () => {
    const vms = Array.from({ length: 300 }, (_, i) => ({
      id: bulkId(i),
      network: 'net1',
      ip: `198.51.100.${(i % 200) + 20}`,
      mac: `52:54:00:00:${Math.floor(i / 256)
        .toString(16)
        .padStart(2, '0')}:${(i % 256).toString(16).padStart(2, '0')}`,
      hostname: `bulk${i}`,
    }));
    // Two networks' worth of addresses: the last 100 go to net2 to stay unique.
    for (const v of vms.slice(200)) Object.assign(v, { network: 'net2', ip: `203.0.113.${Number(v.ip.split('.')[3]) + 50}` });
    writeFileSync(file('bulk.yaml'), stringify({ vms }));
    const [imported, backup] = await Promise.all([
      imds(['vm', 'import', file('bulk.yaml')]),
      imds(['store', 'backup', file('during.sqlite')]),
    ]);
    assert.match(imported.stdout, /VMs 300 created/);
    assert.match(backup.stdout, /^store backed up to .*during\.sqlite \(schema version \d+: 2 networks, (2|302) VMs, 1 passwords\)$/m);
    assert.equal(mode(file('during.sqlite')), 0o600);
    const during = storeContents(file('during.sqlite'));
    assert.equal(during.integrity, 'ok');
    assert.ok([2, 302].includes(during.vms.length), `all of the import or none of it: ${during.vms.length}`);
    assert.equal(during.passwords.get(VM1), PASSWORD);

    const r = await json<{ vms: number; via: string }>(['store', 'backup', file('after.sqlite')]);
    assert.deepEqual([r.vms, r.via], [302, 'daemon']);
    assert.ok(!existsSync(`${file('after.sqlite')}-wal`), 'one file');
    const exists = await imds(['store', 'backup', file('after.sqlite')], { allowFailure: true });
    assert.equal(exists.code, 5);
    assert.match(exists.stderr, /^imds: FILE_EXISTS: .*after\.sqlite exists already; use --force/);
    await imds(['store', 'backup', file('after.sqlite'), '--force']);
    assert.equal(storeContents(file('after.sqlite')).vms.length, 302);
    const stateDir = join(sb.dir, 'main', 'state');
    assert.deepEqual(
      readdirSync(stateDir).filter((f) => f.includes('online') || f.includes('tmp')),
      [],
      'the daemon left no temporary copy',
    );
  });

  it('feeds `vm show --json` back to `vm import`', async () => {
    const shown = (await imds(['vm', 'show', VM1, '--json'])).stdout;
    writeFileSync(file('one.json'), shown);
    await imds(['vm', 'rm', VM1]);
    assert.equal((await guest.http('/openstack/latest/meta_data.json')).status, 404);
    const r = await json<{ vms: { created: string[] } }>(['vm', 'import', file('one.json')]);
    assert.deepEqual(r.vms.created, [VM1]);
    const strip = (text: string) => {
      const { contact: _c, password_set: _p, ...rest } = JSON.parse(text) as Record<string, unknown>;
      return rest;
    };
    assert.deepEqual(strip((await imds(['vm', 'show', VM1, '--json'])).stdout), strip(shown));
    const meta = JSON.parse((await guest.http('/openstack/latest/meta_data.json')).body.toString()) as { meta: Record<string, string> };
    assert.deepEqual(meta.meta, { role: 'web' });
    assert.equal((await guest.http('/openstack/latest/user_data')).body.toString(), '#cloud-config\nhostname: one\n');
    await imds(['vm', 'password', 'set', VM1], { stdin: PASSWORD }); // removed with the VM
  });

  it('exports what an empty daemon imports and exports again, the same document', async () => {
    const stdout = (await imds(['export'])).stdout;
    await imds(['export', '-o', file('export.yaml')]);
    assert.equal(readFileSync(file('export.yaml'), 'utf8'), stdout, '-o writes what stdout shows');
    assert.equal(mode(file('export.yaml')), 0o600);
    const doc = parse(stdout) as { networks: { id: string }[]; vms: { id: string; password?: string; user_data?: string }[] };
    assert.deepEqual(
      doc.networks.map((n) => n.id),
      ['net1', 'net2'],
    );
    assert.equal(doc.vms.length, 302);
    assert.ok(
      doc.vms.every((v) => v.password === undefined),
      'no password without --include-secrets',
    );
    assert.equal(doc.vms.find((v) => v.id === VM1)?.user_data, '#cloud-config\nhostname: one\n', 'text user data as text');
    const secret = (await imds(['export', '--include-secrets'])).stdout;
    assert.equal((parse(secret) as typeof doc).vms.find((v) => v.id === VM1)?.password, PASSWORD);
    writeFileSync(file('secret.yaml'), secret);

    const other = new Sandbox();
    try {
      await other.setup();
      const otherCfg = other.writeConfig(other.config({ log_level: 'info' }));
      await other.startDaemon(otherCfg);
      const socket = other.adminSocket();
      const r = await json<{ networks: { created: string[] }; vms: { created: string[] } }>(['vm', 'import', file('secret.yaml')], socket);
      assert.deepEqual([r.networks.created.length, r.vms.created.length], [2, 302]);
      assert.equal((await imds(['export', '--include-secrets'], { socket })).stdout, secret, 'the round trip gives the same document');
      assert.equal((await imds(['export', '--format', 'json'], { socket })).stdout, (await imds(['export', '--format', 'json'])).stdout);
      assert.equal((await imds(['vm', 'password', VM1], { socket })).stdout, `${PASSWORD}\n`, 'the password moved with the VM');
      await other.cleanupDaemons();
    } finally {
      await other.cleanup();
    }
  });

  it('prunes to the file with --prune, after a dry run that changes nothing', async () => {
    const keep = { vms: [{ id: bulkId(0), network: 'net1', ip: '198.51.100.20', mac: '52:54:00:00:00:00', hostname: 'bulk0' }] };
    writeFileSync(file('keep.yaml'), stringify(keep));
    const before = await vmIds();
    const dry = await imds(['vm', 'import', file('keep.yaml'), '--prune', '--dry-run']);
    // net1's API VMs not in the file: VM1 and bulk1..199; net2's VMs stay (not named by the file).
    assert.match(
      dry.stdout,
      new RegExp(
        '^dry run, nothing was changed:\nnetworks: 0 to create, 0 to update, 0 unchanged, 0 to delete\n' +
          'VMs: 0 to create, 0 to update, 1 unchanged, 200 to delete\n',
      ),
    );
    assert.equal(dry.stdout.split('\n').filter((l) => l.startsWith('- vm ')).length, 200);
    assert.ok(dry.stdout.includes(`- vm ${VM1}\n`));
    assert.deepEqual(await vmIds(), before, 'the dry run changed nothing');
    assert.equal((await guest.http('/openstack/latest/meta_data.json')).status, 200);

    const r = await json<{ vms: { deleted: string[] } }>(['vm', 'import', file('keep.yaml'), '--prune']);
    assert.equal(r.vms.deleted.length, 200);
    const left = await json<{ id: string; network: string }[]>(['vm', 'list']);
    assert.equal(left.filter((v) => v.network === 'net1').length, 1);
    assert.equal(left.filter((v) => v.network === 'net2').length, 101);
    assert.equal((await guest.http('/openstack/latest/meta_data.json')).status, 404, 'a pruned VM is not served');
  });

  it('undoes the whole import when the kernel refuses one of its networks', async () => {
    const before = (await imds(['export', '--include-secrets'])).stdout;
    // The export, plus a network the kernel cannot build (its uplink does not exist) and a VM on
    // it, one VM renamed and one left out (--prune-all deletes it).
    const doc = parse(before, { customTags: ['binary'] }) as { networks: Record<string, unknown>[]; vms: Record<string, unknown>[] };
    doc.networks.push({ id: 'net3', cidr: '192.0.2.0/24', service_ip: '192.0.2.2', uplink: 'nosuch0' });
    doc.vms = doc.vms.slice(1).map((v) => (v['id'] === bulkId(0) ? { ...v, hostname: 'renamed' } : v));
    doc.vms.push({ id: bulkId(700), network: 'net3', ip: '192.0.2.10', mac: '52:54:00:00:07:00', hostname: 'new3' });
    writeFileSync(file('refused.yaml'), stringify(doc, { customTags: ['binary'] }));
    const r = await imds(['vm', 'import', file('refused.yaml'), '--prune-all'], { allowFailure: true });
    assert.equal(r.code, 5, r.stderr);
    assert.match(
      r.stderr,
      /^imds: KERNEL_CONFLICT: network net3 cannot be built, so the import was undone, nothing was changed: .*nosuch0/,
    );
    assert.equal((await imds(['export', '--include-secrets'])).stdout, before, 'every record as before, the pruned ones back');
    assert.ok(!(await sb.namespaces()).includes(`${sb.nsPrefix}net3`), 'the refused network was removed from the kernel');
    const served = await json<{ id: string; state: string }[]>(['network', 'list']);
    assert.deepEqual(
      served.map((n) => [n.id, n.state]),
      [
        ['net1', 'serving'],
        ['net2', 'serving'],
      ],
    );
  });

  it('restores a backup with the daemon stopped, keeping the store it replaced', async () => {
    const running = await imds(['store', 'restore', file('after.sqlite'), '--config', cfgPath], { allowFailure: true });
    assert.equal(running.code, 3);
    assert.match(running.stderr, /^imds: DAEMON_RUNNING: the daemon \(pid \d+\) is running; stop it first/);
    await daemon.stop();
    const stateDir = join(sb.dir, 'main', 'state');
    writeFileSync(file('junk.sqlite'), 'not a store\n'.repeat(500));
    const junk = await imds(['store', 'restore', file('junk.sqlite'), '--config', cfgPath], { allowFailure: true });
    assert.equal(junk.code, 2);
    assert.match(junk.stderr, /^imds: STORE_INVALID: .*junk\.sqlite: not an SQLite database/);
    assert.ok(!readdirSync(stateDir).some((f) => f.includes('before-restore')), 'a refused file changes nothing');

    const r = await json<{ vms: number; previous: string }>(['store', 'restore', file('after.sqlite'), '--config', cfgPath]);
    assert.equal(r.vms, 302);
    assert.match(r.previous, /imds\.sqlite\.before-restore-\d{8}T\d{6}Z\.bak$/);
    assert.equal(storeContents(r.previous).vms.length, 102, 'the replaced store is kept whole');
    daemon = await sb.startDaemon(cfgPath);
    assert.equal((await vmIds()).length, 302);
    const meta = await guest.http('/openstack/latest/meta_data.json');
    assert.equal(meta.status, 200, 'the restored VM is served');
    assert.equal((await guest.http('/openstack/latest/password')).body.toString(), PASSWORD);
  });

  it('copies the store before migrating it from an older schema, and logs where', async () => {
    await daemon.stop();
    const stateDir = join(sb.dir, 'main', 'state');
    const store = join(stateDir, 'imds.sqlite');
    const db = new Database(store);
    db.pragma('application_id = 0');
    db.pragma('user_version = 1'); // the store as imds 0.1.0 (schema version 1) left it
    db.close();
    daemon = await sb.startDaemon(cfgPath);
    const line = await daemon.waitFor((l) => l['msg'] === 'store copied before its schema migration');
    const copy = line['backup'] as string;
    assert.deepEqual([line['from'], line['to']], [1, SCHEMA_VERSION]);
    assert.match(copy, /imds\.sqlite\.v1-\d{8}T\d{6}Z\.bak$/);
    assert.equal(mode(copy), 0o600);
    const raw = new Database(copy, { readonly: true });
    assert.equal(raw.pragma('user_version', { simple: true }), 1);
    raw.close();
    assert.equal(storeContents(copy).vms.length, 302);
    assert.equal((await guest.http('/openstack/latest/meta_data.json')).status, 200);
    await daemon.stop();
    const again = await sb.startDaemon(cfgPath);
    assert.ok(!again.logs.some((l) => l['msg'] === 'store copied before its schema migration'), 'once migrated, no copy');
    daemon = again;
  });

  it('backs up from the store file with the daemon stopped (--config)', async () => {
    await daemon.stop();
    const r = await json<{ via: string; vms: number }>(['store', 'backup', file('stopped.sqlite'), '--config', cfgPath]);
    assert.deepEqual([r.via, r.vms], ['file', 302]);
    assert.equal(storeContents(file('stopped.sqlite')).integrity, 'ok');
    daemon = await sb.startDaemon(cfgPath);
    const live = await json<{ via: string }>(['store', 'backup', file('live.sqlite'), '--config', cfgPath]);
    assert.equal(live.via, 'daemon', 'with the daemon running, --config goes through it');
  });
});
