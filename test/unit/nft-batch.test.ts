import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ImdsError } from '../../src/errors.ts';
import { NftBatcher } from '../../src/netns/nft-batch.ts';
import type { RunOptions, Runner } from '../../src/netns/run.ts';

/** Records each `nft -f -` script; fails any script containing "BAD" (nft loads a script atomically). */
function recordingRunner(): { runner: Runner; scripts: string[]; netns: (string | undefined)[] } {
  const scripts: string[] = [];
  const netns: (string | undefined)[] = [];
  const runner: Runner = {
    async run(argv: readonly string[], options: RunOptions = {}) {
      await new Promise((r) => setTimeout(r, 5));
      scripts.push(options.stdin ?? '');
      netns.push(options.netns);
      if ((options.stdin ?? '').includes('BAD')) throw new ImdsError('COMMAND_FAILED', `nft failed on ${options.stdin?.trim()}`);
      return { argv, code: 0, stdout: '', stderr: '', ms: 5 };
    },
  };
  return { runner, scripts, netns };
}

describe('NftBatcher', () => {
  it('loads scripts submitted together as one nft run, and those arriving meanwhile as the next', async () => {
    const { runner, scripts } = recordingRunner();
    const b = new NftBatcher(runner);
    const first = [b.apply('add table bridge a'), b.apply('add table bridge b\n')];
    await new Promise((r) => setImmediate(r));
    const later = [b.apply('add table bridge c'), b.apply('add table bridge d')];
    await Promise.all([...first, ...later]);
    assert.deepEqual(scripts, ['add table bridge a\nadd table bridge b\n', 'add table bridge c\nadd table bridge d\n']);
  });

  it('retries each script alone when a combined run fails, so only the bad one rejects', async () => {
    const { runner, scripts } = recordingRunner();
    const b = new NftBatcher(runner, 'ns1');
    const results = await Promise.allSettled([b.apply('good 1'), b.apply('BAD 2'), b.apply('good 3')]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    const rejected = results[1] as PromiseRejectedResult;
    assert.match((rejected.reason as Error).message, /BAD 2/);
    assert.deepEqual(scripts, ['good 1\nBAD 2\ngood 3\n', 'good 1', 'BAD 2', 'good 3']);
  });

  it('runs in the namespace it was made for, and keeps working after a failure', async () => {
    const { runner, scripts, netns } = recordingRunner();
    const b = new NftBatcher(runner, 'ns1');
    await assert.rejects(b.apply('BAD'), /BAD/);
    await b.apply('good');
    assert.deepEqual(scripts, ['BAD\n', 'good\n']);
    assert.deepEqual(netns, ['ns1', 'ns1']);
  });
});
