// Every byte a daemon writes (stdout and stderr), kept as bytes: a test that must show something
// never reaches the log looks at the output itself, not at the JSON the harness parsed from it.
import type { DaemonProcess } from './daemon.ts';

export class CapturedOutput {
  private readonly chunks: Buffer[] = [];

  /** Attach right after start (before the first await past `startDaemon(…, { waitReady: false })`) to miss nothing. */
  constructor(daemon: DaemonProcess) {
    daemon.child.stdout?.on('data', (c: Buffer) => this.chunks.push(c));
    daemon.child.stderr?.on('data', (c: Buffer) => this.chunks.push(c));
  }

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}
