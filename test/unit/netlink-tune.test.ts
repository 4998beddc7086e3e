// tuneNetlink: finds a `netlink` package socket by its port id (through /proc/self/fd) and sets it
// so an overrun cannot abort the process. Creating a netlink socket needs no privilege. The addon is
// required (the test command builds it first).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { tuneNetlink } from '../../src/netns/addon.ts';

interface Sock {
  address(): { port: number };
  close(): void;
}
const netlink = createRequire(import.meta.url)('netlink') as { createNetlink(protocol: number): Sock };

describe('tuneNetlink', () => {
  it('finds the socket by its port id and sets it', () => {
    const sock = netlink.createNetlink(0);
    try {
      assert.equal(tuneNetlink(sock.address().port, 1024 * 1024), true);
      assert.equal(tuneNetlink(sock.address().port), true, 'again, without a buffer size');
    } finally {
      sock.close();
    }
  });

  it('says false for a port no socket of this process has, and for a closed socket', () => {
    const sock = netlink.createNetlink(0);
    const port = sock.address().port;
    sock.close();
    assert.equal(tuneNetlink(port), false);
  });
});
