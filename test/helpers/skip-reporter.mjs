// A node:test reporter that lists every skipped or todo test, one line each, with its file and
// reason. scripts/test.sh points it at a file and fails the run when that file is not empty: a
// skipped test is a test that did not run, and a green run must mean every test ran.
import { relative } from 'node:path';

export default async function* skipReporter(source) {
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { name, file, skip, todo } = event.data;
    if (skip === undefined && todo === undefined) continue;
    const why =
      skip !== undefined ? `skipped: ${skip === true ? 'no reason given' : skip}` : `todo: ${todo === true ? 'no reason given' : todo}`;
    yield `${file ? relative(process.cwd(), file) : '?'}: "${name}" ${why}\n`;
  }
}
