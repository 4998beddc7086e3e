// The CLI and a reader that stops early (`imds status | head`): a closed pipe ends the CLI quietly
// (exit 0, nothing on stderr), not with an unhandled EPIPE stack trace.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');

describe('the CLI writing to a closed pipe', () => {
  it('exits 0 without a stack trace', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'vm', 'add', '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy(); // the reader is gone before the CLI writes its help
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
    assert.equal(stderr, '');
    assert.equal(code, 0);
  });
});
