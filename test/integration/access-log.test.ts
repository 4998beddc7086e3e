// Per-VM contact and the access log through the real data path, in either data plane
// (IMDS_TEST_DATA_PLANE): a VM's request count, first and last contact and last status; one access
// line per request with the documented fields and never a secret; a caller that is no VM logged at
// info with its address and MAC (once a minute) and counted; the file reopened after logrotate's
// rename and `imds reload`.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { guestRequests } from '../helpers/guest-requests.ts';
import type { Guest } from '../helpers/sandbox.ts';
import { useSandbox, type DaemonProcess, type Sandbox } from '../helpers/sandbox.ts';
import { until } from '../helpers/wait.ts';

const VM_A = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const VM_B = '6f0c3a7e-91f2-4b8a-a1c4-0f6e2b9d7c31';
const SECRET = 'user-data-secret-7f3a9c';
const PASSWORD = 'posted-password-secret-91bd';
const UNKNOWN_LINE = 'request from an address that is no VM of this network';

interface Contact {
  requests: number;
  first_seen: string;
  last_seen: string;
  last_status: number;
}
type AccessLine = Record<string, unknown>;

describe('per-VM contact and the access log', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let daemon: DaemonProcess;
  let gA: Guest;
  let gB: Guest;
  let gX: Guest;
  let gY: Guest;
  let logFile: string;
  let config: Record<string, unknown>;

  const cli = async (args: string[]) => (await sb.cli(['--admin-socket', sb.adminSocket(), ...args])).stdout;
  const contactOf = async (id: string): Promise<Contact | undefined> =>
    (JSON.parse(await cli(['vm', 'show', id, '--json'])) as { contact?: Contact }).contact;
  const lines = (file = logFile): AccessLine[] =>
    existsSync(file)
      ? readFileSync(file, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as AccessLine)
      : [];
  /** Waits for the access lines `match` picks (the native loop's are written every 50 ms). */
  const waitForLines = async (count: number, match: (l: AccessLine) => boolean, file = logFile): Promise<AccessLine[]> => {
    await until(`${count} access lines in ${file}`, () => (lines(file).filter(match).length >= count ? true : undefined));
    return lines(file).filter(match);
  };

  before(async () => {
    sb = current();
    logFile = join(sb.dir, 'main', 'state', 'access.log');
    config = sb.config({
      log_level: 'info',
      access_log: logFile,
      networks: [{ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', gateway: '198.51.100.1' }],
      vms: [
        {
          id: VM_A,
          network: 'net1',
          ip: '198.51.100.10',
          mac: '52:54:00:00:00:0a',
          hostname: 'alpha',
          user_data: `#!/bin/sh\n${SECRET}\n`,
        },
        { id: VM_B, network: 'net1', ip: '198.51.100.11', mac: '52:54:00:00:00:0b', hostname: 'bravo' },
      ],
    });
    daemon = await sb.startDaemon(sb.writeConfig(config));
    const on1 = { bridge: 'imdsb-net1', prefix: 24, metadataVia: '198.51.100.2' };
    gA = await sb.addGuest('a', { ...on1, ip: '198.51.100.10', mac: '52:54:00:00:00:0a' });
    gB = await sb.addGuest('b', { ...on1, ip: '198.51.100.11', mac: '52:54:00:00:00:0b' });
    gX = await sb.addGuest('x', { ...on1, ip: '198.51.100.77', mac: '52:54:00:00:00:7e' });
    gY = await sb.addGuest('y', { ...on1, ip: '198.51.100.78', mac: '52:54:00:00:00:7f' });
  });

  it("shows a VM's requests, first and last contact and last status in vm show and vm list", async () => {
    assert.equal(await contactOf(VM_B), undefined, 'no contact before the first request');
    const t0 = Date.now();
    const N = 5;
    const replies = await guestRequests(
      gB,
      Array.from({ length: N }, () => ({ path: '/openstack/latest/meta_data.json' })),
    );
    assert.deepEqual(
      replies.map((r) => r.status),
      Array.from({ length: N }, () => 200),
    );
    const seen = await contactOf(VM_B);
    assert.ok(seen !== undefined, 'vm show has the contact');
    assert.equal(seen.requests, N);
    assert.equal(seen.last_status, 200);
    assert.ok(Date.parse(seen.first_seen) >= t0 - 1000, `first_seen ${seen.first_seen} is this run's`);
    assert.ok(Date.parse(seen.first_seen) <= Date.parse(seen.last_seen), `${seen.first_seen} <= ${seen.last_seen}`);
    assert.ok(Date.parse(seen.last_seen) <= Date.now() + 1000);

    assert.equal((await gB.http('/openstack/latest/no-such-file')).status, 404);
    const after404 = await contactOf(VM_B);
    assert.deepEqual([after404?.requests, after404?.last_status, after404?.first_seen], [N + 1, 404, seen.first_seen]);

    const text = await cli(['vm', 'show', VM_B]);
    assert.match(text, /^requests:\s+6$/m);
    assert.match(text, /^last_status:\s+404$/m);
    assert.match(text, new RegExp(`^first_seen:\\s+${seen.first_seen.replace(/\./g, '\\.')}$`, 'm'));
    const table = (await cli(['vm', 'list'])).split('\n');
    assert.match(table[0] as string, /\bLAST_SEEN\s+LAST_STATUS\s+REQUESTS$/);
    const row = table.find((l) => l.startsWith(VM_B)) as string;
    assert.match(row, /\s404\s+6$/);
  });

  it('writes one access line per request with the documented fields, and never a secret', async () => {
    const user = await gA.http('/openstack/latest/user_data');
    assert.equal(user.status, 200);
    assert.ok(user.body.toString().includes(SECRET));
    assert.equal((await gA.http('/openstack/latest/meta_data.json?x=1', { method: 'HEAD' })).status, 200);
    const posted = await gA.http('/openstack/latest/password', { method: 'POST', data: PASSWORD });
    assert.equal(posted.status, 200);
    assert.equal((await gA.http('/openstack/latest/password')).status, 200);

    // Not necessarily in order: the native loop's lines are written up to 50 ms after their answers.
    const mine = await waitForLines(4, (l) => l['src'] === '198.51.100.10');
    const find = (method: string, path: string) => mine.find((l) => l['method'] === method && String(l['path']).startsWith(path));
    const [get, head, post] = [find('GET', '/openstack/latest/user_data'), find('HEAD', '/'), find('POST', '/')];
    assert.deepEqual(Object.keys(get ?? {}), ['time', 'network', 'vm', 'src', 'method', 'path', 'status', 'bytes', 'ms']);
    assert.deepEqual(
      { ...get, time: undefined, ms: undefined },
      {
        time: undefined,
        network: 'net1',
        vm: VM_A,
        src: '198.51.100.10',
        method: 'GET',
        path: '/openstack/latest/user_data',
        status: 200,
        bytes: user.body.length,
        ms: undefined,
      },
    );
    assert.equal(typeof get?.['ms'], 'number');
    assert.ok(Math.abs(Date.parse(String(get?.['time'])) - Date.now()) < 60_000, String(get?.['time']));
    assert.deepEqual(
      [head?.['method'], head?.['path'], head?.['status'], head?.['bytes']],
      ['HEAD', '/openstack/latest/meta_data.json?x=1', 200, 0],
    );
    assert.deepEqual([post?.['method'], post?.['path'], post?.['status']], ['POST', '/openstack/latest/password', 200]);
    const text = readFileSync(logFile, 'utf8');
    assert.ok(!text.includes(SECRET), 'no user data in the access log');
    assert.ok(!text.includes(PASSWORD), 'no password in the access log');
    assert.ok(
      !daemon.logs.some((l) => JSON.stringify(l).includes(SECRET) || JSON.stringify(l).includes(PASSWORD)),
      'nor in the daemon log',
    );
  });

  it('logs a caller that is no VM at info with its address and MAC, once a minute, and counts it', async () => {
    const counter = () => sb.metric('imds_unknown_caller_requests_total', { network: 'net1' });
    const before = counter();
    const mark = daemon.logs.length;
    assert.equal((await gX.http('/openstack/latest/meta_data.json')).status, 404);
    assert.equal((await gX.http('/latest/meta-data/instance-id')).status, 404);
    const line = await daemon.waitForAfter(mark, (l) => l['msg'] === UNKNOWN_LINE && l['src'] === '198.51.100.77');
    assert.deepEqual(
      [line['level'], line['network'], line['mac'], line['requests'], line['status']],
      [30, 'net1', '52:54:00:00:00:7e', 1, 404],
    );
    // Both requests reached the log (their access lines are written first); the second made no info line.
    const accessed = await waitForLines(2, (l) => l['src'] === '198.51.100.77' && l['vm'] === null);
    assert.deepEqual(accessed.map((l) => l['path']).sort(), ['/latest/meta-data/instance-id', '/openstack/latest/meta_data.json']);
    assert.equal(daemon.logs.slice(mark).filter((l) => l['msg'] === UNKNOWN_LINE).length, 1, 'rate-limited per address');
    assert.equal(counter() - before, 2);
  });

  it('reopens the file after a rename and `imds reload` (logrotate)', async () => {
    const rotated = `${logFile}.1`;
    renameSync(logFile, rotated);
    assert.equal((await gB.http('/openstack/latest/meta_data.json?before-reload')).status, 200);
    await waitForLines(1, (l) => l['path'] === '/openstack/latest/meta_data.json?before-reload', rotated);
    await cli(['reload']);
    assert.equal((await gB.http('/openstack/latest/meta_data.json?after-reload')).status, 200);
    await waitForLines(1, (l) => l['path'] === '/openstack/latest/meta_data.json?after-reload');
    assert.ok(!lines(rotated).some((l) => l['path'] === '/openstack/latest/meta_data.json?after-reload'), 'nothing new in the old file');
  });

  it('switches to journal lines on reload, with the same fields, and leaves the file alone', async () => {
    sb.writeConfig({ ...config, access_log: 'journal' });
    await cli(['reload']);
    const mark = daemon.logs.length;
    const before = lines().length;
    assert.equal((await gB.http('/openstack/latest/meta_data.json?journal')).status, 200);
    const line = await daemon.waitForAfter(mark, (l) => l['msg'] === 'access' && l['path'] === '/openstack/latest/meta_data.json?journal');
    assert.deepEqual(
      [line['level'], line['component'], line['network'], line['vm'], line['src'], line['method'], line['status']],
      [30, 'access', 'net1', VM_B, '198.51.100.11', 'GET', 200],
    );
    assert.equal(typeof line['bytes'], 'number');
    assert.equal(lines().length, before, 'nothing more in the file');
  });

  it('with the access log off (and no debug), still logs a caller that is no VM, whichever side answers', async () => {
    sb.writeConfig({ ...config, access_log: 'off' });
    await cli(['reload']);
    const mark = daemon.logs.length;
    assert.equal((await gY.http('/openstack/latest/meta_data.json')).status, 404);
    const line = await daemon.waitForAfter(mark, (l) => l['msg'] === UNKNOWN_LINE && l['src'] === '198.51.100.78');
    assert.deepEqual([line['mac'], line['network'], line['requests']], ['52:54:00:00:00:7f', 'net1', 1]);
    assert.equal((await gB.http('/openstack/latest/meta_data.json?off')).status, 200);
    assert.equal(daemon.logs.slice(mark).filter((l) => l['msg'] === 'access').length, 0, 'no access lines');
  });
});
