// The fast path: its strict reader, and its behaviour on real sockets next to node:http (no root).
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { networkSchema, vmSchema } from '../../src/model/schema.ts';
import { parseHead } from '../../src/server/fast-path.ts';
import { LoopbackApp } from '../helpers/loopback-app.ts';

describe('fast path reader', () => {
  it('takes complete GET and HEAD heads, with keep-alive as HTTP says', () => {
    assert.deepEqual(parseHead('GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nAccept: */*'), {
      method: 'GET',
      target: '/latest/meta-data/',
      keepAlive: true,
      token: undefined,
    });
    assert.deepEqual(parseHead('HEAD / HTTP/1.0'), { method: 'HEAD', target: '/', keepAlive: false, token: undefined });
    assert.equal(parseHead('GET / HTTP/1.0\r\nConnection: Keep-Alive')?.keepAlive, true);
    assert.equal(parseHead('GET / HTTP/1.1\r\nConnection: close')?.keepAlive, false);
    assert.equal(parseHead('GET / HTTP/1.1\r\nContent-Length: 0')?.method, 'GET');
  });

  it('reads the session token header, case-insensitively, without its ttl sibling; two headers join as node:http joins them', () => {
    assert.equal(parseHead('GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token:  AbC-_1 \r\nHost: x')?.token, 'AbC-_1');
    assert.equal(parseHead('GET / HTTP/1.1\r\nx-aws-ec2-metadata-token-ttl-seconds: 60')?.token, undefined);
    assert.equal(parseHead('GET / HTTP/1.1\r\nX-AWS-EC2-METADATA-TOKEN: a\r\nx-aws-ec2-metadata-token: b')?.token, 'a, b');
  });

  it('leaves everything else to node:http', () => {
    for (const head of [
      'POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 3',
      'GET / HTTP/1.1\r\nContent-Length: 5',
      'GET / HTTP/1.1\r\nTransfer-Encoding: chunked',
      'GET / HTTP/1.1\r\nUpgrade: websocket',
      'GET / HTTP/1.1\r\nExpect: 100-continue',
      'GET / HTTP/2.0',
      'GET http://169.254.169.254/ HTTP/1.1',
      'GET /a b HTTP/1.1',
      'GET /\x01 HTTP/1.1',
      'GET / HTTP/1.1\r\n folded: value',
      'GET / HTTP/1.1\r\nBad Header: x',
      'GET / HTTP/1.1\r\nX: a\nY: b',
      'get / HTTP/1.1',
    ]) {
      assert.equal(parseHead(head), undefined, JSON.stringify(head));
    }
  });
});

