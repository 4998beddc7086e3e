// The metadata app over real loopback sockets, tagged with a network as NetnsListeners tags them
// (no root, no namespaces): for unit and golden tests of the guest-facing tree.
import { TokenKeys } from '../../src/security/tokens.ts';
import type { GuestGuard } from '../../src/server/guest-guard.ts';
import { Stats } from '../../src/stats.ts';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../../src/log.ts';
import type { Network, Vm } from '../../src/model/schema.ts';
import { createFastPath } from '../../src/server/fast-path.ts';
import { guestServer } from '../../src/server/listeners.ts';
import { buildMetadataApp, type MetadataApp } from '../../src/server/metadata-app.ts';
import { MetadataIndex } from '../../src/store/metadata-index.ts';

export interface Reply {
  status: number;
  type: string | undefined;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export class LoopbackApp {
  readonly passwords = new Map<string, string>();
  /** Tokens under an in-memory key; no rate limit unless a test sets one. */
  guard: GuestGuard = { tokens: TokenKeys.ephemeral(), limiter: undefined, stats: new Stats() };
  private app: MetadataApp | undefined;
  private server: Server | undefined;
  private port = 0;

  /** `fast`: put the fast path in front of the Fastify app, as the daemon does by default. */
  async start(networks: Network[], vms: Vm[], tag: string, options: { fast?: boolean; headersTimeoutMs?: number } = {}): Promise<void> {
    const index = MetadataIndex.build(networks, vms, { dhcpDomain: 'novalocal' });
    const passwords = {
      password: (id: string) => this.passwords.get(id) ?? '',
      setPasswordOnce: (id: string, value: string) => {
        if ((this.passwords.get(id) ?? '') !== '') return false;
        if (value !== '') this.passwords.set(id, value);
        return true;
      },
    };
    const log = createLogger({ level: 'silent' });
    this.app = await buildMetadataApp({ index: () => index, passwords, log, guard: this.guard });
    const timeouts = { requestTimeoutMs: 10_000, headersTimeoutMs: options.headersTimeoutMs ?? 5000, keepAliveTimeoutMs: 5000 };
    const front =
      options.fast === true
        ? createFastPath({
            index: () => index,
            password: passwords.password,
            log,
            guard: this.guard,
            headersTimeoutMs: timeouts.headersTimeoutMs,
            keepAliveTimeoutMs: timeouts.keepAliveTimeoutMs,
          })
        : undefined;
    this.server = guestServer(tag, this.app.handler, timeouts, log, front).server;
    await new Promise<void>((r) => this.server?.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  fetch(path: string, options: { method?: string; body?: Buffer | string; headers?: Record<string, string> } = {}): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: this.port, path, method: options.method ?? 'GET', headers: options.headers ?? {} },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], headers: res.headers, body: Buffer.concat(chunks) }),
          );
        },
      );
      req.on('error', reject);
      req.end(options.body);
    });
  }

  get address(): { host: string; port: number } {
    return { host: '127.0.0.1', port: this.port };
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
    await this.app?.app.close();
  }
}
