// The CLI's client timeout against a wedged daemon: a Unix socket server that accepts and never
// answers. The call fails with DAEMON_TIMEOUT naming the socket and the timeout, exit 3, as a line
// or as JSON under --json; $IMDS_TIMEOUT and --timeout are read, and bad values refused.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AdminClient, DEFAULT_TIMEOUT_S, LONG_TIMEOUT_S, timeoutOf } from '../../src/cli/client.ts';
import { isImdsError } from '../../src/errors.ts';

const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

describe('a wedged daemon', () => {
  let dir: string;
  let socket: string;
  let server: Server;
  const held: Socket[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'imds-wedged-'));
    socket = join(dir, 'admin.sock');
    server = createServer((conn) => held.push(conn)); // accepts, reads nothing back, never answers
    await new Promise<void>((resolve) => server.listen(socket, resolve));
  });
  after(async () => {
    for (const c of held) c.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('times the client out with DAEMON_TIMEOUT naming the socket and the timeout', async () => {
    const client = new AdminClient(socket, 200);
    await assert.rejects(client.call('GET', '/v1/status'), (err: unknown) => {
      assert.ok(isImdsError(err, 'DAEMON_TIMEOUT'), String(err));
      assert.match(err.message, new RegExp(`the daemon at ${socket} did not answer GET /v1/status within 0.2 s`));
      assert.match(err.message, /--timeout/);
      assert.deepEqual(err.details, { socket, timeout_s: 0.2, method: 'GET', path: '/v1/status' });
      return true;
    });
  });

  it('says a change may still complete when the call was not a read', async () => {
    await assert.rejects(new AdminClient(socket, 100).call('DELETE', '/v1/vms/x'), /may still complete the change/);
  });

  it('ends `imds status` with exit 3 and the message (--timeout), or the JSON error (IMDS_TIMEOUT, --json)', async () => {
    const line = await run(['--admin-socket', socket, '--timeout', '0.3', 'status']);
    assert.equal(line.code, 3);
    assert.equal(line.stdout, '');
    assert.match(line.stderr, new RegExp(`^imds: DAEMON_TIMEOUT: the daemon at ${socket} did not answer GET /v1/status within 0.3 s`));

    const json = await run(['--admin-socket', socket, 'status', '--json'], { IMDS_TIMEOUT: '0.3' });
    assert.equal(json.code, 3);
    const doc = JSON.parse(json.stderr) as { error: { code: string; exit: number; details: { socket: string; timeout_s: number } } };
    assert.equal(doc.error.code, 'DAEMON_TIMEOUT');
    assert.equal(doc.error.exit, 3);
    assert.deepEqual([doc.error.details.socket, doc.error.details.timeout_s], [socket, 0.3]);
  });
});

describe('timeoutOf', () => {
  it('takes --timeout over $IMDS_TIMEOUT over the default (longer for kernel work), 0 for no limit', () => {
    const saved = process.env['IMDS_TIMEOUT'];
    try {
      delete process.env['IMDS_TIMEOUT'];
      assert.equal(timeoutOf(undefined), DEFAULT_TIMEOUT_S * 1000);
      assert.equal(timeoutOf(undefined, true), LONG_TIMEOUT_S * 1000);
      process.env['IMDS_TIMEOUT'] = '7';
      assert.equal(timeoutOf(undefined, true), 7000);
      assert.equal(timeoutOf('2.5'), 2500);
      assert.equal(timeoutOf('0'), 0);
      assert.throws(() => timeoutOf('soon'), /--timeout: "soon" is not a number of seconds/);
      process.env['IMDS_TIMEOUT'] = '-1';
      assert.throws(() => timeoutOf(undefined), /IMDS_TIMEOUT: "-1" is not a number of seconds/);
    } finally {
      if (saved === undefined) delete process.env['IMDS_TIMEOUT'];
      else process.env['IMDS_TIMEOUT'] = saved;
    }
  });
});
