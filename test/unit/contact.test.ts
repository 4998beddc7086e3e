// Per-VM contact: what the JS paths see and what the native loop's drains add, merged by time; and
// the records of VMs that are gone pruned.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ContactBook } from '../../src/contact.ts';
import { Stats } from '../../src/stats.ts';

describe('ContactBook', () => {
  it('counts requests and keeps the first and the last contact with its status, from both sides', () => {
    const book = new ContactBook();
    book.seen('a', 200, 1000);
    book.seen('a', 404, 2000);
    assert.deepEqual(book.get('a'), { requests: 2, firstSeen: 1000, lastSeen: 2000, lastStatus: 404 });
    // The native loop's drain: earlier and later requests than the JS saw.
    book.merge('a', { requests: 3, firstSeen: 500, lastSeen: 1500, lastStatus: 200 });
    assert.deepEqual(book.get('a'), { requests: 5, firstSeen: 500, lastSeen: 2000, lastStatus: 404 });
    book.merge('a', { requests: 1, firstSeen: 2500, lastSeen: 2500, lastStatus: 429 });
    assert.deepEqual(book.get('a'), { requests: 6, firstSeen: 500, lastSeen: 2500, lastStatus: 429 });
    book.merge('b', { requests: 1, firstSeen: 10, lastSeen: 10, lastStatus: 200 });
    assert.equal(book.get('b')?.requests, 1);
  });

  it('forgets the VMs that are gone, not those that moved to another network', () => {
    const stats = new Stats();
    const book = stats.contacts;
    book.seen('kept', 200, 1);
    book.seen('gone', 200, 1);
    stats.forgetVms(
      [
        { id: 'gone', network: 'net1' },
        { id: 'kept', network: 'net1' },
      ],
      (id) => id === 'kept',
    );
    assert.equal(book.get('gone'), undefined);
    assert.equal(book.get('kept')?.requests, 1);
  });
});
