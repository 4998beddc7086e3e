// Progress of `vm import`: one status line on a terminal's stderr, rewritten and cleared; nothing at
// all when stderr is not a terminal (scripts, pipes, the journal).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { importSummary, progressOn } from '../../src/cli/progress.ts';

function stream(isTTY: boolean): { isTTY: boolean; written: string[]; write(text: string): boolean } {
  const written: string[] = [];
  return { isTTY, written, write: (t: string) => written.push(t) > 0 };
}

describe('progressOn', () => {
  it('draws each phase over the last on a terminal and clears the line at the end', () => {
    const tty = stream(true);
    const p = progressOn(tty, 60_000);
    p.phase('reading vms.yaml');
    p.phase('importing 1 network and 2 VMs (1 kB)');
    p.done();
    assert.deepEqual(tty.written, ['\r\x1b[Kreading vms.yaml', '\r\x1b[Kimporting 1 network and 2 VMs (1 kB)', '\r\x1b[K']);
  });

  it('writes nothing when the stream is not a terminal', () => {
    const pipe = stream(false);
    const p = progressOn(pipe, 1);
    p.phase('reading vms.yaml');
    p.done();
    assert.deepEqual(pipe.written, []);
  });

  it('summarises what is sent', () => {
    assert.equal(importSummary(1, 1, 900), '1 network and 1 VM (1 kB)');
    assert.equal(importSummary(3, 10000, 4_200_000), '3 networks and 10000 VMs (4.2 MB)');
  });
});
