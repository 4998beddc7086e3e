// withNetns, the one way TypeScript enters a network namespace (src/netns/addon.ts), held to what
// containernetworking/plugins' ns_linux_test.go holds `ns.Do` to: the thread's namespace is the
// same before and after (also when the function throws), and what was made inside lives inside.
import assert from 'node:assert/strict';
import { readlinkSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import { listenInNetns, withNetns } from '../../src/netns/addon.ts';
import { createRunner } from '../../src/netns/run.ts';
import { startService } from '../../src/netns/service.ts';
import { useSandbox, type Sandbox } from '../helpers/sandbox.ts';

/** The network namespace of the calling thread, as `net:[inode]`. */
const threadNetns = (): string => readlinkSync('/proc/thread-self/ns/net');
const inodeOf = (sb: Sandbox): string => `net:[${statSync(`/run/netns/${sb.hv}`).ino}]`;

describe('withNetns: entering a namespace and coming back', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let own: string;

  before(() => {
    sb = current();
    own = threadNetns();
  });

  it('runs the function inside the namespace and restores the thread afterwards', () => {
    const seen = withNetns(sb.hv, threadNetns);
    assert.equal(seen, inodeOf(sb), 'inside: the namespace asked for');
    assert.notEqual(seen, own);
    assert.equal(threadNetns(), own, 'after: the thread is back in its own namespace');
  });

  it('restores the thread when the function throws, and passes the error on', () => {
    assert.throws(
      () =>
        withNetns(sb.hv, () => {
          throw new Error('inside');
        }),
      /inside/,
    );
    assert.equal(threadNetns(), own);
  });

  it('refuses a function that returns a promise (an await would run other code inside), after restoring', () => {
    assert.throws(() => withNetns(sb.hv, () => Promise.resolve(1)), /must be synchronous/);
    assert.equal(threadNetns(), own);
  });

  it('what was made inside lives inside: a listening socket, a command, a service', async () => {
    // A listening socket made by the addon inside the namespace: listed there, not here.
    const fd = listenInNetns(sb.hv, { port: 18775, host: '127.0.0.1' });
    const server = createServer();
    await new Promise<void>((resolve) => server.listen({ fd }, resolve));
    try {
      const there = await sb.hvRun(['ss', '-Hltn', 'sport = :18775']);
      assert.match(there.stdout, /127\.0\.0\.1:18775/, 'listening in the namespace');
      const here = await createRunner().run(['ss', '-Hltn', 'sport = :18775']);
      assert.equal(here.stdout.trim(), '', 'not in the namespace the test runs in');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    // A command run in it sees its links (the hypervisor namespace has only lo, and none of ours).
    const links = await createRunner().run(['ip', '-o', 'link', 'show'], { netns: sb.hv });
    assert.deepEqual(
      links.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(':')[1]?.trim()),
      ['lo'],
    );
    // A long-running service started in it stays in it.
    const svc = startService(['sleep', '30'], { netns: sb.hv });
    try {
      assert.equal(readlinkSync(`/proc/${svc.pid}/ns/net`), inodeOf(sb));
    } finally {
      await svc.stop(1000);
    }
    assert.equal(threadNetns(), own);
  });
});
