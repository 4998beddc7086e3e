// tuneNetlinkSocket: finds a `netlink` package socket by its port id (through /proc/self/fd) and
// sets it so an overrun cannot abort the process. Creating a netlink socket needs no privilege.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { addonIfAvailable, tuneNetlinkSocket } from '../../src/netns/listen-in-netns.ts';

interface Sock {
  address(): { port: number };
  close(): void;
}
const netlink = createRequire(import.meta.url)('netlink') as { createNetlink(protocol: number): Sock };

describe('tuneNetlinkSocket', { skip: addonIfAvailable() === undefined && 'the addon is not built' }, () => {
  it('finds the socket by its port id and sets it', () => {
    const sock = netlink.createNetlink(0);
    try {
      assert.equal(tuneNetlinkSocket(sock, 1024 * 1024), true);
      assert.equal(tuneNetlinkSocket(sock), true, 'again, without a buffer size');
    } finally {
      sock.close();
    }
  });

  it('says false for a port no socket of this process has, and for a closed socket', () => {
    const sock = netlink.createNetlink(0);
    const port = sock.address().port;
    sock.close();
    assert.equal(tuneNetlinkSocket({ address: () => ({ port }) }), false);
    assert.equal(tuneNetlinkSocket(sock), false);
  });
});
