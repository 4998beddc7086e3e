// Logging: redaction of secrets, journald priorities, and a level change that reaches every child
// logger (a reload's new log_level).
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger, setLogLevel } from '../../src/log.ts';

function capture(): { out: Writable; lines: () => string[] } {
  let text = '';
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString();
      done();
    },
  });
  return { out, lines: () => text.split('\n').filter(Boolean) };
}

describe('logging', () => {
  it('changes the level of the root and of every child made from it, grandchildren too', () => {
    const { out, lines } = capture();
    const root = createLogger({ level: 'info', destination: out, journald: false });
    const child = root.child({ component: 'a' });
    const grandchild = child.child({ sub: 'b' });
    child.debug('before');
    setLogLevel(root, 'debug');
    child.debug('child');
    grandchild.debug('grandchild');
    root.child({ component: 'later' }).debug('made after');
    assert.deepEqual(
      lines().map((l) => (JSON.parse(l) as { msg: string }).msg),
      ['child', 'grandchild', 'made after'],
    );
    setLogLevel(root, 'warn');
    grandchild.info('quiet');
    assert.equal(lines().length, 3);
  });

  it('redacts user data, passwords and tokens, and prefixes journald priorities', () => {
    const { out, lines } = capture();
    const log = createLogger({ level: 'info', destination: out, journald: true });
    log.warn({ user_data: 'secret-ud', vm: { password: 'pw' }, token: 'tk' }, 'x');
    const [line] = lines();
    assert.match(line ?? '', /^<4>\{/);
    assert.doesNotMatch(line ?? '', /secret-ud|"pw"|"tk"/);
  });
});
