// The process runner, directly and through the spawner helper (the built one, dist/): the same
// results and typed errors either way. Real processes, no root.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { isImdsError } from '../../src/errors.ts';
import { createRunner, type Runner } from '../../src/netns/run.ts';

const SPAWNER = fileURLToPath(new URL('../../dist/netns/spawner-child.js', import.meta.url));

/** A runner made with an onStarted that records the pids it is given. */
function withStarted(make: (onStarted: (pid: number) => void) => Runner | undefined): [number[], Runner | undefined] {
  const pids: number[] = [];
  return [pids, make((pid) => pids.push(pid))];
}

for (const [name, started, runner] of [
  ['directly', ...withStarted((onStarted) => createRunner({ onStarted }))],
  ['through the spawner', ...withStarted((onStarted) => (existsSync(SPAWNER) ? createRunner({ spawner: SPAWNER, onStarted }) : undefined))],
] as [string, number[], Runner | undefined][]) {
  describe(`runner (${name})`, { skip: runner === undefined && 'build first (npm run build)' }, () => {
    const r = runner as Runner;
    after(() => r.close?.());

    it('returns stdout and stderr, feeds stdin, and runs many at once', async () => {
      const res = await r.run(['sh', '-c', 'cat; echo err >&2'], { stdin: 'hello\n' });
      assert.equal(res.code, 0);
      assert.equal(res.stdout, 'hello\n');
      assert.equal(res.stderr, 'err\n');
      const many = await Promise.all(Array.from({ length: 12 }, (_, i) => r.run(['sh', '-c', `echo ${i}`])));
      assert.deepEqual(
        many.map((m) => m.stdout.trim()),
        Array.from({ length: 12 }, (_, i) => String(i)),
      );
    });

    it('fails with the exit status and stderr, unless told to allow it', async () => {
      await assert.rejects(
        r.run(['sh', '-c', 'echo nope >&2; exit 3']),
        (e) => isImdsError(e, 'COMMAND_FAILED') && /exit 3: nope/.test(e.message),
      );
      assert.equal((await r.run(['sh', '-c', 'exit 3'], { allowFailure: true })).code, 3);
    });

    it('names a missing program and a command that runs too long', async () => {
      await assert.rejects(
        r.run(['no-such-program-imds']),
        (e) => isImdsError(e, 'COMMAND_NOT_FOUND') && /no-such-program-imds: not found/.test(e.message),
      );
      await assert.rejects(r.run(['sleep', '5'], { timeoutMs: 200 }), (e) => isImdsError(e, 'COMMAND_TIMEOUT'));
    });

    it('tells the pid of each command as soon as it started, before it finished', async () => {
      const before = started.length;
      const running = r.run(['sh', '-c', 'echo $$; sleep 0.3']);
      const deadline = Date.now() + 5000;
      while (started.length === before && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(started.length, before + 1, 'the pid arrived while the command still ran');
      const res = await running;
      assert.equal(Number(res.stdout.trim()), started[before], 'the pid of the command itself');
    });
  });
}
