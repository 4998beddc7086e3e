// The metadata app over real loopback sockets, tagged with a network as NetnsListeners tags them
// (no root, no namespaces): for unit and golden tests of the guest-facing tree.
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../../src/log.ts';
import type { Network, Vm } from '../../src/model/schema.ts';
import { NETWORK, type TaggedSocket } from '../../src/server/listeners.ts';
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
  private app: MetadataApp | undefined;
  private server: Server | undefined;
  private port = 0;

  async start(networks: Network[], vms: Vm[], tag: string): Promise<void> {
    const index = MetadataIndex.build(networks, vms, { dhcpDomain: 'novalocal' });
    this.app = await buildMetadataApp({
      index: () => index,
      passwords: {
        password: (id) => this.passwords.get(id) ?? '',
        setPasswordOnce: (id, value) => {
          if ((this.passwords.get(id) ?? '') !== '') return false;
          if (value !== '') this.passwords.set(id, value);
          return true;
        },
      },
      log: createLogger({ level: 'silent' }),
    });
    this.server = createServer(this.app.handler);
    this.server.on('connection', (s: TaggedSocket) => (s[NETWORK] = tag));
    await new Promise<void>((r) => this.server?.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  fetch(path: string, options: { method?: string; body?: Buffer | string; headers?: Record<string, string> } = {}): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: this.port, path, method: options.method ?? 'GET', headers: options.headers ?? {} }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], headers: res.headers, body: Buffer.concat(chunks) }));
      });
      req.on('error', reject);
      req.end(options.body);
    });
  }

  async stop(): Promise<void> {
    await new Promise((r) => this.server?.close(r));
    await this.app?.app.close();
  }
}