describe('fast path on the wire', () => {
  const app = new LoopbackApp();
  const VM = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
  before(() =>
    app.start(
      [networkSchema.parse({ id: 'net1', cidr: '127.0.0.0/8', service_ip: '127.0.0.2' })],
      [vmSchema.parse({ id: VM, network: 'net1', ip: '127.0.0.1', mac: '52:54:00:12:34:56', hostname: 'vm1', user_data: 'hello' })],
      'net1',
      { fast: true, headersTimeoutMs: 400 },
    ),
  );
  after(() => app.stop());

  /** Sends the chunks (with pauses), collects everything until the server closes or `idleMs` passes. */
  function exchange(
    chunks: string[],
    options: { pauseMs?: number; idleMs?: number; from?: string } = {},
  ): Promise<{ text: string; closedByServer: boolean; ms: number }> {
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const s = connect({
        port: app.address.port,
        host: app.address.host,
        ...(options.from === undefined ? {} : { localAddress: options.from }),
      });
      let text = '';
      let timer: NodeJS.Timeout | undefined;
      const finish = (closedByServer: boolean) => {
        clearTimeout(timer);
        s.destroy();
        resolve({ text, closedByServer, ms: performance.now() - started });
      };
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => finish(false), options.idleMs ?? 300);
      };
      s.on('data', (d) => {
        text += d.toString('latin1');
        arm();
      });
      s.on('end', () => finish(true));
      s.on('error', reject);
      const send = async () => {
        for (const c of chunks) {
          s.write(c);
          if (options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
        }
        arm();
      };
      s.on('connect', () => {
        send().catch(reject);
      });
    });
  }

  it('answers pipelined requests in order on one connection, keeping it alive', async () => {
    const r = await exchange([
      'GET /openstack/latest/user_data HTTP/1.1\r\nHost: x\r\n\r\nGET /latest/meta-data/hostname HTTP/1.1\r\n\r\n',
    ]);
    const answers = r.text.split('HTTP/1.1 ').filter(Boolean);
    assert.equal(answers.length, 2);
    assert.match(
      answers[0] as string,
      new RegExp(
        '^200 OK\r\ncontent-type: text/plain; charset=UTF-8\r\ncontent-length: 5\r\n' +
          'Date: .+ GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhello$',
      ),
    );
    assert.match(answers[1] as string, /\r\n\r\nvm1\.novalocal$/);
    assert.equal(r.closedByServer, false);
  });

  it('sends the same headers node:http and Fastify would, but for the order', async () => {
    const fast = await exchange(['GET /openstack/latest/user_data HTTP/1.1\r\n\r\n']);
    const slow = await exchange(['GET /openstack/latest/user_data HTTP/1.1\r\n', '\r\n'], { pauseMs: 50 });
    const names = (t: string) =>
      t
        .split('\r\n\r\n')[0]
        ?.split('\r\n')
        .slice(1)
        .map((l) => l.split(':')[0]?.toLowerCase())
        .sort();
    assert.deepEqual(names(fast.text), names(slow.text));
    assert.equal(fast.text.split('\r\n\r\n')[1], slow.text.split('\r\n\r\n')[1]);
  });

  it('hands a partial head to node:http, which still answers it', async () => {
    const r = await exchange(['GET /openstack/late', 'st/user_data HTTP/1.1\r\nHost: x\r\n', '\r\n'], { pauseMs: 30 });
    assert.match(r.text, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nhello$/);
  });

  it('hands a POST to the Fastify app, then keeps answering on that connection', async () => {
    const r = await exchange(
      ['POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 4\r\n\r\nc2Vj', 'GET /openstack/latest/password HTTP/1.1\r\n\r\n'],
      { pauseMs: 30 },
    );
    const answers = r.text.split('HTTP/1.1 ').filter(Boolean);
    assert.equal(answers.length, 2, r.text);
    assert.match(answers[0] as string, /^200 /);
    assert.match(answers[1] as string, /\r\n\r\nc2Vj$/);
    assert.equal(app.passwords.get(VM), 'c2Vj');
  });

  it('answers HEAD without a body, and closes when asked', async () => {
    const head = await exchange(['HEAD /openstack/latest/user_data HTTP/1.1\r\nConnection: close\r\n\r\n'], { idleMs: 1000 });
    assert.match(head.text, /content-length: 5\r\n/);
    assert.match(head.text, /Connection: close\r\n\r\n$/);
    assert.equal(head.closedByServer, true);
  });

  it('answers 408 and closes a connection that sends nothing', async () => {
    const r = await exchange([], { idleMs: 3000 });
    assert.equal(r.closedByServer, true);
    assert.match(r.text, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.ok(r.ms >= 350 && r.ms < 2000, `${r.ms} ms for a 400 ms headers timeout`);
  });

  it('answers 404 to a caller that is not a VM and rejects a malformed request', async () => {
    // 127.0.0.3 is in the network but no VM's: 404 for everything but `/`, on the fast path (a whole
    // head) and through node:http (a head in two parts). The VM's own address gets 200 (control).
    const path = '/openstack/latest/meta_data.json';
    const stranger = await exchange([`GET ${path} HTTP/1.1\r\nConnection: close\r\n\r\n`], { from: '127.0.0.3', idleMs: 1000 });
    assert.match(stranger.text, /^HTTP\/1\.1 404 Not Found\r\n[\s\S]*\r\n\r\n404 Not Found\n\nThe resource could not be found\.\n$/);
    const strangerSlow = await exchange([`GET ${path} HTTP/1.1\r\n`, 'Connection: close\r\n\r\n'], {
      from: '127.0.0.3',
      pauseMs: 50,
      idleMs: 1000,
    });
    assert.match(strangerSlow.text, /^HTTP\/1\.1 404 Not Found\r\n/);
    assert.match(
      (await exchange([`GET / HTTP/1.1\r\nConnection: close\r\n\r\n`], { from: '127.0.0.3', idleMs: 1000 })).text,
      /^HTTP\/1\.1 200 OK\r\n/,
      '`/` answers anyone',
    );
    const vm = await exchange([`GET ${path} HTTP/1.1\r\nConnection: close\r\n\r\n`], { from: '127.0.0.1', idleMs: 1000 });
    assert.match(vm.text, /^HTTP\/1\.1 200 OK\r\n[\s\S]*"uuid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"/, 'the VM itself gets its document');

    const bad = await exchange(['GARBAGE\r\n\r\n'], { idleMs: 1000 });
    assert.match(bad.text, /^HTTP\/1\.1 400 /);
  });
});
